"""Scoring, threshold sweep, operating points, DET plots and the summary of ``python -m eval stream``.

Everything here works on recorded score traces and plain arrays (no audio, no encoder), so the
figures can be checked by hand (``tests/test_stream_bench.py``).

* **Scoring** (:func:`score_events`): an event of keyword ``k`` is a *hit* for a true occurrence of
  ``k`` when their spans overlap, the occurrence widened by :data:`kwsstream.truth.TOLERANCE` on each
  side (the rule of :func:`kwsstream.truth.matches`); each occurrence is counted once (events are
  taken in time order, a hit takes the earliest occurrence it matches that is not yet found).
  An event that is not a hit but overlaps (same tolerance) an *ignore* row of its keyword (a
  word the truth cannot call a keyword or not, e.g. ``callers`` for ``caller``) is *ignored*:
  neither a hit nor a false alarm. Every other event is a *false alarm*; a false alarm that matches
  an occurrence already found is also counted as a *repeat*.
* **Counted span**: events ending after ``count_from`` seconds, occurrences starting at or after
  it, and the hours from it to the end (own-voice calibration holds out the start of a stream).
* **Latency** of a hit: the time its event is *emitted in a live stream* minus the true word's
  end (:class:`Timing`): the detector fires at frame ``end + lookahead`` once that frame's score
  exists, i.e. once the encoder has produced that frame and the rest of its matcher block
  (measured on the spotter itself by :func:`probe_timing`). It includes the encoder's receptive
  field and look-ahead, its frames-per-run, the matcher block and the detector look-ahead; not
  the compute time nor the audio device's buffer.
* **Sweep** (:func:`sweep`): one common offset added to every keyword's base threshold (the
  calibrated one), replayed on the recorded trace with :func:`kwsstream.detector.detect_offline`
  (the runtime's own detector: at offset 0 with the enrollment thresholds it gives exactly the
  live events). :func:`evaluate` replays any list of threshold vectors (e.g. each keyword moved to
  a target rate along its stored false-alarm curve).
* **Rates**: FA/h of a keyword = its false alarms / hours of negative audio (the counted test
  stream plus the negative streams); all keywords together: total false alarms / (hours x
  keywords), i.e. *false alarms per hour per keyword*. FRR = 1 - hits / occurrences (**micro**:
  occurrences pooled over keywords); **macro** FRR = the mean over keywords (with occurrences)
  of each keyword's FRR.
* **FRR at a target FA/h** (:func:`operating_points`): the lowest micro FRR among the swept points
  whose FA/h is at most the target (macro FRR given at that same point); nothing is interpolated
  (no point under the target: not reached).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kwsstream.calibrate import DEFAULT_FA_PER_HOUR
from kwsstream.truth import TOLERANCE
from kwsstream.detector import DetectorOptions, detect_offline
from kwsstream.encoders.base import FrameGrid

TARGETS = (0.5, 1.0, 5.0)
"""False alarms per hour per keyword at which the FRR is reported."""
ASKED = (0.1, 0.3, 1.0, 3.0, 10.0)
"""Target rates asked of the stored false-alarm curves (calibration accuracy)."""
DET_COLUMNS = ("corpus", "condition", "encoder", "calibration", "keyword", "offset", "threshold", "hits",
               "occurrences", "false_alarms", "negative_hours", "frr", "frr_macro", "fa_per_hour", "repeats",
               "ignored", "keywords")
OP_COLUMNS = ("corpus", "condition", "encoder", "calibration", "keyword", "point", "target_fa_per_hour", "offset",
              "threshold", "frr", "frr_macro", "fa_per_hour", "hits", "occurrences", "false_alarms", "repeats",
              "ignored", "negative_hours", "latency_median", "latency_p95", "latency_n")
CAL_COLUMNS = ("corpus", "condition", "encoder", "calibration", "keyword", "asked_fa_per_hour", "threshold",
               "fa_per_hour", "false_alarms", "negative_hours", "keywords", "frr", "frr_macro", "hits",
               "occurrences", "repeats", "ignored")
ALL = "all"
OWN_SPAN = "builtin, own span"
"""Calibration label of the built-in thresholds counted on the own-voice test span only (a
like-for-like comparison with ``own``: the same audio counted)."""
CALIBRATIONS = ("builtin", OWN_SPAN, "own")


def default_offsets(low: float = -0.3, high: float = 0.3, step: float = 0.005) -> np.ndarray:
    """Offsets ``low..high`` in steps of ``step``, always holding 0 exactly."""
    n_low, n_high = int(round(-low / step)), int(round(high / step))
    return np.round(np.arange(-n_low, n_high + 1) * step, 6)


@dataclass
class Events:
    """Detections: keyword index, start and end (s), cost; in the order the detector emitted them;
    ``emitted``: when each was emitted in a live stream (s), if known (:class:`Timing`)."""

    keyword: np.ndarray
    start: np.ndarray
    end: np.ndarray
    cost: np.ndarray
    emitted: np.ndarray | None = None

    @classmethod
    def from_rows(cls, rows: np.ndarray, grid: FrameGrid, timing: Timing | None = None,
                  seconds: float | None = None) -> Events:
        """From detector rows (keyword, template, start frame, end frame, cost), frames to seconds
        as :meth:`kwsstream.spotter.Spotter._events` does; with ``timing``, the emission times
        (an event flushed at the end of a stream of ``seconds`` is emitted at its end)."""
        rows = np.asarray(rows, np.float64).reshape(-1, 5)
        spans = [grid.span(int(s), int(e)) for s, e in rows[:, 2:4]]
        span = np.array(spans, np.float64).reshape(-1, 2)
        emitted = None
        if timing is not None:
            emitted = timing.emitted(rows[:, 3].astype(np.int64))
            if seconds is not None:
                emitted = np.minimum(emitted, seconds)
        return cls(rows[:, 0].astype(np.int64), span[:, 0], span[:, 1], rows[:, 4].copy(), emitted)

    def __len__(self) -> int:
        return len(self.keyword)


@dataclass
class Truth:
    """True keyword occurrences: keyword index, start and end (s); and the *ignore* spans
    (keyword index, start, end): events there that are not hits are not false alarms."""

    keyword: np.ndarray
    start: np.ndarray
    end: np.ndarray
    ignore_keyword: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ignore_start: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ignore_end: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def empty(cls) -> Truth:
        return cls(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))

    def counted_from(self, seconds: float) -> Truth:
        """The occurrences starting at or after ``seconds`` (ignore spans ending after it)."""
        keep, ign = self.start >= seconds, self.ignore_end > seconds
        return Truth(self.keyword[keep], self.start[keep], self.end[keep], self.ignore_keyword[ign],
                     self.ignore_start[ign], self.ignore_end[ign])


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


def probe_timing(spotter, seconds: float = 3.0, chunk: int = 8) -> Timing:
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


@dataclass
class Score:
    """Per keyword (K,): hits, occurrences, false alarms (repeats included), repeats, ignored
    events; and each keyword's hit latencies (s)."""

    hits: np.ndarray
    occurrences: np.ndarray
    false_alarms: np.ndarray
    repeats: np.ndarray
    latencies: list[np.ndarray] = field(default_factory=list)
    ignored: np.ndarray | None = None


