"""Subsequence DTW kernels (numba). Kernels only: no validation here, see matcher.py.

Recurrence, for a template ``q`` of M frames against stream frames ``x_j`` with local distance
``d(i, j) = 1 - cos(q_i, x_j)``::

    D(0, j) = d(0, j)                                   # a match may start at any frame
    D(i, j) = d(i, j) + min(D(i-1, j-1), D(i-1, j), D(i, j-1))

Every cell also carries ``S(i, j)``, the stream frame where its best path started (ties prefer
the diagonal, then the vertical, then the horizontal step). The score of a match of the whole
template ending at frame ``j`` is the normalised cost::

    score(j) = 2 D(M-1, j) / (M + n),   n = j - S(M-1, j) + 1 frames of stream matched

i.e. the accumulated cost divided by the mean of the two sequences' lengths (Sakoe & Chiba's
symmetric normalisation): a perfect diagonal path scores the mean local distance along it, in
[0, 2]. The offline ranking (eval) and the incremental runtime use this same function.

**Warping band.** A match may not stretch or squeeze the template beyond a factor ``warp``
(:data:`MAX_WARP`): a path that has covered template rows ``0..i`` (``r = i + 1`` rows) may span
``n`` stream frames only within ``band(r) = [ceil(r / warp) - slack, warp * r + slack]`` (see
:func:`band`). The check is local and exact: a horizontal step is refused when it would make the
path longer than ``band(r)`` allows, a vertical step when it would leave the path shorter (the
diagonal step can never leave the band, since ``band`` grows by at most one frame at its low end
and at least one at its high end per row). So a word is never matched across seconds of audio,
nor squeezed into a few frames, and the whole-template score obeys the same bound.

Two faces of one recurrence:

* ``accumulate_offline(dist)`` — a whole template × sentence distance matrix at once (the
  reference; the eval's ranking).
* ``advance_columns(...)`` — the runtime: one running column per template, all templates in one
  flat layout (see matcher.py), updated frame by frame from a block of distances. Within a row
  the loop runs over templates, contiguous in memory, so LLVM vectorises it.
"""

from __future__ import annotations

import numba
import numpy as np

INF = np.float32(np.inf)
MAX_WARP = 2.0
"""A match spans between ``1/MAX_WARP`` and ``MAX_WARP`` times its template's length."""
WARP_SLACK = 1
"""Frames of slack on both sides of the band (short templates, rounding)."""


