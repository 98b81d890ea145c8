"""Throughput of the incremental S-DTW kernel (cell updates per second, one core).

    python -m eval.bench.sdtw_speed [--frames 2000] [--length 60] [--repeats 5]

For 10, 100 and 1000 templates of ``--length`` frames, advances every template's running column
over ``--frames`` stream frames (distances precomputed, so this is the kernel alone), and again
with the cosine-distance matrix product included (the matcher's real work per block). Prints the
machine and the median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from eval.bench import machine
from kwsstream import sdtw
from kwsstream.matcher import MatcherState, Templates, limit_blas_threads


def bench(n_templates: int, length: int, frames: int, repeats: int, dim: int = 13) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    templates = [rng.standard_normal((length, dim)).astype(np.float32) for _ in range(n_templates)]
    tpl = Templates(templates, list(range(n_templates)))
    stream = rng.standard_normal((frames, dim)).astype(np.float32)
    dist = tpl.distances(stream)
    kernel, total = [], []
    for _ in range(repeats + 1):  # the first run compiles / warms up
        col = np.full((2, tpl.n_cells), np.inf, np.float32)
        col_start = np.zeros((2, tpl.n_cells), np.int32)
        score = np.empty((frames, n_templates), np.float32)
        start = np.empty((frames, n_templates), np.int64)
        t0 = time.perf_counter()
        sdtw.advance_columns(dist, 0, tpl.row_offset, tpl.row_width, tpl.last_cell, tpl.length, tpl.row_lo, tpl.row_hi,
                             np.ones(frames, np.bool_), col, col_start, score, start)
        kernel.append(time.perf_counter() - t0)
        state = MatcherState(tpl, block=10)
        t0 = time.perf_counter()
        state.push(stream)
        state.flush()
        total.append(time.perf_counter() - t0)
    cells = tpl.n_cells * frames
    return cells / np.median(kernel[1:]), cells / np.median(total[1:])


def main(argv: list[str] | None = None) -> int:
    limit_blas_threads()  # as the CLI does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--length", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print("the kernel is single-threaded (numba, no parallel loops); BLAS limited to one thread")
    print(f"templates of {args.length} frames, {args.frames} stream frames, median of {args.repeats}")
    print(f"{'templates':>9} {'kernel cells/s':>15} {'with distances':>15}")
    for n in (10, 100, 1000):
        k, t = bench(n, args.length, args.frames, args.repeats)
        print(f"{n:>9} {k:>15.3e} {t:>15.3e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