def overlaps(ev_start: np.ndarray, ev_end: np.ndarray, tr_start: np.ndarray, tr_end: np.ndarray) -> np.ndarray:
    """(events, occurrences) bool: :func:`kwsstream.demo.matches` for one keyword, vectorised."""
    return ((np.asarray(ev_start)[:, None] < np.asarray(tr_end)[None, :] + TOLERANCE)
            & (np.asarray(ev_end)[:, None] > np.asarray(tr_start)[None, :] - TOLERANCE))


def score_events(events: Events, truth: Truth, n_keywords: int, lookahead: float | None = None,
                 count_from: float = 0.0) -> Score:
    """Hits, false alarms, repeats, ignored events and latencies of ``events`` against ``truth``
    (module docstring), counting only from ``count_from`` seconds on. Latency: emission time
    (``events.emitted``) - word end; without emission times, event end + detector ``lookahead``
    - word end."""
    lookahead = DetectorOptions().lookahead if lookahead is None else lookahead
    if count_from > 0:
        truth = truth.counted_from(count_from)
    hits, occ, fas, reps, ign = (np.zeros(n_keywords, np.int64) for _ in range(5))
    latencies = []
    for k in range(n_keywords):
        ev = np.flatnonzero((events.keyword == k) & (events.end > count_from))
        ev = ev[np.argsort(events.end[ev], kind="stable")]
        tr = np.flatnonzero(truth.keyword == k)
        tr = tr[np.argsort(truth.start[tr], kind="stable")]
        ig = np.flatnonzero(truth.ignore_keyword == k)
        occ[k] = len(tr)
        lat = []
        if len(ev):
            match = overlaps(events.start[ev], events.end[ev], truth.start[tr], truth.end[tr])
            ignore = overlaps(events.start[ev], events.end[ev], truth.ignore_start[ig], truth.ignore_end[ig]).any(axis=1)
            found = np.zeros(len(tr), bool)
            for i, e in enumerate(ev):
                free = np.flatnonzero(match[i] & ~found)
                if len(free):
                    j = free[0]
                    found[j] = True
                    fired = events.emitted[e] if events.emitted is not None else events.end[e] + lookahead
                    lat.append(fired - truth.end[tr[j]])
                elif ignore[i]:
                    ign[k] += 1
                else:
                    fas[k] += 1
                    reps[k] += bool(match[i].any())
            hits[k] = found.sum()
        latencies.append(np.array(lat, np.float64))
    return Score(hits, occ, fas, reps, latencies, ign)


