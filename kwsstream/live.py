"""Live audio: a microphone (or a recording played at real time) through the one pipeline
(:mod:`kwsstream.pipeline`), with what people see: a "listening" line, a live status line,
warnings, Ctrl-C and a summary.

Producer and consumer, as in python-sounddevice's ``rec_unlimited`` example, with a bounded queue:
PortAudio's callback thread (:class:`~.sources.MicSource`) only copies each block of native-rate
audio into a :class:`~.pipeline.BlockQueue` (the oldest block is dropped when it is full); the
:class:`~.pipeline.Pipeline`, in the calling thread, mixes down, resamples to 16 kHz, feeds the
stream and resynchronises after a gap so every event time is true stream time.

Start-up order: the device is opened and capturing *first* (stream time zero, the "listening"
line), then the spotter is built (keyword set, encoder, compiled kernels) while the queue holds
what is said meanwhile (:data:`~.pipeline.QUEUE_SECONDS`); nothing said after the line is lost
and times stay true. Input overflows inside the driver (PortAudio's ``input_overflow`` flag) are
counted and reported; PortAudio does not say how many samples they lost, so times after one can
be early by that much.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .encoders.base import SAMPLE_RATE
from .errors import UsageError
from .pipeline import BLOCK_SECONDS, QUEUE_SECONDS, BlockQueue, Pipeline, Summary

STATUS_INTERVAL = 0.25
"""Seconds between redraws of the live status line on a terminal."""
PLAIN_STATUS_INTERVAL = 30.0
"""Seconds between status lines when stderr is not a terminal (a log, a pipe)."""
LEVEL_FLOOR_DB = -90.0
METER_WIDTH = 10
METER_RANGE_DB = 60.0
"""The level meter spans this many dB below full scale."""


@dataclass(frozen=True)
class ListenOptions:
    """Attributes:
    device: input device id or (part of) its name; ``None``: the default input device.
    rate: sample rate to open the device at; ``None``: the device's own default rate.
    block_seconds: audio per callback block.
    queue_seconds: audio held before the oldest is dropped.
    seconds: stop after this much stream time; ``None``: until Ctrl-C.
    """

    device: int | str | None = None
    rate: int | None = None
    block_seconds: float = BLOCK_SECONDS
    queue_seconds: float = QUEUE_SECONDS
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.rate is not None and self.rate <= 0:
            raise UsageError(f"--rate must be a positive number of Hz, got {self.rate}")
        if not 0 < self.block_seconds <= 1:
            raise UsageError(f"block_seconds must be in (0, 1], got {self.block_seconds}")
        if self.queue_seconds < self.block_seconds:
            raise UsageError(f"--queue-seconds must be at least one block ({self.block_seconds} s), "
                             f"got {self.queue_seconds}")
        if self.seconds is not None and not self.seconds > 0:
            raise UsageError(f"--seconds must be positive, got {self.seconds}")

    def max_blocks(self) -> int:
        return max(1, math.ceil(self.queue_seconds / self.block_seconds))


# --- consumer -------------------------------------------------------------------------------

class StatusLine:
    """A compact live line for people: rewritten in place (at most every :data:`STATUS_INTERVAL`)
    on a terminal, one plain line every :data:`PLAIN_STATUS_INTERVAL` otherwise. Call
    :meth:`clear` before printing anything else to the same stream."""

    def __init__(self, file=None, tty: bool | None = None):
        self.file = file or sys.stderr
        self.tty = self.file.isatty() if tty is None else tty
        self.interval = STATUS_INTERVAL if self.tty else PLAIN_STATUS_INTERVAL
        self._last = time.monotonic()
        self._shown = False

    def due(self, now: float) -> bool:
        return now - self._last >= self.interval

    def show(self, text: str, now: float) -> None:
        self._last = now
        if self.tty:
            self.file.write("\r\x1b[K" + text)
            self._shown = True
        else:
            self.file.write(text + "\n")
        self.file.flush()

    def clear(self) -> None:
        if self._shown:
            self.file.write("\r\x1b[K")
            self.file.flush()
            self._shown = False


def level_db(peak_rms: float) -> float:
    return max(LEVEL_FLOOR_DB, 20 * math.log10(peak_rms)) if peak_rms > 0 else LEVEL_FLOOR_DB


def meter(db: float) -> str:
    filled = round(METER_WIDTH * min(1.0, max(0.0, 1 + db / METER_RANGE_DB)))
    return "[" + "#" * filled + "." * (METER_WIDTH - filled) + "]"


class Run:
    """Runs a :class:`~.pipeline.Pipeline` for people: ``on_event`` gets each detection, ``say``
    each line (warnings, prefixed ``warning:``), ``status`` (optional) the live line. The first
    Ctrl-C (SIGINT, when run in the main thread) stops cleanly, a second one at once."""

    def __init__(self, *, on_event: Callable, say: Callable[[str], None], status: StatusLine | None = None):
        self.on_event, self._say, self.status = on_event, say, status
        self.stop_requested = False
        self._previous = None

    def say(self, text: str) -> None:
        if self.status:
            self.status.clear()
        self._say(text)

    def _interrupt(self, signum, frame) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True

    def __enter__(self) -> Run:
        """Ctrl-C from here on stops the run cleanly (also before :meth:`run` is called: a
        listener that is still loading its spotter). A front end's file-reading progress line
        (:func:`kwsstream.audio.reading_progress`) is off meanwhile: the run has its status line."""
        from .audio import reading_progress

        self._quiet = reading_progress(None)
        self._quiet.__enter__()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._interrupt)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        self._quiet.__exit__(None, None, None)

    def run(self, pipeline: Pipeline) -> Summary:
        pipeline.warn = lambda text: self.say(f"warning: {text}")

        def on_block(now: float) -> None:
            if self.status and self.status.due(now):
                self.status.show(_status_text(pipeline), now)

        try:
            for event in pipeline.events(stop=lambda: self.stop_requested, on_block=on_block):
                if self.status:
                    self.status.clear()
                self.on_event(event)
        finally:
            if self.status:
                self.status.clear()
        return pipeline.summary


def _status_text(pipeline: Pipeline) -> str:
    db, pipeline.peak = level_db(pipeline.peak), 0.0
    text = f"level {db:4.0f} dB {meter(db)}  lag {pipeline.lag:4.2f} s  at {pipeline.seconds:7.1f} s"
    text += f"  heard {pipeline.detections}"
    return text + (f"  dropped {pipeline.dropped:.1f} s" if pipeline.drops else "")


# --- whole runs -----------------------------------------------------------------------------

def _report(summary: Summary, say: Callable[[str], None]) -> None:
    how = {"seconds": "after", "end": "at the end of the recording,", "interrupt": "(Ctrl-C) after"}[summary.stopped]
    say(f"stopped {how} {summary.seconds:.1f} s: {summary.detections} detection(s), "
        f"{summary.dropped_seconds:.2f} s of audio dropped in {summary.drops} drop(s), "
        f"{summary.overflows} device overflow(s)")


def listen(spotter, source, options: ListenOptions, *, on_event: Callable, say: Callable[[str], None],
           names: list[str] | None = None, status: StatusLine | None = None) -> Summary:
    """Listen to a live ``source`` (started here if it is not yet: stream time zero) with a new
    stream of ``spotter``. ``spotter`` may be a callable that makes it: it is then called after
    the source has started, so that the source captures (and its queue holds) what is said while
    the spotter loads. Says "listening ..." as soon as the source runs, a summary at the end."""
    with Run(on_event=on_event, say=say, status=status) as run:
        try:
            source.start()
            rate = "" if source.rate == SAMPLE_RATE else f" -> {SAMPLE_RATE // 1000} kHz"
            label, api = getattr(source, "label", source.name), getattr(source, "hostapi", "")
            words = names if names is not None else getattr(spotter, "names", None)
            say(f"listening on {label} ({api + ', ' if api else ''}{source.rate} Hz{rate})"
                + (f" for {', '.join(words)}" if words else "") + "; Ctrl-C stops")
            if not hasattr(spotter, "create_stream"):
                spotter = spotter()  # built while the source captures
            pipeline = Pipeline(spotter.create_stream(source=source.name), source, seconds=options.seconds)
        except BaseException:
            source.close()
            raise
        summary = run.run(pipeline)
    _report(summary, say)
    return summary


def listen_microphone(spotter, options: ListenOptions, *, on_event: Callable, say: Callable[[str], None],
                      names: list[str] | None = None) -> Summary:
    """Listen to the input device ``options.device``: the device is opened and started first,
    then ``spotter`` (a :class:`~.spotter.Spotter` or a callable that makes one) is built while
    audio is captured (see :func:`listen`); ``names``: the keywords, for the "listening" line
    when the spotter is not built yet."""
    from .sources import MicSource, find_device

    device = find_device(options.device)
    source = MicSource(device, options.rate, options.block_seconds, BlockQueue(options.max_blocks()))
    return listen(spotter, source, options, on_event=on_event, say=say, names=names, status=StatusLine())


def play_recording(spotter, path: str | Path, options: ListenOptions, *, realtime: bool,
                   on_event: Callable, say: Callable[[str], None],
                   on_start: Callable[[], None] | None = None,
                   on_scores: Callable[[np.ndarray, np.ndarray], None] | None = None) -> Summary:
    """Play a recording through the pipeline (the one :meth:`~.spotter.Spotter.detect_file`
    builds), at real time or as fast as it is processed, with the live status line; ``on_start``
    is called when it starts playing; ``on_scores(times, scores)`` gets each block's frame times
    (seconds of stream time, ``(n,)``) and every keyword's score at them (``(n, K)``)."""
    from .pipeline import FileSource

    source = FileSource(path, realtime=realtime)
    stream = None

    def sink(frame0: int, score: np.ndarray, start: np.ndarray, template: np.ndarray) -> None:
        times = stream.start_time + spotter.encoder.grid.centre(np.arange(frame0, frame0 + len(score)))
        on_scores(np.asarray(times, np.float64), np.array(score, np.float64))

    stream = spotter.create_stream(source=source.name, score_sink=sink if on_scores is not None else None)
    pipeline = Pipeline(stream, source, seconds=options.seconds)
    with Run(on_event=on_event, say=say, status=StatusLine()) as run:
        pipeline.source.start()
        if on_start is not None:
            on_start()
        summary = run.run(pipeline)
    _report(summary, say)
    return summary
