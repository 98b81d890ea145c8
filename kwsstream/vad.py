"""The voice-activity gate: which encoder frames may be matched at all.

Silence, digital zeros and very quiet audio must never fire a keyword, and a match must never run
across a pause. The gate marks each encoder frame as speech or not; the matcher clears every
running path at a frame that is not speech and gives it no score (``sdtw.advance_columns``), and
skips the distances of whole blocks without speech (the CPU it saves on audio with pauses).

Decisions come from the WebRTC voice-activity detector (``webrtcvad``: Google's GMM-based VAD,
a few microseconds per 10 ms frame) on fixed 10 ms frames aligned to the stream, so they do not
depend on how the audio was chunked, plus a level floor (:data:`FLOOR_DBFS`): the WebRTC VAD
calls low-level dither speech now and then. An encoder frame is speech when any 10 ms frame of
its own receptive field, or of the ``hangover`` seconds before it, is speech: a word's short
pauses (stop closures) stay inside, and a contextual encoder's frame counts as speech whenever
the audio it was computed from held any. The gate only reads audio the encoder has already
consumed for that frame, so it adds no latency and never shifts event times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .encoders.base import SAMPLE_RATE, FrameGrid
from .errors import UsageError

VAD_FRAME = SAMPLE_RATE // 100
"""Samples per VAD decision (10 ms)."""
FLOOR_DBFS = -55.0
"""10 ms frames quieter than this (RMS, dB re full scale) are never speech."""


@dataclass(frozen=True)
class GateOptions:
    """Attributes:
    aggressiveness: WebRTC VAD mode, 0 (lets most through) to 3 (strictest).
    hangover: seconds a frame stays speech after the last speech decision.
    floor_dbfs: level below which a 10 ms frame is never speech.
    """

    aggressiveness: int = 2
    hangover: float = 0.3
    floor_dbfs: float = FLOOR_DBFS

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise UsageError(f"VAD aggressiveness {self.aggressiveness!r} must be 0, 1, 2 or 3")
        if not 0 <= self.hangover <= 5:
            raise UsageError(f"VAD hangover {self.hangover} s must be between 0 and 5")
        if not -120 <= self.floor_dbfs <= 0:
            raise UsageError(f"VAD floor {self.floor_dbfs} dBFS must be between -120 and 0")


class GateState:
    """One stream's gate: push the same samples the encoder gets, then ask for the flags of the
    encoder frames it returned (in order)."""

    def __init__(self, options: GateOptions, grid: FrameGrid):
        import webrtcvad

        self.options = options
        self.grid = grid
        self._vad_factory = lambda: webrtcvad.Vad(options.aggressiveness)
        self._floor = float(10 ** (options.floor_dbfs / 20)) ** 2 * VAD_FRAME
        # VAD frames a frame looks back over: its receptive field plus the hangover
        self._span = int(np.ceil((grid.length + options.hangover * SAMPLE_RATE) / VAD_FRAME))
        self.reset()

    def reset(self) -> None:
        self._vad = self._vad_factory()
        self._rest = np.zeros(0, np.float32)
        self._cum = np.zeros(0, np.int64)  # speech decisions among VAD frames 0..base+i
        self._base = 0  # the VAD frame of _cum[0]: older ones are no frame's concern any more
        self._done = 0  # VAD frames decided
        self._speech = 0  # speech decisions so far
        self._next_frame = 0  # the encoder frame the next flags() call starts at
        self._finished = False

    def _decide(self, samples: np.ndarray) -> None:
        n = len(samples) // VAD_FRAME
        if n == 0:
            return
        frames = samples[: n * VAD_FRAME].reshape(n, VAD_FRAME)
        energy = np.einsum("ij,ij->i", frames, frames, dtype=np.float64)
        pcm = (np.clip(frames, -1.0, 1.0) * 32767.0).astype("<i2")
        speech = np.array([energy[i] >= self._floor and self._vad.is_speech(pcm[i].tobytes(), SAMPLE_RATE)
                           for i in range(n)], np.int64)
        self._cum = np.concatenate([self._cum, self._speech + np.cumsum(speech)])
        self._speech += int(speech.sum())
        self._done += n

    def push(self, samples: np.ndarray) -> None:
        """Take the next samples of the stream (16 kHz float32)."""
        if self._finished:
            raise UsageError("the gate was flushed: reset() it before feeding a new stream")
        buf = np.concatenate([self._rest, samples]) if len(self._rest) else np.asarray(samples, np.float32)
        n = (len(buf) // VAD_FRAME) * VAD_FRAME
        self._decide(buf[:n])
        self._rest = buf[n:].copy()

    def flush(self) -> None:
        """End of stream: decide the last partial 10 ms frame (zero-padded)."""
        if len(self._rest):
            self._decide(np.concatenate([self._rest, np.zeros(VAD_FRAME - len(self._rest), np.float32)]))
            self._rest = self._rest[:0]
        self._finished = True

    def _count(self, m: int) -> int:
        """Speech decisions among VAD frames ``0..m`` (0 for m < 0)."""
        if m < 0:
            return 0
        return int(self._cum[m - self._base])

    def flags(self, n: int) -> np.ndarray:
        """Speech flags of the next ``n`` encoder frames."""
        first = self._next_frame
        self._next_frame += n
        out = np.zeros(n, np.bool_)
        hop, pad, length = self.grid.hop, self.grid.pad, self.grid.length
        for i in range(n):
            end = (first + i) * hop - pad + length  # one past the frame's last sample
            last = min(end // VAD_FRAME - 1, self._done - 1)
            if last < 0:
                continue
            if not self._finished and end // VAD_FRAME - 1 > self._done - 1:
                raise UsageError("gate flags asked for audio the gate has not seen")
            out[i] = self._count(last) - self._count(last - self._span) > 0
        # forget the decisions no later frame looks back to
        oldest = max(0, min(self._done, (self._next_frame * hop - pad + length) // VAD_FRAME - 1) - self._span - 1)
        if oldest > self._base:
            self._cum = self._cum[oldest - self._base:]
            self._base = oldest
        return out
