"""What the full protocol costs on this machine, stage by stage, without running all of it.

    python -m eval.bench.eval_timing --corpus /tmp/corpus1000 [--dim 1024 --fps 50 --layers 25]
                                     [--encoder PATH.onnx --clips 12 --workers 2]

1. Draws the study's protocol on ``--corpus`` and takes its real frame counts (sentence and query
   segment durations at ``--fps``).
2. Ranks random anisotropic frames of width ``--dim`` with those counts through
   :func:`eval.rank.rank_queries` (word-level and contextual queries together, the three
   normalisations) for ``--repeats`` layers: seconds per layer for ``distances`` and ``dtw``.
3. With ``--encoder``, encodes ``--clips`` of the protocol's sentences through the encode stage
   (a temporary cache, ``--workers`` processes): the real-time factor.

Prints each measurement and the estimate for ``--layers`` layers (encode = RTF × the protocol's
audio; ranking = per-layer × layers), with the machine's load average, since other work on the
machine changes every number.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def frame_counts(corpus_dir: Path, fps: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Sentence frame counts, query frame counts, and the protocol's audio seconds (sentences and
    query segments) for the default protocol on ``corpus_dir``."""
    from eval.corpus import read_corpus
    from eval.protocol import make_protocol

    protocol = make_protocol(read_corpus(corpus_dir))
    seconds = np.array([sf.info(s.path).duration for s in protocol.sentences])
    segments = np.array([q.end - q.start for q in protocol.queries])
    return (np.maximum(1, (seconds * fps).astype(np.int64)), np.maximum(1, (segments * fps).astype(np.int64)),
            float(seconds.sum() + segments.sum()))


def time_ranking(sentence_frames: np.ndarray, query_frames: np.ndarray, dim: int, repeats: int) -> dict[str, float]:
    """Median seconds per layer of ``distances`` and ``dtw`` on random frames."""
    from eval.rank import StageClock, corpus_stats, rank_queries

    rng = np.random.default_rng(0)
    s_off = np.concatenate([[0], np.cumsum(sentence_frames)]).astype(np.int64)
    q_off = np.concatenate([[0], np.cumsum(query_frames)]).astype(np.int64)
    common = rng.standard_normal(dim).astype(np.float32) * 2  # anisotropic, like late wav2vec2 layers
    sentences = (rng.standard_normal((int(s_off[-1]), dim), np.float32) + common)
    queries = (rng.standard_normal((int(q_off[-1]), dim), np.float32) + common)
    stats = corpus_stats(sentences)
    small = np.array([0, *s_off[1:3]])
    rank_queries([(queries[:q_off[2]], q_off[:3])], sentences[:small[-1]], small, stats)  # compile
    runs = []
    for _ in range(repeats):
        clock = StageClock()
        rank_queries([(queries, q_off), (queries, q_off)], sentences, s_off, stats, clock=clock)
        runs.append(clock.seconds)
    return {k: float(np.median([r[k] for r in runs])) for k in runs[0]}


def time_encoding(corpus_dir: Path, encoder: str, clips: int, workers: int) -> float:
    """Real-time factor of the encode stage on ``clips`` sentences (fresh temporary cache)."""
    from eval.corpus import read_corpus
    from eval.representations import (
        EncodeOptions,
        describe_encoder,
        encode_items,
        sentence_item,
    )

    info = describe_encoder(encoder)
    chosen = read_corpus(corpus_dir).clips[:clips]
    items = [sentence_item(c.utt_id, str(c.path)) for c in chosen]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        stats = encode_items(items, info, Path(tmp), EncodeOptions(workers=workers), progress=False)
        elapsed = time.perf_counter() - start
    return elapsed / stats["audio_seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.eval_timing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--fps", type=float, default=50.0)
    parser.add_argument("--layers", type=int, default=25, help="layers of the full sweep (XLSR-53: 25)")
    parser.add_argument("--repeats", type=int, default=1, help="layers actually ranked")
    parser.add_argument("--encoder", help="an exported model to time the encode stage with")
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    sentences, queries, audio = frame_counts(args.corpus, args.fps)
    print(f"protocol: {len(sentences)} sentences ({sentences.sum()} frames), {len(queries)} queries "
          f"({queries.sum()} frames per representation), {audio:.0f} s of audio to encode")
    per_layer = time_ranking(sentences, queries, args.dim, args.repeats)
    print("per layer (word + contextual, 3 normalisations): "
          + ", ".join(f"{k} {v:.1f} s" for k, v in per_layer.items()))
    total = {k: v * args.layers for k, v in per_layer.items()}
    if args.encoder:
        rtf = time_encoding(args.corpus, args.encoder, args.clips, args.workers)
        print(f"encode: real-time factor {rtf:.3f} ({args.clips} clips)")
        total = {"encode": rtf * audio, **total}
    print(f"estimate for {args.layers} layers: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in total.items())
          + f"; total {sum(total.values()) / 60:.1f} min")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
