"""Start-up and CPU budget of the command line, measured as a user meets it (child processes).

    python -m eval.bench.startup [--runs 5] [--minutes 5] [--onnx models/speech-embedding.onnx] [--no-listen]

* ``kwsstream detect`` of a 3 s file: wall and CPU seconds of the whole process (interpreter,
  imports, keyword set, encoder, numba loading its cached kernels, the audio, the output). The
  first run uses an empty numba cache (``NUMBA_CACHE_DIR`` in a fresh folder: the kernels are
  compiled, the cold start a fresh install pays once); the others find it warm. Budget: 1.0 s warm.
* Where a warm run's time goes: a child that times its own phases (imports, spotter, first block,
  the rest) and says which heavy modules it loaded (numba, scipy, onnxruntime).
* ``kwsstream --help`` and ``devices``: wall time, and that numba is never imported.
* ``kwsstream listen``: seconds from launch to capture (its "listening" line: the device has
  started, stream time zero), through a private PulseAudio server (``eval/pulse.py``). The
  spotter loads after that while audio is buffered.
* Detection on a ``--minutes`` file: wall real-time factor and CPU seconds per audio hour, MFCC
  and (with ``--onnx``) an ONNX encoder at 1 and 2 threads; and the ONNX encoder alone, streamed
  in 0.1 s blocks, at 1/2 threads with and without spinning (CPU time counts every thread).

Prints the machine (with its load average) first: figures taken on a busy machine are slower.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from eval.bench import machine
from kwsstream.encoders.base import SAMPLE_RATE

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 1.0
PHASES = r"""
import sys, time
t0 = time.perf_counter()
from kwsstream.cli import build_parser
from kwsstream.cliutil import _spotter
from kwsstream.matcher import limit_blas_threads
t1 = time.perf_counter()
args = build_parser().parse_args(["detect", "-k", sys.argv[1], sys.argv[2]])
limit_blas_threads()
spotter = _spotter(args)
t2 = time.perf_counter()
events = iter(spotter.detect_file(sys.argv[2]))
first = next(events, None)
t3 = time.perf_counter()
rest = list(events)
t4 = time.perf_counter()
heavy = [m for m in ("numba", "scipy", "onnxruntime", "soxr", "webrtcvad") if m in sys.modules]
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.3f} {t4 - t3:.3f} {','.join(heavy)}")
"""


def kwsstream(*args) -> list[str]:
    return [sys.executable, "-m", "kwsstream", *map(str, args)]


def timed(command: list[str], env: dict | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds of the child, result)."""
    before = os.times()
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {proc.stderr}")
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system), proc


def make_keyset(folder: Path, encoder_spec: str, threads: int | None = None) -> Path:
    from kwsstream.demo import example_files
    from kwsstream.encoders import load_encoder
    from kwsstream.enroll import enroll_examples
    from kwsstream.keyset import save_keyset

    path = folder / f"{Path(encoder_spec).stem}.kws"
    save_keyset(enroll_examples(load_encoder(encoder_spec, threads=threads), example_files()), path)
    return path


def stream_audio() -> np.ndarray:
    from kwsstream.demo import data_dir

    audio, rate = sf.read(data_dir() / "stream.flac", dtype="float32")
    if rate != SAMPLE_RATE:
        raise RuntimeError(f"stream.flac is {rate} Hz, not {SAMPLE_RATE}: remake it with scripts/make_examples.py")
    return audio


def detect_startup(folder: Path, keyset: Path, runs: int) -> None:
    clip = folder / "three.wav"
    sf.write(clip, stream_audio()[: 3 * SAMPLE_RATE], SAMPLE_RATE)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(folder / "numba-cache"))
    print(f"\n## kwsstream detect of a 3 s file (budget {BUDGET:.1f} s wall, warm)")
    wall, cpu, _ = timed(kwsstream("detect", "-k", keyset, clip), env)
    print(f"cold numba cache (kernels compiled): wall {wall:.2f} s, CPU {cpu:.2f} s")
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu, _ = timed(kwsstream("detect", "-k", keyset, clip), env)
        walls.append(wall)
        cpus.append(cpu)
    print(f"warm, {runs} runs: wall median {statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f}), "
          f"CPU median {statistics.median(cpus):.2f} s -> {'within' if statistics.median(walls) <= BUDGET else 'OVER'} "
          f"the budget")
    phases = [timed([sys.executable, "-c", PHASES, str(keyset), str(clip)], env)[2].stdout.split() for _ in range(3)]
    numbers = np.median(np.array([[float(x) for x in p[:4]] for p in phases]), axis=0)
    print(f"inside a warm run (median of 3): imports {numbers[0]:.2f} s, keyword set + encoder + kernels' module "
          f"import {numbers[1]:.2f} s, first block (numba loads its cached kernels) {numbers[2]:.2f} s, "
          f"the rest {numbers[3]:.2f} s; heavy modules loaded: {phases[0][4] if len(phases[0]) > 4 else 'none'}")
    import importlib.util

    if importlib.util.find_spec("scipy") is None:
        return
    # scipy comes with the test extras (librosa); numba imports scipy.linalg when it loads any kernel
    hidden = ("import sys, runpy\nsys.modules['scipy'] = None\nsys.argv = ['kwsstream'] + sys.argv[1:]\n"
              "runpy.run_module('kwsstream', run_name='__main__')")
    walls, cpus = zip(*[timed([sys.executable, "-c", hidden, "detect", "-k", str(keyset), str(clip)], env)[:2]
                        for _ in range(runs)])
    print(f"as a plain 'pip install -e .' without scipy (hidden from numba): wall median "
          f"{statistics.median(walls):.2f} s, CPU median {statistics.median(cpus):.2f} s")