def band(rows: int, warp: float = MAX_WARP, slack: int = WARP_SLACK) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)``, each ``(rows,)`` int32: the fewest and most stream frames a path may span
    after template row ``i`` (``r = i + 1`` rows covered): ``ceil(r / warp) - slack`` (at least 1)
    and ``floor(warp * r) + slack``."""
    if warp < 1:
        raise ValueError(f"warp {warp} must be >= 1")
    r = np.arange(1, rows + 1)
    lo = np.maximum(1, np.ceil(r / warp - 1e-9).astype(np.int64) - slack)
    hi = np.floor(warp * r + 1e-9).astype(np.int64) + slack
    return lo.astype(np.int32), hi.astype(np.int32)


@numba.njit(cache=True)
def accumulate_offline(dist, lo, hi):  # pragma: no cover - compiled
    """Accumulated cost of the last template row and the start frame of each path.

    dist: (M, N) float32 local distances (template rows × stream frames); lo, hi: (M,) the
    warping band (:func:`band`).
    Returns (cost (N,) float32: D(M-1, j), +inf where no path fits the band; start (N,) int64:
    S(M-1, j)).
    """
    m, n = dist.shape
    prev = np.empty(m, np.float32)
    cur = np.empty(m, np.float32)
    sprev = np.zeros(m, np.int64)
    scur = np.zeros(m, np.int64)
    cost = np.empty(n, np.float32)
    start = np.empty(n, np.int64)
    for j in range(n):
        cur[0] = dist[0, j]
        scur[0] = j
        for i in range(1, m):
            diag = prev[i - 1] if j > 0 else INF
            left = prev[i] if j > 0 and j - sprev[i] + 1 <= hi[i] else INF
            up = cur[i - 1] if j - scur[i - 1] + 1 >= lo[i] else INF
            if diag <= up and diag <= left:
                best = diag
                s = sprev[i - 1]
            elif up <= left:
                best = up
                s = scur[i - 1]
            else:
                best = left
                s = sprev[i]
            cur[i] = dist[i, j] + best
            scur[i] = s
        cost[j] = cur[m - 1]
        start[j] = scur[m - 1]
        prev, cur = cur, prev
        sprev, scur = scur, sprev
    return cost, start


@numba.njit(cache=True)
def normalise(cost, start, end, length):  # pragma: no cover - compiled
    """Score of a path of accumulated ``cost`` over stream frames ``start..end`` for a template of
    ``length`` frames: ``2 cost / (length + end - start + 1)``; +inf where there is no path."""
    if not cost < INF:
        return INF
    return 2.0 * cost / (length + end - start + 1)


@numba.njit(cache=True)
def best_match(dist, lo, hi):  # pragma: no cover - compiled
    """Best normalised subsequence match of a template in a sentence.

    dist: (M, N) float32; lo, hi: the band (:func:`band`). Returns (score, start frame, end
    frame); score +inf if no match fits the band.
    """
    m, n = dist.shape
    cost, start = accumulate_offline(dist, lo, hi)
    best = np.inf
    b_start = 0
    b_end = 0
    for j in range(n):
        score = normalise(cost[j], start[j], j, m)
        if score < best:
            best = score
            b_start = start[j]
            b_end = j
    return best, b_start, b_end


@numba.njit(cache=True, inline="always")
def _advance_row(d, prev_up, cur_up, prev_same, out, s_prev_up, s_cur_up, s_prev_same, s_out,
                 j, lo, hi):  # pragma: no cover
    """One row of the recurrence for every template that has it: plain 1-D loops over templates
    with every operand loaded unconditionally, so LLVM turns the min/select into vector code.
    ``j`` is the frame, ``lo``/``hi`` the row's band (a vertical step must keep the path at
    least ``lo`` frames long, a horizontal one at most ``hi``)."""
    for t in range(out.shape[0]):
        s_diag = s_prev_up[t]
        s_up = s_cur_up[t]
        s_left = s_prev_same[t]
        diag = prev_up[t]
        up = cur_up[t] if j - s_up >= lo - 1 else INF
        left = prev_same[t] if j - s_left <= hi - 1 else INF
        take_up = up < diag  # ties prefer the diagonal, then the vertical step
        best = up if take_up else diag
        s = s_up if take_up else s_diag
        take_left = left < best
        best = left if take_left else best
        s = s_left if take_left else s
        out[t] = d[t] + best
        s_out[t] = s


@numba.njit(cache=True)
def advance_columns(
    dist, frame0, row_offset, row_width, last_cell, length, row_lo, row_hi, gate, col, col_start,
    out_score, out_start
):  # pragma: no cover - compiled
    """Advance every template's running column over a block of stream frames.

    Flat layout: templates sorted by length (longest first); row ``i`` holds the cells of the
    ``row_width[i]`` templates that have a row ``i``, at ``row_offset[i] .. + row_width[i]``, so
    cell ``(i, t)`` is ``row_offset[i] + t`` and ``(i-1, t)`` is ``row_offset[i-1] + t``.

    dist: (n, C) float32 local distances of the block's n frames to all C cells.
    frame0: index of the block's first frame (relative to the caller's base, < 2**31).
    row_offset, row_width: (R,) int64 layout; last_cell: (T,) int64 cell of each template's last
    row; length: (T,) int64 template lengths; row_lo, row_hi: (R,) int32 the warping band of each
    row (:func:`band`).
    gate: (n,) bool: False for a frame that is not speech: no path may cross it (every column is
    cleared) and its scores are +inf; its row of ``dist`` is not read.
    col: (2, C) float32 and col_start: (2, C) int32 running columns (state, in and out): row 0 is
    the current column (frame0 - 1), row 1 scratch. +inf where no path exists yet.
    out_score: (n, T) float32 normalised end scores; out_start: (n, T) int64 start frames.
    """
    n = dist.shape[0]
    rows = row_offset.shape[0]
    n_templates = last_cell.shape[0]
    p = 0
    for k in range(n):
        j = frame0 + k
        prev = col[p]
        sprev = col_start[p]
        cur = col[1 - p]
        scur = col_start[1 - p]
        if not gate[k]:
            cur[:] = INF
            scur[:] = j
            for t in range(n_templates):
                out_start[k, t] = j
                out_score[k, t] = INF
            p = 1 - p
            continue
        d = dist[k]
        for t in range(row_width[0]):
            cur[t] = d[t]
            scur[t] = j
        for i in range(1, rows):
            o = row_offset[i]
            ou = row_offset[i - 1]
            w = row_width[i]
            _advance_row(d[o : o + w], prev[ou : ou + w], cur[ou : ou + w], prev[o : o + w], cur[o : o + w],
                         sprev[ou : ou + w], scur[ou : ou + w], sprev[o : o + w], scur[o : o + w],
                         j, row_lo[i], row_hi[i])
        for t in range(n_templates):
            c = last_cell[t]
            out_start[k, t] = scur[c]
            out_score[k, t] = normalise(cur[c], scur[c], j, length[t])
        p = 1 - p
    if p == 1:
        col[0, :] = col[1]
        col_start[0, :] = col_start[1]
