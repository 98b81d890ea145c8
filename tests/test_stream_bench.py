"""The streaming benchmark (``python -m eval stream``): figures on a hand-made trace, and a tiny
end-to-end run through the real detection pipeline."""

from __future__ import annotations

import csv
import json
import math

import numpy as np

from eval import streamreport as report
from kwsstream import demo
from kwsstream.detector import DetectorOptions
from kwsstream.encoders.base import FrameGrid

GRID = FrameGrid(hop=160, length=160)  # frame j spans j*0.01 .. (j+1)*0.01 s
LOOKAHEAD = DetectorOptions().lookahead


def hand_trace() -> tuple[report.Trace, report.Truth]:
    """Two keywords, 10 s of frames, single-frame dips (score elsewhere 1.0, above every threshold).

    keyword 0: dip 0.20 at frame 110 from 80 (0.80-1.11 s) on occurrence A (0.85-1.05): hit;
               dip 0.45 at frame 200 from 125 (1.25-2.01 s): overlaps A widened by 0.3 s: repeat;
               dip 0.35 at frame 500 from 470 (4.70-5.01 s): false alarm;
               occurrence B (7.0-7.5 s): missed.
    keyword 1: dip 0.40 at frame 345 from 300 (3.00-3.46 s) on occurrence C (3.0-3.4): hit.
    The trace claims half an hour of audio (hours only scale the rates)."""
    n = 1000
    score = np.ones((n, 2), np.float32)
    start = np.tile(np.arange(n)[:, None], (1, 2)).astype(np.int64)
    template = np.zeros((n, 2), np.int64)
    for k, frame, value, first in ((0, 110, 0.20, 80), (0, 200, 0.45, 125), (0, 500, 0.35, 470), (1, 345, 0.40, 300)):
        score[frame, k], start[frame, k] = value, first
    truth = report.Truth(np.array([0, 1, 0]), np.array([0.85, 3.0, 7.0]), np.array([1.05, 3.4, 7.5]))
    return report.Trace(score, start, template, 1800.0), truth


def test_scoring_sweep_and_operating_points_on_a_hand_made_trace():
    trace, truth = hand_trace()
    enrolled = np.array([0.5, 0.5])
    offsets = report.default_offsets(-0.2, 0.1, 0.1)
    assert offsets.tolist() == [-0.2, -0.1, 0.0, 0.1]
    result = report.sweep(trace, truth, enrolled, offsets, GRID)
    assert result.occurrences.tolist() == [2, 1]
    assert result.hours == 0.5
    assert result.hits.tolist() == [[1, 0], [1, 0], [1, 1], [1, 1]]
    assert result.false_alarms.tolist() == [[0, 0], [1, 0], [2, 0], [2, 0]]
    assert result.repeats.tolist() == [[0, 0], [0, 0], [1, 0], [1, 0]]
    # latency = event end + lookahead - word end, at offset 0
    assert np.allclose(result.latencies[0], [1.11 + LOOKAHEAD - 1.05])
    assert np.allclose(result.latencies[1], [3.46 + LOOKAHEAD - 3.4])

    rows = report.det_rows(result, ["a", "b"], enrolled, corpus="c", condition="dry", encoder="e")
    assert len(rows) == len(offsets) * 3
    at0 = {r["keyword"]: r for r in rows if r["offset"] == 0}
    assert at0["a"]["fa_per_hour"] == 2 / 0.5 and at0["a"]["frr"] == 0.5 and at0["a"]["repeats"] == 1
    assert at0["b"]["fa_per_hour"] == 0 and at0["b"]["frr"] == 0
    assert at0["all"]["fa_per_hour"] == 2 / (0.5 * 2)  # per hour per keyword
    assert math.isclose(at0["all"]["frr"], 1 / 3) and math.isnan(at0["all"]["threshold"])
    assert math.isclose(at0["a"]["threshold"], 0.5, abs_tol=1e-6)

    ops = {(r["keyword"], r["point"]): r for r in report.operating_points(rows, result, ["a", "b"])}
    assert ops["all", "fa<=0.5"]["offset"] == -0.2 and math.isclose(ops["all", "fa<=0.5"]["frr"], 2 / 3)
    assert math.isclose(ops["all", "fa<=1"]["frr"], 2 / 3)  # -0.1 gives 1 FA/h but no more hits
    assert math.isclose(ops["all", "fa<=5"]["frr"], 1 / 3) and ops["all", "fa<=5"]["offset"] == 0
    enrollment = ops["all", "enrollment"]
    assert (enrollment["false_alarms"], enrollment["repeats"], enrollment["latency_n"]) == (2, 1, 2)
    assert math.isclose(enrollment["latency_median"], 0.31, abs_tol=1e-6)
    assert math.isclose(ops["all", "best<=enrollment"]["frr"], 1 / 3)
    # keyword b has no false alarm at any offset: its FRR at 0.5 FA/h is that of offset 0
    assert ops["b", "fa<=0.5"]["frr"] == 0
    # a target under every swept point: not reached (NaN), nothing interpolated
    none = report.operating_points(rows, result, ["a", "b"], targets=(-1.0,))
    assert math.isnan(next(r for r in none if r["point"] == "fa<=-1")["frr"])

    md = report.summary_markdown(report.operating_points(rows, result, ["a", "b"]), [], [], "x")
    assert "| c | dry | e | 1.00 | 66.7 % | 66.7 % | 33.3 % | 33.3 % (2/3) | 2.00 (2) | 1 |" in md


