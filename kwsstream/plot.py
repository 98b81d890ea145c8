"""A picture of the scores to tune by: each keyword's score over time, its threshold, the
detections, and the audio level underneath (``kwsstream detect AUDIO --plot scores.png``).

    from kwsstream import Spotter
    from kwsstream.plot import plot_scores

    trace = plot_scores(Spotter.load("my.kws"), "meeting.flac", "scores.png")
    print(len(trace.events), "detections")

The scores are those the detector sees (the stream's ``score_sink``, see
:data:`kwsstream.spotter.ScoreSink`): a keyword fires where its curve dips under its threshold
line. Frames the voice-activity gate held back score nothing and are drawn as gaps. The audio
runs through the same pipeline as ``detect`` (:class:`kwsstream.pipeline.Pipeline`), so the
events are the same.

matplotlib is not a runtime dependency: it is imported when a figure is made, and a missing one
is one line saying how to install it (:data:`INSTALL_HINT`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UsageError

if TYPE_CHECKING:
    from .spotter import Event, Spotter

LEVEL_SECONDS = 0.01
"""Audio per point of the level panel."""
LEVEL_FLOOR_DB = -90.0
INSTALL_HINT = "pip install matplotlib (from a kwsstream checkout: pip install -e '.[plot]')"
"""How to get matplotlib: true for an installed kwsstream and for a source checkout (whose
``plot`` extra pins the version)."""


@dataclass
class ScoreTrace:
    """What one audio stream scored: per-keyword scores of each frame (``+inf`` where the gate
    held the frame back or no match fits), the thresholds, the detections and the audio level.

    Attributes:
        source: the audio's name.
        names: the keywords, in score column order.
        thresholds: ``(K,)`` the thresholds the detector used.
        times: ``(n,)`` seconds of each frame's centre from the start of the stream.
        scores: ``(n, K)`` each keyword's score at each frame.
        events: the detections, in time order.
        level_times, level_db: the audio's RMS level (dBFS) every :data:`LEVEL_SECONDS`.
    """

    source: str
    names: list[str]
    thresholds: np.ndarray
    times: np.ndarray
    scores: np.ndarray
    events: list[Event] = field(default_factory=list)
    level_times: np.ndarray = field(default_factory=lambda: np.zeros(0))
    level_db: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def seconds(self) -> float:
        """Length of the audio in seconds."""
        return float(self.level_times[-1] + LEVEL_SECONDS) if len(self.level_times) else 0.0


class _Level:
    """RMS level of 16 kHz mono blocks in steps of :data:`LEVEL_SECONDS` (remainders carried)."""

    def __init__(self, rate: int):
        self.step = max(1, int(round(rate * LEVEL_SECONDS)))
        self.rest = np.zeros(0, np.float32)
        self.values: list[np.ndarray] = []

    def push(self, block: np.ndarray, last: bool = False) -> None:
        audio = np.concatenate([self.rest, block]) if len(self.rest) else block
        n = len(audio) // self.step * self.step
        if n:
            frames = audio[:n].reshape(-1, self.step).astype(np.float64)
            self.values.append(np.sqrt(np.mean(frames * frames, axis=1)))
        self.rest = audio[n:]
        if last and len(self.rest):
            tail = self.rest.astype(np.float64)
            self.values.append(np.array([np.sqrt(np.mean(tail * tail))]))
            self.rest = np.zeros(0, np.float32)

    def db(self) -> np.ndarray:
        rms = np.concatenate(self.values) if self.values else np.zeros(0)
        with np.errstate(divide="ignore"):
            return np.maximum(LEVEL_FLOOR_DB, 20 * np.log10(rms))


def trace_scores(spotter: Spotter, path_or_audio: str | Path | np.ndarray, *, rate: int = 16_000,
                 source: str | None = None) -> ScoreTrace:
    """Run audio through the spotter (the one pipeline ``detect`` uses) and keep every frame's
    scores. ``path_or_audio``: an audio file (any format the audio boundary reads) or samples
    (``(n,)`` or ``(n, channels)`` floats at ``rate`` Hz)."""
    from .audio import iter_audio_blocks
    from .encoders.base import SAMPLE_RATE
    from .pipeline import ChunkSource, Pipeline

    if isinstance(path_or_audio, (str, Path)):
        name = source or str(path_or_audio)
        blocks: Iterator[np.ndarray] = iter_audio_blocks(path_or_audio, block_seconds=10.0)
        block_rate = SAMPLE_RATE
    else:
        audio = np.asarray(path_or_audio)
        if audio.ndim not in (1, 2) or not np.issubdtype(audio.dtype, np.floating) or not len(audio):
            raise UsageError(f"plot_scores takes a path or non-empty float samples, got {audio.dtype} {audio.shape}")
        name = source or "audio"
        blocks, block_rate = iter([audio.astype(np.float32, copy=False)]), rate
    level = _Level(block_rate)

    def measured(chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for chunk in chunks:
            level.push(chunk if chunk.ndim == 1 else chunk.mean(axis=1))
            yield chunk
        level.push(np.zeros(0, np.float32), last=True)

    grid = spotter.encoder.grid
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    stream = None

    def sink(frame0: int, score: np.ndarray, start: np.ndarray, template: np.ndarray) -> None:
        times = stream.start_time + grid.centre(np.arange(frame0, frame0 + len(score)))
        parts.append((np.asarray(times, np.float64), np.array(score, np.float32)))

    stream = spotter.create_stream(source=name, score_sink=sink)
    events = list(Pipeline(stream, ChunkSource(measured(blocks), block_rate, name=name)))
    k = len(spotter.names)
    times = np.concatenate([t for t, _ in parts]) if parts else np.zeros(0)
    scores = np.concatenate([s for _, s in parts]) if parts else np.zeros((0, k), np.float32)
    db = level.db()
    return ScoreTrace(name, list(spotter.names), np.array(spotter.thresholds, np.float64), times, scores, events,
                      np.arange(len(db)) * LEVEL_SECONDS, db)


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError(f"plotting needs matplotlib, which is not installed: {INSTALL_HINT}") from None
    return Figure, FigureCanvasAgg


def figure_scores(trace: ScoreTrace) -> Any:
    """The figure (a :class:`matplotlib.figure.Figure`, not yet saved): on top one line per
    keyword (label: its name; ``nan`` where the gate held a frame back: a gap), its threshold
    as a dashed horizontal line (label ``NAME threshold``), its detections as markers at each
    event's end and cost (label ``NAME detections``) over a shaded span; below, the audio level."""
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(12, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    colours = [f"C{i % 10}" for i in range(len(trace.names))]
    finite = trace.scores[np.isfinite(trace.scores)]
    for k, (name, colour) in enumerate(zip(trace.names, colours)):
        curve = np.where(np.isfinite(trace.scores[:, k]), trace.scores[:, k], np.nan)
        top.plot(trace.times, curve, color=colour, linewidth=1.0, label=name)
        top.axhline(trace.thresholds[k], color=colour, linestyle="--", linewidth=1.0, label=f"{name} threshold")
        mine = [e for e in trace.events if e.keyword == name]
        for e in mine:
            top.axvspan(e.start, e.end, color=colour, alpha=0.15, linewidth=0)
        top.plot([e.end for e in mine], [e.cost for e in mine], linestyle="none", marker="v", markersize=9,
                 color=colour, markeredgecolor="black", label=f"{name} detections")
    high = max(float(np.max(trace.thresholds)) * 1.6 if len(trace.thresholds) else 0.0, 0.8)
    top.set_ylim(max(0.0, float(np.min(finite)) - 0.05) if len(finite) else 0.0, high)
    top.set_ylabel("score (lower: more alike)")
    top.set_title(f"{trace.source}: {len(trace.events)} detection(s); a keyword fires where its line dips under "
                  "its dashed threshold; gaps: no speech (voice-activity gate)", fontsize=9)
    top.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7)
    top.grid(alpha=0.3)
    bottom.plot(trace.level_times, trace.level_db, color="0.35", linewidth=0.6, label="level")
    bottom.set_ylim(LEVEL_FLOOR_DB, 0)
    bottom.set_ylabel("level (dBFS)")
    bottom.set_xlabel("time (s)")
    bottom.set_xlim(0, max(trace.seconds, float(trace.times[-1]) if len(trace.times) else 0.0) or 1.0)
    bottom.grid(alpha=0.3)
    return fig


