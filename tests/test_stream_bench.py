"""The streaming benchmark (``python -m eval stream``): figures on a hand-made trace, and a tiny
end-to-end run through the real detection pipeline."""

from __future__ import annotations

import csv
import json
import math

import numpy as np

from eval import streamreport as report
from eval import streamscore as scoring
from eval.streamtiming import Timing, probe_timing
from kwsstream import truth
from kwsstream.detector import DetectorOptions
from kwsstream.encoders.base import FrameGrid

GRID = FrameGrid(hop=160, length=160)  # frame j spans j*0.01 .. (j+1)*0.01 s
LOOKAHEAD = DetectorOptions().lookahead


def hand_trace() -> tuple[scoring.Trace, scoring.Truth]:
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
    truth = scoring.Truth(np.array([0, 1, 0]), np.array([0.85, 3.0, 7.0]), np.array([1.05, 3.4, 7.5]))
    return scoring.Trace(score, start, template, 1800.0), truth


def test_scoring_sweep_and_operating_points_on_a_hand_made_trace():
    trace, truth = hand_trace()
    enrolled = np.array([0.5, 0.5])
    offsets = scoring.default_offsets(-0.2, 0.1, 0.1)
    assert offsets.tolist() == [-0.2, -0.1, 0.0, 0.1]
    result = scoring.sweep(trace, truth, enrolled, offsets, GRID)
    assert result.occurrences.tolist() == [2, 1]
    assert result.hours == 0.5
    assert result.hits.tolist() == [[1, 0], [1, 0], [1, 1], [1, 1]]
    assert result.false_alarms.tolist() == [[0, 0], [1, 0], [2, 0], [2, 0]]
    assert result.repeats.tolist() == [[0, 0], [0, 0], [1, 0], [1, 0]]
    # latency = event end + lookahead - word end, at offset 0
    assert np.allclose(result.latencies[0], [1.11 + LOOKAHEAD - 1.05])
    assert np.allclose(result.latencies[1], [3.46 + LOOKAHEAD - 3.4])

    rows = scoring.det_rows(result, ["a", "b"], enrolled, corpus="c", condition="dry", encoder="e")
    assert len(rows) == len(offsets) * 3
    at0 = {r["keyword"]: r for r in rows if r["offset"] == 0}
    assert at0["a"]["fa_per_hour"] == 2 / 0.5 and at0["a"]["frr"] == 0.5 and at0["a"]["repeats"] == 1
    assert at0["b"]["fa_per_hour"] == 0 and at0["b"]["frr"] == 0
    assert at0["all"]["fa_per_hour"] == 2 / (0.5 * 2)  # per hour per keyword
    assert math.isclose(at0["all"]["frr"], 1 / 3) and math.isnan(at0["all"]["threshold"])
    assert math.isclose(at0["a"]["threshold"], 0.5, abs_tol=1e-6)

    ops = {(r["keyword"], r["point"]): r for r in scoring.operating_points(rows, result, ["a", "b"])}
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
    none = scoring.operating_points(rows, result, ["a", "b"], targets=(-1.0,))
    assert math.isnan(next(r for r in none if r["point"] == "fa<=-1")["frr"])

    md = report.summary_markdown(scoring.operating_points(rows, result, ["a", "b"]), [], [], "x")
    # FRR micro / macro: at -0.2 a misses 1 of 2, b its only one: micro 2/3, macro (1/2 + 1) / 2
    assert "| c | dry | e | builtin | 1.00 | 3 | 66.7 % / 75.0 % | 66.7 % / 75.0 % | 33.3 % / 25.0 % |" in md
    assert "| c | dry | e | builtin | 1.00 | 33.3 % (2/3) | 25.0 % | 2.00 (2) | 1 | 0 | 33.3 % |" in md


def test_overlap_rule_is_the_runtime_hit_rule():
    rng = np.random.default_rng(0)
    ev_s = rng.uniform(0, 10, 40)
    ev_e = ev_s + rng.uniform(0.1, 1, 40)
    tr_s = rng.uniform(0, 10, 30)
    tr_e = tr_s + rng.uniform(0.1, 1, 30)
    got = scoring.overlaps(ev_s, ev_e, tr_s, tr_e)
    want = [[truth.matches("k", a, b, "k", c, d) for c, d in zip(tr_s, tr_e)] for a, b in zip(ev_s, ev_e)]
    assert got.tolist() == want


