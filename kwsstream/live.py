"""Live audio: a microphone (or a recording played at real time) into a :class:`~.spotter.Stream`.

Producer and consumer, as in python-sounddevice's ``rec_unlimited`` example, with a bounded queue:

* **producer** - PortAudio's callback thread (:class:`~.sources.MicSource`) or a pacing thread
  (:class:`~.sources.FileSource`): copies each block of native-rate audio, tags it with the index
  of its first sample, puts it in a :class:`BlockQueue` and counts input overflows. Nothing else.
  When the queue is full the *oldest* block is dropped: memory stays bounded whatever happens
  downstream.
* **consumer** - :meth:`Listener.run`, in the calling thread: mixes down, resamples to 16 kHz
  (soxr, streaming), feeds the stream, reports events, warnings and a live status line.

Time: stream time zero is the first sample the source delivered, and a block's time is its first
sample's index over the native rate, so a gap in the indices (blocks dropped because processing
fell behind) is measured exactly. At a gap the consumer ends the current stream segment
(resampler tail, ``stream.flush()``: pending detections keep their true times), resets the stream
and sets its ``time_offset`` to the time of the block after the gap, so every event time is true
stream time. Input overflows inside the driver (PortAudio's ``input_overflow`` flag) are counted
and reported; PortAudio does not say how many samples they lost, so times after one can be early
by that much.
"""

from __future__ import annotations

import contextlib
import math
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import Resampler, mix_down
from .encoders.base import SAMPLE_RATE
from .errors import UsageError
from .sources import FileSource, MicSource, find_device
from .spotter import Event, Stream

BLOCK_SECONDS = 0.05
"""Audio per callback block: the latency it adds, against per-block overhead."""
QUEUE_SECONDS = 5.0
"""Audio the queue holds before the oldest is dropped (a burst of slow processing it absorbs)."""
POLL_SECONDS = 0.1
"""How long the consumer waits for a block before it checks for Ctrl-C and a stopped device."""
DEVICE_TIMEOUT = 5.0
"""A device that delivers no audio for this long (while PortAudio says it runs) counts as gone."""
STATUS_INTERVAL = 0.25
"""Seconds between redraws of the live status line on a terminal."""
PLAIN_STATUS_INTERVAL = 30.0
"""Seconds between status lines when stderr is not a terminal (a log, a pipe)."""
WARM_UP_SECONDS = 2.0
"""Silence run through a scratch stream before the device opens."""
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
    stall: testing aid, ``(at, seconds)``: when the stream reaches ``at`` seconds the consumer
        sleeps ``seconds`` once (a processing hiccup), to exercise dropping and resynchronising.
    """

    device: int | str | None = None
    rate: int | None = None
    block_seconds: float = BLOCK_SECONDS
    queue_seconds: float = QUEUE_SECONDS
    seconds: float | None = None
    stall: tuple[float, float] | None = None

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
        if self.stall is not None and (len(self.stall) != 2 or min(self.stall) < 0):
            raise UsageError(f"stall must be (at, seconds) >= 0, got {self.stall}")

    def max_blocks(self) -> int:
        return max(1, math.ceil(self.queue_seconds / self.block_seconds))


@dataclass(frozen=True)
class ListenSummary:
    """What a run did: stream seconds heard, detections, audio dropped, driver overflows, and why
    it stopped (``"seconds"``, ``"end"`` of a recording, ``"interrupt"``)."""

    seconds: float
    detections: int
    dropped_seconds: float
    drops: int
    overflows: int
    stopped: str


# --- producers ------------------------------------------------------------------------------

class BlockQueue:
    """Bounded queue of ``(first sample index, block)``. :meth:`put_newest` never blocks: when
    full it drops the oldest block (the consumer sees the gap in the indices)."""

    def __init__(self, max_blocks: int):
        self._queue: queue.Queue = queue.Queue(max_blocks)

    def put_newest(self, index: int, block: np.ndarray) -> None:
        while True:
            try:
                self._queue.put_nowait((index, block))
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def put_wait(self, index: int, block: np.ndarray, stop: threading.Event) -> None:
        """Wait for room (a recording fed as fast as possible loses nothing) unless ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put((index, block), timeout=POLL_SECONDS)
                return

    def get(self, timeout: float) -> tuple[int, np.ndarray] | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


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


