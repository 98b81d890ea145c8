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
(word-level and contextual) are stacked in the runtime's template layout
(:meth:`kwsstream.matcher.TemplateLayout.from_lengths`) and multiplied with blocks of sentence
frames (BLAS; at most ``block_bytes`` of products, so memory is bounded by one layer's sentence
frames plus one block). Two matrix products per block serve the three normalisations
(:func:`product_passes`): centred frames times centred queries give ``center`` and, with rank-1
offsets, ``none`` (``x.q = xc.qc + xc.mu + mu.qc + mu.mu``, then scaled by the raw rows' inverse
norms); centred frames times centred queries weighted by ``1/sigma^2`` give ``zscore``. Computing
``none`` that way rather than from its own product of unit rows moves its distances by rounding
only (about 1e-6 on strongly anisotropic 256-wide frames, tested) and saves a third of the
stage's arithmetic (``eval/bench/eval_timing.py`` measures both); ``none`` scored alone
(``--normalizations none``) multiplies unit rows (``kwsstream.matcher.unit_rows``), so its
local distances are the runtime's own, ``Templates.distances``, number for number (tested).
Silent (all-zero) rows have distance exactly 1 either way. A numba kernel, parallel over
sentences, turns the products into distances a few frames at a time and advances the queries'
S-DTW columns over them: the distance matrix is never stored, only one block of products.
Float16 products are no option here: numpy has no float16 matrix product of its own (measured
about 100 times slower than float32 on AVX2), so float16 stays a storage format (the cache).

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
from kwsstream.matcher import EPS, TemplateLayout, unit_rows

NORMALIZATIONS = ("none", "center", "zscore")
DEFAULT_BLOCK_BYTES = 256 * 2**20
"""Bytes of one block of query × sentence dot products (float32)."""
CHUNK_FRAMES = 16
"""Sentence frames whose distances are formed at a time (they stay in cache for the kernel)."""
SIGMA_FLOOR = 1e-6
"""Standard deviations below this (dead dimensions) are raised to it before dividing."""


@dataclass(frozen=True)
class RankOptions:
    """Attributes:
        normalizations: which of :data:`NORMALIZATIONS` to score.
        block_bytes: bytes of one block of dot products (memory bound of the stage).
        share_products: ``none`` read from ``center``'s products (one matrix product fewer per
            block, see :func:`product_passes`); False: one product per normalisation.
    """

    normalizations: tuple[str, ...] = NORMALIZATIONS
    block_bytes: int = DEFAULT_BLOCK_BYTES
    share_products: bool = True


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


def _inverse_norms(x: np.ndarray, weight: np.ndarray | None = None, zero_rows: float | None = None) -> np.ndarray:
    """``1 / max(|x|, EPS)`` per row, as ``kwsstream.matcher.unit_rows`` scales rows; rows shorter
    than ``EPS`` get ``zero_rows`` instead when given (0: their distances are exactly 1)."""
    norms = _norms(x, weight)
    inverse = 1.0 / np.maximum(norms, EPS)
    if zero_rows is not None:
        inverse[norms < EPS] = zero_rows
    return inverse.astype(np.float32)


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


def product_passes(wanted: Sequence[str], share: bool = True) -> list[tuple[str, tuple[str, ...]]]:
    """The matrix products of one block: ``(what is multiplied, normalisations read from it)``.

    ``unit``: unit rows (``none`` alone, the runtime's own products); ``centred``: centred rows,
    read as ``center`` and, with ``share``, as ``none`` too (``x.q = xc.qc + xc.mu + mu.qc + mu.mu``:
    rank-1 offsets, exact up to rounding); ``weighted``: centred rows against centred queries
    weighted by ``1/sigma^2`` (``zscore``). Without ``share`` each normalisation has its own.
    """
    passes = []
    if "center" in wanted:
        passes.append(("centred", ("none", "center") if share and "none" in wanted else ("center",)))
    if "none" in wanted and not any("none" in norms for _, norms in passes):
        passes.insert(0, ("unit", ("none",)))
    if "zscore" in wanted:
        passes.append(("weighted", ("zscore",)))
    return passes


class _Terms:
    """The query side of each product pass, in layout order: the vectors multiplied and the
    cells' offsets and scales in ``1 - (p + frame_add + cell_add) * frame_scale * cell_scale``."""

    def __init__(self, cells: np.ndarray, stats: CorpusStats, passes: Sequence[tuple[str, tuple[str, ...]]]):
        self.stats, self.passes = stats, passes
        self.inv_var = (1.0 / stats.std.astype(np.float64) ** 2).astype(np.float32)
        self.mean64 = stats.mean.astype(np.float64)
        self.mean_square = float(self.mean64 @ self.mean64)
        zeros, ones = np.zeros(len(cells), np.float32), np.ones(len(cells), np.float32)
        names = {name for name, _ in passes}
        self.vectors, self.cell = {}, {}
        if "unit" in names:  # the runtime's unit rows: distances exactly Templates.distances'
            self.vectors["unit"], self.cell["none"] = unit_rows(cells), (zeros, ones)
        centred = cells - stats.mean
        if "centred" in names:
            self.vectors["centred"], self.cell["center"] = centred, (zeros, _inverse_norms(centred))
            if "none" not in self.cell:  # x.q from xc.qc: the query's offset mu.qc, its raw norm
                self.cell["none"] = ((centred @ self.mean64).astype(np.float32), _inverse_norms(cells, zero_rows=0.0))
        if "weighted" in names:
            self.vectors["weighted"] = centred * self.inv_var
            self.cell["zscore"] = (zeros, _inverse_norms(centred, self.inv_var))

    def block(self, frames: np.ndarray) -> _Block:
        return _Block(self, frames)