def test_overlap_rule_is_demo_matches():
    rng = np.random.default_rng(0)
    ev_s = rng.uniform(0, 10, 40)
    ev_e = ev_s + rng.uniform(0.1, 1, 40)
    tr_s = rng.uniform(0, 10, 30)
    tr_e = tr_s + rng.uniform(0.1, 1, 30)
    got = report.overlaps(ev_s, ev_e, tr_s, tr_e)
    want = [[demo.matches("k", a, b, "k", c, d) for c, d in zip(tr_s, tr_e)] for a, b in zip(ev_s, ev_e)]
    assert got.tolist() == want


def test_each_occurrence_counts_once_and_events_are_taken_in_time_order():
    truth = report.Truth(np.array([0, 0]), np.array([1.0, 1.5]), np.array([1.4, 1.9]))
    # three events all overlapping both occurrences: two hits (earliest free occurrence first), one repeat
    events = report.Events(np.array([0, 0, 0]), np.array([1.6, 1.0, 1.2]), np.array([1.9, 1.4, 1.7]), np.zeros(3))
    s = report.score_events(events, truth, 1)
    assert (s.hits.tolist(), s.false_alarms.tolist(), s.repeats.tolist()) == ([2], [1], [1])
    assert np.allclose(s.latencies[0], [1.4 + LOOKAHEAD - 1.4, 1.7 + LOOKAHEAD - 1.9])


def _noise_corpus(folder):
    from eval.scenes import _pink, write_audio

    write_audio(folder / "streams" / "music.flac", 0.05 * _pink(16000 * 20, np.random.default_rng(1)))
    (folder / "corpus.json").write_text(json.dumps({
        "format": "kwsstream-streams", "version": 1, "name": "music-test", "language": "", "sample_rate": 16000,
        "sources": [], "keywords": {},
        "streams": [{"id": "music", "audio": "streams/music.flac", "truth": None, "seconds": 20.0, "speakers": [],
                     "kind": "music", "prompts": 0}]}))
    return folder


def test_end_to_end_on_a_tiny_synthetic_corpus(tmp_path):
    import matplotlib.image

    from eval.__main__ import main
    from eval.stream import load_corpus, read_truth, run_stream
    from kwsstream.encoders import load_encoder
    from kwsstream.keyset import load_keyset
    from kwsstream.spotter import Spotter

    negatives = _noise_corpus(tmp_path / "music")
    out = tmp_path / "out"
    argv = ["stream", "--synthetic", str(tmp_path / "synth"), "--synthetic-minutes", "1", "--synthetic-keywords", "2",
            "--negatives", str(negatives), "--encoder", "mfcc", "--conditions", "dry", "room", "--out", str(out),
            "--offsets", "-0.2", "0.2", "0.01", "--no-progress", "--seed", "3"]
    assert main(argv) == 0
    for name in ("det.csv", "operating_points.csv", "runs.csv", "summary.md", "det_synthetic-es_dry.png",
                 "det_synthetic-es_room.png"):
        assert (out / name).is_file(), name
    with open(out / "det.csv", newline="") as f:
        det = list(csv.DictReader(f))
    assert set(report.DET_COLUMNS[:12]) <= set(det[0])
    assert len(det) == 2 * 3 * 41  # conditions x (2 keywords + all) x offsets
    corpus = load_corpus(tmp_path / "synth")
    names = list(corpus.keywords)
    truth = read_truth(corpus.streams[0].truth, names, None)
    stream_s = json.loads((tmp_path / "synth" / "corpus.json").read_text())["streams"][0]["seconds"]
    row = next(r for r in det if r["keyword"] == "all" and float(r["offset"]) == 0 and r["condition"] == "dry")
    assert int(row["occurrences"]) == len(truth.keyword) > 0
    assert math.isclose(float(row["negative_hours"]), (stream_s + 20) / 3600, rel_tol=1e-3)
    with open(out / "operating_points.csv", newline="") as f:
        ops = list(csv.DictReader(f))
    assert set(report.OP_COLUMNS) <= set(ops[0])
    assert {r["point"] for r in ops} == {"fa<=0.5", "fa<=1", "fa<=5", "enrollment", "best<=enrollment"}
    with open(out / "runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 4 and all(r["replay_equals_live"] == "True" for r in runs)
    image = matplotlib.image.imread(out / "det_synthetic-es_dry.png")
    coloured = np.abs(image[..., 0] - image[..., 2]) > 0.3  # the blue curve and marker on white/grey
    assert coloured.sum() > 100
    summary = (out / "summary.md").read_text()
    assert "false alarms per hour per keyword" in summary.lower() and "det_synthetic-es_room.png" in summary

    # live events == replay at offset 0, directly, on the dry stream with the cached keyset
    keyset = load_keyset(next((out / "keysets").glob("synthetic-es.mfcc.*.kws")))
    spotter = Spotter(keyset, load_encoder("mfcc"))
    trace, live, _ = run_stream(spotter, corpus.streams[0].audio)
    replayed = report.replay(trace, report.thresholds_at(spotter.thresholds, 0.0), spotter.encoder.grid)
    assert len(live) > 0
    assert replayed.keyword.tolist() == live.keyword.tolist() and np.allclose(replayed.end, live.end)
    assert np.array_equal(replayed.cost, live.cost)

    # a rerun takes every trace from the cache
    assert main(argv) == 0
    with open(out / "runs.csv", newline="") as f:
        assert all(float(r["seconds"]) == 0 for r in csv.DictReader(f))


def test_the_background_corpus_is_refused(tmp_path, capsys):
    from eval.__main__ import main

    (tmp_path / "bg").mkdir()
    (tmp_path / "bg" / "corpus.json").write_text(json.dumps({
        "format": "kwsstream-streams", "version": 1, "name": "background", "keywords": {},
        "streams": [{"id": "bg", "audio": "x.flac", "kind": "background"}]}))
    assert main(["stream", "--corpus", str(tmp_path / "bg"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "calibration only" in capsys.readouterr().err