class Listener:
    """Feeds a source's blocks through the resampler into ``stream``; ``on_event`` gets each
    detection, ``say`` each line for people (warnings), ``status`` (optional) the live line."""

    def __init__(self, stream: Stream, source, options: ListenOptions, *, on_event: Callable[[Event], None],
                 say: Callable[[str], None], status: StatusLine | None = None):
        self.stream, self.source, self.options, self.status = stream, source, options, status
        self.on_event, self._say = on_event, say
        self.rate = source.rate
        self._stop_requested = False

    def say(self, text: str) -> None:
        if self.status:
            self.status.clear()
        self._say(text)

    def _emit(self, events: list[Event]) -> None:
        for event in events:
            if self.status:
                self.status.clear()
            self.on_event(event)
            self.detections += 1

    def _end_segment(self) -> None:
        """Process the resampler's tail and the stream's pending detections."""
        self._emit(self.stream.feed(self.resample(np.zeros(0, np.float32), last=True)))
        self._emit(self.stream.flush())

    def _resync(self, index: int) -> None:
        """Blocks before ``index`` were dropped: end the segment, restart the stream at ``index``."""
        gap = (index - self.next) / self.rate
        self._end_segment()
        self.stream.reset()
        self.resample = Resampler(self.rate)
        self.stream.time_offset = index / self.rate
        self.drops += 1
        self.dropped += gap
        self.say(f"warning: processing fell behind: dropped {gap:.2f} s of audio at {self.next / self.rate:.2f} s "
                 f"({self.drops} drop(s), {self.dropped:.2f} s in all); event times stay true")
        self.next = index

    def _interrupt(self, signum, frame) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True

    def run(self, on_start: Callable[[], None] | None = None) -> ListenSummary:
        """Listen until ``options.seconds`` of stream time, the end of a recording or Ctrl-C (the
        first Ctrl-C stops cleanly, a second one at once). ``on_start`` is called as soon as the
        source runs (stream time zero). Raises :class:`AudioError` if the device goes away (after
        reporting what was pending)."""
        self.resample, self.next, self.detections, self.drops, self.dropped = Resampler(self.rate), 0, 0, 0, 0.0
        self._limit = None if self.options.seconds is None else round(self.options.seconds * self.rate)
        self._stall, self._peak, self._overflows_seen = self.options.stall, 0.0, 0
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._interrupt) if in_main else None
        stopped, error, last_block = "interrupt", None, time.monotonic()
        try:
            self.source.start()
            if on_start is not None:
                on_start()
            while not self._stop_requested:
                item = self.source.blocks.get(POLL_SECONDS)
                now = time.monotonic()
                if item is None:
                    if self.source.finished:
                        error, stopped = self.source.lost(self.next / self.rate), "end"
                        break
                    if now - last_block > DEVICE_TIMEOUT:
                        error = self.source.lost(self.next / self.rate)
                        break
                    continue
                last_block = now
                if self._process(*item):
                    stopped = "seconds"
                    break
                if self.status and self.status.due(now):
                    self.status.show(self._status_text(), now)
            self._end_segment()  # what is pending is reported, also when the device went away
        finally:
            self.source.close()
            if self.status:
                self.status.clear()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if error is not None:
            raise error
        return ListenSummary(self.next / self.rate, self.detections, self.dropped, self.drops, self.source.overflows,
                             stopped)

    def _process(self, index: int, block: np.ndarray) -> bool:
        """One block from the queue; returns whether ``options.seconds`` is reached."""
        if index > self.next:
            self._resync(index)
        mono = mix_down(block)
        if self._limit is not None:
            mono = mono[: max(0, self._limit - self.next)]
        if len(mono):
            self._peak = max(self._peak, float(np.sqrt(np.mean(mono * mono))))
            self._emit(self.stream.feed(self.resample(mono)))
        self.next = index + len(mono)
        if self.source.overflows > self._overflows_seen:
            self._overflows_seen = self.source.overflows
            self.say(f"warning: the audio device lost input ({self._overflows_seen} overflow(s)); "
                     "times after it may be early by what was lost")
        if self._stall is not None and self.next >= self._stall[0] * self.rate:
            time.sleep(self._stall[1])
            self._stall = None
        return self._limit is not None and self.next >= self._limit

    def _status_text(self) -> str:
        db, self._peak = level_db(self._peak), 0.0
        lag = max(0, self.source.captured - self.next) / self.rate
        text = f"level {db:4.0f} dB {meter(db)}  lag {lag:4.2f} s  at {self.next / self.rate:7.1f} s"
        text += f"  heard {self.detections}"
        return text + (f"  dropped {self.dropped:.1f} s" if self.drops else "")


