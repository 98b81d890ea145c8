"""The ranking stage: every query against every searched sentence with the runtime's S-DTW.

The score of a query in a sentence is the runtime's: the cost of the best subsequence path of
the query in the sentence, normalised as the runtime normalises it (``2 D / (M + n)``, see
``kwsstream/sdtw.py``), on local distances ``1 - cos``; the lower, the better the match. It is
computed by the runtime's own incremental kernel, ``sdtw.advance_columns``: the queries are laid
out as the matcher lays out templates (``kwsstream.matcher.Templates``) and each sentence is
streamed through them, its score being the best end score over its frames - the same number as
``sdtw.best_match`` on the query × sentence distance matrix (tested), and the same code that
runs live, vectorised over queries (about 15 times faster here than ``best_match`` per pair).

Feature normalisations (the study's "does fixing anisotropy help?"), with the corpus statistics
of the searched sentences' frames (mean ``mu``, standard deviation ``sigma`` per dimension,
:func:`corpus_stats`), applied to queries and sentences alike:

=============  =========================================
``none``       the frames as the encoder gives them
``center``     ``x - mu``
``zscore``     ``(x - mu) / sigma``
=============  =========================================

How it is computed: the query frames of every representation that shares the sentences
(word-level and contextual) are stacked, and multiplied with blocks of sentence frames (BLAS;
at most ``block_bytes`` of products, so memory is bounded by one layer's sentence frames plus one
block). Two products per block serve the three normalisations: one on centred frames
(``center``, and ``none`` by adding back the mean's terms,
``q.s = (q-mu).(s-mu) + (q-mu).mu + mu.(s-mu) + mu.mu``, exact in float32 for wav2vec2's
anisotropic frames), one on centred frames weighted by ``1/sigma^2`` (``zscore``). A numba kernel,
parallel over sentences, turns the products into distances a few frames at a time and advances
the queries' S-DTW columns over them.

One property of the runtime's score to know when comparing numbers: the normalisation uses the
length of the *cheapest* path, so when two paths of different lengths tie exactly in cost (a run
of identical frames, e.g. digital silence), a last-bit difference in the distances can pick the
other path and move the score by several percent. Real recordings practically never tie.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numba
import numpy as np

from kwsstream import sdtw
from kwsstream.errors import UsageError
from kwsstream.matcher import EPS, Templates

NORMALIZATIONS = ("none", "center", "zscore")
DEFAULT_BLOCK_BYTES = 256 * 2**20
"""Bytes of one block of query × sentence dot products (float32)."""
RESOLVABLE = 1e-4
"""See :func:`_raw_inverse_norms`."""
CHUNK_FRAMES = 16
"""Sentence frames whose distances are formed at a time (they stay in cache for the kernel)."""
SIGMA_FLOOR = 1e-6
"""Standard deviations below this (dead dimensions) are raised to it before dividing."""


@dataclass(frozen=True)
class RankOptions:
    """Attributes:
        normalizations: which of :data:`NORMALIZATIONS` to score.
        block_bytes: bytes of one block of dot products (memory bound of the stage).
    """

    normalizations: tuple[str, ...] = NORMALIZATIONS
    block_bytes: int = DEFAULT_BLOCK_BYTES


@dataclass
class StageClock:
    """Seconds spent per stage (``distances``: products, norms and offsets; ``dtw``: the kernel,
    which also turns products into distances)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now


@dataclass(frozen=True)
class CorpusStats:
    """Per-dimension mean and standard deviation of the searched sentences' frames."""

    mean: np.ndarray
    std: np.ndarray


def corpus_stats(frames: np.ndarray) -> CorpusStats:
    """Mean and standard deviation per dimension of ``frames`` (accumulated in float64)."""
    mean = frames.mean(axis=0, dtype=np.float64)
    var = np.zeros_like(mean)
    for lo in range(0, len(frames), 65536):
        var += ((frames[lo:lo + 65536] - mean) ** 2).sum(axis=0)
    std = np.sqrt(var / max(len(frames), 1))
    return CorpusStats(mean.astype(np.float32), np.maximum(std, SIGMA_FLOOR).astype(np.float32))