@dataclass
class Trace:
    """One stream's per-keyword score trace as the detector saw it (see
    :data:`kwsstream.spotter.ScoreSink`), frames 0..n-1."""

    score: np.ndarray  # (n, K) float32
    start: np.ndarray  # (n, K) int64
    template: np.ndarray  # (n, K) int64
    seconds: float  # audio length


@dataclass
class SweepResult:
    """One stream's counts at every point (an offset, or an asked rate): (points, K) arrays,
    occurrences (K,), hours counted, the latencies at offset 0 (per keyword), the thresholds
    (points, K) and the ignored events (points, K)."""

    offsets: np.ndarray
    hits: np.ndarray
    false_alarms: np.ndarray
    repeats: np.ndarray
    occurrences: np.ndarray
    hours: float
    latencies: list[np.ndarray]
    thresholds: np.ndarray | None = None
    ignored: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.ignored is None:
            self.ignored = np.zeros_like(self.hits)

    def __add__(self, other: SweepResult) -> SweepResult:
        if not np.array_equal(self.offsets, other.offsets):
            raise ValueError("sweeps over different threshold offsets cannot be added")
        return SweepResult(self.offsets, self.hits + other.hits, self.false_alarms + other.false_alarms,
                           self.repeats + other.repeats, self.occurrences + other.occurrences,
                           self.hours + other.hours,
                           [np.concatenate([a, b]) for a, b in zip(self.latencies, other.latencies)],
                           self.thresholds, self.ignored + other.ignored)


def thresholds_at(enrolled: np.ndarray, offset: float) -> np.ndarray:
    """The detector thresholds (float32, as the runtime holds them) at ``offset``."""
    return (np.asarray(enrolled, np.float64) + offset).astype(np.float32)


def replay(trace: Trace, thresholds: np.ndarray, grid: FrameGrid,
           options: DetectorOptions = DetectorOptions(), timing: Timing | None = None) -> Events:
    """The events the runtime detector gives on ``trace`` at ``thresholds`` (with emission times
    when ``timing`` is given)."""
    rows = detect_offline(trace.score, trace.start, trace.template, np.asarray(thresholds, np.float32),
                          grid.frame_rate, options)
    return Events.from_rows(rows, grid, timing, trace.seconds)


def evaluate(trace: Trace, truth: Truth, thresholds: Sequence[np.ndarray], points: np.ndarray, grid: FrameGrid,
             options: DetectorOptions = DetectorOptions(), *, count_from: float = 0.0,
             timing: Timing | None = None, latency_at: int | None = None) -> SweepResult:
    """Score the replayed events at each threshold vector (labelled by ``points``), counting
    from ``count_from`` seconds on; latencies at point ``latency_at``."""
    n_k = trace.score.shape[1]
    shape = (len(points), n_k)
    hits, fas, reps, ign = (np.zeros(shape, np.int64) for _ in range(4))
    counted = truth.counted_from(count_from) if count_from > 0 else truth
    occurrences = (np.bincount(counted.keyword, minlength=n_k)[:n_k] if len(counted.keyword)
                   else np.zeros(n_k, np.int64))
    latencies = [np.zeros(0)] * n_k
    for i, th in enumerate(thresholds):
        s = score_events(replay(trace, th, grid, options, timing), truth, n_k, options.lookahead, count_from)
        hits[i], fas[i], reps[i], ign[i] = s.hits, s.false_alarms, s.repeats, s.ignored
        if i == latency_at:
            latencies = s.latencies
    hours = max(0.0, trace.seconds - count_from) / 3600
    return SweepResult(np.asarray(points), hits, fas, reps, occurrences, hours, latencies,
                       np.array([np.asarray(t, np.float64) for t in thresholds]).reshape(len(points), n_k), ign)


