"""One pipeline from any audio source to events: source → (mix-down, resampler) → stream → events.

Every way audio reaches a :class:`~kwsstream.spotter.Stream` goes through :class:`Pipeline`:

* a file (:class:`FileSource`), read through the audio boundary (:func:`kwsstream.audio.iter_audio_blocks`:
  every format, rate and channel count it takes, with its checks), in the caller's thread;
* the same file paced in real time (``FileSource(realtime=True)``): a thread plays it into a
  bounded :class:`BlockQueue` like a microphone, dropping the oldest audio when the consumer
  falls behind;
* a microphone (:class:`kwsstream.sources.MicSource`: PortAudio's callback fills the queue);
* an iterable of chunks at any rate (:class:`ChunkSource`, the Python API's
  :meth:`~kwsstream.spotter.Spotter.detect_chunks`).

A *source* has ``rate`` (its native sample rate), ``name``, ``captured`` (samples delivered so
far), ``overflows`` (driver-reported input losses), ``finished`` (no more blocks will come),
``start()`` (idempotent), ``get(timeout)`` → ``(index of the block's first sample, block)`` or
``None``, ``close()`` and ``lost(seconds)`` (the error to raise when it ended by itself, or
``None``). Blocks are ``(n,)`` or ``(n, channels)`` float32 at ``rate``.

Time: stream time zero is the source's first sample; a block's time is its first sample's index
over the native rate, so a gap in the indices (blocks dropped because processing fell behind) is
measured exactly. At a gap the pipeline ends the current stream segment (resampler tail,
``stream.flush()``: pending detections keep their true times) and restarts the stream with
``stream.reset(start_time=...)`` at the time of the block after the gap.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .encoders.base import SAMPLE_RATE
from .errors import AudioError, UsageError

log = logging.getLogger("kwsstream.pipeline")

BLOCK_SECONDS = 0.05
"""Audio per block of a live source (microphone callback, paced file): the latency it adds."""
QUEUE_SECONDS = 5.0
"""Audio a live source's queue holds before the oldest is dropped."""
POLL_SECONDS = 0.1
"""How long the pipeline waits for a block before it checks for a stop request and a lost source."""
DEVICE_TIMEOUT = 5.0
"""A live source that delivers nothing for this long (while it says it runs) counts as gone."""
FILE_BLOCK_SECONDS = 10.0
"""Audio read from a file at a time when it is not paced."""


@dataclass(frozen=True)
class Summary:
    """What a run did: stream seconds heard, detections, audio dropped, driver overflows, and why
    it stopped (``"seconds"``, ``"end"`` of the source, ``"interrupt"``)."""

    seconds: float
    detections: int
    dropped_seconds: float
    drops: int
    overflows: int
    stopped: str


class BlockQueue:
    """Bounded queue of ``(first sample index, block)``. :meth:`put_newest` never blocks: when
    full it drops the oldest block (the consumer sees the gap in the indices)."""

    def __init__(self, max_blocks: int):
        self._queue: queue.Queue = queue.Queue(max(1, int(max_blocks)))

    @classmethod
    def holding(cls, seconds: float, block_seconds: float = BLOCK_SECONDS) -> BlockQueue:
        """A queue for ``seconds`` of audio in blocks of ``block_seconds``."""
        return cls(math.ceil(seconds / block_seconds))

    def put_newest(self, index: int, block: np.ndarray) -> None:
        while True:
            try:
                self._queue.put_nowait((index, block))
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def get(self, timeout: float) -> tuple[int, np.ndarray] | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


# --- sources --------------------------------------------------------------------------------

