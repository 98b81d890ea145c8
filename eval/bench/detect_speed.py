"""Real-time factor and peak memory of ``kwsstream detect`` on long files, end to end.

    python -m eval.bench.detect_speed [--minutes 10 60] [--keywords 10] [--encoder mfcc]

Enrolls ``--keywords`` Spanish words × 3 voices (eSpeak NG) into a keyword set, writes FLAC files
of each length in ``--minutes`` (the bundled demo stream repeated, each repeat with fresh noise),
then times ``kwsstream detect --json`` on each as a child process: wall time / audio time is the
RTF (file decoding, resampling, encoding, matching and detection all included), and the child's
peak RSS shows whether memory grows with the file's length. Prints the machine and the figures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from eval.bench import machine
from eval.espeak import Voice
from eval.scenes import enrollment_clips, write_audio
from kwsstream.encoders.base import SAMPLE_RATE

WORDS = ("biblioteca", "mariposa", "computadora", "helicóptero", "bicicleta", "chocolate", "murciélago",
         "elefante", "calendario", "televisión", "aeropuerto", "ordenador")
VOICES = (Voice("es", "m1", 160, 45), Voice("es-419", "f2", 190, 60), Voice("es", "klatt", 175, 50))


def make_long_file(path: Path, minutes: float, seed: int = 0) -> float:
    """The demo stream repeated to ``minutes``, with fresh white noise at 30 dB per repeat."""
    from kwsstream.demo import data_dir

    base, sr = sf.read(data_dir() / "stream.flac", dtype="float32")
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * SAMPLE_RATE)
    level = np.sqrt(np.mean(base**2)) / 10 ** (30 / 20)
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, format="FLAC", subtype="PCM_16") as out:
        written = 0
        while written < total:
            block = base[: total - written] + (level * rng.standard_normal(min(len(base), total - written))).astype(np.float32)
            out.write(np.clip(block, -1, 1))
            written += len(block)
    return total / SAMPLE_RATE


def run_detect(keyset: Path, audio: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, detections) of one ``kwsstream detect`` child process."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom eval.bench import peak_rss_mb\nfrom kwsstream.cli import main\n"
         "code = main(sys.argv[1:])\nprint(peak_rss_mb(), file=sys.stderr)\nsys.exit(code)",
         "detect", "-k", str(keyset), str(audio), "--json"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2],
    )
    wall = time.perf_counter() - start
    return wall, float(proc.stderr.strip().splitlines()[-1]), len(proc.stdout.splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60])
    parser.add_argument("--keywords", type=int, default=10)
    parser.add_argument("--encoder", default="mfcc")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the files (default: a temp folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        keyset = tmp / "bench.kws"
        for word in WORDS[: args.keywords]:
            files = [write_audio(tmp / f"{word}_{i}.wav", clip.audio) for i, clip in enumerate(enrollment_clips(word, list(VOICES)))]
            subprocess.run([sys.executable, "-m", "kwsstream", "enroll", "-k", str(keyset), word, *map(str, files),
                            "--encoder", args.encoder], check=True, capture_output=True)
        print(f"machine: {machine()}")
        print(f"encoder {args.encoder}, {args.keywords} keywords x {len(VOICES)} templates; detect --json as a child process")
        run_detect(keyset, Path(__file__).resolve().parents[2] / "kwsstream" / "data" / "stream.flac")  # warm numba's cache
        print(f"{'minutes':>8} {'wall s':>8} {'RTF':>8} {'peak RSS MiB':>13} {'detections':>11}")
        for minutes in args.minutes:
            audio = tmp / f"long_{minutes:g}.flac"
            seconds = make_long_file(audio, minutes)
            wall, rss, n = run_detect(keyset, audio)
            print(f"{minutes:>8g} {wall:>8.1f} {wall / seconds:>8.4f} {rss:>13.0f} {n:>11}")
            audio.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