def save_figure(fig: Any, out_png: str | Path) -> Path:
    """Write ``fig`` as a PNG (its folder must exist)."""
    out = Path(out_png)
    if not out.parent.is_dir():
        raise UsageError(f"{out}: the folder {out.parent} does not exist")
    fig.savefig(out, dpi=110)
    return out


def plot_scores(spotter: Spotter, path_or_audio: str | Path | np.ndarray, out_png: str | Path, *,
                rate: int = 16_000) -> ScoreTrace:
    """Score ``path_or_audio`` (a file, or samples at ``rate`` Hz) with ``spotter`` and write the
    picture (:func:`figure_scores`) to ``out_png``; returns the trace (``.events``: the detections)."""
    _matplotlib()  # a missing matplotlib is said before the audio is processed
    trace = trace_scores(spotter, path_or_audio, rate=rate)
    save_figure(figure_scores(trace), out_png)
    return trace


def plot_paths(out_png: str | Path, audio: Sequence[str | Path]) -> list[Path]:
    """Where each audio file's picture goes: ``out_png`` itself for one file; for several,
    ``out_png``'s stem suffixed with each audio file's stem (``scores-talk.png``; a number is
    added where two audio stems are the same)."""
    out = Path(out_png)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--plot {out}: the picture is a PNG: give a name ending in .png")
    if len(audio) == 1:
        return [out]
    paths, seen = [], set()
    for i, a in enumerate(audio):
        path = out.with_name(f"{out.stem}-{Path(a).stem}{out.suffix}")
        if path in seen:
            path = out.with_name(f"{out.stem}-{Path(a).stem}-{i + 1}{out.suffix}")
        seen.add(path)
        paths.append(path)
    return paths