def test_each_occurrence_counts_once_and_events_are_taken_in_time_order():
    truth = scoring.Truth(np.array([0, 0]), np.array([1.0, 1.5]), np.array([1.4, 1.9]))
    # three events all overlapping both occurrences: two hits (earliest free occurrence first), one repeat
    events = scoring.Events(np.array([0, 0, 0]), np.array([1.6, 1.0, 1.2]), np.array([1.9, 1.4, 1.7]), np.zeros(3))
    s = scoring.score_events(events, truth, 1)
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

    import shutil

    from eval.__main__ import main
    from eval.stream import load_corpus, own_split, read_truth, run_stream
    from kwsstream.audio import load_audio
    from kwsstream.encoders import load_encoder
    from kwsstream.keyset import load_keyset
    from kwsstream.spotter import Spotter

    negatives = _noise_corpus(tmp_path / "music")
    out = tmp_path / "out"
    argv = ["stream", "--synthetic", str(tmp_path / "synth"), "--synthetic-minutes", "1", "--synthetic-keywords", "2",
            "--negatives", str(negatives), "--encoder", "mfcc", "--conditions", "dry", "room", "--out", str(out),
            "--offsets", "-0.2", "0.2", "0.01", "--no-progress", "--seed", "3"]
    assert main(argv) == 0
    for name in ("det.csv", "operating_points.csv", "calibration.csv", "runs.csv", "summary.md",
                 "det_synthetic-es_dry.png", "det_synthetic-es_room.png", "asked_vs_got_synthetic-es.png"):
        assert (out / name).is_file(), name
    with open(out / "det.csv", newline="") as f:
        det = list(csv.DictReader(f))
    assert set(report.DET_COLUMNS) <= set(det[0])
    assert len(det) == 2 * 3 * 41  # conditions x (2 keywords + all) x offsets: builtin only (8 speakers: no own)
    assert {r["calibration"] for r in det} == {"builtin"}
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
    assert "no own-voice calibration (stream es-synth has 8 speakers)" in summary
    with open(out / "calibration.csv", newline="") as f:
        cal = list(csv.DictReader(f))
    from kwsstream.calibrate import DEFAULT_FA_PER_HOUR

    asked1 = {(r["condition"], r["keyword"]): r for r in cal
              if float(r["asked_fa_per_hour"]) == DEFAULT_FA_PER_HOUR}
    at1 = {(r["condition"], r["keyword"]): r for r in det if float(r["offset"]) == 0}
    assert asked1
    for key, r in asked1.items():  # the enrollment thresholds are the curve's point at the default target
        assert (r["false_alarms"], r["hits"]) == (at1[key]["false_alarms"], at1[key]["hits"]), key

    # live events == replay at offset 0, directly, on the dry stream with the cached keyset
    keyset = load_keyset(next((out / "keysets").glob("synthetic-es.mfcc.*.kws")))
    spotter = Spotter(keyset, load_encoder("mfcc"))
    trace, live, _ = run_stream(spotter, corpus.streams[0].audio)
    replayed = scoring.replay(trace, scoring.thresholds_at(spotter.thresholds, 0.0), spotter.encoder.grid)
    assert len(live) > 0
    assert replayed.keyword.tolist() == live.keyword.tolist() and np.allclose(replayed.end, live.end)
    assert np.array_equal(replayed.cost, live.cost)

    # a live stream fed 10 ms at a time emits every event when the latency model says it does
    timing = probe_timing(spotter)
    chunk, audio, emitted = 160, load_audio(corpus.streams[0].audio), []
    stream = spotter.create_stream()
    for i in range(0, len(audio), chunk):
        emitted += [(e.keyword, e.end, stream.samples_fed) for e in stream.feed(audio[i:i + chunk])]
    assert len(emitted) == len(live)
    model = scoring.replay(trace, scoring.thresholds_at(spotter.thresholds, 0.0), spotter.encoder.grid, timing=timing)
    for (keyword, end, fed), want, name in zip(sorted(emitted, key=lambda e: e[1]), model.emitted[np.argsort(model.end)],
                                               np.array(names)[model.keyword[np.argsort(model.end)]]):
        assert keyword == name and fed - chunk < want * 16000 <= fed

    # a rerun takes every trace from the cache
    assert main(argv) == 0
    with open(out / "runs.csv", newline="") as f:
        assert all(float(r["seconds"]) == 0 for r in csv.DictReader(f))

    # own-voice calibration on the same corpus said to be one speaker: held out, never counted
    one = tmp_path / "one"
    shutil.copytree(tmp_path / "synth", one)
    manifest = json.loads((one / "corpus.json").read_text())
    manifest["name"], manifest["streams"][0]["speakers"] = "one", ["x"]
    (one / "corpus.json").write_text(json.dumps(manifest))
    split = own_split(load_corpus(one).streams[0], 0.25)
    assert split is not None and split.test_start > 0
    out2 = tmp_path / "out2"
    argv2 = ["stream", "--corpus", str(one), "--negatives", str(negatives), "--encoder", "mfcc", "--conditions", "dry",
             "--out", str(out2), "--offsets", "-0.1", "0.1", "0.05", "--no-progress", "--own-minutes", "0.25"]
    assert main(argv2) == 0
    with open(out2 / "det.csv", newline="") as f:
        det2 = [r for r in csv.DictReader(f) if r["keyword"] == "all" and float(r["offset"]) == 0]
    by = {r["calibration"]: r for r in det2}
    assert math.isclose(float(by["own"]["negative_hours"]), (stream_s - split.test_start + 20) / 3600, rel_tol=1e-3)
    assert int(by["own"]["occurrences"]) == int((truth.start >= split.test_start).sum())
    assert (by[scoring.OWN_SPAN]["negative_hours"], by[scoring.OWN_SPAN]["occurrences"]) == (
        by["own"]["negative_hours"], by["own"]["occurrences"])  # the built-in thresholds on the same span
    assert list((out2 / "own" / "one").glob("es-synth.heldout.*.flac"))
    assert "| one | dry | mfcc | own |" in (out2 / "summary.md").read_text()


