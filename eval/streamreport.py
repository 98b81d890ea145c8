"""Scoring, threshold sweep, operating points, DET plots and the summary of ``python -m eval stream``.

Everything here works on recorded score traces and plain arrays (no audio, no encoder), so the
figures can be checked by hand (``tests/test_stream_bench.py``).

* **Scoring** (:func:`score_events`): an event of keyword ``k`` is a *hit* for a true occurrence of
  ``k`` when their spans overlap, the occurrence widened by :data:`kwsstream.demo.TOLERANCE` on each
  side (the rule of :func:`kwsstream.demo.matches`); each occurrence is counted once (events are
  taken in time order, a hit takes the earliest occurrence it matches that is not yet found).
  Every other event is a *false alarm*; a false alarm that matches an occurrence already found is
  also counted as a *repeat*.
* **Latency** of a hit: the time its event fires minus the true word's end. The detector fires
  ``lookahead`` seconds after the event's end frame (:mod:`kwsstream.detector`), so latency =
  ``event.end + DetectorOptions().lookahead - truth.end``. An encoder that needs audio past a frame
  (speech_embedding: ~0.39 s) adds that on top in a live stream; it is not in this figure.
* **Sweep** (:func:`sweep`): one common offset added to every keyword's enrollment threshold,
  replayed on the recorded trace with :func:`kwsstream.detector.detect_offline` (the runtime's own
  detector: at offset 0 it gives exactly the live events).
* **Rates**: FA/h of a keyword = its false alarms / hours of negative audio (the whole test stream
  plus the negative streams); all keywords together: total false alarms / (hours x keywords),
  i.e. *false alarms per hour per keyword*. FRR = 1 - hits / occurrences.
* **FRR at a target FA/h** (:func:`operating_points`): the lowest FRR among the swept points whose
  FA/h is at most the target; nothing is interpolated (no point under the target: not reached).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kwsstream.demo import TOLERANCE
from kwsstream.detector import DetectorOptions, detect_offline
from kwsstream.encoders.base import FrameGrid

TARGETS = (0.5, 1.0, 5.0)
"""False alarms per hour per keyword at which the FRR is reported."""
DET_COLUMNS = ("corpus", "condition", "encoder", "keyword", "offset", "threshold", "hits", "occurrences",
               "false_alarms", "negative_hours", "frr", "fa_per_hour", "repeats", "keywords")
OP_COLUMNS = ("corpus", "condition", "encoder", "keyword", "point", "target_fa_per_hour", "offset", "threshold",
              "frr", "fa_per_hour", "hits", "occurrences", "false_alarms", "repeats", "negative_hours",
              "latency_median", "latency_p95", "latency_n")
ALL = "all"


def default_offsets(low: float = -0.3, high: float = 0.3, step: float = 0.005) -> np.ndarray:
    """Offsets ``low..high`` in steps of ``step``, always holding 0 exactly."""
    n_low, n_high = int(round(-low / step)), int(round(high / step))
    return np.round(np.arange(-n_low, n_high + 1) * step, 6)


@dataclass
class Events:
    """Detections: keyword index, start and end (s), cost; in the order the detector emitted them."""

    keyword: np.ndarray
    start: np.ndarray
    end: np.ndarray
    cost: np.ndarray

    @classmethod
    def from_rows(cls, rows: np.ndarray, grid: FrameGrid) -> Events:
        """From detector rows (keyword, template, start frame, end frame, cost), frames to seconds
        as :meth:`kwsstream.spotter.Spotter._events` does."""
        rows = np.asarray(rows, np.float64).reshape(-1, 5)
        spans = [grid.span(int(s), int(e)) for s, e in rows[:, 2:4]]
        span = np.array(spans, np.float64).reshape(-1, 2)
        return cls(rows[:, 0].astype(np.int64), span[:, 0], span[:, 1], rows[:, 4].copy())

    def __len__(self) -> int:
        return len(self.keyword)


@dataclass
class Truth:
    """True keyword occurrences: keyword index, start and end (s)."""

    keyword: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @classmethod
    def empty(cls) -> Truth:
        return cls(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))


@dataclass
class Score:
    """Per keyword (K,): hits, occurrences, false alarms (repeats included), repeats; and each
    keyword's hit latencies (s)."""

    hits: np.ndarray
    occurrences: np.ndarray
    false_alarms: np.ndarray
    repeats: np.ndarray
    latencies: list[np.ndarray] = field(default_factory=list)


