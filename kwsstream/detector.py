"""From running match scores to detections: threshold, local minimum, refractory period.

Per keyword, frame by frame, the score is the best (lowest) normalised S-DTW cost of any of its
templates at that frame. A small state machine per keyword:

* **idle** — when the score falls below the keyword's threshold, a *candidate* opens with that
  score, its start and end frame.
* **candidate** — a lower score replaces the candidate; once ``lookahead`` frames have passed
  with no lower score, the candidate is a local minimum and is emitted as a detection.
* **refractory** — after a detection the keyword stays silent until ``refractory`` frames after
  the detection's end (one spoken keyword, one event).

The look-ahead is the detector's latency. ``flush`` emits an open candidate at the end of a stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .errors import UsageError

EVENT_FIELDS = 5  # keyword, template (layout position), start frame, end frame, cost bits


@dataclass(frozen=True)
class DetectorOptions:
    """Attributes:
    lookahead: seconds a candidate must stay the minimum before it fires (latency).
    refractory: seconds a keyword stays silent after the end of its detection.
    """

    lookahead: float = 0.25
    refractory: float = 0.5

    def __post_init__(self) -> None:
        if self.lookahead < 0 or self.refractory < 0:
            raise UsageError(f"lookahead ({self.lookahead}) and refractory ({self.refractory}) must be >= 0")


@numba.njit(cache=True)
def _detect(score, start, frame0, keyword_of, threshold, lookahead, refractory, state_f, state_i, out):  # pragma: no cover
    """Run the per-keyword state machines over a block.

    score, start: (n, T) per-template normalised costs and start frames; frame0: stream index of
    row 0; keyword_of: (T,) keyword of each template; threshold: (K,).
    state_f: (K,) float32 candidate cost (inf = idle); state_i: (K, 4) int64 candidate start,
    candidate end, candidate template, silent-until frame.
    out: (capacity, 5) float64 events written (keyword, template, start, end, cost).
    Returns the number of events written.
    """
    n, n_t = score.shape
    n_k = threshold.shape[0]
    best = np.empty(n_k, np.float32)
    best_t = np.empty(n_k, np.int64)
    n_out = 0
    for r in range(n):
        j = frame0 + r
        for k in range(n_k):
            best[k] = np.inf
            best_t[k] = -1
        for t in range(n_t):
            k = keyword_of[t]
            if score[r, t] < best[k]:
                best[k] = score[r, t]
                best_t[k] = t
        for k in range(n_k):
            if j < state_i[k, 3]:
                continue
            if best[k] < threshold[k] and best[k] < state_f[k]:
                state_f[k] = best[k]
                state_i[k, 0] = start[r, best_t[k]]
                state_i[k, 1] = j
                state_i[k, 2] = best_t[k]
            if state_f[k] < np.inf and j - state_i[k, 1] >= lookahead:
                out[n_out, 0] = k
                out[n_out, 1] = state_i[k, 2]
                out[n_out, 2] = state_i[k, 0]
                out[n_out, 3] = state_i[k, 1]
                out[n_out, 4] = state_f[k]
                n_out += 1
                state_i[k, 3] = state_i[k, 1] + refractory + 1
                state_f[k] = np.inf
    return n_out


class DetectorState:
    """One stream's detector state, for keywords whose thresholds and template→keyword map are
    fixed when the stream is made."""

    def __init__(self, keyword_of: np.ndarray, thresholds: np.ndarray, frame_rate: float, options: DetectorOptions):
        self.keyword_of = np.asarray(keyword_of, np.int64)
        self.thresholds = np.asarray(thresholds, np.float32)
        self.lookahead = int(round(options.lookahead * frame_rate))
        self.refractory = int(round(options.refractory * frame_rate))
        self.reset()

    def reset(self) -> None:
        n_k = len(self.thresholds)
        self._cand_cost = np.full(n_k, np.inf, np.float32)
        self._cand = np.zeros((n_k, 4), np.int64)

    def push(self, score: np.ndarray, start: np.ndarray, frame0: int) -> np.ndarray:
        """Feed a block of scores; returns the events completed, ``(n, 5)`` float64 rows of
        (keyword, template, start frame, end frame, cost)."""
        if len(score) == 0:
            return np.zeros((0, EVENT_FIELDS))
        capacity = len(score) * len(self.thresholds) + len(self.thresholds)
        out = np.empty((capacity, EVENT_FIELDS))
        n = _detect(score, start, frame0, self.keyword_of, self.thresholds, self.lookahead,
                    self.refractory, self._cand_cost, self._cand, out)
        return out[:n]

    def flush(self) -> np.ndarray:
        """End of stream: emit the open candidates."""
        open_k = np.flatnonzero(np.isfinite(self._cand_cost))
        rows = [(k, self._cand[k, 2], self._cand[k, 0], self._cand[k, 1], self._cand_cost[k]) for k in open_k]
        self._cand_cost[:] = np.inf
        out = np.array(rows, np.float64).reshape(-1, EVENT_FIELDS)
        return out[np.argsort(out[:, 3], kind="stable")]
