"""The Python API: a shared, read-only :class:`Spotter` and cheap per-stream :class:`Stream`\\ s.

    spotter = Spotter.load("keywords.kws")
    stream = spotter.create_stream(source="mic")
    for chunk in chunks:                      # 16 kHz mono float32, any chunk size
        for event in stream.feed(chunk):
            print(event.keyword, event.start, event.end)
    events = stream.flush()                   # end of stream

One path for every source: audio → encoder state → matcher state → detector state → events.
Many streams can share one Spotter (its encoder and template layout are never written to).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import check_finite
from .detector import DetectorOptions, DetectorState, best_per_keyword
from .encoders import Encoder, encoder_from_identity, same_identity
from .errors import AudioError, KeysetError, UsageError
from .keyset import KeywordSet, load_keyset
from .matcher import MatcherState, Templates
from .vad import GateOptions, GateState

ScoreSink = Callable[[int, np.ndarray, np.ndarray, np.ndarray], None]
"""``sink(frame0, score, start, template)``: per-keyword scores ``(n, K)`` of frames ``frame0..``
as the detector sees them (+inf where the gate held a frame back or no match fits), their start
frames and best templates (layout positions). For plots and benchmarks."""


@dataclass(frozen=True)
class SpotterOptions:
    """Attributes:
    detector: threshold state machine timing (look-ahead latency, refractory period).
    block_seconds: stream frames are matched in blocks of this length (aligned to the stream).
    gate: the voice-activity gate in front of the matcher (``None``: every frame is matched).
    """

    detector: DetectorOptions = field(default_factory=DetectorOptions)
    block_seconds: float = 0.1
    gate: GateOptions | None = field(default_factory=GateOptions)


@dataclass(frozen=True)
class Event:
    """A detection. Times are seconds from the start of the stream."""

    keyword: str
    start: float
    end: float
    cost: float
    threshold: float
    source: str = ""
    template: int = 0  # index of the matching template within its keyword

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("start", "end"):
            d[key] = round(d[key], 3)
        for key in ("cost", "threshold"):
            d[key] = round(d[key], 4)
        return d


class Spotter:
    """Keyword set + encoder, shared and read-only. A program that streams should call
    :func:`kwsstream.matcher.limit_blas_threads` once (the CLI does): multi-threaded BLAS makes the
    matcher's small matrix products slower.

    Args:
        keyset: the enrolled keywords.
        encoder: the encoder; by default the one the keyword set was enrolled with.
        thresholds: override: one value for every keyword, or a mapping name → value.
        options: detector and matching options.
    """

    def __init__(
        self,
        keyset: KeywordSet,
        encoder: Encoder | None = None,
        *,
        thresholds: float | Mapping[str, float] | None = None,
        options: SpotterOptions | None = None,
    ):
        if not keyset.keywords:
            raise KeysetError("the keyword set has no keywords: enroll one first")
        self.encoder = encoder if encoder is not None else encoder_from_identity(keyset.encoder)
        if not same_identity(self.encoder.identity, keyset.encoder):
            raise KeysetError(
                f"keyword set was enrolled with encoder {_describe(keyset.encoder)}, "
                f"not {_describe(self.encoder.identity)}: enroll again with this encoder"
            )
        if keyset.dim != self.encoder.dim:
            raise KeysetError(f"keyword set has {keyset.dim}-d templates, encoder gives {self.encoder.dim}-d frames")
        self.keyset = keyset
        self.options = options or SpotterOptions()
        self.names = [kw.name for kw in keyset.keywords]
        self.thresholds = np.array([kw.threshold for kw in keyset.keywords], np.float32)
        if isinstance(thresholds, Mapping):
            for name, value in thresholds.items():
                if name not in self.names:
                    raise UsageError(f"threshold given for unknown keyword {name!r}")
                self.thresholds[self.names.index(name)] = value
        elif thresholds is not None:
            self.thresholds[:] = thresholds
        if not np.isfinite(self.thresholds).all():
            raise UsageError(f"thresholds must be finite numbers, got {self.thresholds.tolist()}")
        frames, keyword_of, self._template_index = [], [], []
        for k, kw in enumerate(keyset.keywords):
            for i, t in enumerate(kw.templates):
                frames.append(t.frames)
                keyword_of.append(k)
                self._template_index.append(i)
        self.templates = Templates(frames, keyword_of)
        self.block = max(1, int(round(self.options.block_seconds * self.encoder.grid.frame_rate)))

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        encoder: Encoder | None = None,
        thresholds: float | Mapping[str, float] | None = None,
        options: SpotterOptions | None = None,
    ) -> Spotter:
        """A spotter for the keyword set file at ``path``."""
        return cls(load_keyset(path), encoder, thresholds=thresholds, options=options)

    def create_stream(self, source: str = "", score_sink: ScoreSink | None = None) -> Stream:
        """A new stream (its own encoder, gate, matcher and detector state); ``source`` labels
        its events; ``score_sink`` (see :data:`ScoreSink`) receives every frame's scores."""
        return Stream(self, source, score_sink)

    def _events(self, rows: np.ndarray, source: str, time_offset: float) -> list[Event]:
        grid = self.encoder.grid
        events = []
        for k, t, s, e, cost in rows:
            k = int(k)
            start, end = grid.span(int(s), int(e))
            events.append(
                Event(
                    keyword=self.names[k], start=start + time_offset, end=end + time_offset, cost=float(cost),
                    threshold=float(self.thresholds[k]), source=source,
                    template=self._template_index[int(self.templates.order[int(t)])],
                )
            )
        return events