def overlaps(ev_start: np.ndarray, ev_end: np.ndarray, tr_start: np.ndarray, tr_end: np.ndarray) -> np.ndarray:
    """(events, occurrences) bool: :func:`kwsstream.demo.matches` for one keyword, vectorised."""
    return ((np.asarray(ev_start)[:, None] < np.asarray(tr_end)[None, :] + TOLERANCE)
            & (np.asarray(ev_end)[:, None] > np.asarray(tr_start)[None, :] - TOLERANCE))


def score_events(events: Events, truth: Truth, n_keywords: int, lookahead: float | None = None) -> Score:
    """Hits, false alarms, repeats and latencies of ``events`` against ``truth`` (module docstring)."""
    lookahead = DetectorOptions().lookahead if lookahead is None else lookahead
    hits, occ, fas, reps = (np.zeros(n_keywords, np.int64) for _ in range(4))
    latencies = []
    for k in range(n_keywords):
        ev = np.flatnonzero(events.keyword == k)
        ev = ev[np.argsort(events.end[ev], kind="stable")]
        tr = np.flatnonzero(truth.keyword == k)
        tr = tr[np.argsort(truth.start[tr], kind="stable")]
        occ[k] = len(tr)
        lat = []
        if len(ev):
            match = overlaps(events.start[ev], events.end[ev], truth.start[tr], truth.end[tr])
            found = np.zeros(len(tr), bool)
            for i, e in enumerate(ev):
                free = np.flatnonzero(match[i] & ~found)
                if len(free):
                    j = free[0]
                    found[j] = True
                    lat.append(events.end[e] + lookahead - truth.end[tr[j]])
                else:
                    fas[k] += 1
                    reps[k] += bool(match[i].any())
            hits[k] = found.sum()
        latencies.append(np.array(lat, np.float64))
    return Score(hits, occ, fas, reps, latencies)


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
    """One stream's counts at every offset: (offsets, K) arrays, occurrences (K,), hours, and the
    latencies at offset 0 (per keyword)."""

    offsets: np.ndarray
    hits: np.ndarray
    false_alarms: np.ndarray
    repeats: np.ndarray
    occurrences: np.ndarray
    hours: float
    latencies: list[np.ndarray]

    def __add__(self, other: SweepResult) -> SweepResult:
        assert np.array_equal(self.offsets, other.offsets)
        return SweepResult(self.offsets, self.hits + other.hits, self.false_alarms + other.false_alarms,
                           self.repeats + other.repeats, self.occurrences + other.occurrences,
                           self.hours + other.hours,
                           [np.concatenate([a, b]) for a, b in zip(self.latencies, other.latencies)])


def thresholds_at(enrolled: np.ndarray, offset: float) -> np.ndarray:
    """The detector thresholds (float32, as the runtime holds them) at ``offset``."""
    return (np.asarray(enrolled, np.float64) + offset).astype(np.float32)


def replay(trace: Trace, thresholds: np.ndarray, grid: FrameGrid,
           options: DetectorOptions = DetectorOptions()) -> Events:
    """The events the runtime detector gives on ``trace`` at ``thresholds``."""
    rows = detect_offline(trace.score, trace.start, trace.template, np.asarray(thresholds, np.float32),
                          grid.frame_rate, options)
    return Events.from_rows(rows, grid)


