"""Scoring, threshold sweep and operating points of ``python -m eval stream``: the measuring.

The CSV files, ``summary.md`` and the plots made of the rows given here are :mod:`eval.streamreport`.

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
  end (:class:`eval.streamtiming.Timing`): the detector fires at frame ``end + lookahead`` once that frame's score
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

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from eval.streamtiming import Timing
from kwsstream.truth import TOLERANCE
from kwsstream.detector import DetectorOptions, detect_offline
from kwsstream.encoders.base import FrameGrid

TARGETS = (0.5, 1.0, 5.0)
"""False alarms per hour per keyword at which the FRR is reported."""
ASKED = (0.1, 0.3, 1.0, 3.0, 10.0)
"""Target rates asked of the stored false-alarm curves (calibration accuracy)."""
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
    """(events, occurrences) bool: :func:`kwsstream.truth.matches` for one keyword, vectorised."""
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
        thresholds = thresholds_at(enrolled, offset)
        rows += [{**base, **_single(result, i, k), "keyword": name, "threshold": float(thresholds[k])}
                 for k, name in enumerate(names)]
        rows.append({**base, **_pooled(result, i, n_k), "keyword": ALL, "threshold": math.nan})
    return rows


def _single(result: SweepResult, i: int, k: int) -> dict:
    """Keyword ``k``'s counts and rates at point ``i``."""
    frr = 1 - _rate(result.hits[i, k], result.occurrences[k])
    return {"hits": int(result.hits[i, k]), "occurrences": int(result.occurrences[k]),
            "false_alarms": int(result.false_alarms[i, k]), "negative_hours": result.hours, "frr": frr,
            "frr_macro": frr, "fa_per_hour": _rate(result.false_alarms[i, k], result.hours),
            "repeats": int(result.repeats[i, k]), "ignored": int(result.ignored[i, k]), "keywords": 1}


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
        rows += [{**base, **_single(result, i, k), "keyword": name, "threshold": float(result.thresholds[i, k])}
                 for k, name in enumerate(names)]
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
