"""Tables, ``summary.md`` and plots of ``python -m eval stream``: the reporting.

What is written here is measured by :mod:`eval.streamscore` (hit rule, sweeps, rates, the rows of
``det.csv``, ``operating_points.csv`` and ``calibration.csv``): this module writes those rows to CSV,
draws the DET and asked-vs-got plots and writes ``summary.md``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eval.streamscore import ALL, CALIBRATIONS, TARGETS
from kwsstream.calibrate import DEFAULT_FA_PER_HOUR

DET_COLUMNS = ("corpus", "condition", "encoder", "calibration", "keyword", "offset", "threshold", "hits",
               "occurrences", "false_alarms", "negative_hours", "frr", "frr_macro", "fa_per_hour", "repeats",
               "ignored", "keywords")
OP_COLUMNS = ("corpus", "condition", "encoder", "calibration", "keyword", "point", "target_fa_per_hour", "offset",
              "threshold", "frr", "frr_macro", "fa_per_hour", "hits", "occurrences", "false_alarms", "repeats",
              "ignored", "negative_hours", "latency_median", "latency_p95", "latency_n")
CAL_COLUMNS = ("corpus", "condition", "encoder", "calibration", "keyword", "asked_fa_per_hour", "threshold",
               "fa_per_hour", "false_alarms", "negative_hours", "keywords", "frr", "frr_macro", "hits",
               "occurrences", "repeats", "ignored")


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
    every = [a for asked, _, _ in series.values() for a in asked] or [0.1, 10.0]
    lo, hi = min(every) / 3, max(every) * 10
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


def _asked_table(cal: Sequence[dict], cals: Sequence[str], asked: Sequence[float], lead, cell) -> list[str]:
    """The rows of an asked-rate table: per (corpus, condition, encoder) of ``cal`` and calibration
    in ``cals`` with ``all`` rows, the group, the calibration, ``lead(first row)`` and
    ``cell(row at the asked rate, or None)`` for each rate in ``asked``."""
    lines = []
    for key in _groups(cal):
        for c in cals:
            mine = {r["asked_fa_per_hour"]: r for r in cal if (r["corpus"], r["condition"], r["encoder"]) == key
                    and r["calibration"] == c and r["keyword"] == ALL}
            if not mine:
                continue
            first = next(iter(mine.values()))
            lines.append(f"| {' | '.join(key)} | {c} | {lead(first)} | " + " | ".join(cell(mine.get(a)) for a in asked)
                         + " |")
    return lines


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
        lines += _asked_table(cal, cals, asked, lambda first: f"{first['negative_hours'] * first['keywords']:.2f}",
                              lambda row: f"{_num(row['fa_per_hour'])} ({row['false_alarms']})" if row else "–")
        lines += ["", "FRR micro / macro at the asked rate:", "",
                  "| corpus | condition | encoder | calibration | occ. | " + " | ".join(f"asked {a:g}" for a in asked)
                  + " |", "| --- " * (5 + len(asked)) + "|"]
        lines += _asked_table(cal, cals, asked, lambda first: f"{first['occurrences']}", _frr2)
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
