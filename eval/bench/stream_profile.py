"""Where a stateful stream's time goes, next to the one-shot encode of the same model and audio.

For one ``--stateful`` export: onnxruntime's own profile (``SessionOptions.enable_profiling``) of

* ``encode``: the whole utterance in one call (empty caches);
* ``stream``: the same audio fed in 0.1 s blocks through the runtime's stateful driver
  (``kwsstream/encoders/onnxstate.py``) with the given geometry;

then, per operator type, the time inside the graph and its share, and the split of the stream's
wall time into graph nodes, ``session.run`` overhead (its time outside the nodes: input/output
copies, allocation) and the driver's own Python (numpy concatenation, slicing). The frames the
transformer computes per audio frame (``(chunk + lookahead) / chunk``) is the geometry's share
of the ratio; the rest is what a call costs beyond its frames.

The same work is then timed without the profiler, encode and stream interleaved ``--reps`` times
(medians, wall and process CPU): ratios from one run, valid on a loaded machine. With
``--geometry`` (repeatable) it only times stream / encode for each geometry, interleaved: what a
geometry costs beyond its transformer frames.

Usage::

    python -m eval.bench.stream_profile --model /tmp/kwsstream-bench/L12-stream-int8.onnx
    python -m eval.bench.stream_profile --model M.onnx --chunk 0.4 --lookahead 0.2 --left 2 --seconds 10 --reps 5
    python -m eval.bench.stream_profile --model M.onnx --geometry 0.4 0.2 2 --geometry 0.5 0.1 2 --reps 5
    python -m eval.bench.stream_profile --model OLD.onnx NEW.onnx --geometry 0.4 0.2 2 --reps 5   # A/B
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

BLOCK_SECONDS = 0.1
LATENCY_KEYS = ("mean", "median", "p95", "max")


def profiled_session(path: Path, threads: int, prefix: str):
    """A session with the runtime's settings (``kwsstream.onnxsession``) plus profiling."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_profiling = True
    options.profile_file_prefix = prefix
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class TimedSession:
    """Wraps a session: counts calls and the wall time spent in ``run``."""

    def __init__(self, session):
        self.session, self.calls, self.seconds = session, 0, 0.0

    def run(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.session.run(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1

    def __getattr__(self, name):
        return getattr(self.session, name)


def stream(encoder, audio: np.ndarray) -> np.ndarray:
    """Push ``audio`` in 0.1 s blocks, flush; the frames."""
    block = int(BLOCK_SECONDS * encoder.grid.sample_rate)
    state = encoder.create_state()
    parts = [state.push(audio[pos:pos + block]) for pos in range(0, len(audio), block)]
    return np.concatenate(parts + [state.flush()])


def node_times(profile: Path) -> tuple[dict[str, float], float, int]:
    """Seconds per operator type, seconds of all ``model_run`` events, their count."""
    events = json.loads(profile.read_text())
    per_op: dict[str, float] = defaultdict(float)
    runs, count = 0.0, 0
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1e6
        elif event.get("cat") == "Session" and event["name"] == "model_run":
            runs, count = runs + event["dur"] / 1e6, count + 1
    return dict(per_op), runs, count


def profile_both(path: Path, options, audio: np.ndarray, threads: int, workdir: Path) -> dict:
    """Profile the encode and the stream of ``audio``, each in its own session."""
    from kwsstream.encoders.onnx import OnnxEncoder

    result = {}
    for stage in ("encode", "stream"):
        encoder = OnnxEncoder(path, threads=threads, spin=False, stream=options)
        encoder.session = profiled_session(path, threads, str(workdir / stage))
        (encoder.encode if stage == "encode" else lambda a: stream(encoder, a))(audio[: len(audio) // 4])  # warm-up
        encoder.session.end_profiling()
        encoder.session = TimedSession(profiled_session(path, threads, str(workdir / stage)))
        start = time.perf_counter()
        encoder.encode(audio) if stage == "encode" else stream(encoder, audio)
        wall = time.perf_counter() - start
        per_op, runs, count = node_times(Path(encoder.session.session.end_profiling()))
        result[stage] = {"wall": wall, "run": encoder.session.seconds, "calls": encoder.session.calls,
                         "model_run": runs, "nodes": sum(per_op.values()), "per_op": per_op}
        result["plan"] = encoder.plan
    return result


def timed(path: Path, options, audio: np.ndarray, threads: int, reps: int) -> dict:
    """Encode and stream interleaved ``reps`` times without the profiler: median wall and CPU s."""
    from kwsstream.encoders.onnx import OnnxEncoder

    encoder = OnnxEncoder(path, threads=threads, spin=False, stream=options)
    encoder.encode(audio)
    stream(encoder, audio)
    times: dict[str, list] = defaultdict(list)
    for _ in range(reps):
        for stage, work in (("encode", encoder.encode), ("stream", lambda a: stream(encoder, a))):
            wall, cpu = time.perf_counter(), time.process_time()
            work(audio)
            times[f"{stage}_wall"].append(time.perf_counter() - wall)
            times[f"{stage}_cpu"].append(time.process_time() - cpu)
    return {key: float(np.median(values)) for key, values in times.items()}


def geometry_costs(paths: list[Path], geometries: list, audio: np.ndarray, threads: int, reps: int) -> str:
    """Stream / encode of each model for several geometries, everything interleaved rep by rep in
    one process (one session per model and geometry): ratios from one run. With several models
    (e.g. two exports of one checkpoint) the rows compare them too; the ratio column is to the
    first model's encode."""
    from eval.bench.encoder_speed import measure_stream
    from kwsstream.encoders.onnx import OnnxEncoder, StreamOptions

    encoders = {path: OnnxEncoder(path, threads=threads, spin=False) for path in paths}
    rows = [(path, geometry, OnnxEncoder(path, threads=threads, spin=False, stream=StreamOptions(
        chunk=geometry[0], lookahead=geometry[1], left=geometry[2]))) for path in paths for geometry in geometries]
    jobs = [(f"encode {path.name}", encoder.encode) for path, encoder in encoders.items()]
    jobs += [(index, lambda a, e=encoder: stream(e, a)) for index, (_, _, encoder) in enumerate(rows)]
    for _, work in jobs:
        work(audio)  # warm-up
    times: dict = defaultdict(list)
    for _ in range(reps):
        for key, work in jobs:
            wall, cpu = time.perf_counter(), time.process_time()
            work(audio)
            times[key].append((time.perf_counter() - wall, time.process_time() - cpu))
    med = {key: np.median(np.array(values), axis=0) for key, values in times.items()}
    seconds = len(audio) / rows[0][2].grid.sample_rate
    block = int(BLOCK_SECONDS * rows[0][2].grid.sample_rate)
    base = med[f"encode {paths[0].name}"]
    lines = [f"# encode {path.name}: wall {med[f'encode {path.name}'][0] / seconds:.3f} / CPU "
             f"{med[f'encode {path.name}'][1] / seconds:.3f} RTF (medians of {reps})" for path in paths]
    lines += ["", "| model | chunk s | lookahead s | left s | transformer cost | stream wall RTF | CPU RTF "
              "| stream / encode wall | CPU | frame latency mean / median / p95 / max s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for index, (path, (chunk, lookahead, left), encoder) in enumerate(rows):
        plan, (wall, cpu) = encoder.plan, med[index]
        latency = measure_stream(encoder, audio, block)  # one more pass
        cost = (plan.chunk + plan.lookahead) / plan.chunk
        lines.append(f"| {path.name} | {chunk} | {lookahead} | {left} | {cost:.2f}x "
                     f"| {wall / seconds:.3f} | {cpu / seconds:.3f} | {wall / base[0]:.2f}x | {cpu / base[1]:.2f}x "
                     f"| {' / '.join(format(latency['latency_' + key], '.2f') for key in LATENCY_KEYS)} |")
    return "\n".join(lines)


def report(prof: dict, speed: dict, seconds: float, load: tuple[float, float]) -> str:
    plan = prof["plan"]
    enc, st = prof["encode"], prof["stream"]
    lines = [f"# geometry chunk {plan.chunk} / lookahead {plan.lookahead} / left {plan.left} frames: transformer "
             f"frames per audio frame {(plan.chunk + plan.lookahead) / plan.chunk:.2f}x; load average "
             f"{load[0]:.1f}-{load[1]:.1f}", "",
             "| stage | calls | wall s | session.run s | model_run s | nodes s | run - nodes s | driver (Python) s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, stage in (("encode", enc), ("stream", st)):
        lines.append(f"| {name} | {stage['calls']} | {stage['wall']:.3f} | {stage['run']:.3f} "
                     f"| {stage['model_run']:.3f} | {stage['nodes']:.3f} | {stage['run'] - stage['nodes']:.3f} "
                     f"| {stage['wall'] - stage['run']:.3f} |")
    lines += ["", "| op type | encode s | share | stream s | share | stream / encode |", "|---|---|---|---|---|---|"]
    ops = sorted(set(enc["per_op"]) | set(st["per_op"]), key=lambda op: -st["per_op"].get(op, 0.0))
    for op in ops:
        a, b = enc["per_op"].get(op, 0.0), st["per_op"].get(op, 0.0)
        lines.append(f"| {op} | {a:.3f} | {a / enc['nodes']:.1%} | {b:.3f} | {b / st['nodes']:.1%} "
                     f"| {b / a if a else float('inf'):.2f}x |")
    lines.append(f"| all nodes | {enc['nodes']:.3f} | | {st['nodes']:.3f} | | {st['nodes'] / enc['nodes']:.2f}x |")
    lines += ["", f"# without the profiler, interleaved, medians over reps ({seconds:.0f} s of audio): "
              f"encode wall {speed['encode_wall'] / seconds:.3f} / CPU {speed['encode_cpu'] / seconds:.3f} RTF; "
              f"stream wall {speed['stream_wall'] / seconds:.3f} / CPU {speed['stream_cpu'] / seconds:.3f} RTF; "
              f"stream / encode {speed['stream_wall'] / speed['encode_wall']:.2f}x wall, "
              f"{speed['stream_cpu'] / speed['encode_cpu']:.2f}x CPU"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from export.verify import verification_audio
    from kwsstream.encoders.onnx import StreamOptions

    parser = argparse.ArgumentParser(prog="python -m eval.bench.stream_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, nargs="+", required=True,
                        help="a --stateful export (with --geometry: one or more, compared)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--chunk", type=float)
    parser.add_argument("--lookahead", type=float)
    parser.add_argument("--left", type=float)
    parser.add_argument("--geometry", type=float, nargs=3, action="append", metavar=("CHUNK", "LOOKAHEAD", "LEFT"),
                        help="no profile: time stream / encode for these geometries (repeatable), interleaved")
    args = parser.parse_args(argv)
    if args.geometry:
        audio = verification_audio(args.seconds, seed=2)
        load = os.getloadavg()[0]
        print(geometry_costs(args.model, args.geometry, audio, args.threads, args.reps))
        print(f"# load average {load:.1f}-{os.getloadavg()[0]:.1f}")
        return 0
    options = StreamOptions(chunk=args.chunk, lookahead=args.lookahead, left=args.left)
    audio = verification_audio(args.seconds, seed=2)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        prof = profile_both(args.model[0], options, audio, args.threads, Path(tmp))
    speed = timed(args.model[0], options, audio, args.threads, args.reps)
    print(report(prof, speed, args.seconds, (load, os.getloadavg()[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
