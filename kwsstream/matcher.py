"""All templates of all keywords in one flat layout, matched against a stream by one kernel call
per block of frames (see sdtw.py for the recurrence and the layout).

:class:`Templates` is built once from a keyword set and shared read-only by every stream;
:class:`MatcherState` holds one stream's running columns — memory that does not grow with the
stream. Frames are processed in fixed blocks of ``block`` frames aligned to the stream (the last,
shorter block at ``flush``), so the floating-point result does not depend on how the audio was
chunked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import sdtw
from .errors import UsageError

EPS = 1e-8
MAX_BLOCK_CELLS = 4_000_000
"""Upper bound on frames × cells of one distance block (bounded memory with many templates)."""
REBASE_FRAMES = 2**30
"""Start frames are int32 in the kernel (faster vector code) and counted from a base that moves
forward by this much when the stream gets that long (every ~124 days of MFCC frames)."""
INT32_LIMIT = 2**31 - 1
"""A block whose last frame, counted from the base, would reach this moves the base first."""


def limit_blas_threads() -> None:
    """Limit BLAS to one thread for the rest of the process. The matcher does many small matrix
    products (a block of frames x the templates); BLAS threads cost far more than they give there
    (measured: 4x slower on a busy 2-core machine); onnxruntime keeps its own thread pool. The CLI
    calls this; it changes process-wide state, so the library never does it by itself."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (an all-zero row stays zero: cosine 0, distance 1)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, EPS)


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - cos`` between the rows of ``a`` (M, D) and of ``b`` (N, D): one matrix product."""
    return (1.0 - unit_rows(a) @ unit_rows(b).T).astype(np.float32)


class TemplateLayout:
    """Where each template's frames sit in the flat, length-sorted layout of
    :func:`sdtw.advance_columns` (longest first), without the frames: what the kernel needs
    besides distances. :class:`Templates` is a layout plus the unit-norm frames; the eval's
    ranking (``eval/rank.py``) lays its queries out with :meth:`from_lengths`.

    Attributes:
        order: position ``p`` in the layout holds template ``order[p]``.
        length: frames of the template at each position.
        keyword_of: the keyword index of the template at each position.
        row_width, row_offset: cells in row ``i`` (templates longer than ``i``) and where the
            row starts; cell ``row_offset[i] + p`` is frame ``i`` of position ``p``.
        n_cells, last_cell: cells in all, and each position's last cell.
        row_lo, row_hi: the warping band per row (:func:`sdtw.band`).
    """

    def __init__(self, lengths: Sequence[int], keyword_of: Sequence[int] | None = None, warp: float = sdtw.MAX_WARP):
        lengths = np.asarray(lengths, np.int64)
        if len(lengths) == 0:
            raise UsageError("no templates to match: enroll a keyword first")
        keyword_of = np.arange(len(lengths)) if keyword_of is None else keyword_of
        if len(lengths) != len(keyword_of):
            raise UsageError(f"{len(lengths)} templates but {len(keyword_of)} keyword indices")
        if lengths.min() < 1:
            raise UsageError("a template has no frames")
        order = np.argsort(-lengths, kind="stable")  # longest first
        self.order = order
        self.length = lengths[order]
        self.keyword_of = np.asarray(keyword_of, np.int64)[order]
        n_rows = int(self.length[0])
        self.row_width = np.array([(self.length > i).sum() for i in range(n_rows)], np.int64)
        self.row_offset = np.concatenate([[0], np.cumsum(self.row_width)[:-1]]).astype(np.int64)
        self.n_cells = int(self.row_width.sum())
        self.last_cell = self.row_offset[self.length - 1] + np.arange(len(order))
        self.row_lo, self.row_hi = sdtw.band(n_rows, warp)

    @classmethod
    def from_lengths(cls, lengths: Sequence[int], warp: float = sdtw.MAX_WARP) -> TemplateLayout:
        """The layout of templates of these lengths (each its own keyword)."""
        return cls(lengths, None, warp)

    @property
    def n_templates(self) -> int:
        return len(self.length)

    def cell_rows(self) -> np.ndarray:
        """``(n_cells,)``: for each cell, the row of its frame among the templates' frames
        stacked in their original order (template 0's frames first)."""
        lengths = self.length[np.argsort(self.order)]
        first = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        rows = np.empty(self.n_cells, np.int64)
        for p, t in enumerate(self.order):
            rows[self.row_offset[: self.length[p]] + p] = first[t] + np.arange(self.length[p])
        return rows


class Templates(TemplateLayout):
    """Templates in the flat, length-sorted layout of :func:`sdtw.advance_columns`
    (:class:`TemplateLayout`) with their unit-norm frames, one row per cell.

    Args:
        templates: each ``(M_t, dim)`` float32.
        keyword_of: the keyword index of each template.
        warp: a match spans between ``1/warp`` and ``warp`` times its template's length
            (:func:`sdtw.band`).
    """

    def __init__(self, templates: Sequence[np.ndarray], keyword_of: Sequence[int], warp: float = sdtw.MAX_WARP):
        if len(templates) == 0:
            raise UsageError("no templates to match: enroll a keyword first")
        dims = {t.shape[1] for t in templates}
        if len(dims) != 1:
            raise UsageError(f"templates of different dimensions {sorted(dims)}")
        super().__init__([len(t) for t in templates], keyword_of, warp)
        self.dim = dims.pop()
        stacked = np.concatenate([unit_rows(t) for t in templates])
        self.cells = np.ascontiguousarray(stacked[self.cell_rows()])  # unit-norm template frames, one row per cell

    def distances(self, frames: np.ndarray) -> np.ndarray:
        """``(n, n_cells)`` cosine distances of stream frames to every template cell."""
        prod = unit_rows(frames) @ self.cells.T
        return np.subtract(np.float32(1.0), prod, out=prod)


class MatcherState:
    """One stream's running S-DTW columns for every template."""

    def __init__(self, templates: Templates, block: int):
        if block < 1:
            raise UsageError(f"block={block} frames must be at least 1")
        self.templates = templates
        self.block = int(min(block, max(1, MAX_BLOCK_CELLS // templates.n_cells)))
        self.reset()

    def reset(self) -> None:
        n = self.templates.n_cells
        self._col = np.full((2, n), np.inf, np.float32)
        self._col_start = np.zeros((2, n), np.int32)
        self._pending = np.zeros((0, self.templates.dim), np.float32)
        self._pending_gate = np.zeros(0, np.bool_)
        self.frames_done = 0  # stream index of the next frame to process
        self._base = 0  # stream index that the kernel's int32 start frames count from

    def _rebase(self) -> None:
        """Move the int32 start frames' origin forward (paths older than that are long dead)."""
        shift = REBASE_FRAMES
        self._col_start[:] = np.maximum(self._col_start.astype(np.int64) - shift, -(2**31)).astype(np.int32)
        self._base += shift

    def _run(self, frames: np.ndarray, gate: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        tpl = self.templates
        n = len(frames)
        score = np.empty((n, tpl.n_templates), np.float32)
        start = np.empty((n, tpl.n_templates), np.int64)
        frame0 = self.frames_done
        for b in range(0, n, self.block):
            blk, g = frames[b : b + self.block], gate[b : b + self.block]
            if frame0 + b + len(blk) - self._base >= INT32_LIMIT:
                self._rebase()
            # a block with no speech needs no distances: the kernel reads no row of a gated frame
            dist = tpl.distances(blk) if g.any() else np.empty((len(blk), tpl.n_cells), np.float32)
            sdtw.advance_columns(
                dist, frame0 + b - self._base, tpl.row_offset, tpl.row_width, tpl.last_cell,
                tpl.length, tpl.row_lo, tpl.row_hi, g, self._col, self._col_start,
                score[b : b + len(blk)], start[b : b + len(blk)],
            )
            start[b : b + len(blk)] += self._base  # this block's base: a later block may move it
        self.frames_done += n
        return score, start, frame0

    def push(self, frames: np.ndarray, gate: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int]:
        """Match new frames; ``gate`` (n,) bool marks the frames that are speech (default: all).
        Returns ``(score (n, T), start (n, T), frame0)`` for the frames of the complete blocks
        now processed (``frame0``: stream index of the first); templates are in layout order
        (``templates.order``). A gated frame breaks every path and scores +inf."""
        gate = np.ones(len(frames), np.bool_) if gate is None else np.asarray(gate, np.bool_)
        if len(gate) != len(frames):
            raise UsageError(f"{len(gate)} gate flags for {len(frames)} frames")
        if len(self._pending):
            frames = np.concatenate([self._pending, frames])
            gate = np.concatenate([self._pending_gate, gate])
        n_full = (len(frames) // self.block) * self.block
        self._pending, self._pending_gate = frames[n_full:], gate[n_full:]
        return self._run(frames[:n_full], gate[:n_full])

    def flush(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Match the frames still waiting for a complete block."""
        rest, gate = self._pending, self._pending_gate
        self._pending, self._pending_gate = rest[:0], gate[:0]
        return self._run(rest, gate)