def sweep(trace: Trace, truth: Truth, enrolled: np.ndarray, offsets: np.ndarray, grid: FrameGrid,
          options: DetectorOptions = DetectorOptions()) -> SweepResult:
    """Score the replayed events at every offset from the enrollment thresholds."""
    n_k = len(enrolled)
    shape = (len(offsets), n_k)
    hits, fas, reps = np.zeros(shape, np.int64), np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    occurrences = np.bincount(truth.keyword, minlength=n_k)[:n_k] if len(truth.keyword) else np.zeros(n_k, np.int64)
    latencies = [np.zeros(0)] * n_k
    for i, offset in enumerate(offsets):
        s = score_events(replay(trace, thresholds_at(enrolled, offset), grid, options), truth, n_k,
                         options.lookahead)
        hits[i], fas[i], reps[i] = s.hits, s.false_alarms, s.repeats
        if offset == 0:
            latencies = s.latencies
    return SweepResult(np.asarray(offsets), hits, fas, reps, occurrences, trace.seconds / 3600, latencies)


# ----------------------------------------------------------------------------- tables


def _rate(n: float, d: float) -> float:
    return n / d if d > 0 else math.nan


def det_rows(result: SweepResult, names: Sequence[str], enrolled: np.ndarray, *, corpus: str, condition: str,
             encoder: str) -> list[dict]:
    """``det.csv`` rows: per keyword and for all keywords together, at every offset."""
    rows = []
    n_k = len(names)
    for i, offset in enumerate(result.offsets):
        base = {"corpus": corpus, "condition": condition, "encoder": encoder, "offset": float(offset)}
        for k, name in enumerate(names):
            rows.append({**base, "keyword": name, "threshold": float(thresholds_at(enrolled, offset)[k]),
                         "hits": int(result.hits[i, k]), "occurrences": int(result.occurrences[k]),
                         "false_alarms": int(result.false_alarms[i, k]), "negative_hours": result.hours,
                         "frr": 1 - _rate(result.hits[i, k], result.occurrences[k]),
                         "fa_per_hour": _rate(result.false_alarms[i, k], result.hours),
                         "repeats": int(result.repeats[i, k]), "keywords": 1})
        hits, occ, fas = int(result.hits[i].sum()), int(result.occurrences.sum()), int(result.false_alarms[i].sum())
        rows.append({**base, "keyword": ALL, "threshold": math.nan, "hits": hits, "occurrences": occ,
                     "false_alarms": fas, "negative_hours": result.hours, "frr": 1 - _rate(hits, occ),
                     "fa_per_hour": _rate(fas, result.hours * n_k), "repeats": int(result.repeats[i].sum()),
                     "keywords": n_k})
    return rows


def _latency(values: np.ndarray) -> dict:
    if not len(values):
        return {"latency_median": math.nan, "latency_p95": math.nan, "latency_n": 0}
    return {"latency_median": float(np.median(values)), "latency_p95": float(np.percentile(values, 95)),
            "latency_n": len(values)}


def operating_points(rows: Sequence[dict], result: SweepResult, names: Sequence[str],
                     targets: Sequence[float] = TARGETS) -> list[dict]:
    """``operating_points.csv`` rows of one (corpus, condition, encoder) from its ``det_rows``:
    per keyword and ``all``, the FRR at each target FA/h (lowest FRR among points at or under it;
    ``point`` = ``fa<=T``), the enrollment point (``point`` = ``enrollment``, offset 0, with
    repeats and latency) and the best point at or under the enrollment point's own FA/h
    (``point`` = ``best<=enrollment``). Ties: the lower FA/h, then the offset nearest 0."""
    out = []
    keys = ("corpus", "condition", "encoder", "keyword", "offset", "threshold", "frr", "fa_per_hour", "hits",
            "occurrences", "false_alarms", "repeats", "negative_hours")
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
                row = {k: best[k] for k in keys}
            else:
                row = {k: mine[0][k] for k in ("corpus", "condition", "encoder", "keyword", "occurrences",
                                               "negative_hours")}
                row.update({k: math.nan for k in ("offset", "threshold", "frr", "fa_per_hour")})
            out.append({**row, "point": label, "target_fa_per_hour": target})
        out.append({**{k: enrollment[k] for k in keys}, "point": "enrollment", "target_fa_per_hour": math.nan,
                    **_latency(lat)})
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


