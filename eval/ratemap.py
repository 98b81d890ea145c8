"""``python -m eval ratemap``: measure the own-speech rate maps that enrollment ships with.

A rate map (:mod:`kwsstream.ratemap`) says how many false alarms per hour a threshold set on the
built-in background gives in the enrolling speaker's own speech. It is measured here with the
streaming benchmark itself (:mod:`eval.stream`): the fit corpus's keywords are enrolled and
calibrated on the background's own rates (``--rate-map none``), every keyword's threshold is
moved to each rate of a fine grid along its stored curve, and the false alarms per hour per
keyword got on the corpus's long stream (dry, pooled over its keywords) give the knots
``(got, asked)``. Knots with fewer than ``--min-events`` false alarms are too noisy to keep;
where a looser threshold gets no more false alarms (a plateau), the loosest one is kept. The map is checked on other speakers by the ordinary
benchmark run, which calibrates through the shipped map (its asked-vs-got table).

Commands (the shipped ``kwsstream/data/rate_maps.json`` was made by the first)::

    python -m eval ratemap --corpus corpora/prompts/en --negatives corpora/prompts/music-test \\
        --encoder mfcc models/speech-embedding.onnx --out results/ratemap --install
    python -m eval stream --corpus corpora/prompts/fr corpora/prompts/fr-armelle ... --out results/stream
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path

from kwsstream.errors import UsageError

GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
"""Background rates asked (false alarms per hour per keyword)."""
MIN_EVENTS = 3
SHIPPED = Path(__file__).resolve().parent.parent / "kwsstream" / "data" / "rate_maps.json"


def knots(rows: list[dict], min_events: int) -> tuple[list[float], list[float]]:
    """``(own, background)`` knots from pooled asked-vs-got rows of one corpus, condition and
    encoder: rows with at least ``min_events`` false alarms, ``got`` strictly ascending."""
    own, background = [], []
    for row in sorted(rows, key=lambda r: float(r["asked_fa_per_hour"])):
        got, n = round(float(row["fa_per_hour"]), 4), int(row["false_alarms"])
        if n < min_events:
            continue
        if own and got <= own[-1]:  # a plateau: the loosest threshold that still gives this rate
            background[-1] = float(row["asked_fa_per_hour"])
            continue
        own.append(got)
        background.append(float(row["asked_fa_per_hour"]))
    return own, background


def fit(calibration_csv: Path, corpus: str, condition: str, labels: dict[str, str], min_events: int,
        command: str) -> dict:
    """The maps of every encoder in ``labels`` (benchmark label -> :attr:`Encoder.name`)."""
    with open(calibration_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["calibration"] == "builtin" and r["keywords"] != "1"
                and r["corpus"] == corpus and r["condition"] == condition]
    maps = {}
    for label, name in labels.items():
        own, background = knots([r for r in rows if r["encoder"] == label], min_events)
        if len(own) < 2:
            raise UsageError(f"{calibration_csv}: fewer than 2 rates with >= {min_events} false alarms for {label}")
        maps[name] = {"own": own, "background": background,
                      "fitted_on": f"{corpus} {condition}, asked vs got pooled over its keywords ({command})"}
    return {"about": "false alarms per hour per keyword in the enrolling speaker's own speech (own) against those "
                     "on the built-in background (background); made by python -m eval ratemap",
            "maps": maps}


def write_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", type=Path, required=True, help="the stream corpus to fit on (one speaker)")
    parser.add_argument("--negatives", type=Path, nargs="*", help="keyword-free corpora added to its negatives")
    parser.add_argument("--encoder", nargs="+", default=["mfcc"], help="mfcc and/or PATH.onnx")
    parser.add_argument("--condition", default="dry", help="the condition fitted (default dry)")
    parser.add_argument("--out", type=Path, required=True, help="results folder (benchmark caches, rate_maps.json)")
    parser.add_argument("--min-events", type=int, default=MIN_EVENTS,
                        help=f"false alarms a knot needs (default {MIN_EVENTS})")
    parser.add_argument("--install", action="store_true",
                        help=f"also write the maps to {SHIPPED} (other encoders' maps there are kept)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from eval import stream
    from kwsstream.encoders import load_encoder

    bench = argparse.ArgumentParser()
    stream.add_arguments(bench)
    argv = ["--corpus", str(args.corpus), "--encoder", *args.encoder, "--conditions", args.condition,
            "--out", str(args.out), "--calibration", "builtin", "--rate-map", "none",
            "--asked", *(f"{a:g}" for a in GRID)]
    argv += ["--negatives", *map(str, args.negatives)] if args.negatives else []
    bench_args = bench.parse_args(argv + (["--no-progress"] if args.no_progress else []))
    bench_args.argv = argv
    if stream.main(bench_args) != 0:
        return 1
    corpus = stream.load_corpus(args.corpus).name
    labels = {stream.encoder_label(spec): load_encoder(spec).name for spec in args.encoder}
    command = "python -m eval ratemap " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else [])
    data = fit(args.out / "calibration.csv", corpus, args.condition, labels, args.min_events, command.strip())
    write_json(data, args.out / "rate_maps.json")
    for name, m in data["maps"].items():
        pairs = ", ".join(f"{o:g}<-{b:g}" for o, b in zip(m["own"], m["background"]))
        print(f"{name}: own<-background {pairs}", file=sys.stderr)
    if args.install:  # the maps of encoders not fitted in this run stay as they were
        shipped = json.loads(SHIPPED.read_text(encoding="utf-8")) if SHIPPED.exists() else {"maps": {}}
        write_json({**data, "maps": {**shipped.get("maps", {}), **data["maps"]}}, SHIPPED)
        print(f"installed {SHIPPED}", file=sys.stderr)
    return 0