def test_the_background_corpus_is_refused(tmp_path, capsys):
    from eval.__main__ import main

    (tmp_path / "bg").mkdir()
    (tmp_path / "bg" / "corpus.json").write_text(json.dumps({
        "format": "kwsstream-streams", "version": 1, "name": "background", "keywords": {},
        "streams": [{"id": "bg", "audio": "x.flac", "kind": "background"}]}))
    assert main(["stream", "--corpus", str(tmp_path / "bg"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "calibration only" in capsys.readouterr().err


def test_ignore_rows_are_neither_hits_nor_false_alarms(tmp_path):
    from eval.streamcorpus import read_truth

    path = tmp_path / "t.truth.csv"
    path.write_text("keyword,start,end,prompt,kind\n"
                    "a,1.0,1.5,p1,keyword\n"
                    "a,5.0,6.0,p2,ignore\n"  # e.g. the plural of a
                    "b,8.0,9.0,p3,ignore\n")
    truth = read_truth(path, ["a", "b"], None)
    assert truth.keyword.tolist() == [0] and truth.ignore_keyword.tolist() == [0, 1]
    # a@1.1-1.4 hit; a@6.2-6.5 overlaps the ignore row widened by 0.3 s: ignored; a@6.4-6.8 does
    # not (6.4 > 6.3): false alarm; a@8.2-8.6 on b's ignore row: false alarm; b@8.5-8.7 ignored
    events = scoring.Events(np.array([0, 0, 0, 0, 1]), np.array([1.1, 6.2, 6.4, 8.2, 8.5]),
                            np.array([1.4, 6.5, 6.8, 8.6, 8.7]), np.zeros(5))
    s = scoring.score_events(events, truth, 2)
    assert (s.hits.tolist(), s.false_alarms.tolist(), s.ignored.tolist()) == ([1, 0], [2, 0], [1, 1])
    # a hit wins over an ignore row it also overlaps
    both = scoring.Truth(np.array([0]), np.array([5.2]), np.array([5.6]), np.array([0]), np.array([5.0]),
                         np.array([6.0]))
    s = scoring.score_events(scoring.Events(np.array([0]), np.array([5.3]), np.array([5.6]), np.zeros(1)), both, 1)
    assert (s.hits.tolist(), s.false_alarms.tolist(), s.ignored.tolist()) == ([1], [0], [0])
    # the old 4-column format: every row a keyword, no ignore rows
    old = tmp_path / "old.truth.csv"
    old.write_text("keyword,start,end,prompt\na,1.0,1.5,p1\na,5.0,6.0,p2\n")
    truth = read_truth(old, ["a"], None)
    assert truth.keyword.tolist() == [0, 0] and len(truth.ignore_keyword) == 0


def test_macro_frr_is_the_mean_of_the_keywords_frr():
    # a: 9 of 10 found, b: 0 of 1, c: no occurrence (left out of the mean)
    assert math.isclose(scoring.macro_frr(np.array([9, 0, 0]), np.array([10, 1, 0])), (0.1 + 1.0) / 2)
    assert math.isnan(scoring.macro_frr(np.array([0]), np.array([0])))
    result = scoring.SweepResult(np.array([0.0]), np.array([[9, 0, 0]]), np.zeros((1, 3), np.int64),
                                 np.zeros((1, 3), np.int64), np.array([10, 1, 0]), 1.0, [np.zeros(0)] * 3)
    rows = scoring.det_rows(result, ["a", "b", "c"], np.zeros(3), corpus="c", condition="dry", encoder="e")
    pooled = next(r for r in rows if r["keyword"] == "all")
    assert math.isclose(pooled["frr"], 2 / 11) and math.isclose(pooled["frr_macro"], 0.55)


def test_own_voice_split_holds_out_keyword_free_prompts_and_never_counts_them(tmp_path):
    from eval.streamcorpus import StreamInfo, own_split

    streams = tmp_path / "streams"
    streams.mkdir()
    # prompts of 60 s each with 1 s pauses; p1 holds a keyword, p2 an ignore row: neither is held out
    (streams / "s.prompts.csv").write_text("prompt,start,end,transcript\n" + "".join(
        f"p{i},{61 * i},{61 * i + 60},x\n" for i in range(20)))
    (streams / "s.truth.csv").write_text("keyword,start,end,prompt,kind\n"
                                         "a,70.0,70.5,p1,keyword\nb,130.0,130.5,p2,ignore\n"
                                         "a,400.0,400.5,p6,keyword\n")
    info = StreamInfo("s", streams / "s.flac", streams / "s.truth.csv", "speech", ("x",))
    split = own_split(info, minutes=2.5)
    # p0, p3, p4 held out (each with its pause: 61 s), 2.5 min reached after p4; the test starts at p5
    assert split.segments == ((0.0, 61.0), (183.0, 244.0), (244.0, 305.0))
    assert split.test_start == 305.0 and split.held_out_seconds == 183.0
    assert own_split(info, minutes=60).test_start <= 0.5 * 1219  # never past half the stream
    # scoring from the test start: the occurrence and the false alarm in the held-out span are not counted
    n = 122000  # 10 ms frames
    score = np.ones((n, 1), np.float32)
    start = np.arange(n)[:, None].astype(np.int64)
    for frame, first in ((7050, 7000), (20000, 19950), (40050, 40000), (50000, 49950)):
        score[frame, 0], start[frame, 0] = 0.1, first
    trace = scoring.Trace(score, start, np.zeros((n, 1), np.int64), 1220.0)
    truth = scoring.Truth(np.array([0, 0]), np.array([70.0, 400.0]), np.array([70.5, 400.5]))
    whole = scoring.evaluate(trace, truth, [np.array([0.5])], np.array([1.0]), GRID)
    own = scoring.evaluate(trace, truth, [np.array([0.5])], np.array([1.0]), GRID, count_from=split.test_start)
    assert (whole.hits.tolist(), whole.false_alarms.tolist(), whole.occurrences.tolist()) == ([[2]], [[2]], [2])
    assert (own.hits.tolist(), own.false_alarms.tolist(), own.occurrences.tolist()) == ([[1]], [[1]], [1])
    assert math.isclose(own.hours, (1220 - 305) / 3600)


def test_latency_is_when_a_live_stream_emits_the_event(tmp_path):
    grid = FrameGrid(hop=160, length=400)  # frame j's audio ends at sample 160 j + 400
    # the encoder emits frames 2 at a time, each run once 1 frame of right context is complete;
    # the matcher matches blocks of 4 frames; the detector looks 3 frames ahead
    timing = Timing.blocks(grid, lookahead=3, block=4, run=2, right=1)
    # event ending at frame 10: frame 13 must be matched: its block 12..15, emitted by runs ending
    # at frame 15, which wait for frame 16: audio up to 160 * 16 + 400 samples
    assert timing.ready(np.array([13])).tolist() == [160 * 16 + 400]
    assert math.isclose(timing.emitted(np.array([10]))[0], (160 * 16 + 400) / 16000)
    assert timing.ready(np.array([12, 15, 16, 1000])).tolist() == [160 * 16 + 400] * 2 + [160 * 20 + 400,
                                                                                         160 * 1004 + 400]
    # latency of a hit = emission - word end (not event end + detector look-ahead)
    truth = scoring.Truth(np.array([0]), np.array([0.0]), np.array([0.1]))
    events = scoring.Events.from_rows(np.array([[0, 0, 2, 10, 0.1]]), grid, timing)
    s = scoring.score_events(events, truth, 1)
    assert np.allclose(s.latencies[0], [(160 * 16 + 400) / 16000 - 0.1])
    # the probe finds the same on a real MFCC spotter (frames in groups of 10, blocks of 10)
    from eval.scenes import write_audio
    from kwsstream.encoders import load_encoder
    from kwsstream.enroll import add_examples
    from kwsstream.spotter import Spotter

    encoder = load_encoder("mfcc")
    word = 0.1 * np.sin(2 * np.pi * 300 * np.arange(8000) / 16000) * np.linspace(0, 1, 8000)
    word += 0.01 * np.random.default_rng(0).standard_normal(8000)
    path = write_audio(tmp_path / "w.wav", word.astype(np.float32))
    spotter = Spotter(add_examples(None, encoder, "w", [path], (0.0, 0.5)), encoder)
    probed = probe_timing(spotter)
    model = Timing.blocks(encoder.grid, probed.lookahead, spotter.block, 10, 0)
    frames = np.arange(5000)
    assert probed.lookahead == 25 and np.array_equal(probed.ready(frames), model.ready(frames))
