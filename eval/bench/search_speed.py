"""Throughput of ``kwsstream search``: audio hours searched per wall-clock hour, 1 and 2 workers.

    python -m eval.bench.search_speed [--minutes 30] [--files 12] [--workers 1 2]

Makes ``--files`` FLAC files of ``--minutes`` in all by tiling the bundled stream
(``kwsstream/data/stream.flac``), enrolls the bundled examples with MFCC and, when
``models/speech-embedding.onnx`` exists, with speech_embedding, then times
``kwsstream.search.search`` over the folder with each worker count (``1``: in process; ``N > 1``:
N local worker processes, their start-up included). Prints the machine and a Markdown
table: audio hours per wall hour, and per worker (what each machine of a cluster would add).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from eval.bench import machine
from kwsstream.encoders.base import SAMPLE_RATE

MODEL = Path("models/speech-embedding.onnx")


def make_files(folder: Path, minutes: float, files: int) -> float:
    """``files`` FLAC files of ``minutes / files`` each, the bundled stream tiled; total seconds."""
    from kwsstream.demo import data_dir

    base, _ = sf.read(data_dir() / "stream.flac", dtype="float32")
    each = int(minutes * 60 / files * SAMPLE_RATE)
    audio = np.tile(base, each // len(base) + 1)[:each]
    for i in range(files):
        sf.write(folder / f"part{i:03d}.flac", audio, SAMPLE_RATE, subtype="PCM_16")
    return files * each / SAMPLE_RATE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="audio in all")
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from kwsstream.demo import example_files
    from kwsstream.encoders import load_encoder
    from kwsstream.enroll import enroll_examples
    from kwsstream.keyset import save_keyset
    from kwsstream.matcher import limit_blas_threads
    from kwsstream.search import search

    limit_blas_threads()
    print(machine())
    encoders = ["mfcc"] + ([str(MODEL)] if MODEL.exists() else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "audio").mkdir()
        seconds = make_files(tmp / "audio", args.minutes, args.files)
        for spec in encoders:
            keyset = tmp / f"{Path(spec).stem}.kws"
            save_keyset(enroll_examples(load_encoder(spec), example_files()), keyset)
            for workers in args.workers:
                out = tmp / f"{keyset.stem}-{workers}.csv"
                start = time.perf_counter()
                result = search(keyset, [str(tmp / "audio")], out=out, workers=workers, progress=False,
                                say=lambda _: None)
                wall = time.perf_counter() - start
                if not result.complete or result.bad or abs(result.seconds - seconds) >= 1:
                    raise RuntimeError(f"the search did not cover the test audio ({result.seconds:.1f} of {seconds:.1f} s, "
                                       f"{len(result.bad)} bad file(s)): its throughput would mean nothing")
                rate = seconds / wall
                rows.append((Path(spec).stem, workers, seconds / 60, wall, rate, rate / workers, len(result.rows)))
    print(f"\n{args.files} files, {args.minutes:g} min of audio in all (the bundled stream tiled); "
          "wall time includes the cluster's start-up\n")
    print("| encoder | workers | audio (min) | wall (s) | audio h / wall h | per worker | hits |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, workers, minutes, wall, rate, per, hits in rows:
        print(f"| {name} | {workers} | {minutes:.1f} | {wall:.1f} | {rate:.0f} | {per:.0f} | {hits} |")


if __name__ == "__main__":
    main()
