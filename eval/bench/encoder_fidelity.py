"""Fidelity of streaming: streamed frames vs whole-utterance frames, per streaming geometry.

A contextual encoder streamed sees less context than when it encodes a whole utterance. This
measures the cost - per-frame cosine between the streamed and the whole-utterance frames (mean,
1st percentile, min) - together with the real-time factor of streaming and the latency bound of
each geometry, to choose the defaults of ``kwsstream.encoders.onnx`` (windowed exports: window,
hop, lookahead; latency bound hop + lookahead) and ``kwsstream.encoders.onnxstate`` (stateful
exports, ``--stateful``: chunk, lookahead, left; latency bound chunk + lookahead). The mode comes
from the model file; ``--geometry A B C`` (repeatable) measures chosen geometries instead of the
built-in lists.

On random weights (what the benchmark machines can have) the numbers show the trend, not the
value for a trained model: re-run with a real export (``--model models/NAME.onnx``).

Usage::

    python -m eval.bench.encoder_fidelity --model PATH.onnx [--seconds 12] [--threads 2]
    python -m eval.bench.encoder_fidelity --model L12-stream-fp32.onnx --geometry 0.4 0.1 2.0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from kwsstream.encoders.base import SAMPLE_RATE

GEOMETRIES = (
    (2.0, 1.0, 0.5), (1.6, 0.8, 0.4), (1.6, 0.8, 0.3), (1.5, 0.7, 0.3), (1.4, 0.7, 0.3),
    (1.2, 0.6, 0.3), (1.0, 0.5, 0.25), (2.0, 0.8, 0.3), (2.4, 1.0, 0.2),
)
"""Windowed exports: (window, hop, lookahead) in seconds."""
STATEFUL_GEOMETRIES = (
    (0.4, 0.1, 2.0), (0.4, 0.2, 2.0), (0.5, 0.1, 2.0), (0.6, 0.2, 2.0), (0.8, 0.2, 2.0), (0.3, 0.1, 2.0),
    (0.4, 0.0, 2.0), (0.4, 0.1, 1.0), (0.4, 0.1, 4.0), (1.0, 0.3, 2.0),
)
"""Stateful exports: (chunk, lookahead, left) in seconds."""
BLOCK_SECONDS = 0.1


def stream_frames(encoder, audio: np.ndarray, block: int) -> tuple[np.ndarray, float]:
    """Streamed frames of ``audio`` fed in blocks, and the compute seconds spent."""
    state, parts = encoder.create_state(), []
    start = time.perf_counter()
    for pos in range(0, len(audio), block):
        parts.append(state.push(audio[pos:pos + block]))
    parts.append(state.flush())
    return np.concatenate(parts), time.perf_counter() - start


def fidelity(streamed: np.ndarray, whole: np.ndarray) -> dict:
    """Per-frame cosine statistics."""
    cos = (streamed * whole).sum(1) / np.maximum(np.linalg.norm(streamed, axis=1) * np.linalg.norm(whole, axis=1), 1e-30)
    return {"mean": float(cos.mean()), "p1": float(np.percentile(cos, 1)), "min": float(cos.min())}


def speech_audio(seconds: float) -> np.ndarray:
    """Speech: eSpeak NG sentences when the library is there, else the exporter's test signal."""
    try:
        from eval.espeak import Voice, synthesize_many

        texts = ["el perro de mi vecino ladra todas las noches cuando llueve",
                 "mañana iremos al mercado a comprar naranjas y pan",
                 "la biblioteca de la ciudad abre a las nueve de la mañana"]
        voices = [Voice("es"), Voice("es-419"), Voice("es", rate=150)]
        audio = np.concatenate([u.audio for u in synthesize_many(list(zip(texts, voices)))])
        reps = int(np.ceil(seconds * SAMPLE_RATE / len(audio)))
        return np.tile(audio, reps)[: int(seconds * SAMPLE_RATE)].astype(np.float32)
    except Exception:  # no espeak-ng on this machine: any speech-like signal shows the trend
        from export.verify import verification_audio

        return verification_audio(seconds, seed=3)


def main(argv: list[str] | None = None) -> int:
    from kwsstream.encoders.onnx import OnnxEncoder, StreamOptions

    parser = argparse.ArgumentParser(prog="python -m eval.bench.encoder_fidelity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--geometry", type=float, nargs=3, action="append",
                        help="window hop lookahead (windowed) or chunk lookahead left (stateful), seconds")
    args = parser.parse_args(argv)
    audio = speech_audio(args.seconds)
    reference = OnnxEncoder(args.model, threads=args.threads)
    whole = reference.encode(audio)
    print(f"# {args.model}: {args.seconds:.0f} s of speech, blocks of {BLOCK_SECONDS} s\n")
    if reference.info.stateful:
        return stateful_table(args, audio, whole)
    print("| window s | hop s | lookahead s | left s | cosine mean | p1 | min | stream RTF | latency bound s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for window, hop, lookahead in args.geometry or GEOMETRIES:
        encoder = OnnxEncoder(args.model, threads=args.threads, stream=StreamOptions(window, hop, lookahead))
        streamed, spent = stream_frames(encoder, audio, int(BLOCK_SECONDS * SAMPLE_RATE))
        stats = fidelity(streamed, whole)
        print(f"| {window} | {hop} | {lookahead} | {window - hop - lookahead:.1f} | {stats['mean']:.4f} "
              f"| {stats['p1']:.4f} | {stats['min']:.4f} | {spent / (len(audio) / SAMPLE_RATE):.3f} | {hop + lookahead:.1f} |",
              flush=True)
    return 0


def stateful_table(args, audio: np.ndarray, whole: np.ndarray) -> int:
    """The table for a stateful export: one row per (chunk, lookahead, left)."""
    from kwsstream.encoders.onnx import OnnxEncoder, StreamOptions

    print("| chunk s | lookahead s | left s | cosine mean | p1 | min | stream RTF | encode RTF | stream / encode "
          "| stream / encode CPU | transformer cost | latency bound s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    seconds = len(audio) / SAMPLE_RATE
    for chunk, lookahead, left in args.geometry or STATEFUL_GEOMETRIES:
        encoder = OnnxEncoder(args.model, threads=args.threads, stream=StreamOptions(chunk=chunk, lookahead=lookahead,
                                                                                   left=left))
        start, cpu = time.perf_counter(), time.process_time()  # one-shot encode right before the stream
        encoder.encode(audio)
        encode_rtf, encode_cpu = (time.perf_counter() - start) / seconds, time.process_time() - cpu
        cpu = time.process_time()  # CPU seconds (all threads): the work, barely changed by other jobs
        streamed, spent = stream_frames(encoder, audio, int(BLOCK_SECONDS * SAMPLE_RATE))
        stream_cpu = time.process_time() - cpu
        stats = fidelity(streamed, whole)
        plan = encoder.plan
        print(f"| {chunk} | {lookahead} | {left} | {stats['mean']:.4f} | {stats['p1']:.4f} | {stats['min']:.4f} "
              f"| {spent / seconds:.3f} | {encode_rtf:.3f} | {spent / seconds / encode_rtf:.2f}x "
              f"| {stream_cpu / encode_cpu:.2f}x "
              f"| {(plan.chunk + plan.lookahead) / plan.chunk:.2f}x | {chunk + lookahead:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