def sweep(trace: Trace, truth: Truth, enrolled: np.ndarray, offsets: np.ndarray, grid: FrameGrid,
          options: DetectorOptions = DetectorOptions(), *, count_from: float = 0.0,
          timing: Timing | None = None) -> SweepResult:
    """Score the replayed events at every offset from the base (enrollment) thresholds."""
    zero = [i for i, o in enumerate(offsets) if o == 0]
    return evaluate(trace, truth, [thresholds_at(enrolled, o) for o in offsets], np.asarray(offsets), grid, options,
                    count_from=count_from, timing=timing, latency_at=zero[0] if zero else None)


def macro_frr(hits: np.ndarray, occurrences: np.ndarray) -> float:
    """Mean over keywords with occurrences of each keyword's FRR (NaN when none has any)."""
    hits, occ = np.asarray(hits, np.float64), np.asarray(occurrences, np.float64)
    has = occ > 0
    return float(np.mean(1 - hits[has] / occ[has])) if has.any() else math.nan


# ----------------------------------------------------------------------------- tables


def _rate(n: float, d: float) -> float:
    return n / d if d > 0 else math.nan


def det_rows(result: SweepResult, names: Sequence[str], enrolled: np.ndarray, *, corpus: str, condition: str,
             encoder: str, calibration: str = "builtin") -> list[dict]:
    """``det.csv`` rows: per keyword and for all keywords together, at every offset."""
    rows = []
    n_k = len(names)
    for i, offset in enumerate(result.offsets):
        base = {"corpus": corpus, "condition": condition, "encoder": encoder, "calibration": calibration,
                "offset": float(offset)}
        for k, name in enumerate(names):
            frr = 1 - _rate(result.hits[i, k], result.occurrences[k])
            rows.append({**base, "keyword": name, "threshold": float(thresholds_at(enrolled, offset)[k]),
                         "hits": int(result.hits[i, k]), "occurrences": int(result.occurrences[k]),
                         "false_alarms": int(result.false_alarms[i, k]), "negative_hours": result.hours,
                         "frr": frr, "frr_macro": frr, "fa_per_hour": _rate(result.false_alarms[i, k], result.hours),
                         "repeats": int(result.repeats[i, k]), "ignored": int(result.ignored[i, k]), "keywords": 1})
        rows.append({**base, **_pooled(result, i, n_k), "keyword": ALL, "threshold": math.nan})
    return rows


def _pooled(result: SweepResult, i: int, n_k: int) -> dict:
    hits, occ, fas = int(result.hits[i].sum()), int(result.occurrences.sum()), int(result.false_alarms[i].sum())
    return {"hits": hits, "occurrences": occ, "false_alarms": fas, "negative_hours": result.hours,
            "frr": 1 - _rate(hits, occ), "frr_macro": macro_frr(result.hits[i], result.occurrences),
            "fa_per_hour": _rate(fas, result.hours * n_k), "repeats": int(result.repeats[i].sum()),
            "ignored": int(result.ignored[i].sum()), "keywords": n_k}


def calibration_rows(result: SweepResult, names: Sequence[str], *, corpus: str, condition: str, encoder: str,
                     calibration: str) -> list[dict]:
    """``calibration.csv`` rows (asked vs got): ``result`` from :func:`evaluate` with points = the
    asked rates and each keyword's threshold moved to them along its stored curve."""
    rows = []
    n_k = len(names)
    for i, asked in enumerate(result.offsets):
        base = {"corpus": corpus, "condition": condition, "encoder": encoder, "calibration": calibration,
                "asked_fa_per_hour": float(asked)}
        for k, name in enumerate(names):
            frr = 1 - _rate(result.hits[i, k], result.occurrences[k])
            rows.append({**base, "keyword": name, "threshold": float(result.thresholds[i, k]),
                         "fa_per_hour": _rate(result.false_alarms[i, k], result.hours),
                         "false_alarms": int(result.false_alarms[i, k]), "negative_hours": result.hours, "keywords": 1,
                         "frr": frr, "frr_macro": frr, "hits": int(result.hits[i, k]),
                         "occurrences": int(result.occurrences[k]), "repeats": int(result.repeats[i, k]),
                         "ignored": int(result.ignored[i, k])})
        rows.append({**base, **_pooled(result, i, n_k), "keyword": ALL, "threshold": math.nan})
    return rows