def plot_det(path: Path, title: str, curves: dict[str, list[dict]], hours_per_keyword: dict[str, float]) -> dict:
    """One DET figure: per encoder the ``all`` rows (FRR against FA/h per keyword, log x), the
    enrollment point (offset 0) marked. Points with no false alarm are drawn at half the
    resolution (0.5 / (hours x keywords)), left of every measured rate. Returns what was drawn:
    encoder -> (fa_per_hour, frr) arrays."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    drawn = {}
    floors = []
    for encoder, rows in curves.items():
        rows = sorted(rows, key=lambda r: r["offset"])
        floor = 0.5 / hours_per_keyword[encoder] if hours_per_keyword[encoder] > 0 else 1e-3
        floors.append(floor)
        x = np.array([max(r["fa_per_hour"], floor) for r in rows])
        y = np.array([r["frr"] for r in rows]) * 100
        (line,) = ax.plot(x, y, "-", lw=1.5, label=encoder, drawstyle="steps-post")
        enrollment = next(r for r in rows if r["offset"] == 0)
        ax.plot([max(enrollment["fa_per_hour"], floor)], [enrollment["frr"] * 100], "o", ms=8,
                color=line.get_color(), markeredgecolor="black")
        drawn[encoder] = (x, y)
    ax.set_xscale("log")
    ax.set_xlabel("false alarms per hour per keyword (log; dotted: one false alarm)")
    ax.set_ylabel("false-reject rate (%)")
    ax.set_ylim(-2, 102)
    if floors:
        ax.axvline(min(floors) * 2, color="grey", lw=0.5, ls=":")
    for target in TARGETS:
        ax.axvline(target, color="grey", lw=0.5, ls="--")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="encoder (o: enrollment thresholds)", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


# ----------------------------------------------------------------------------- summary


def _pct(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.1f} %"


def _num(x: float, digits: int = 2) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def summary_markdown(ops: Sequence[dict], runs: Sequence[dict], plots: Sequence[tuple[str, str]],
                     command: str, notes: Sequence[str] = ()) -> str:
    """``summary.md``: how to read it, the tables, the plots."""
    lines = ["# Streaming benchmark", "", f"Command: `{command}`", "",
             "## How to read it", "",
             "Each test stream (long real or synthetic speech with the keywords inside) is played through the "
             "detection pipeline a user's `kwsstream detect FILE` runs (block reader → encoder → VAD gate → "
             "S-DTW matcher → detector), once per condition (dry; babble + pink noise at 20 and 10 dB SNR; a "
             "reverberant room, RT60 0.5 s). The per-keyword score trace is recorded and the detector is "
             "replayed on it with every keyword's enrollment threshold moved by one common offset "
             "(−0.3…+0.3): that gives the DET curve. **FRR** = missed occurrences / occurrences. **FA/h** = "
             "false alarms per hour *per keyword*: false alarms / (hours of negative audio × keywords); the "
             "negative audio is the whole test stream (outside the keywords as well as around them) plus the "
             "negative streams (music), and its hours are given beside every figure — one false alarm is "
             "1/(hours × keywords) FA/h, the resolution of these figures. An event is a hit when it overlaps "
             "a true occurrence of its keyword widened by 0.3 s; each occurrence counts once; every other event "
             "is a false alarm, and false alarms on an already-found occurrence are also counted as "
             "**repeats**. **FRR at T FA/h** is the lowest FRR among the swept points with FA/h ≤ T "
             "(nothing interpolated; – = no swept point that low). The **enrollment** row is the thresholds "
             "enrollment chose (calibrated to 1 FA/h on the bundled background), i.e. what a user gets; "
             "**best ≤ enrollment** is the lowest FRR any common offset reaches without more false alarms "
             "than the enrollment point. **Latency** = time the event fires − true end of the word = "
             "event end + detector look-ahead (0.25 s) − word end, over the hits at the enrollment "
             "thresholds; an encoder's own look-ahead (speech_embedding needs ~0.39 s of audio past a "
             "frame) comes on top in a live stream.", ""]
    lines += [*notes, ""] if notes else []
    groups = []
    for r in ops:
        key = (r["corpus"], r["condition"], r["encoder"])
        if key not in groups:
            groups.append(key)
    lines += ["## All keywords (false alarms per hour per keyword)", "",
              "| corpus | condition | encoder | neg. hours × kw | FRR @0.5 | FRR @1 | FRR @5 | enrollment FRR | "
              "enrollment FA/h | repeats | best FRR ≤ enrollment FA/h | latency median / p95 (s) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key in groups:
        mine = {r["point"]: r for r in ops if (r["corpus"], r["condition"], r["encoder"]) == key
                and r["keyword"] == ALL}
        e = mine["enrollment"]
        kw_hours = e["negative_hours"] * len({r["keyword"] for r in ops if (r["corpus"], r["condition"],
                                                                            r["encoder"]) == key} - {ALL})
        lines.append(f"| {' | '.join(key)} | {kw_hours:.2f} | {_pct(mine['fa<=0.5']['frr'])} | "
                     f"{_pct(mine['fa<=1']['frr'])} | {_pct(mine['fa<=5']['frr'])} | {_pct(e['frr'])} "
                     f"({e['hits']}/{e['occurrences']}) | {_num(e['fa_per_hour'])} ({e['false_alarms']}) | "
                     f"{e['repeats']} | {_pct(mine['best<=enrollment']['frr'])} | "
                     f"{_num(e['latency_median'])} / {_num(e['latency_p95'])} |")
    lines += ["", "## Enrollment thresholds against the best operating points", "",
              "Enrollment aims at 1 false alarm per hour per keyword (calibrated on the bundled background). "
              "Measured here, all keywords together:", ""]
    for key in groups:
        mine = {r["point"]: r for r in ops if (r["corpus"], r["condition"], r["encoder"]) == key
                and r["keyword"] == ALL}
        e, one, same = mine["enrollment"], mine["fa<=1"], mine["best<=enrollment"]
        at_one = ("no swept offset gets to 1 FA/h" if math.isnan(one["frr"]) else
                  f"the best common offset at ≤ 1 FA/h is {one['offset']:+.3f} with FRR {_pct(one['frr'])} "
                  f"at {_num(one['fa_per_hour'])} FA/h")
        gain = "" if math.isnan(same["frr"]) or same["frr"] >= e["frr"] else (
            f"; offset {same['offset']:+.3f} would miss fewer ({_pct(same['frr'])}) at no more false alarms")
        lines.append(f"- {' / '.join(key)}: enrollment thresholds give FRR {_pct(e['frr'])} at "
                     f"{_num(e['fa_per_hour'])} FA/h ({e['false_alarms']} false alarms in "
                     f"{e['negative_hours']:.2f} h); {at_one}{gain}.")
    lines += ["", "## Per keyword", "",
              "FA/h per keyword = that keyword's false alarms / hours of negative audio (column *neg. h*); each keyword's FRR at a rate is taken on its own curve (its own offset).", "",
              "| corpus | condition | encoder | keyword | neg. h | occ. | FRR @0.5 | FRR @1 | FRR @5 | "
              "enrollment threshold | enrollment FRR | enrollment FA/h | repeats | latency median / p95 (s) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key in groups:
        names = [r["keyword"] for r in ops if (r["corpus"], r["condition"], r["encoder"]) == key
                 and r["point"] == "enrollment" and r["keyword"] != ALL]
        for name in names:
            mine = {r["point"]: r for r in ops if (r["corpus"], r["condition"], r["encoder"]) == key
                    and r["keyword"] == name}
            e = mine["enrollment"]
            lines.append(f"| {' | '.join(key)} | {name} | {e['negative_hours']:.2f} | {e['occurrences']} | "
                         f"{_pct(mine['fa<=0.5']['frr'])} | {_pct(mine['fa<=1']['frr'])} | "
                         f"{_pct(mine['fa<=5']['frr'])} | {_num(e['threshold'], 3)} | {_pct(e['frr'])} | "
                         f"{_num(e['fa_per_hour'])} ({e['false_alarms']}) | {e['repeats']} | "
                         f"{_num(e['latency_median'])} / {_num(e['latency_p95'])} |")
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
        lines += ["", "## DET curves", ""]
        lines += [f"![{title}]({name})" for name, title in plots]
    return "\n".join(lines) + "\n"