@numba.njit(parallel=True, cache=True)
def score_block(products, s_off, frame_add, frame_scale, cell_add, cell_scale,
                row_offset, row_width, last_cell, length, row_lo, row_hi, out):  # pragma: no cover - compiled
    """Best S-DTW score of every query (template) in every sentence of one block, parallel over
    sentences, each sentence streamed through the runtime's ``sdtw.advance_columns``.

    products: (F, C) float32 dot products of the block's F sentence frames with the C template
    cells (flat layout of ``kwsstream.matcher.Templates``); s_off: (S + 1,) int64 offsets of each
    sentence's frames in ``products``. The local distance of frame f and cell c is
    ``1 - (products[f, c] + frame_add[f] + cell_add[c]) * frame_scale[f] * cell_scale[c]``.
    row_offset, row_width, last_cell, length, row_lo, row_hi: the layout and warping band (see
    ``sdtw.advance_columns``).
    out: (T, S) float32, the minimum over end frames of the normalised end score.
    """
    n_cells = products.shape[1]
    n_templates = last_cell.shape[0]
    one = np.float32(1.0)
    for s in numba.prange(s_off.shape[0] - 1):
        f0 = s_off[s]
        n = s_off[s + 1] - f0
        col = np.full((2, n_cells), np.inf, np.float32)
        col_start = np.zeros((2, n_cells), np.int32)
        best = np.full(n_templates, np.inf, np.float32)
        dist = np.empty((CHUNK_FRAMES, n_cells), np.float32)
        score = np.empty((CHUNK_FRAMES, n_templates), np.float32)
        start = np.empty((CHUNK_FRAMES, n_templates), np.int64)
        gate = np.ones(CHUNK_FRAMES, np.bool_)
        for k0 in range(0, n, CHUNK_FRAMES):
            k1 = min(n, k0 + CHUNK_FRAMES)
            for k in range(k1 - k0):
                f = f0 + k0 + k
                fa = frame_add[f]
                fs = frame_scale[f]
                for c in range(n_cells):
                    dist[k, c] = one - (products[f, c] + fa + cell_add[c]) * fs * cell_scale[c]
            sdtw.advance_columns(dist[:k1 - k0], k0, row_offset, row_width, last_cell, length, row_lo, row_hi,
                                 gate[:k1 - k0], col, col_start, score[:k1 - k0], start[:k1 - k0])
            for k in range(k1 - k0):
                for t in range(n_templates):
                    best[t] = min(best[t], score[k, t])
        out[:, s] = best