def _latency(values: np.ndarray) -> dict:
    if not len(values):
        return {"latency_median": math.nan, "latency_p95": math.nan, "latency_n": 0}
    return {"latency_median": float(np.median(values)), "latency_p95": float(np.percentile(values, 95)),
            "latency_n": len(values)}


def operating_points(rows: Sequence[dict], result: SweepResult, names: Sequence[str],
                     targets: Sequence[float] = TARGETS) -> list[dict]:
    """``operating_points.csv`` rows of one (corpus, condition, encoder, calibration) from its
    ``det_rows``: per keyword and ``all``, the FRR at each target FA/h (lowest micro FRR among
    points at or under it; ``point`` = ``fa<=T``), the enrollment point (``point`` =
    ``enrollment``, offset 0, with repeats and latency) and the best point at or under the
    enrollment point's own FA/h (``point`` = ``best<=enrollment``). Ties: the lower FA/h, then
    the offset nearest 0."""
    out = []
    keys = ("corpus", "condition", "encoder", "calibration", "keyword", "offset", "threshold", "frr", "frr_macro",
            "fa_per_hour", "hits", "occurrences", "false_alarms", "repeats", "ignored", "negative_hours")
    for keyword in [*names, ALL]:
        mine = [r for r in rows if r["keyword"] == keyword]
        if not mine:
            continue
        lat = result.latencies[list(names).index(keyword)] if keyword != ALL else np.concatenate(result.latencies)
        enrollment = next(r for r in mine if r["offset"] == 0)
        points = [(f"fa<={t:g}", t) for t in targets] + [("best<=enrollment", enrollment["fa_per_hour"])]
        for label, target in points:
            under = [r for r in mine if r["fa_per_hour"] <= target and not math.isnan(r["frr"])]
            if under:
                best = min(under, key=lambda r: (r["frr"], r["fa_per_hour"], abs(r["offset"])))
                row = {k: best.get(k, math.nan) for k in keys}
            else:
                row = {k: mine[0].get(k) for k in ("corpus", "condition", "encoder", "calibration", "keyword",
                                                   "occurrences", "negative_hours")}
                row.update({k: math.nan for k in ("offset", "threshold", "frr", "frr_macro", "fa_per_hour")})
            out.append({**row, "point": label, "target_fa_per_hour": target})
        out.append({**{k: enrollment.get(k, math.nan) for k in keys}, "point": "enrollment",
                    "target_fa_per_hour": math.nan, **_latency(lat)})
    return out


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k, "")) for k in columns})
    return path


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


# ----------------------------------------------------------------------------- plots

