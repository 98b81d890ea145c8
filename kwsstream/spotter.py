"""The Python API: a shared, read-only :class:`Spotter` and cheap per-stream :class:`Stream`\\ s.

    spotter = Spotter.load("keywords.kws")
    for event in spotter.detect_file("meeting.flac"):    # a whole file (realtime=True: paced)
        print(event.keyword, event.start, event.end)
    stream = spotter.create_stream(source="mic")         # or chunk by chunk
    for chunk in chunks:                                 # 16 kHz mono float32, any chunk size
        for event in stream.feed(chunk):
            print(event.keyword, event.start, event.end)
    events = stream.flush()                              # end of stream: the last detections

One path for every source: audio → encoder state → gate → matcher state → detector state → events.
Files, files paced in real time, microphones and iterators of chunks reach :meth:`Stream.feed`
through one consumer (:mod:`kwsstream.pipeline`). Many streams can share one Spotter (its encoder
and template layout are never written to).

**Life cycle of a stream** (the same for every encoder): :meth:`Stream.feed` any number of times,
then :meth:`Stream.flush` once: the stream is then *finished*, and feeding or flushing it again
raises :class:`~kwsstream.errors.UsageError`. :meth:`Stream.reset` starts it again, with event
times counted from ``start_time`` seconds (a listener that lost audio restarts its stream at the
true time of the audio after the gap). The two halves (:meth:`Stream.encode` /
:meth:`Stream.encode_end` and :meth:`Stream.feed_encoded` / :meth:`Stream.flush_encoded`) follow
the same rule each.

The compiled kernels (numba: matcher and detector) are imported when the first spotter is made,
not when this module is imported, so ``import kwsstream`` stays cheap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .adapt import AdaptOptions, Evidence, keyword_target, saved_evidence
from .encoders import Encoder, describe_identity, encoder_from_identity, same_identity
from .errors import AudioError, KeysetError, UsageError
from .keyset import KeywordSet, load_keyset
from .vad import GateOptions, GateState

if TYPE_CHECKING:  # imported when needed: numba loads with them (~0.7 s)
    from .detector import DetectorOptions
    from .pipeline import Pipeline


def _default_detector_options() -> DetectorOptions:
    from .detector import DetectorOptions

    return DetectorOptions()

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
    adapt: self-calibration (:mod:`kwsstream.adapt`): each stream moves the thresholds of
        keywords calibrated to a false-alarm rate toward that rate on the audio it hears
        (``None``: thresholds stay as enrolled).
    """

    detector: DetectorOptions = field(default_factory=_default_detector_options)
    block_seconds: float = 0.1
    gate: GateOptions | None = field(default_factory=GateOptions)
    adapt: AdaptOptions | None = None


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
        threads: encoder threads when the encoder is made here from the keyword set (ONNX;
            ``None``: chosen by model size, see :func:`kwsstream.onnxsession.default_threads`).
    """

    def __init__(
        self,
        keyset: KeywordSet,
        encoder: Encoder | None = None,
        *,
        thresholds: float | Mapping[str, float] | None = None,
        options: SpotterOptions | None = None,
        threads: int | None = None,
    ):
        from .matcher import Templates

        if not keyset.keywords:
            raise KeysetError("the keyword set has no keywords: enroll one first")
        self.encoder = encoder if encoder is not None else encoder_from_identity(keyset.encoder, threads=threads)
        if not same_identity(self.encoder.identity, keyset.encoder):
            raise KeysetError(
                f"keyword set was enrolled with encoder {describe_identity(keyset.encoder)}, "
                f"not {self.encoder.description}: enroll again with this encoder"
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
        # self-calibration: the rate each keyword was set to (NaN: set by hand or overridden here,
        # never moved) and the evidence the keyword set has saved
        self.targets = np.array([keyword_target(kw) for kw in keyset.keywords], np.float64)
        if thresholds is not None:
            overridden = set(thresholds) if isinstance(thresholds, Mapping) else set(self.names)
            self.targets[[k for k, n in enumerate(self.names) if n in overridden]] = np.nan
        self.evidence = saved_evidence(keyset)
        self._learned = Evidence.empty(len(self.names))  # what its streams added (adaptation)
        self._learned_lock = threading.Lock()
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
        threads: int | None = None,
    ) -> Spotter:
        """A spotter for the keyword set file at ``path``."""
        keyset = load_keyset(path)
        if not keyset.keywords:
            raise KeysetError(f"{path}: the keyword set has no keywords: enroll one first")
        return cls(keyset, encoder, thresholds=thresholds, options=options, threads=threads)

    def learned(self) -> Evidence:
        """The impostor evidence this spotter's adapting streams gathered (each stream's share
        is added when it is flushed or reset): what ``kwsstream`` saves with the keyword set
        (:func:`kwsstream.cliutil.save_adaptation`) so that the next run starts from it."""
        with self._learned_lock:
            return self._learned.copy()

    def _add_learned(self, evidence: Evidence) -> None:
        with self._learned_lock:
            self._learned.counts += evidence.counts
            self._learned.hours += evidence.hours

    def create_stream(self, source: str = "", score_sink: ScoreSink | None = None) -> Stream:
        """A new stream (its own encoder, gate, matcher and detector state); ``source`` labels
        its events; ``score_sink`` (see :data:`ScoreSink`) receives every frame's scores."""
        return Stream(self, source, score_sink)

    def detect_file(self, path: str | Path, *, realtime: bool = False) -> Pipeline:
        """Detections in an audio file (any format, rate and channel count the audio boundary
        takes: :func:`kwsstream.audio.iter_audio_blocks`), through the one pipeline that
        microphones use. Iterate the result for events in time order (those of the final
        flush included); ``realtime``: paced like a microphone (a thread plays the file into a
        bounded queue). After the iteration ``.summary`` says what was heard.

        >>> events = list(spotter.detect_file("meeting.flac"))  # doctest: +SKIP
        """
        from .pipeline import FileSource, Pipeline

        source = FileSource(path, realtime=realtime)
        return Pipeline(self.create_stream(source=source.name), source)

    def detect_chunks(self, chunks: Iterable[np.ndarray], *, rate: int = 16_000, source: str = "chunks") -> Pipeline:
        """Detections in an iterable of audio chunks (``(n,)`` or ``(n, channels)`` float
        samples at ``rate`` Hz, any chunk size), through the same pipeline as files and
        microphones (mix-down, streaming resampling, the same checks). Iterate the result."""
        from .pipeline import ChunkSource, Pipeline

        return Pipeline(self.create_stream(source=source), ChunkSource(chunks, rate, name=source))

    def _events(self, rows: np.ndarray, source: str, time_offset: float,
                thresholds: np.ndarray | None = None) -> list[Event]:
        thresholds = self.thresholds if thresholds is None else thresholds
        grid = self.encoder.grid
        events = []
        for k, t, s, e, cost in rows:
            k = int(k)
            start, end = grid.span(int(s), int(e))
            events.append(
                Event(
                    keyword=self.names[k], start=start + time_offset, end=end + time_offset, cost=float(cost),
                    threshold=float(thresholds[k]), source=source,
                    template=self._template_index[int(self.templates.order[int(t)])],
                )
            )
        return events


