"""When a live stream emits an event (``python -m eval stream``'s latency): a model of the
runtime's frame timing, measured on the spotter itself.

An event ending at frame ``e`` is emitted once frame ``e + lookahead`` has a score, i.e. once the
encoder has produced that frame (receptive field, frames per run, right context) and the rest of
its matcher block is complete. :func:`probe_timing` measures this on a spotter by feeding it audio
a few samples at a time; :class:`Timing` answers for any frame. The compute time and the audio
device's buffer are not in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kwsstream.encoders.base import FrameGrid


@dataclass
class Timing:
    """When a frame's score reaches the detector in a live stream fed audio as it comes.

    ``ready(f)`` = ``own(f) + delay(f)`` samples from the stream's start, where ``own(f) = f *
    hop - pad + length`` is where frame ``f``'s own audio ends (its receptive field, on the
    encoder's :class:`FrameGrid`) and ``delay`` the samples the encoder (frames per run, right
    context) and the matcher (frames matched in blocks aligned to the stream) wait beyond it.
    ``delay`` is known for frames ``0..len(delay)-1`` and periodic with ``period`` frames from
    ``warmup`` on. An event ending at frame ``e`` is emitted when frame ``e + lookahead`` is
    ready (:mod:`kwsstream.detector`)."""

    hop: int
    pad: int
    length: int
    delay: np.ndarray
    warmup: int
    period: int
    lookahead: int
    sample_rate: int = 16000

    @classmethod
    def blocks(cls, grid: FrameGrid, lookahead: int, block: int, run: int = 1, right: int = 0) -> Timing:
        """The model of the runtime by hand: the encoder emits frames ``run`` at a time, each run
        once ``right`` frames past its last frame are complete; the matcher matches blocks of
        ``block`` frames; both aligned to the stream's start."""
        n = 4 * run * block
        f = np.arange(n)
        last_block = (f // block + 1) * block - 1  # the block's last frame
        last_needed = (last_block // run + 1) * run - 1 + right
        delay = (last_needed - f) * grid.hop
        return cls(grid.hop, grid.pad, grid.length, delay, 0, run * block, lookahead, grid.sample_rate)

    def ready(self, frame: np.ndarray) -> np.ndarray:
        """Samples fed when frame ``frame``'s score is matched."""
        f = np.asarray(frame, np.int64)
        n = len(self.delay)
        idx = np.where(f < n, np.minimum(f, n - 1), self.warmup + (f - self.warmup) % self.period)
        return f * self.hop - self.pad + self.length + self.delay[idx]

    def emitted(self, end_frame: np.ndarray) -> np.ndarray:
        """Seconds from the stream's start at which an event ending at ``end_frame`` is emitted."""
        return self.ready(np.asarray(end_frame, np.int64) + self.lookahead) / self.sample_rate


def probe_timing(spotter, seconds: float = 3.0, chunk: int = 8, longest: float = 48.0) -> Timing:
    """:func:`probe_once` on ``seconds`` of audio, doubled until the delay pattern shows (an
    encoder that runs every few seconds needs several runs of probe audio), at most ``longest``."""
    while True:
        try:
            return probe_once(spotter, seconds, chunk)
        except RuntimeError:
            if seconds * 2 > longest:
                raise
            seconds *= 2


def probe_once(spotter, seconds: float, chunk: int = 8) -> Timing:
    """:class:`Timing` measured on ``spotter`` itself: ``seconds`` of quiet noise fed ``chunk``
    samples at a time into a stream; a frame is ready at the samples fed when its score reached
    the score sink (rounded up to ``chunk``). The delay pattern repeats (encoder runs and matcher
    blocks are aligned to the stream): its period is found from the second quarter on."""
    grid = spotter.encoder.grid
    ready: list[int] = []
    fed = [0]

    def sink(frame0, score, start, template):
        ready.extend([fed[0]] * len(score))

    stream = spotter.create_stream(source="probe", score_sink=sink)
    audio = (np.random.default_rng(0).standard_normal(int(seconds * grid.sample_rate)) * 1e-3).astype(np.float32)
    for i in range(0, len(audio), chunk):
        fed[0] = min(len(audio), i + chunk)
        stream.feed(audio[i:i + chunk])
    n = len(ready)  # frames matched before the end of the stream (flush would release the rest)
    own = np.arange(n) * grid.hop - grid.pad + grid.length
    delay = np.asarray(ready, np.int64) - own
    warmup = n // 4
    period = next((p for p in range(1, (n - warmup) // 2)
                   if np.array_equal(delay[warmup:n - p], delay[warmup + p:n])), None)
    if period is None:
        raise RuntimeError(f"no periodic frame delay found in {seconds} s of probe audio")
    lookahead = int(round(spotter.options.detector.lookahead * grid.frame_rate))
    return Timing(grid.hop, grid.pad, grid.length, delay, warmup, period, lookahead, grid.sample_rate)
