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
* ``identity`` is a JSON-able dict with the encoder's ``kind``; two encoders with equal identity
  produce the same frames. A keyword set stores it and is refused by an encoder with another
  identity.

The whole protocol (:class:`Encoder`) is what the rest of the code may use: nobody outside
``kwsstream/encoders/`` asks an encoder for anything else, tests its type, or branches on its
kind. Identity and naming (``identity``, ``key``, ``name``, ``model_name``, ``description``),
layers (``layers``, ``layer``, ``encode_layers``), frames (``dim``, ``grid``, ``encode``) and
streaming (``create_state``); and on the class, what the registry (``encoders/__init__.py``)
calls: ``from_spec`` (a user's ``--encoder`` text), ``check_identity`` / ``from_identity`` /
``describe`` (a stored identity). :class:`EncoderBase` gives the defaults of an encoder with one
layer; a new kind of encoder subclasses it and is registered with
:func:`kwsstream.encoders.register_encoder` - no other file changes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from ..errors import EncoderError

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
    """A shared, read-only encoder: everything the pipeline, enrollment and the eval may use."""

    kind: ClassVar[str]
    """The registry's name for this class of encoder; ``identity["kind"]``."""
    spec_help: ClassVar[str]
    """How a user names one in ``--encoder`` (for error messages), e.g. ``'mfcc'``."""
    dim: int
    grid: FrameGrid

    @property
    def identity(self) -> dict[str, Any]:
        """JSON-able description with ``kind``; equal identities produce equal frames."""

    @property
    def key(self) -> str:
        """File-name-safe key of the frames at *every* layer (equal keys, equal frames): caches
        are kept under it."""

    @property
    def name(self) -> str:
        """Short name of the frames used, e.g. ``mfcc``, ``wav2vec2-large-xlsr-53-L12-int8``."""

    @property
    def model_name(self) -> str:
        """Short name of the model at all its layers (``name`` without the layer)."""

    @property
    def description(self) -> str:
        """Readable one-liner, e.g. ``MFCC-13``, ``speech-embedding (fp32)``."""

    @property
    def layers(self) -> tuple[int, ...]:
        """The layers :meth:`encode_layers` can give (``(0,)`` for a one-layer encoder)."""

    @property
    def layer(self) -> int:
        """The layer :meth:`encode` and the streaming state give."""

    @property
    def context_seconds(self) -> float:
        """Seconds of audio the encoder's running normalisation wants before a keyword: enrollment
        puts that much of the example, mirrored, before it, so that a keyword at the very start of
        a recording is normalised as it would be in a stream (0 for encoders without one)."""

    def create_state(self) -> EncoderState:
        """A fresh per-stream state."""

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """Encode one whole utterance: ``(n_frames, dim)`` float32."""

    def encode_layers(self, audio: np.ndarray, layers: tuple[int, ...] | None = None) -> dict[int, np.ndarray]:
        """Encode one whole utterance at several layers in one pass: layer -> frames (default:
        every layer)."""

    @classmethod
    def from_spec(cls, spec: str, *, threads: int | None = None) -> Encoder | None:
        """The encoder a user's ``--encoder`` text names, or None when it is not of this kind."""

    @classmethod
    def from_identity(cls, identity: dict[str, Any], *, threads: int | None = None) -> Encoder:
        """The encoder of a stored identity (already checked by :meth:`check_identity`)."""

    @classmethod
    def check_identity(cls, identity: dict[str, Any]) -> int:
        """Type- and range-check a stored identity, building nothing; return its frame width.
        Raises :class:`~kwsstream.errors.EncoderError`."""

    @classmethod
    def describe(cls, identity: dict[str, Any]) -> str:
        """Readable one-liner of a stored identity (what :attr:`description` says)."""


_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")


def safe_name(text: str) -> str:
    """``text`` with every character unsafe in a file name replaced by ``_``."""
    return _UNSAFE.sub("_", text)


def identity_digest(identity: dict[str, Any]) -> str:
    """Hex sha256 of an identity, its ``path`` left out (as :func:`same_identity` leaves it)."""
    return hashlib.sha256(json.dumps(identity | {"path": None}, sort_keys=True).encode()).hexdigest()


class EncoderBase:
    """Defaults of the :class:`Encoder` protocol for an encoder with one layer (layer 0).

    A subclass sets ``kind``, ``dim`` and ``grid`` and implements ``identity``, ``name``,
    ``encode``, ``create_state``, ``from_identity`` and ``check_identity``. ``from_spec`` by
    default accepts the spec equal to ``kind`` and calls the class without arguments.
    """

    kind: ClassVar[str] = ""
    spec_help: ClassVar[str] = ""
    dim: int
    grid: FrameGrid

    @property
    def identity(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.kind

    @property
    def key(self) -> str:
        """The model name and the first 12 hex digits of :func:`identity_digest`."""
        return f"{safe_name(self.model_name)}-{identity_digest(self.identity)[:12]}"

    @property
    def model_name(self) -> str:
        return self.name

    @property
    def description(self) -> str:
        return type(self).describe(self.identity)

    @property
    def layers(self) -> tuple[int, ...]:
        return (0,)

    @property
    def layer(self) -> int:
        return 0

    @property
    def context_seconds(self) -> float:
        """Audio this encoder's running normalisation wants before a keyword (0: none)."""
        return 0.0

    def encode(self, audio: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def encode_layers(self, audio: np.ndarray, layers: tuple[int, ...] | None = None) -> dict[int, np.ndarray]:
        """One encoding for the one layer."""
        wanted = self.layers if layers is None else tuple(layers)
        missing = [layer for layer in wanted if layer not in self.layers]
        if missing:
            raise EncoderError(f"{self.name}: layers {missing} are not in this encoder (it has {list(self.layers)})")
        frames = self.encode(audio)
        return {layer: frames for layer in wanted}

    @classmethod
    def from_spec(cls, spec: str, *, threads: int | None = None) -> Any:
        return cls() if spec == cls.kind else None

    @classmethod
    def from_identity(cls, identity: dict[str, Any], *, threads: int | None = None) -> Any:
        raise NotImplementedError

    @classmethod
    def check_identity(cls, identity: dict[str, Any]) -> int:
        raise NotImplementedError

    @classmethod
    def describe(cls, identity: dict[str, Any]) -> str:
        return str(identity.get("kind", cls.kind))


def same_identity(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two encoder identities denote the same frames (the ``path`` entry, where a model
    happens to lie on disk, does not count)."""

    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k != "path"}

    return strip(a) == strip(b)
