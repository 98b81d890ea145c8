"""From running match scores to detections: threshold, local minimum, one event per spoken word.

Per keyword, frame by frame, the score is the best (lowest) normalised S-DTW cost of any of its
templates at that frame (:func:`best_per_keyword`). A small state machine per keyword
(:class:`DetectorState`, kernel :func:`_detect`):

* **idle** — when the score falls below the keyword's threshold, a *candidate* opens with that
  score, the start and end frame of its match and its template.
* **candidate** — a lower score replaces the candidate; once ``lookahead`` frames have passed
  with no lower score, the candidate is a local minimum and is emitted as a detection.
* **after a detection** — the keyword stays silent until ``refractory`` frames after the
  detection's end, and for good for every match that *starts* at or before that end: the same
  spoken word, matched again by a path that ran on past it, never gives a second event.

The look-ahead is the detector's latency. ``flush`` emits an open candidate at the end of a stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .errors import UsageError

EVENT_FIELDS = 5
"""Columns of an event row: keyword, template (layout position), start frame, end frame, cost."""


@dataclass(frozen=True)
class DetectorOptions:
    """Attributes:
    lookahead: seconds a candidate must stay the minimum before it fires (latency).
    refractory: seconds a keyword stays silent after the end of its detection.
    """

    lookahead: float = 0.25
    refractory: float = 0.5

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lookahead) and np.isfinite(self.refractory)) or self.lookahead < 0 or self.refractory < 0:
            raise UsageError(f"lookahead ({self.lookahead}) and refractory ({self.refractory}) must be finite and >= 0")


@numba.njit(cache=True)
def best_per_keyword(score, start, keyword_of, n_keywords):  # pragma: no cover - compiled
    """Per frame and keyword, the best of its templates.

    score, start: (n, T) per-template normalised costs and start frames; keyword_of: (T,).
    Returns (score (n, K) float32, start (n, K) int64, template (n, K) int64: the layout position
    of the best template, -1 where none has a finite score).
    """
    n, n_t = score.shape
    k_score = np.full((n, n_keywords), np.inf, np.float32)
    k_start = np.zeros((n, n_keywords), np.int64)
    k_tpl = np.full((n, n_keywords), -1, np.int64)
    for r in range(n):
        for t in range(n_t):
            k = keyword_of[t]
            if score[r, t] < k_score[r, k]:
                k_score[r, k] = score[r, t]
                k_start[r, k] = start[r, t]
                k_tpl[r, k] = t
    return k_score, k_start, k_tpl


@numba.njit(cache=True)
def _detect(score, start, template, frame0, threshold, lookahead, refractory,
            cand_cost, cand_start, cand_end, cand_tpl, quiet_until, last_end, out):  # pragma: no cover
    """Run the per-keyword state machines over a block of per-keyword scores.

    score, start, template: (n, K) from :func:`best_per_keyword`; frame0: stream index of row 0;
    threshold: (K,) float32.
    State, (K,) each, read and written: cand_cost float32 (+inf: no candidate), cand_start,
    cand_end, cand_tpl int64 (the open candidate); quiet_until int64 (no candidate before this
    frame: refractory); last_end int64 (end frame of the last detection: a match must start after
    it).
    out: (capacity, EVENT_FIELDS) float64 events written (keyword, template, start, end, cost).
    Returns the number of events written.
    """
    n, n_k = score.shape
    n_out = 0
    for r in range(n):
        j = frame0 + r
        for k in range(n_k):
            s = score[r, k]
            if (j >= quiet_until[k] and start[r, k] > last_end[k] and s < threshold[k]
                    and s < cand_cost[k]):
                cand_cost[k] = s
                cand_start[k] = start[r, k]
                cand_end[k] = j
                cand_tpl[k] = template[r, k]
            if cand_cost[k] < np.inf and j - cand_end[k] >= lookahead:
                out[n_out, 0] = k
                out[n_out, 1] = cand_tpl[k]
                out[n_out, 2] = cand_start[k]
                out[n_out, 3] = cand_end[k]
                out[n_out, 4] = cand_cost[k]
                n_out += 1
                quiet_until[k] = cand_end[k] + refractory + 1
                last_end[k] = cand_end[k]
                cand_cost[k] = np.inf
    return n_out


class DetectorState:
    """One stream's detector state, for keywords whose thresholds are fixed when the stream is
    made. Feed it per-keyword scores (:func:`best_per_keyword`)."""

    def __init__(self, thresholds: np.ndarray, frame_rate: float, options: DetectorOptions):
        self.thresholds = np.array(thresholds, np.float32)  # its own copy: a stream may move them (adaptation)
        if self.thresholds.ndim != 1:
            raise UsageError(f"thresholds must be one value per keyword, got shape {self.thresholds.shape}")
        self.lookahead = int(round(options.lookahead * frame_rate))
        self.refractory = int(round(options.refractory * frame_rate))
        self.reset()

    @property
    def n_keywords(self) -> int:
        return len(self.thresholds)

    def reset(self) -> None:
        n_k = self.n_keywords
        self.cand_cost = np.full(n_k, np.inf, np.float32)
        self.cand_start = np.zeros(n_k, np.int64)
        self.cand_end = np.zeros(n_k, np.int64)
        self.cand_tpl = np.zeros(n_k, np.int64)
        self.quiet_until = np.zeros(n_k, np.int64)
        self.last_end = np.full(n_k, -1, np.int64)

    def push(self, score: np.ndarray, start: np.ndarray, template: np.ndarray, frame0: int) -> np.ndarray:
        """Feed a block of per-keyword scores ``(n, K)``; returns the events completed, ``(m, 5)``
        float64 rows of (keyword, template, start frame, end frame, cost)."""
        if len(score) == 0:
            return np.zeros((0, EVENT_FIELDS))
        if score.shape[1] != self.n_keywords:
            raise UsageError(f"scores for {score.shape[1]} keywords, detector has {self.n_keywords}")
        out = np.empty((len(score) * self.n_keywords + self.n_keywords, EVENT_FIELDS))
        n = _detect(np.ascontiguousarray(score, np.float32), np.ascontiguousarray(start, np.int64),
                    np.ascontiguousarray(template, np.int64), int(frame0), self.thresholds, self.lookahead,
                    self.refractory, self.cand_cost, self.cand_start, self.cand_end, self.cand_tpl,
                    self.quiet_until, self.last_end, out)
        return out[:n]

    def flush(self) -> np.ndarray:
        """End of stream: emit the open candidates (in order of their end frames)."""
        open_k = np.flatnonzero(np.isfinite(self.cand_cost))
        rows = [(k, self.cand_tpl[k], self.cand_start[k], self.cand_end[k], self.cand_cost[k]) for k in open_k]
        for k in open_k:
            self.last_end[k] = self.cand_end[k]
        self.cand_cost[:] = np.inf
        out = np.array(rows, np.float64).reshape(-1, EVENT_FIELDS)
        return out[np.argsort(out[:, 3], kind="stable")]


def detect_offline(score: np.ndarray, start: np.ndarray, template: np.ndarray, thresholds: np.ndarray,
                   frame_rate: float, options: DetectorOptions = DetectorOptions()) -> np.ndarray:
    """The detector over a whole recorded score trace at once (what a stream would have emitted
    with these thresholds): the events of :meth:`DetectorState.push` and :meth:`flush`."""
    state = DetectorState(thresholds, frame_rate, options)
    rows = state.push(score, start, template, 0)
    return np.concatenate([rows, state.flush()])