def _norms(x: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    squares = x * x if weight is None else x * x * weight
    return np.sqrt(squares.sum(axis=1, dtype=np.float64))


def _inverse_norms(x: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """``1 / max(|x|, EPS)`` per row, as ``kwsstream.matcher.unit_rows`` scales rows."""
    return (1.0 / np.maximum(_norms(x, weight), EPS)).astype(np.float32)


def _raw_inverse_norms(raw: np.ndarray, centred: np.ndarray) -> np.ndarray:
    """Row scales for ``none``, whose dot products are derived from the centred ones: a frame
    whose norm is below :data:`RESOLVABLE` of its centred norm (digital silence: an all-zero
    MFCC frame) has no direction that float32 can recover that way, and is treated as the
    runtime treats an all-zero frame (scale 0: cosine 0, distance 1)."""
    norm, centred_norm = _norms(raw), _norms(centred)
    scale = 1.0 / np.maximum(norm, EPS)
    scale[norm < np.maximum(EPS, RESOLVABLE * centred_norm)] = 0.0
    return scale.astype(np.float32)


def _blocks(s_off: np.ndarray, cells: int, block_bytes: int) -> list[tuple[int, int]]:
    """Consecutive sentence ranges ``[a, b)`` whose frames × ``cells`` products fit the budget
    (a sentence longer than the budget gets a block of its own)."""
    width = max(1, block_bytes // (4 * max(cells, 1)))
    blocks, a = [], 0
    for b in range(1, len(s_off)):
        if s_off[b] - s_off[a] > width and b - 1 > a:
            blocks.append((a, b - 1))
            a = b - 1
    if a < len(s_off) - 1:
        blocks.append((a, len(s_off) - 1))
    return blocks


@dataclass(frozen=True)
class _Layout:
    """The runtime's flat template layout for the stacked queries, and where each cell's frame
    is among the query rows (``rows``)."""

    templates: Templates
    rows: np.ndarray


def _layout(lengths: np.ndarray) -> _Layout:
    """Lay the queries out as the runtime's matcher lays templates out (longest first)."""
    templates = Templates([np.ones((int(m), 1), np.float32) for m in lengths], list(range(len(lengths))))
    q_off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    rows = np.empty(templates.n_cells, np.int64)
    for p, q in enumerate(templates.order):
        rows[templates.row_offset[:lengths[q]] + p] = q_off[q] + np.arange(lengths[q])
    return _Layout(templates, rows)


def rank_queries(query_sets: Sequence[tuple[np.ndarray, np.ndarray]], sentences: np.ndarray,
                 s_off: np.ndarray, stats: CorpusStats, options: RankOptions = RankOptions(),
                 clock: StageClock | None = None) -> list[dict[str, np.ndarray]]:
    """Score every query of every set against every sentence.

    Args:
        query_sets: ``(frames (R_k, dim) float32, offsets (Q_k + 1,) int64)`` per representation.
        sentences: ``(N, dim)`` float32 frames of all searched sentences; ``s_off`` their offsets.
        stats: corpus statistics for ``center`` and ``zscore``.
        options: normalisations and memory budget.
        clock: accumulates ``distances`` and ``dtw`` seconds.

    Returns:
        per query set, ``{normalisation: (Q_k, S) float32 scores}`` (lower is better).

    Raises:
        UsageError: an unknown normalisation or a query/sentence without frames.
    """
    unknown = [n for n in options.normalizations if n not in NORMALIZATIONS]
    if unknown:
        raise UsageError(f"unknown normalisation(s) {unknown} (known: {list(NORMALIZATIONS)})")
    clock = clock or StageClock()
    t = time.perf_counter()
    lengths = np.concatenate([np.diff(off) for _, off in query_sets]).astype(np.int64)
    if np.any(lengths < 1) or np.any(np.diff(s_off) < 1):
        raise UsageError("every query and every sentence needs at least one frame")
    wanted = [n for n in NORMALIZATIONS if n in options.normalizations]  # zscore last: it reuses the buffer
    layout = _layout(lengths)
    tpl = layout.templates
    mean, inv_var = stats.mean, (1.0 / stats.std.astype(np.float64) ** 2).astype(np.float32)
    queries = np.concatenate([f for f, _ in query_sets]).astype(np.float32, copy=False)[layout.rows]
    cells = queries - mean
    zeros = np.zeros(len(cells), np.float32)
    cell = {"none": ((cells @ mean).astype(np.float32), _raw_inverse_norms(queries, cells)),
            "center": (zeros, _inverse_norms(cells)), "zscore": (zeros, _inverse_norms(cells, inv_var))}
    weighted = cells * inv_var if "zscore" in wanted else None
    del queries
    n_sent = len(s_off) - 1
    scores = {n: np.empty((len(lengths), n_sent), np.float32) for n in wanted}
    blocks = _blocks(s_off, len(cells), options.block_bytes)
    buffer = np.empty(len(cells) * max(int(s_off[b] - s_off[a]) for a, b in blocks), np.float32)
    t = clock.add("distances", t)
    for a, b in blocks:
        f0, f1 = int(s_off[a]), int(s_off[b])
        sc = sentences[f0:f1] - mean
        local = (s_off[a:b + 1] - f0).astype(np.int64)
        products = buffer[:len(cells) * (f1 - f0)].reshape(f1 - f0, len(cells))
        if "none" in wanted or "center" in wanted:
            np.matmul(sc, cells.T, out=products)
        for norm in wanted:
            if norm == "none":
                frame_add = (sc @ mean + np.float32(mean @ mean)).astype(np.float32)
                frame_scale = _raw_inverse_norms(sentences[f0:f1], sc)
            elif norm == "center":
                frame_add, frame_scale = np.zeros(f1 - f0, np.float32), _inverse_norms(sc)
            else:
                np.matmul(sc, weighted.T, out=products)
                frame_add, frame_scale = np.zeros(f1 - f0, np.float32), _inverse_norms(sc, inv_var)
            t = clock.add("distances", t)
            best = np.empty((tpl.n_templates, b - a), np.float32)
            score_block(products, local, frame_add, frame_scale, cell[norm][0], cell[norm][1],
                        tpl.row_offset, tpl.row_width, tpl.last_cell, tpl.length, tpl.row_lo, tpl.row_hi, best)
            scores[norm][tpl.order, a:b] = best
            t = clock.add("dtw", t)
    out, first = [], 0
    for _, off in query_sets:
        count = len(off) - 1
        out.append({n: np.ascontiguousarray(s[first:first + count]) for n, s in scores.items()})
        first += count
    return out