class Stream:
    """One audio stream's state; feed it 16 kHz mono float32 samples in chunks of any size."""

    def __init__(self, spotter: Spotter, source: str = "", score_sink: ScoreSink | None = None):
        self.spotter = spotter
        self.source = source
        self.score_sink = score_sink
        self._encoder = spotter.encoder.create_state()
        gate = spotter.options.gate
        self._gate = GateState(gate, spotter.encoder.grid) if gate is not None else None
        self._matcher = MatcherState(spotter.templates, spotter.block)
        self._detector = DetectorState(spotter.thresholds, spotter.encoder.grid.frame_rate, spotter.options.detector)
        self.time_offset = 0.0
        self.samples_fed = 0

    def reset(self) -> None:
        """Start over: a new stream, times from zero."""
        self._encoder.reset()
        if self._gate is not None:
            self._gate.reset()
        self._matcher.reset()
        self._detector.reset()
        self.time_offset = 0.0
        self.samples_fed = 0

    @property
    def seconds(self) -> float:
        """Seconds of audio fed so far."""
        return self.samples_fed / self.spotter.encoder.grid.sample_rate

    def _gate_flags(self, n: int) -> np.ndarray | None:
        return self._gate.flags(n) if self._gate is not None else None

    def _detect(self, score: np.ndarray, start: np.ndarray, frame0: int) -> list[Event]:
        k_score, k_start, k_tpl = best_per_keyword(score, start, self.spotter.templates.keyword_of,
                                                   len(self.spotter.names))
        if self.score_sink is not None and len(k_score):
            self.score_sink(frame0, k_score, k_start, k_tpl)
        return self.spotter._events(self._detector.push(k_score, k_start, k_tpl, frame0), self.source,
                                    self.time_offset)

    def encode(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Only the front half of :meth:`feed`: the frames and gate flags (speech or not) that
        these samples complete. With :meth:`feed_encoded` they are what :meth:`feed` does; apart,
        they let encoded audio be kept and matched again (calibration's background cache)."""
        samples = self._checked(samples)
        if self._gate is not None:
            self._gate.push(samples)
        frames = self._encoder.push(samples)
        flags = self._gate_flags(len(frames))
        return frames, np.ones(len(frames), np.bool_) if flags is None else flags

    def encode_end(self) -> tuple[np.ndarray, np.ndarray]:
        """The last frames and flags of the stream (the front half of :meth:`flush`)."""
        if self._gate is not None:
            self._gate.flush()
        frames = self._encoder.flush()
        flags = self._gate_flags(len(frames))
        return frames, np.ones(len(frames), np.bool_) if flags is None else flags

    def feed_encoded(self, frames: np.ndarray, gate: np.ndarray) -> list[Event]:
        """Match frames and gate flags from :meth:`encode` (of a stream of the same encoder and
        gate); return the detections they complete."""
        return self._detect(*self._matcher.push(np.asarray(frames, np.float32), gate))

    def flush_encoded(self) -> list[Event]:
        """End of an encoded stream fed with :meth:`feed_encoded`: the last detections."""
        events = self._detect(*self._matcher.flush())
        return events + self.spotter._events(self._detector.flush(), self.source, self.time_offset)

    def _checked(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples)
        if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
            raise AudioError(
                f"{self.source or 'stream'}: feed() takes 1-D float samples at 16 kHz, got {samples.dtype} {samples.shape}"
            )
        check_finite(samples, self.source or "stream")
        self.samples_fed += len(samples)
        return samples.astype(np.float32, copy=False)

    def feed(self, samples: np.ndarray) -> list[Event]:
        """Process a chunk; return the detections completed by it, in time order."""
        return self.feed_encoded(*self.encode(samples))

    def flush(self) -> list[Event]:
        """End of stream: process what is left and emit pending detections. The stream can then
        be :meth:`reset` and reused."""
        return self.feed_encoded(*self.encode_end()) + self.flush_encoded()


def _describe(identity: Mapping[str, Any]) -> str:
    kind = identity.get("kind", "?")
    if kind == "onnx":
        return f"onnx model {identity.get('path', '?')} (sha256 {str(identity.get('sha256', '?'))[:12]}…, layer {identity.get('layer', '?')})"
    return str(kind)
