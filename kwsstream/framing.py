"""Overlapping windows over a stream of samples, whatever the chunk sizes it arrives in.

:class:`WindowFramer` keeps the samples that later windows still need in a reusable buffer
(a ring buffer laid flat: data is moved to the front only when the end is reached), and emits
each complete window exactly once. Window ``k`` starts at stream sample ``k * hop``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import UsageError


class WindowFramer:
    """Cut a stream into windows of ``window`` samples every ``hop`` samples."""

    def __init__(self, window: int, hop: int, dtype: type = np.float32):
        if window <= 0 or hop <= 0:
            raise UsageError(f"window ({window}) and hop ({hop}) must be positive sample counts")
        self.window = int(window)
        self.hop = int(hop)
        self._dtype = dtype
        self.reset()

    def reset(self) -> None:
        """Forget the stream."""
        self._buf = np.zeros(4 * max(self.window, self.hop), self._dtype)
        self._lo = 0  # first valid sample in _buf
        self._hi = 0  # one past the last valid sample
        self._buf_start = 0  # stream index of _buf[_lo]
        self.windows_emitted = 0
        self.samples_seen = 0

    def _append(self, samples: np.ndarray) -> None:
        n = len(samples)
        if self._hi + n > len(self._buf):
            kept = self._hi - self._lo
            if kept + n > len(self._buf):
                grown = np.zeros(max(2 * len(self._buf), kept + n), self._dtype)
                grown[:kept] = self._buf[self._lo : self._hi]
                self._buf = grown
            else:
                self._buf[:kept] = self._buf[self._lo : self._hi]
            self._lo, self._hi = 0, kept
        self._buf[self._hi : self._hi + n] = samples
        self._hi += n
        self.samples_seen += n

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add samples; return the windows completed by them, shape ``(n, window)`` (a copy)."""
        self._append(samples)
        next_start = self.windows_emitted * self.hop  # stream index of the next window
        avail_end = self._buf_start + (self._hi - self._lo)
        n = 0 if avail_end < next_start + self.window else 1 + (avail_end - next_start - self.window) // self.hop
        if n == 0:
            out = np.zeros((0, self.window), self._dtype)
        else:
            first = self._lo + next_start - self._buf_start
            span = self._buf[first : first + (n - 1) * self.hop + self.window]
            out = sliding_window_view(span, self.window)[:: self.hop].copy()
            self.windows_emitted += n
        # drop what no later window needs
        keep_from = self.windows_emitted * self.hop
        drop = min(keep_from - self._buf_start, self._hi - self._lo)
        if drop > 0:
            self._lo += drop
            self._buf_start += drop
        return out