# --- whole runs -----------------------------------------------------------------------------

def warm_up(spotter, seconds: float = WARM_UP_SECONDS) -> None:
    """Run silence through a scratch stream so that the first live blocks do not pay for loading
    compiled kernels or starting an ONNX session (measured: ~1 s on the first block otherwise)."""
    scratch = spotter.create_stream(source="warm-up")
    scratch.feed(np.zeros(round(seconds * SAMPLE_RATE), np.float32))
    scratch.flush()


def _report(summary: ListenSummary, say: Callable[[str], None]) -> None:
    how = {"seconds": "after", "end": "at the end of the recording,", "interrupt": "(Ctrl-C) after"}[summary.stopped]
    say(f"stopped {how} {summary.seconds:.1f} s: {summary.detections} detection(s), "
        f"{summary.dropped_seconds:.2f} s of audio dropped in {summary.drops} drop(s), "
        f"{summary.overflows} device overflow(s)")


def listen_microphone(spotter, options: ListenOptions, *, on_event: Callable[[Event], None],
                      say: Callable[[str], None]) -> ListenSummary:
    """Listen to the input device ``options.device`` with a new stream of ``spotter``; report on
    stderr through ``say`` (a "listening" line when stream time zero starts, a summary at the end)."""
    device = find_device(options.device)
    warm_up(spotter)
    blocks = BlockQueue(options.max_blocks())
    source = MicSource(device, options.rate, options.block_seconds, blocks)
    stream = spotter.create_stream(source=source.name)
    listener = Listener(stream, source, options, on_event=on_event, say=say, status=StatusLine())
    rate = "" if source.rate == SAMPLE_RATE else f" -> {SAMPLE_RATE // 1000} kHz"
    summary = listener.run(on_start=lambda: say(
        f"listening on input device {device.index} {device.name!r} ({device.hostapi}, {source.rate} Hz{rate}) "
        f"for {', '.join(spotter.names)}; Ctrl-C stops"))
    _report(summary, say)
    return summary


def play_recording(spotter, path: str | Path, options: ListenOptions, *, realtime: bool,
                   on_event: Callable[[Event], None], say: Callable[[str], None],
                   on_start: Callable[[], None] | None = None) -> ListenSummary:
    """Play a recording through the live pipeline (queue, resampler, stream, status line), at real
    time or as fast as it is processed; ``on_start`` is called when it starts playing."""
    warm_up(spotter)
    blocks = BlockQueue(options.max_blocks())
    source = FileSource(path, options.block_seconds, blocks, realtime=realtime)
    stream = spotter.create_stream(source=source.name)
    summary = Listener(stream, source, options, on_event=on_event, say=say, status=StatusLine()).run(on_start)
    _report(summary, say)
    return summary