LINESTYLES = {"builtin": "-", "own": "--"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_det(path: Path, title: str, curves: dict[tuple[str, str], list[dict]],
             hours_per_keyword: dict[tuple[str, str], float]) -> dict:
    """One DET figure: per (encoder, calibration) the ``all`` rows (micro FRR against FA/h per
    keyword, log x; solid: built-in calibration, dashed: own voice), the enrollment point (offset
    0) marked. Points with no false alarm are drawn at half the resolution (0.5 / (hours x
    keywords)), left of every measured rate. Returns what was drawn: key -> (fa_per_hour, frr)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    drawn, floors, colours = {}, [], {}
    for (encoder, calibration), rows in curves.items():
        if not rows:
            continue
        rows = sorted(rows, key=lambda r: r["offset"])
        hours = hours_per_keyword[encoder, calibration]
        floor = 0.5 / hours if hours > 0 else 1e-3
        floors.append(floor)
        x = np.array([max(r["fa_per_hour"], floor) for r in rows])
        y = np.array([r["frr"] for r in rows]) * 100
        kwargs = {"color": colours[encoder]} if encoder in colours else {}
        (line,) = ax.plot(x, y, LINESTYLES.get(calibration, ":"), lw=1.5, label=f"{encoder}, {calibration}",
                          drawstyle="steps-post", **kwargs)
        colours[encoder] = line.get_color()
        enrollment = next(r for r in rows if r["offset"] == 0)
        ax.plot([max(enrollment["fa_per_hour"], floor)], [enrollment["frr"] * 100], "o" if calibration == "builtin"
                else "s", ms=8, color=line.get_color(), markeredgecolor="black")
        drawn[encoder, calibration] = (x, y)
    ax.set_xscale("log")
    ax.set_xlabel("false alarms per hour per keyword (log; dotted: one false alarm)")
    ax.set_ylabel("false-reject rate, micro (%)")
    ax.set_ylim(-2, 102)
    if floors:
        ax.axvline(min(floors) * 2, color="grey", lw=0.5, ls=":")
    for target in TARGETS:
        ax.axvline(target, color="grey", lw=0.5, ls="--")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title=f"encoder, calibration (marker: {DEFAULT_FA_PER_HOUR:g} FA/h asked)", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def plot_asked_vs_got(path: Path, title: str, series: dict[tuple[str, str, str], tuple[list, list, float]]) -> dict:
    """Calibration accuracy, one panel per calibration: false alarms per hour per keyword got
    against those asked (log-log), a line per (encoder, condition), the y = x line and the x2
    band (grey). A point with no false alarm is drawn hollow at half the resolution
    (0.5 / (hours x keywords)). ``series``: (calibration, encoder, condition) -> (asked, got,
    keyword-hours). Returns what was drawn: key -> (asked, got drawn)."""
    plt = _pyplot()
    calibrations = [c for c in ("builtin", "own") if any(k[0] == c for k in series)]
    fig, axes = plt.subplots(1, max(1, len(calibrations)), figsize=(5.2 * max(1, len(calibrations)), 4.8),
                             squeeze=False)
    drawn = {}
    lo, hi = min(ASKED) / 3, max(ASKED) * 10
    for ax, calibration in zip(axes[0], calibrations or ["builtin"]):
        grid = np.geomspace(lo, hi, 50)
        ax.fill_between(grid, grid / 2, grid * 2, color="grey", alpha=0.15, lw=0, label="×2 of asked")
        ax.plot(grid, grid, color="black", lw=0.8, label="got = asked")
        markers = "osD^v<>p"
        keys = [k for k in series if k[0] == calibration]
        encoders = sorted({k[1] for k in keys})
        for (cal, encoder, condition) in keys:
            asked, got, kw_hours = series[cal, encoder, condition]
            floor = 0.5 / kw_hours if kw_hours > 0 else lo
            y = np.array([g if g > 0 else floor for g in got], np.float64)
            zero = np.array([g == 0 for g in got])
            marker = markers[encoders.index(encoder) % len(markers)]
            (line,) = ax.plot(asked, y, "-", lw=1, marker=marker, ms=5, label=f"{encoder}, {condition}")
            if zero.any():
                ax.plot(np.asarray(asked)[zero], y[zero], marker, ms=7, mfc="white", color=line.get_color())
            drawn[cal, encoder, condition] = (np.asarray(asked, np.float64), y)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo / 3, hi * 3)
        ax.set_xlabel("asked (--fa-per-hour)")
        ax.set_ylabel("got: false alarms per hour per keyword")
        ax.set_title(f"{title}: {calibration} calibration", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, title="hollow: no false alarm (drawn at half of one)", title_fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


# ----------------------------------------------------------------------------- summary


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def _num(x: float, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _frr2(row: dict | None) -> str:
    if row is None:
        return "–"
    return f"{_pct(row['frr'])} / {_pct(row['frr_macro'])}"


def _groups(rows: Sequence[dict]) -> list[tuple[str, str, str]]:
    out = []
    for r in rows:
        key = (r["corpus"], r["condition"], r["encoder"])
        if key not in out:
            out.append(key)
    return out


HOW_TO_READ = (
    "Each test stream (long real or synthetic speech with the keywords inside) is played through the detection "
    "pipeline a user's `kwsstream detect FILE` runs (block reader → encoder → VAD gate → S-DTW matcher → "
    "detector), once per condition (dry; babble + pink noise at 20 and 10 dB SNR; a reverberant room, RT60 "
    "0.5 s), and its per-keyword score trace is recorded. The detector is then replayed on the trace with other "
    "thresholds. **Calibrations**: *builtin* = the thresholds enrollment chose on the bundled background (Russian "
    "speech by one speaker, music, noise) — what a user gets; *own* = the same templates calibrated "
    "(`calibrate_keywords(..., background=Background.files([held-out file]))`) on the first minutes of the test "
    "stream's own keyword-free prompts (the speaker's other speech, written to `own/`), tested only on the rest "
    "of the stream (events and truth from the first prompt after the held-out part; negative hours counted from "
    "there) plus the negative streams; *builtin, own span* = the built-in thresholds counted on that same test "
    "span (like for like with *own*). **Asked vs got**: every keyword's threshold moved to the asked rate along "
    "its stored false-alarm curve (`set_sensitivity(keyset, name, fa_per_hour=T)`, what `--fa-per-hour T` does), "
    "and the false alarms per hour per keyword actually got. **FRR** micro = missed occurrences / occurrences "
    "(pooled); macro = mean over keywords of each keyword's FRR. **FA/h** = false alarms per hour *per keyword*: "
    "false alarms / (hours of negative audio × keywords); the negative audio is the counted test stream "
    "(outside the keywords as well as around them) plus the negative streams, and its keyword-hours are given "
    "beside every figure — one false alarm is 1/(hours × keywords) FA/h. An event is a hit when it overlaps a "
    "true occurrence of its keyword widened by 0.3 s (each occurrence once); a non-hit event overlapping an "
    "`ignore` row of its keyword (same tolerance) is *ignored*; every other event is a false alarm (on an "
    "already-found occurrence also a **repeat**). **FRR at T FA/h**: one common offset added to every "
    "keyword's calibrated threshold is swept (DET curve); the lowest micro FRR among swept points with FA/h ≤ T "
    "(macro at that same point; nothing interpolated; – = no swept point that low). The DET plots draw micro "
    f"FRR. **Enrollment point** = thresholds at {DEFAULT_FA_PER_HOUR:g} FA/h asked (the default target). **Latency** = time the event is emitted in a live "
    "stream − true end of the word, over the hits at the enrollment point: the detector fires at frame end + "
    "look-ahead (0.25 s) once that frame's score exists, i.e. once the encoder has produced it (receptive field, "
    "the encoder's frames per run and right context) and its whole matcher block is complete — measured on the "
    "spotter by feeding it audio 8 samples at a time; compute time and the audio device's buffer are not in it."
)


def summary_markdown(ops: Sequence[dict], runs: Sequence[dict], plots: Sequence[tuple[str, str]],
                     command: str, notes: Sequence[str] = (), cal: Sequence[dict] = (),
                     own: Sequence[str] = ()) -> str:
    """``summary.md``: how to read it, the tables (both calibrations side by side), the plots."""
    lines = ["# Streaming benchmark", "", f"Command: `{command}`", "", "## How to read it", "", HOW_TO_READ, ""]
    lines += [*notes, ""] if notes else []
    if own:
        lines += ["Own-voice calibration:", "", *[f"- {o}" for o in own], ""]
    cals = [c for c in CALIBRATIONS if any(r["calibration"] == c for r in ops)]
    per_keyword = [c for c in ("builtin", "own") if c in cals]
    groups = _groups(ops)

    def op(key, calibration, point, keyword=ALL):
        return next((r for r in ops if (r["corpus"], r["condition"], r["encoder"]) == key
                     and r["calibration"] == calibration and r["keyword"] == keyword and r["point"] == point), None)

    def kw_hours(row):
        return row["negative_hours"] * len({r["keyword"] for r in ops if (r["corpus"], r["condition"], r["encoder"],
                                                                          r["calibration"]) == (row["corpus"],
                                           row["condition"], row["encoder"], row["calibration"])} - {ALL})

    if cal:
        asked = sorted({r["asked_fa_per_hour"] for r in cal})
        lines += ["## Calibration accuracy: asked vs got", "",
                  "False alarms per hour per keyword got (false alarms) when every keyword's threshold is moved "
                  "to the asked rate along its stored curve; *kw·h* = keyword-hours of negative audio behind the "
                  "row. Within ×2 of the asked rate is as good as a rate measured on a few false alarms gets.", "",
                  "| corpus | condition | encoder | calibration | kw·h | " + " | ".join(f"asked {a:g}" for a in asked)
                  + " |", "| --- " * (5 + len(asked)) + "|"]
        for key in _groups(cal):
            for c in cals:
                mine = {r["asked_fa_per_hour"]: r for r in cal if (r["corpus"], r["condition"], r["encoder"]) == key
                        and r["calibration"] == c and r["keyword"] == ALL}
                if not mine:
                    continue
                first = next(iter(mine.values()))
                cells = [f"{_num(mine[a]['fa_per_hour'])} ({mine[a]['false_alarms']})" if a in mine else "–"
                         for a in asked]
                lines.append(f"| {' | '.join(key)} | {c} | {first['negative_hours'] * first['keywords']:.2f} | "
                             + " | ".join(cells) + " |")
        lines += ["", "FRR micro / macro at the asked rate:", "",
                  "| corpus | condition | encoder | calibration | occ. | " + " | ".join(f"asked {a:g}" for a in asked)
                  + " |", "| --- " * (5 + len(asked)) + "|"]
        for key in _groups(cal):
            for c in cals:
                mine = {r["asked_fa_per_hour"]: r for r in cal if (r["corpus"], r["condition"], r["encoder"]) == key
                        and r["calibration"] == c and r["keyword"] == ALL}
                if not mine:
                    continue
                first = next(iter(mine.values()))
                lines.append(f"| {' | '.join(key)} | {c} | {first['occurrences']} | "
                             + " | ".join(_frr2(mine.get(a)) for a in asked) + " |")
        lines.append("")
    lines += ["## FRR at a false-alarm rate (swept offsets, all keywords)", "",
              "FRR micro / macro at the best common offset with FA/h ≤ 0.5, 1, 5 (from the DET sweep around each "
              "calibration's thresholds).", "",
              "| corpus | condition | encoder | calibration | kw·h | occ. | FRR @0.5 | FRR @1 | FRR @5 |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key in groups:
        for c in cals:
            e = op(key, c, "enrollment")
            if e is None:
                continue
            lines.append(f"| {' | '.join(key)} | {c} | {kw_hours(e):.2f} | {e['occurrences']} | "
                         f"{_frr2(op(key, c, 'fa<=0.5'))} | {_frr2(op(key, c, 'fa<=1'))} | {_frr2(op(key, c, 'fa<=5'))} |")
    lines += ["", f"## Enrollment point ({DEFAULT_FA_PER_HOUR:g} FA/h asked, the default)", "",
              "| corpus | condition | encoder | calibration | kw·h | FRR micro (hits/occ.) | FRR macro | FA/h (false "
              "alarms) | repeats | ignored | best FRR ≤ its FA/h | latency median / p95 (s) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key in groups:
        for c in cals:
            e = op(key, c, "enrollment")
            if e is None:
                continue
            best = op(key, c, "best<=enrollment")
            lines.append(f"| {' | '.join(key)} | {c} | {kw_hours(e):.2f} | {_pct(e['frr'])} ({e['hits']}/"
                         f"{e['occurrences']}) | {_pct(e['frr_macro'])} | {_num(e['fa_per_hour'])} "
                         f"({e['false_alarms']}) | {e['repeats']} | {e['ignored']} | "
                         f"{_pct(best['frr']) if best else '–'} | "
                         f"{_num(e['latency_median'])} / {_num(e['latency_p95'])} |")
    lines += ["", "## Per keyword at the enrollment point", "",
              "FA/h of one keyword = its false alarms / hours of negative audio (*h*).", "",
              "| corpus | condition | encoder | keyword | " + " | ".join(
                  f"{c}: h | {c}: occ. | {c}: threshold | {c}: FRR | {c}: FA/h (n)" for c in per_keyword)
              + " | latency median / p95 (s, builtin) |",
              "| --- " * (4 + 5 * len(per_keyword) + 1) + "|"]
    for key in groups:
        names = [r["keyword"] for r in ops if (r["corpus"], r["condition"], r["encoder"]) == key
                 and r["point"] == "enrollment" and r["keyword"] != ALL and r["calibration"] == cals[0]]
        for name in names:
            cells = []
            for c in per_keyword:
                e = op(key, c, "enrollment", name)
                cells.append("– | – | – | – | –" if e is None else
                             f"{e['negative_hours']:.2f} | {e['occurrences']} | {_num(e['threshold'], 3)} | "
                             f"{_pct(e['frr'])} | {_num(e['fa_per_hour'])} ({e['false_alarms']})")
            b = op(key, cals[0], "enrollment", name)
            lines.append(f"| {' | '.join(key)} | {name} | " + " | ".join(cells)
                         + f" | {_num(b['latency_median'])} / {_num(b['latency_p95'])} |")
    if runs:
        lines += ["", "## Runs", "",
                  "Every stream × condition × encoder run through the pipeline (audio minutes, wall seconds "
                  "of the pipeline when it ran — 0 when the trace came from the cache — and whether the "
                  "detector replayed at the enrollment thresholds gave exactly the live events).", "",
                  "| corpus | keyset | stream | condition | encoder | minutes | occurrences | live events | "
                  "pipeline s | replay = live |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in runs:
            lines.append(f"| {r['corpus']} | {r['keyset']} | {r['stream']} | {r['condition']} | {r['encoder']} | "
                         f"{r['minutes']:.1f} | {r['occurrences']} | {r['live_events']} | {r['seconds']:.1f} | "
                         f"{'yes' if r['replay_equals_live'] else '**NO**'} |")
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{title}]({name})" for name, title in plots]
    return "\n".join(lines) + "\n"
