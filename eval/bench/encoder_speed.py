"""Speed of the ONNX encoder: alone, streaming, and the whole streaming pipeline (audio -> events).

For each layer L and precision: real-time factor (compute seconds per audio second; median of
``--reps`` runs) of

* ``encode``: one whole 10 s utterance;
* ``naive``: the baseline before this work - overlapping 2 s windows every 1 s, each encoded from
  raw audio (conv front end recomputed per window);
* ``stream``: the encoder's own streaming (windowed exports: front end once per stream, context
  windows; ``--stateful`` exports: each frame once, cached keys/values), fed 0.1 s blocks as a
  microphone would, with the frame latency (audio in -> frame out: audio still to arrive after
  the frame's own samples, plus the compute of the block that emitted it): median, p95, max,
  and the streamed frames' cosine to the one-shot encoding of the same audio (mean, min);
* ``pipeline``: :class:`kwsstream.spotter.Spotter` fed the same blocks (encoder + S-DTW matcher +
  detector, one keyword with 3 templates), with the detection latency (the block's audio end +
  its compute - the event's end) of the events it fires;

plus the model's file size and the peak RSS of the process that measured it (one fresh process
per model). Random weights with the exact XLSR-53 architecture (``encoder_models.py``): speed
does not depend on the weights' values.

The stages of one model are interleaved rep by rep (encode, naive, stream, pipeline, then again),
so that a load change on a shared machine hits all of them alike: compare ratios within a row.

Usage (writes several GB under --workdir while it runs; removed at the end unless --keep)::

    python -m eval.bench.encoder_speed [--layers 6 12 18 24] [--threads 2] [--workdir /tmp/kwsstream-bench]
    python -m eval.bench.encoder_speed --layers 12 24 --modes stateful --precisions int8 --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from eval.bench import machine, peak_rss_mb

ENCODE_SECONDS = 10.0
STREAM_SECONDS = 20.0
BLOCK_SECONDS = 0.1
NAIVE_WINDOW_S, NAIVE_HOP_S = 2.0, 1.0
DEFAULT_LAYERS = (6, 12, 18, 24)
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "kwsstream-bench"


class Clock:
    """Wall-clock and process CPU seconds of a block (``with Clock() as c: ...; c.wall, c.cpu``).

    CPU time (all threads; onnxruntime's threads do not spin in the benchmark) is the work done,
    nearly unaffected by other processes on a shared machine; wall time is what a user waits.
    """

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


def _stats(values: list[float]) -> dict:
    """Median and minimum: the median is what was asked for; on a shared machine the minimum is
    the run least disturbed by other processes."""
    return {"median": float(np.median(values)), "min": float(np.min(values))}


def measure_encode(encoder, audio: np.ndarray) -> dict:
    """RTF of encoding ``audio`` whole."""
    seconds = len(audio) / encoder.grid.sample_rate
    with Clock() as clock:
        encoder.encode(audio)
    return {"rtf": clock.wall / seconds, "cpu_rtf": clock.cpu / seconds}


def measure_stream(encoder, audio: np.ndarray, block: int, whole: np.ndarray | None = None) -> dict:
    """Stream ``audio`` in blocks: RTF and frame latency (mean, median, p95, max) in seconds;
    with ``whole`` (the one-shot encoding of ``audio``) also the per-frame cosine of the streamed
    frames to it (mean, min): the price of streaming."""
    grid, state = encoder.grid, encoder.create_state()
    emitted, latencies, wall, cpu, parts = 0, [], 0.0, 0.0, []
    for pos in range(0, len(audio), block):
        with Clock() as clock:
            frames = state.push(audio[pos:pos + block])
        wall, cpu = wall + clock.wall, cpu + clock.cpu
        parts.append(frames)
        received = min(pos + block, len(audio))
        for j in range(emitted, emitted + len(frames)):
            frame_end = j * grid.hop + grid.length - grid.pad
            latencies.append((received - frame_end) / grid.sample_rate + clock.wall)
        emitted += len(frames)
    with Clock() as clock:
        parts.append(state.flush())
    seconds = len(audio) / grid.sample_rate
    result = {"rtf": (wall + clock.wall) / seconds, "cpu_rtf": (cpu + clock.cpu) / seconds,
              **latency_stats(latencies, "latency")}
    if whole is not None:
        streamed = np.concatenate(parts)
        norms = np.linalg.norm(streamed, axis=1) * np.linalg.norm(whole, axis=1)
        cos = (streamed * whole).sum(1) / np.maximum(norms, 1e-30)
        result.update(cosine_mean=float(cos.mean()), cosine_min=float(cos.min()))
    return result


def latency_stats(values: list[float], prefix: str) -> dict:
    """Mean, median, 95th percentile and max of latencies (NaN when there are none)."""
    if not values:
        return {f"{prefix}_{key}": float("nan") for key in ("mean", "median", "p95", "max")}
    return {f"{prefix}_mean": float(np.mean(values)), f"{prefix}_median": float(np.median(values)),
            f"{prefix}_p95": float(np.percentile(values, 95)), f"{prefix}_max": float(np.max(values))}


def measure_naive(encoder, audio: np.ndarray) -> dict:
    """RTF of re-encoding 2 s windows every 1 s from raw audio."""
    rate = encoder.grid.sample_rate
    window, hop = int(NAIVE_WINDOW_S * rate), int(NAIVE_HOP_S * rate)
    with Clock() as clock:
        for pos in range(0, len(audio) - window + 1, hop):
            encoder.encode(audio[pos:pos + window])
    return {"rtf": clock.wall / (len(audio) / rate), "cpu_rtf": clock.cpu / (len(audio) / rate)}


def measure_pipeline(encoder, audio: np.ndarray, block: int) -> dict | None:
    """RTF of the Spotter (encoder + matcher + detector) on ``audio``; None if unavailable."""
    try:
        import soundfile

        from kwsstream.enroll import enroll
        from kwsstream.spotter import Spotter
    except ImportError:
        return None
    rate = encoder.grid.sample_rate
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "example.wav"
        soundfile.write(str(clip), audio[: 3 * rate], rate)
        keyset = None
        for start in (0.5, 1.0, 1.5):
            keyset = enroll(keyset, encoder, "keyword", [clip], segment=(start, start + 0.6), threshold=0.1)
    spotter = Spotter(keyset, encoder)
    warm = spotter.create_stream("warm-up")  # compiles the numba kernels outside the timing
    warm.feed(audio[:rate])
    warm.flush()
    stream = spotter.create_stream("bench")
    wall, cpu, delays = 0.0, 0.0, []
    for pos in range(0, len(audio), block):
        with Clock() as clock:
            events = stream.feed(audio[pos:pos + block])
        wall, cpu = wall + clock.wall, cpu + clock.cpu
        received = min(pos + block, len(audio)) / rate
        delays += [received + clock.wall - event.end for event in events]
    with Clock() as clock:
        stream.flush()
    seconds = len(audio) / rate
    return {"rtf": (wall + clock.wall) / seconds, "cpu_rtf": (cpu + clock.cpu) / seconds, "events": len(delays),
            **latency_stats(delays, "detection")}


def _collect(runs: list[dict]) -> dict:
    """Per key: median and minimum over runs."""
    return {key: _stats([run[key] for run in runs]) for key in runs[0]}


def measure_model(path: Path, threads: int, reps: int) -> dict:
    """Everything about one model file (run in a fresh process for a meaningful peak RSS)."""
    from export.verify import verification_audio
    from kwsstream.encoders.onnx import OnnxEncoder

    start = time.perf_counter()
    encoder = OnnxEncoder(path, threads=threads, spin=False)
    load = time.perf_counter() - start
    rate = encoder.grid.sample_rate
    utterance = verification_audio(ENCODE_SECONDS, seed=1)
    stream_audio = verification_audio(STREAM_SECONDS, seed=2)
    block = int(BLOCK_SECONDS * rate)
    load_before = os.getloadavg()[0]
    result = {
        "model": path.name, "layer": encoder.layer, "precision": encoder.info.precision,
        "size_mb": path.stat().st_size / 1e6, "load_s": load, "threads": threads,
        "mode": "stateful" if encoder.info.stateful else "windowed",
    }
    measure_encode(encoder, utterance)  # warm-up: first-run allocations
    whole = encoder.encode(stream_audio)  # the reference of the stream's fidelity
    runs: dict[str, list] = {"encode": [], "naive": [], "stream": [], "pipeline": []}
    for _ in range(reps):  # interleaved: a load change on a shared machine hits every stage alike
        runs["encode"].append(measure_encode(encoder, utterance))
        if not encoder.info.stateful:  # the baseline of windowed streaming only
            runs["naive"].append(measure_naive(encoder, stream_audio))
        runs["stream"].append(measure_stream(encoder, stream_audio, block, whole))
        runs["pipeline"].append(measure_pipeline(encoder, stream_audio, block))
    for stage, values in runs.items():
        result[stage] = None if not values or values[0] is None else _collect(values)
    result["load_average"] = [load_before, os.getloadavg()[0]]
    plan = encoder.plan
    result["geometry"] = (f"chunk {plan.chunk}, lookahead {plan.lookahead}, left {plan.left} frames"
                          if encoder.info.stateful else
                          f"window {plan.window}, hop {plan.hop}, lookahead {plan.lookahead} frames")
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def export_models(checkpoint: str, layers: list[int], workdir: Path, modes: tuple[str, ...] = ("windowed",),
                  precisions: tuple[str, ...] = ("fp32", "int8")) -> list[Path]:
    """Exports of ``checkpoint`` at each layer, mode and precision (reusing files already there):
    ``L<layer>[-stream]-<precision>.onnx``; stateful ones with the exporter's default geometry."""
    from export.quantize import quantize_int8
    from export.stateful import export_stateful
    from export.wav2vec2 import export_graph, load_model, two_stage_possible
    from kwsstream.encoders.onnxstate import DEFAULT_CHUNK_S, DEFAULT_LEFT_S, DEFAULT_STATE_LOOKAHEAD_S

    model, paths = None, []
    for layer in layers:
        for mode in modes:
            tag = "-stream" if mode == "stateful" else ""
            fp32, int8 = workdir / f"L{layer}{tag}-fp32.onnx", workdir / f"L{layer}{tag}-int8.onnx"
            if not fp32.is_file():
                model = model or load_model(checkpoint)
                print(f"exporting layer {layer} ({mode}) ...", file=sys.stderr, flush=True)
                if mode == "stateful":
                    export_stateful(model, fp32, [layer], checkpoint, chunk=DEFAULT_CHUNK_S,
                                    lookahead=DEFAULT_STATE_LOOKAHEAD_S, left=DEFAULT_LEFT_S,
                                    two_stage=two_stage_possible(model.config))
                else:
                    export_graph(model, fp32, [layer], checkpoint)
            if "int8" in precisions and not int8.is_file():
                quantize_int8(fp32, int8)
            paths += [path for path, precision in ((fp32, "fp32"), (int8, "int8")) if precision in precisions]
    return paths


def table(rows: list[dict]) -> str:
    """The results as a Markdown table: wall-clock RTF median (min) and CPU RTF median."""
    def cell(stage: dict | None) -> str:
        if stage is None:
            return "n/a"
        return f"{stage['rtf']['median']:.3f} ({stage['rtf']['min']:.3f}) / {stage['cpu_rtf']['median']:.3f}"

    def ratio(stage: dict | None, encode: dict) -> str:
        return "n/a" if stage is None else f"{stage['rtf']['median'] / encode['rtf']['median']:.2f}x"

    def detections(pipe: dict | None) -> str:
        if pipe is None or not pipe["events"]["median"]:
            return "none"
        return f"{pipe['detection_median']['median']:.2f} / {pipe['detection_p95']['median']:.2f} / " \
               f"{pipe['detection_max']['median']:.2f}"

    def fidelity(stream: dict) -> str:
        if "cosine_mean" not in stream:
            return "n/a"
        return f"{stream['cosine_mean']['median']:.4f} / {stream['cosine_min']['median']:.4f}"

    lines = ["| L | mode | precision | size MB | encode | naive 2s/1s | stream | pipeline | pipeline / encode "
             "| frame latency median / p95 / max (mean) s | detection latency median / p95 / max s "
             "| cosine to one-shot mean / min | peak RSS MB | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        st = r["stream"]
        lat = "/".join(f"{st[f'latency_{key}']['median']:.2f}" for key in ("median", "p95", "max"))
        lines.append(f"| {r['layer']} | {r.get('mode', 'windowed')} | {r['precision']} | {r['size_mb']:.0f} "
                     f"| {cell(r['encode'])} | {cell(r['naive'])} | {cell(st)} | {cell(r['pipeline'])} "
                     f"| {ratio(r['pipeline'], r['encode'])} | {lat} ({st['latency_mean']['median']:.2f}) "
                     f"| {detections(r['pipeline'])} | {fidelity(st)} | {r['peak_rss_mb']:.0f} "
                     f"| {r['load_average'][0]:.1f}-{r['load_average'][1]:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.encoder_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="wav2vec2 folder or hub id (default: random XLSR-53 weights)")
    parser.add_argument("--layers", type=int, nargs="+", default=list(DEFAULT_LAYERS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=["windowed", "stateful"], default=["windowed", "stateful"],
                        help="streaming exports to measure (stateful: --stateful, each frame once)")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "int8"], default=["fp32", "int8"])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--keep", action="store_true", help="keep the exported models and checkpoint")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child mode: one model
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure_model(args.measure, args.threads, args.reps)))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    from eval.bench.encoder_models import checkpoint_or_random

    checkpoint = checkpoint_or_random(args.checkpoint, args.workdir)
    print(f"# machine: {machine()}", flush=True)
    rows = []
    try:
        for path in export_models(checkpoint, args.layers, args.workdir, tuple(args.modes), tuple(args.precisions)):
            child = subprocess.run([sys.executable, "-m", "eval.bench.encoder_speed", "--measure", str(path),
                                    "--threads", str(args.threads), "--reps", str(args.reps)],
                                   capture_output=True, text=True, check=True)
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    geometries = sorted({f"{row['mode']}: {row['geometry']}" for row in rows})
    print(f"\n# machine: {machine()}\n# threads {args.threads}, stream {'; '.join(geometries)}"
          "\n# cells: wall-clock RTF median (min) / CPU-seconds per audio second (all threads), median\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