class FileSource:
    """An audio file through the audio boundary (16 kHz mono, validated, read in blocks).

    ``realtime=False``: blocks of :data:`FILE_BLOCK_SECONDS` are read when the pipeline asks
    for them, in its thread (nothing is lost, errors are raised where they happen).
    ``realtime=True``: a thread plays blocks of ``block_seconds`` at real time into a queue of
    ``queue_seconds`` (``put_newest``: like a microphone, the oldest audio is dropped when the
    consumer falls behind); a file that cannot be read is refused by :meth:`start`.
    """

    def __init__(self, path: str | Path, *, realtime: bool = False, block_seconds: float = BLOCK_SECONDS,
                 queue_seconds: float = QUEUE_SECONDS):
        from .audio import display_name, iter_audio_blocks

        self.path, self.realtime, self.name = Path(path), realtime, display_name(path)
        self.rate = SAMPLE_RATE
        self._reader = iter_audio_blocks(self.path, block_seconds=block_seconds if realtime else FILE_BLOCK_SECONDS)
        self.captured, self.overflows, self.finished = 0, 0, False
        self.error: Exception | None = None
        self.blocks = BlockQueue.holding(queue_seconds, block_seconds) if realtime else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first: np.ndarray | None = None

    def start(self) -> None:
        if not self.realtime or self._thread is not None:
            return
        self._first = next(self._reader, None)  # a missing or unreadable file is refused here
        self._thread = threading.Thread(target=self._play, name="kwsstream-file", daemon=True)
        self._thread.start()

    def _play(self) -> None:
        try:
            started = time.monotonic()
            blocks = self._reader if self._first is None else _chain(self._first, self._reader)
            for block in blocks:
                if self._stop.wait(max(0.0, (self.captured + len(block)) / self.rate - (time.monotonic() - started))):
                    break
                self.blocks.put_newest(self.captured, block)
                self.captured += len(block)
        except AudioError as err:
            self.error = err
        finally:
            self.finished = True

    def get(self, timeout: float) -> tuple[int, np.ndarray] | None:
        if self.realtime:
            return self.blocks.get(timeout)
        block = next(self._reader, None)
        if block is None:
            self.finished = True
            return None
        index, self.captured = self.captured, self.captured + len(block)
        return index, block

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._reader.close()

    def lost(self, seconds: float) -> Exception | None:
        return self.error  # None: the file simply ended


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


class ChunkSource:
    """An iterable of audio chunks (``(n,)`` or ``(n, channels)`` float samples at ``rate`` Hz),
    pulled in the pipeline's thread."""

    def __init__(self, chunks: Iterable[np.ndarray], rate: int = SAMPLE_RATE, *, name: str = "chunks"):
        from .audio import MAX_RATE, MIN_RATE

        if not MIN_RATE <= rate <= MAX_RATE:
            raise AudioError(f"{name}: sample rate {rate} Hz is not supported ({MIN_RATE}-{MAX_RATE} Hz)")
        self.rate, self.name = int(rate), name
        self._chunks = iter(chunks)
        self.captured, self.overflows, self.finished = 0, 0, False

    def start(self) -> None:
        pass

    def get(self, timeout: float) -> tuple[int, np.ndarray] | None:
        chunk = next(self._chunks, None)
        if chunk is None:
            self.finished = True
            return None
        chunk = np.asarray(chunk)
        if chunk.ndim not in (1, 2) or not np.issubdtype(chunk.dtype, np.floating):
            raise AudioError(f"{self.name}: chunks must be (n,) or (n, channels) float samples, "
                             f"got {chunk.dtype} {chunk.shape}")
        index, self.captured = self.captured, self.captured + len(chunk)
        return index, chunk

    def close(self) -> None:
        pass

    def lost(self, seconds: float) -> None:
        return None


# --- the consumer ---------------------------------------------------------------------------