def light_commands() -> None:
    print("\n## commands that must not load numba")
    probe = "import sys, runpy; sys.argv = ['kwsstream'] + sys.argv[1:]\ntry:\n    runpy.run_module('kwsstream', run_name='__main__')\n" \
            "except SystemExit:\n    pass\nprint('numba loaded' if 'numba' in sys.modules else 'numba not loaded', file=sys.stderr)"
    for args in (["--help"], ["devices"]):
        wall, cpu, proc = timed([sys.executable, "-c", probe, *args])
        print(f"kwsstream {' '.join(args)}: wall {wall:.2f} s, CPU {cpu:.2f} s, {proc.stderr.strip().splitlines()[-1]}")


def listen_startup(folder: Path, keyset: Path, runs: int) -> None:
    from eval.pulse import PulseServer, missing

    print("\n## kwsstream listen: launch -> capturing (the 'listening' line)")
    if missing():
        print(f"skipped: {missing()}")
        return
    pulse = PulseServer(folder / "pulse")
    try:
        delays = []
        for _ in range(runs):
            launched = time.monotonic()
            proc = subprocess.Popen(kwsstream("listen", "-k", keyset, "--seconds", "2"), env=pulse.env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
            for line in proc.stderr:
                if line.startswith("listening"):
                    delays.append(time.monotonic() - launched)
                    break
            proc.communicate(timeout=60)
        print(f"{runs} runs: median {statistics.median(delays):.2f} s, max {max(delays):.2f} s after launch "
              f"(budget 0.5 s); the spotter loads after that while the queue buffers")
    finally:
        pulse.stop()


def cpu_per_hour(folder: Path, keysets: dict[str, Path], minutes: float) -> None:
    long = folder / "long.flac"
    audio = stream_audio()
    reps = int(np.ceil(minutes * 60 * SAMPLE_RATE / len(audio)))
    sf.write(long, np.tile(audio, reps)[: int(minutes * 60 * SAMPLE_RATE)], SAMPLE_RATE, subtype="PCM_16")
    seconds = minutes * 60
    clip = folder / "three.wav"
    print(f"\n## detect on a {minutes:g} min file: wall RTF and CPU seconds per audio hour (whole process; "
          "'net': less the same command's CPU on the 3 s file, i.e. without start-up)")
    print(f"{'encoder':<28} {'threads':>7} {'wall s':>7} {'RTF':>7} {'CPU s/audio h':>14} {'net':>6}")
    for name, (keyset, threads_list) in keysets.items():
        for threads in threads_list:
            extra = [] if threads is None else ["--threads", str(threads)]
            wall, cpu, _ = timed(kwsstream("detect", "-k", keyset, long, *extra))
            _, start_cpu, _ = timed(kwsstream("detect", "-k", keyset, clip, *extra))
            net = (cpu - start_cpu) / (seconds - 3) * 3600
            print(f"{name:<28} {threads or '-':>7} {wall:>7.1f} {wall / seconds:>7.4f} {cpu / seconds * 3600:>14.0f} "
                  f"{net:>6.0f}")


def onnx_threads(model: Path, minutes: float) -> None:
    from kwsstream.encoders.onnx import OnnxEncoder

    audio = np.tile(stream_audio(), 2)[: int(min(minutes, 1.0) * 60 * SAMPLE_RATE)]
    block = SAMPLE_RATE // 10
    print(f"\n## {model.name} alone, streamed in 0.1 s blocks over {len(audio) / SAMPLE_RATE:.0f} s (CPU: all threads)")
    print(f"{'threads':>7} {'spin':>5} {'RTF':>7} {'CPU s/audio h':>14}")
    for threads, spin in ((1, False), (2, False), (2, True)):
        encoder = OnnxEncoder(model, threads=threads, spin=spin)
        state = encoder.create_state()
        state.push(audio[:SAMPLE_RATE])  # first run of the session outside the timing
        state = encoder.create_state()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for start in range(0, len(audio), block):
            state.push(audio[start:start + block])
        state.flush()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        seconds = len(audio) / SAMPLE_RATE
        print(f"{threads:>7} {str(spin):>5} {wall / seconds:>7.4f} {cpu / seconds * 3600:>14.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the CPU-per-hour file")
    parser.add_argument("--onnx", type=Path, default=ROOT / "models" / "speech-embedding.onnx",
                        help="an exported ONNX model for the thread measurements (skipped if missing)")
    parser.add_argument("--no-listen", action="store_true", help="skip the PulseAudio listen measurement")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        keyset = make_keyset(folder, "mfcc")
        detect_startup(folder, keyset, args.runs)
        light_commands()
        if not args.no_listen:
            listen_startup(folder, keyset, args.runs)
        keysets = {"mfcc": (keyset, [None])}
        if args.onnx.is_file():
            keysets[args.onnx.name] = (make_keyset(folder, str(args.onnx), threads=1), [1, 2])
        if args.minutes > 0:
            cpu_per_hour(folder, keysets, args.minutes)
            if args.onnx.is_file():
                onnx_threads(args.onnx, args.minutes)
    print(f"\nmachine after: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