class _Block:
    """The sentence side of one block of frames."""

    def __init__(self, terms: _Terms, frames: np.ndarray):
        self.terms, self.frames = terms, frames
        self.centred = frames - terms.stats.mean if terms.vectors.keys() - {"unit"} else None

    def products(self, name: str, out: np.ndarray) -> None:
        """Fill ``out`` (frames, cells) with the dot products of pass ``name``."""
        left = unit_rows(self.frames) if name == "unit" else self.centred
        np.matmul(left, self.terms.vectors[name].T, out=out)

    def frame_terms(self, name: str, norm: str) -> tuple[np.ndarray, np.ndarray]:
        """The frames' offsets and scales of ``norm`` read from the products of pass ``name``."""
        zeros = np.zeros(len(self.frames), np.float32)
        if name == "unit":
            return zeros, np.ones(len(self.frames), np.float32)
        if norm == "none":  # x.q = xc.qc + (xc.mu + mu.mu) + mu.qc; scaled by the raw norms
            offset = self.centred @ self.terms.mean64 + self.terms.mean_square
            return offset.astype(np.float32), _inverse_norms(self.frames, zero_rows=0.0)
        weight = self.terms.inv_var if norm == "zscore" else None
        return zeros, _inverse_norms(self.centred, weight)


def local_distances(norm: str, queries: Sequence[np.ndarray], frames: np.ndarray, stats: CorpusStats,
                    share: bool = False) -> np.ndarray:
    """The local distances the ranking kernel forms for ``norm``: ``(frames, cells)`` float32, the
    cells of ``queries`` in the runtime's layout (:meth:`TemplateLayout.from_lengths`). For
    ``none`` alone (``share=False``) they are ``kwsstream.matcher.Templates.distances`` (tested);
    with ``share``, ``none`` as read from the centred products. For tests and checks."""
    tpl = TemplateLayout.from_lengths([len(q) for q in queries])
    wanted = ("none", "center") if share else (norm,)
    passes = [(name, norms) for name, norms in product_passes(wanted, share) if norm in norms]
    terms = _Terms(np.concatenate(queries).astype(np.float32)[tpl.cell_rows()], stats, passes)
    products = np.empty((len(frames), tpl.n_cells), np.float32)
    block = terms.block(np.asarray(frames, np.float32))
    block.products(passes[0][0], products)
    frame_add, frame_scale = block.frame_terms(passes[0][0], norm)
    cell_add, cell_scale = terms.cell[norm]
    return np.float32(1.0) - (products + frame_add[:, None] + cell_add[None, :]) * frame_scale[:, None] * cell_scale[None, :]


def rank_queries(query_sets: Sequence[tuple[np.ndarray, np.ndarray]], sentences: np.ndarray,
                 s_off: np.ndarray, stats: CorpusStats, options: RankOptions = RankOptions(),
                 clock: StageClock | None = None, progress: str | None = None) -> list[dict[str, np.ndarray]]:
    """Score every query of every set against every sentence.

    Args:
        query_sets: ``(frames (R_k, dim) float32, offsets (Q_k + 1,) int64)`` per representation.
        sentences: ``(N, dim)`` float32 frames of all searched sentences; ``s_off`` their offsets.
        stats: corpus statistics for ``center`` and ``zscore``.
        options: normalisations and memory budget.
        clock: accumulates ``distances`` and ``dtw`` seconds.
        progress: a progress bar's title (tqdm, on stderr when it is a terminal); ``None``: no bar.

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
    wanted = [n for n in NORMALIZATIONS if n in options.normalizations]
    tpl = TemplateLayout.from_lengths(lengths)
    queries = np.concatenate([f for f, _ in query_sets]).astype(np.float32, copy=False)[tpl.cell_rows()]
    passes = product_passes(wanted, options.share_products)
    terms = _Terms(queries, stats, passes)
    del queries
    n_sent = len(s_off) - 1
    scores = {n: np.empty((len(lengths), n_sent), np.float32) for n in wanted}
    blocks = _blocks(s_off, tpl.n_cells, options.block_bytes)
    buffer = np.empty(tpl.n_cells * max(int(s_off[b] - s_off[a]) for a, b in blocks), np.float32)
    t = clock.add("distances", t)
    from tqdm import tqdm

    bar = tqdm(total=n_sent * len(wanted), desc=progress, unit="sent", disable=progress is None or None,
               leave=False)
    for a, b in blocks:
        f0, f1 = int(s_off[a]), int(s_off[b])
        local = (s_off[a:b + 1] - f0).astype(np.int64)
        products = buffer[:tpl.n_cells * (f1 - f0)].reshape(f1 - f0, tpl.n_cells)
        block = terms.block(sentences[f0:f1])
        for name, norms in passes:
            block.products(name, products)
            for norm in norms:
                frame_add, frame_scale = block.frame_terms(name, norm)
                cell_add, cell_scale = terms.cell[norm]
                t = clock.add("distances", t)
                best = np.empty((tpl.n_templates, b - a), np.float32)
                score_block(products, local, frame_add, frame_scale, cell_add, cell_scale,
                            tpl.row_offset, tpl.row_width, tpl.last_cell, tpl.length, tpl.row_lo, tpl.row_hi, best)
                scores[norm][tpl.order, a:b] = best
                bar.update(b - a)
                t = clock.add("dtw", t)
    bar.close()
    out, first = [], 0
    for _, off in query_sets:
        count = len(off) - 1
        out.append({n: np.ascontiguousarray(s[first:first + count]) for n, s in scores.items()})
        first += count
    return out