class Pipeline:
    """Feeds a source's blocks through the mix-down and the streaming resampler into ``stream``.
    Iterate it (or :meth:`events`) for the detections, in time order; :attr:`summary` after.

    Args:
        stream: a fresh (or reset) stream of a spotter.
        source: see the module docstring.
        seconds: stop after this much stream time (``None``: at the source's end).
        warn: where warnings go (a drop, a driver overflow); default: the ``kwsstream.pipeline``
            logger.
    """

    def __init__(self, stream, source, *, seconds: float | None = None, warn: Callable[[str], None] | None = None):
        from .audio import Resampler

        if seconds is not None and not seconds > 0:
            raise UsageError(f"--seconds must be positive, got {seconds}")
        self.stream, self.source = stream, source
        self.rate = source.rate
        self._resampler_type = Resampler
        self.resample = Resampler(self.rate)
        self.warn = warn or log.warning
        self.limit = None if seconds is None else round(seconds * self.rate)
        self.next = 0  # native index of the next sample expected
        self.detections = self.drops = 0
        self.dropped = 0.0
        self.peak = 0.0  # highest block RMS since the caller last reset it (a level meter)
        self._overflows_seen = 0
        self.summary: Summary | None = None

    def __iter__(self) -> Iterator:
        return self.events()

    @property
    def seconds(self) -> float:
        """Stream time reached (native samples consumed over the native rate)."""
        return self.next / self.rate

    @property
    def lag(self) -> float:
        """Seconds of audio the source delivered that are not processed yet."""
        return max(0, self.source.captured - self.next) / self.rate

    def events(self, stop: Callable[[], bool] | None = None,
               on_block: Callable[[float], None] | None = None) -> Iterator:
        """Run the source to its end, ``seconds``, or until ``stop()`` is true (checked between
        blocks); yield each detection. ``on_block(now)`` is called after each block (a status
        line). Raises the source's error (a device that went away, a corrupt file) after the
        detections pending at that point."""
        source = self.source
        stopped, error = "interrupt", None
        try:
            source.start()
            last_block = time.monotonic()
            while not (stop is not None and stop()):
                item = source.get(POLL_SECONDS)
                now = time.monotonic()
                if item is None:
                    if source.finished:
                        error, stopped = source.lost(self.seconds), "end"
                        break
                    if now - last_block > DEVICE_TIMEOUT:
                        error = source.lost(self.seconds)
                        break
                    continue
                last_block = now
                yield from self._count(self._process(*item))
                if self.limit is not None and self.next >= self.limit:
                    stopped = "seconds"
                    break
                if on_block is not None:
                    on_block(now)
            yield from self._count(self._end_segment())  # pending detections, also when the source failed
        finally:
            source.close()
        self.summary = Summary(self.seconds, self.detections, self.dropped, self.drops, source.overflows, stopped)
        if error is not None:
            raise error

    def _count(self, events: list) -> list:
        self.detections += len(events)
        return events

    def _process(self, index: int, block: np.ndarray) -> list:
        from .audio import mix_down

        events = self._resync(index) if index > self.next else []
        mono = mix_down(block)
        if self.limit is not None:
            mono = mono[: max(0, self.limit - index)]
        if len(mono):
            self.peak = max(self.peak, float(np.sqrt(np.mean(mono * mono))))
            events += self.stream.feed(self.resample(mono))
        self.next = index + len(mono)
        if self.source.overflows > self._overflows_seen:
            self._overflows_seen = self.source.overflows
            self.warn(f"the audio device lost input ({self._overflows_seen} overflow(s)); "
                      "times after it may be early by what was lost")
        return events

    def _end_segment(self) -> list:
        """The resampler's tail and the stream's pending detections."""
        return self.stream.feed(self.resample(np.zeros(0, np.float32), last=True)) + self.stream.flush()

    def _resync(self, index: int) -> list:
        """Blocks before ``index`` were dropped: end the segment, restart the stream at ``index``."""
        gap = (index - self.next) / self.rate
        events = self._end_segment()
        self.stream.reset(start_time=index / self.rate)
        self.resample = self._resampler_type(self.rate)
        self.drops += 1
        self.dropped += gap
        self.warn(f"processing fell behind: dropped {gap:.2f} s of audio at {self.seconds:.2f} s "
                  f"({self.drops} drop(s), {self.dropped:.2f} s in all); event times stay true")
        self.next = index
        return events
