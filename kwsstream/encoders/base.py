"""The encoder protocol: what every encoder (MFCC, ONNX models) gives the rest of the pipeline.

An encoder is shared and read-only. It turns 16 kHz mono float32 audio into frames of ``dim``
float32 features on a regular grid (:class:`FrameGrid`). Streaming state lives in an
:class:`EncoderState` made by :meth:`Encoder.create_state`, one per stream.

Contract every encoder keeps (tested for each):

* ``state.push(chunk)`` returns the frames that became final with this chunk, in order; the
  concatenation of all pushes and the final ``flush()`` does not depend on how the audio was cut
  into chunks (bit for bit).
* Life cycle: ``flush()`` ends the stream; pushing or flushing again raises
  :class:`~kwsstream.errors.UsageError` until ``reset()`` starts a new one (tested for each).
* Frame ``j`` of a stream is centred at ``grid.centre(j)`` seconds from the stream's start.
* ``encode(audio)`` encodes one whole utterance at once (the reference for streaming, and what
  enrollment uses: contextual models see the whole recording).
* ``identity`` is a JSON-able dict; two encoders with equal identity produce the same frames. A
  keyword set stores it and is refused by an encoder with another identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

SAMPLE_RATE = 16_000
"""The one sample rate of the pipeline; audio is resampled to it at the boundary."""


@dataclass(frozen=True)
class FrameGrid:
    """Where frames sit in time.

    Attributes:
        hop: samples between the starts of consecutive frames (160 for MFCC, 320 for wav2vec2).
        length: samples of audio one frame is computed from (its receptive field).
        pad: zero samples the encoder adds before the first sample of a stream (and after the
            last), so that frame 0 starts at sample ``-pad``.
        sample_rate: always :data:`SAMPLE_RATE`.
    """

    hop: int
    length: int
    pad: int = 0
    sample_rate: int = SAMPLE_RATE

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.sample_rate / self.hop

    def centre(self, frame: int | np.ndarray) -> float | np.ndarray:
        """Seconds from the stream's start to the centre of ``frame``."""
        return (np.asarray(frame) * self.hop - self.pad + self.length / 2) / self.sample_rate

    def span(self, first: int, last: int) -> tuple[float, float]:
        """Time span of frames ``first..last`` (inclusive): centre of first - hop/2 to centre of
        last + hop/2, clipped at 0."""
        half = 0.5 * self.hop / self.sample_rate
        return max(0.0, float(self.centre(first)) - half), float(self.centre(last)) + half

    def frame_at(self, seconds: float) -> int:
        """The frame whose centre is nearest to ``seconds`` (never negative)."""
        j = (seconds * self.sample_rate + self.pad - self.length / 2) / self.hop
        return max(0, int(round(j)))

    def n_frames(self, n_samples: int) -> int:
        """Frames a whole utterance of ``n_samples`` samples gives."""
        total = n_samples + 2 * self.pad
        return 0 if total < self.length else 1 + (total - self.length) // self.hop


class EncoderState(Protocol):
    """One stream's encoder state."""

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Take 16 kHz float32 samples; return the frames now final, shape ``(n, dim)``."""

    def flush(self) -> np.ndarray:
        """End of stream: return the remaining frames, shape ``(n, dim)``; the state is then
        finished (``push``/``flush`` raise until :meth:`reset`)."""

    def reset(self) -> None:
        """Forget everything: ready for a new stream."""


class Encoder(Protocol):
    """A shared, read-only encoder."""

    dim: int
    grid: FrameGrid

    @property
    def identity(self) -> dict[str, Any]:
        """JSON-able description; equal identities produce equal frames."""

    @property
    def name(self) -> str:
        """Short human name, e.g. ``mfcc`` or ``xlsr53-L12-int8``."""

    def create_state(self) -> EncoderState:
        """A fresh per-stream state."""

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """Encode one whole utterance: ``(n_frames, dim)`` float32."""


def same_identity(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two encoder identities denote the same frames (the ``path`` entry, where a model
    happens to lie on disk, does not count)."""

    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k != "path"}

    return strip(a) == strip(b)