class Stream:
    """One audio stream's state; feed it 16 kHz mono float32 samples in chunks of any size."""

    def __init__(self, spotter: Spotter, source: str = "", score_sink: ScoreSink | None = None):
        from .audio import check_finite
        from .detector import DetectorState
        from .matcher import MatcherState

        self._check_finite = check_finite
        self.spotter = spotter
        self.source = source
        self.score_sink = score_sink
        self._encoder = spotter.encoder.create_state()
        gate = spotter.options.gate
        self._gate = GateState(gate, spotter.encoder.grid) if gate is not None else None
        self._matcher = MatcherState(spotter.templates, spotter.block)
        self._detector = DetectorState(spotter.thresholds, spotter.encoder.grid.frame_rate, spotter.options.detector)
        self.adapter = None
        if spotter.options.adapt is not None:
            from .adapt import Adapter

            self.adapter = Adapter(spotter.thresholds, spotter.targets, spotter.evidence.copy(),
                                   spotter.encoder.grid.frame_rate, spotter.options.adapt, spotter.options.detector)
            self._detector.thresholds[:] = self.adapter.thresholds
            self._delivered = spotter.evidence.copy()  # evidence already counted by the spotter
        self._start_time = 0.0
        self._front_done = self._back_done = False  # encode_end / flush_encoded called
        self.samples_fed = 0

    def reset(self, start_time: float = 0.0) -> None:
        """Start a new stream, its event times counted from ``start_time`` seconds (where the
        new stream's first sample lies in the caller's time: e.g. after a gap in live audio)."""
        if not np.isfinite(start_time) or start_time < 0:
            raise UsageError(f"start_time must be a finite number of seconds >= 0, got {start_time!r}")
        self._encoder.reset()
        if self._gate is not None:
            self._gate.reset()
        self._matcher.reset()
        self._detector.reset()
        if self.adapter is not None:
            self._deliver()
            self.adapter.reset()
        self._start_time = float(start_time)
        self._front_done = self._back_done = False
        self.samples_fed = 0

    @property
    def start_time(self) -> float:
        """Seconds added to every event time: where this stream started (see :meth:`reset`)."""
        return self._start_time

    @property
    def finished(self) -> bool:
        """Whether :meth:`flush` (or :meth:`flush_encoded`) ended the stream."""
        return self._back_done

    def _check_open(self, done: bool, what: str) -> None:
        if done:
            raise UsageError(f"{self.source or 'stream'}: {what} after the stream was flushed: "
                             "a flushed stream is finished; call reset(start_time=...) to start a new one")

    @property
    def seconds(self) -> float:
        """Seconds of audio fed so far."""
        return self.samples_fed / self.spotter.encoder.grid.sample_rate

    def _gate_flags(self, n: int) -> np.ndarray | None:
        return self._gate.flags(n) if self._gate is not None else None

    def _detect(self, score: np.ndarray, start: np.ndarray, frame0: int) -> list[Event]:
        from .detector import best_per_keyword

        k_score, k_start, k_tpl = best_per_keyword(score, start, self.spotter.templates.keyword_of,
                                                   len(self.spotter.names))
        if self.score_sink is not None and len(k_score):
            self.score_sink(frame0, k_score, k_start, k_tpl)
        rows = self._detector.push(k_score, k_start, k_tpl, frame0)
        events = self.spotter._events(rows, self.source, self._start_time, self._detector.thresholds)
        if self.adapter is not None and self.adapter.push(k_score, k_start, k_tpl, frame0, rows):
            self._detector.thresholds[:] = self.adapter.thresholds  # from the next block on: causal
        return events

    def _deliver(self) -> None:
        """Hand the evidence gathered since the last delivery to the spotter (:meth:`Spotter.learned`)."""
        now = self.adapter.evidence
        self.spotter._add_learned(Evidence(now.counts - self._delivered.counts, now.hours - self._delivered.hours))
        self._delivered = now.copy()

    @property
    def thresholds(self) -> np.ndarray:
        """The thresholds this stream detects with now (adapted ones when adaptation is on)."""
        return self._detector.thresholds.copy()

    def encode(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Only the front half of :meth:`feed`: the frames and gate flags (speech or not) that
        these samples complete. With :meth:`feed_encoded` they are what :meth:`feed` does; apart,
        they let encoded audio be kept and matched again (calibration's background cache)."""
        self._check_open(self._front_done, "encode()/feed()")
        samples = self._checked(samples)
        if self._gate is not None:
            self._gate.push(samples)
        frames = self._encoder.push(samples)
        flags = self._gate_flags(len(frames))
        return frames, np.ones(len(frames), np.bool_) if flags is None else flags

    def encode_end(self) -> tuple[np.ndarray, np.ndarray]:
        """The last frames and flags of the stream (the front half of :meth:`flush`); the front
        half is then finished."""
        self._check_open(self._front_done, "encode_end()/flush()")
        self._front_done = True
        if self._gate is not None:
            self._gate.flush()
        frames = self._encoder.flush()
        flags = self._gate_flags(len(frames))
        return frames, np.ones(len(frames), np.bool_) if flags is None else flags

    def feed_encoded(self, frames: np.ndarray, gate: np.ndarray) -> list[Event]:
        """Match frames and gate flags from :meth:`encode` (of a stream of the same encoder and
        gate); return the detections they complete."""
        self._check_open(self._back_done, "feed_encoded()")
        return self._detect(*self._matcher.push(np.asarray(frames, np.float32), gate))

    def flush_encoded(self) -> list[Event]:
        """End of an encoded stream fed with :meth:`feed_encoded`: the last detections. The
        stream is then finished (:meth:`reset` starts a new one)."""
        self._check_open(self._back_done, "flush_encoded()/flush()")
        events = self._detect(*self._matcher.flush())
        self._back_done = True
        rows = self._detector.flush()
        if self.adapter is not None:
            self.adapter.flush(rows)
            self._deliver()
        return events + self.spotter._events(rows, self.source, self._start_time, self._detector.thresholds)

    def _checked(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples)
        if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
            raise AudioError(
                f"{self.source or 'stream'}: feed() takes 1-D float samples at 16 kHz, got {samples.dtype} {samples.shape}"
            )
        self._check_finite(samples, self.source or "stream")
        self.samples_fed += len(samples)
        return samples.astype(np.float32, copy=False)

    def feed(self, samples: np.ndarray) -> list[Event]:
        """Process a chunk; return the detections completed by it, in time order."""
        return self.feed_encoded(*self.encode(samples))

    def flush(self) -> list[Event]:
        """End of stream: process what is left and return the pending detections. The stream
        is then finished: feeding it raises :class:`UsageError` until :meth:`reset`."""
        return self.feed_encoded(*self.encode_end()) + self.flush_encoded()

