"""Self-calibration (kwsstream.adapt): the evidence, the tail estimate, the bounds, persistence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kwsstream.adapt import (BIN_WIDTH, N_BINS, AdaptOptions, Adapter, Evidence, keyword_target, saved_evidence,
                             stream_threshold, with_evidence, without_evidence)
from kwsstream.detector import DetectorOptions, DetectorState
from kwsstream.errors import KeysetError

FRAME_RATE = 100.0
DIPS_PER_SECOND = 1.0


def dip_trace(minutes: float, depths: np.ndarray, rng: np.random.Generator, n_keywords: int = 1) -> np.ndarray:
    """Per-keyword scores (n, K): a zigzag with one minimum per second, each to a depth drawn
    from ``depths`` (the impostor distribution), peaks of 0.9 between them."""
    n = int(minutes * 60 * FRAME_RATE)
    period = int(FRAME_RATE / DIPS_PER_SECOND)
    centres = np.arange(period // 2, n, period)
    knots = np.sort(np.concatenate([centres, centres + period // 2]))
    score = np.empty((n, n_keywords), np.float32)
    for k in range(n_keywords):
        values = np.full(len(knots), 0.9)
        values[::2] = depths[rng.integers(len(depths), size=len(centres))]
        score[:, k] = np.interp(np.arange(n), knots, values)
    return score


def run(adapter: Adapter, score: np.ndarray, thresholds: np.ndarray, block: int = 10) -> tuple[np.ndarray, list]:
    detector = DetectorState(thresholds.astype(np.float32), FRAME_RATE, DetectorOptions())
    start = np.maximum(np.arange(len(score))[:, None] - 30, 0).repeat(score.shape[1], axis=1)
    template = np.zeros_like(start)
    events = []
    for f0 in range(0, len(score), block):
        rows = detector.push(score[f0:f0 + block], start[f0:f0 + block], template[f0:f0 + block], f0)
        events += list(rows)
        if adapter.push(score[f0:f0 + block], start[f0:f0 + block], template[f0:f0 + block], f0, rows):
            detector.thresholds[:] = adapter.thresholds
    adapter.flush(detector.flush())
    return detector.thresholds.copy(), events


def exponential_tail(rng, n=200_000, top=0.5, scale=0.05):
    """Dip depths whose lower tail is exponential: a share exp((t - top) / scale) lies below t."""
    return np.maximum(0.0, top - rng.exponential(scale, n)).astype(np.float32)


def test_stream_threshold_recovers_an_exponential_tail():
    # candidates with an exponential lower tail: rate(t) = N/h * exp(...) above `low`; the
    # estimate for a target rate must give a rate within 2x of it
    rng = np.random.default_rng(0)
    hours = 2.0
    costs = 0.2 - rng.exponential(0.04, size=int(3600 * hours))  # upper part of the bulk does not matter
    counts = np.bincount(np.clip((costs / BIN_WIDTH).astype(int), 0, N_BINS - 1), minlength=N_BINS)
    for target in (1.0, 3.0, 10.0):
        t = stream_threshold(counts, hours, target)
        got = np.sum(costs < t) / hours
        expected = 3600 * math.exp((t - 0.2) / 0.04)  # the true rate at t
        assert 0.5 * target <= expected <= 2 * target, (target, t, expected, got)


def test_thin_evidence_gives_no_estimate():
    counts = np.zeros(N_BINS, np.int64)
    counts[100] = 5
    assert stream_threshold(counts, 0.01, 3.0) is None
    assert stream_threshold(counts, 0.0, 3.0) is None


def test_adaptation_converges_to_the_target_rate():
    # the enrollment threshold is far too loose for this stream (~30 false alarms an hour): after
    # 30 minutes of evidence the threshold gives within 2x of the asked 3 per hour
    rng = np.random.default_rng(1)
    score = dip_trace(30, exponential_tail(rng), rng)
    base = np.array([0.26])
    adapter = Adapter(base, np.array([3.0]), None, FRAME_RATE,
                      AdaptOptions(prior_hours=0.02, max_down=0.2, max_up=0.2), DetectorOptions())
    final, _ = run(adapter, score, base, block=100)
    true_rate = 3600 * DIPS_PER_SECOND * math.exp((final[0] - 0.5) / 0.05)
    assert 1.5 <= true_rate <= 6.0, (final, true_rate)
    assert adapter.evidence.hours[0] == pytest.approx(0.5, rel=0.01)
    assert adapter.evidence.counts.sum() > 1500


def test_bounds_hold_under_a_stream_full_of_keywords_and_under_silence():
    rng = np.random.default_rng(2)
    options = AdaptOptions(prior_hours=0.01, max_down=0.05, max_up=0.1)
    base = np.array([0.3, 0.3])
    # every second a perfect match: all evidence says "lower the threshold", but only by max_down
    score = dip_trace(10, np.array([0.0, 0.01], np.float32), rng, n_keywords=2)
    adapter = Adapter(base, np.array([3.0, 3.0]), None, FRAME_RATE, options, DetectorOptions())
    final, _ = run(adapter, score, base, block=100)
    assert np.all(final >= base - options.max_down - 1e-6)
    # impostors far above: up by max_up at most
    score = dip_trace(10, np.array([0.9], np.float32), rng, n_keywords=2)
    adapter = Adapter(base, np.array([3.0, 3.0]), None, FRAME_RATE, options, DetectorOptions())
    final, _ = run(adapter, score, base, block=100)
    assert np.all(final <= base + options.max_up + 1e-6)
    # silence (the gate passed nothing): no evidence, no hours, no move
    adapter = Adapter(base, np.array([3.0, 3.0]), None, FRAME_RATE, options, DetectorOptions())
    final, events = run(adapter, np.full((60_000, 2), np.inf, np.float32), base, block=100)
    assert np.array_equal(final, base.astype(np.float32)) and not events
    assert adapter.evidence.hours.sum() == 0 and adapter.evidence.counts.sum() == 0


def test_detections_are_not_evidence_and_hand_set_thresholds_never_move():
    rng = np.random.default_rng(3)
    score = dip_trace(5, np.array([0.05], np.float32), rng)  # every dip fires at 0.3
    adapter = Adapter(np.array([0.3]), np.array([np.nan]), None, FRAME_RATE, AdaptOptions(), DetectorOptions())
    final, events = run(adapter, score, np.array([0.3]))
    assert len(events) > 250
    assert adapter.evidence.counts.sum() == 0  # each candidate was a detection
    assert final[0] == np.float32(0.3)


def test_evidence_round_trips_and_malformed_state_is_refused():
    evidence = Evidence.empty(2)
    for c in (0.1, 0.1, 0.35, 1.99, 5.0):
        evidence.add(1, c)
    evidence.hours[:] = [0.0, 0.25]
    counts, hours = Evidence.keyword_from_json(evidence.keyword_json(1), "x")
    assert np.array_equal(counts, evidence.counts[1]) and hours == 0.25
    good = evidence.keyword_json(1)
    for bad in ({**good, "hours": -1}, {**good, "hours": "1"}, {**good, "bin_width": 0.01},
                {**good, "bins": [[N_BINS, 1]]}, {**good, "bins": [[1, 0]]}, {**good, "bins": [[1, 1], [1, 2]]},
                {**good, "bins": [[1.5, 1]]}, {**good, "extra": 1}, [], {**good, "hours": float("nan")}):
        with pytest.raises(KeysetError, match="malformed adaptation state"):
            Evidence.keyword_from_json(bad, "keyword 'x'")


def test_evidence_is_saved_with_the_keyword_set_and_reset(tmp_path):
    from kwsstream.calibrate import Background, FaCurve
    from kwsstream.encoders import load_encoder
    from kwsstream.enroll import _calibrated
    from kwsstream.keyset import Keyword, KeywordSet, Template, load_keyset, save_keyset

    encoder = load_encoder("mfcc")
    curve = FaCurve.fit(np.linspace(0.2, 0.6, 50), 1.0)

    def kw(name, source="calibrated"):
        frames = np.random.default_rng(0).standard_normal((30, encoder.dim)).astype(np.float32)
        plain = Keyword(name, 0.2, (Template(frames, "a.wav", (0.0, 0.3)),), source)
        return _calibrated(plain, curve, 3.0, Background((), "built-in"))

    keyset = KeywordSet(encoder.identity, (kw("uno"), kw("dos", "user")))
    assert keyword_target(keyset.keywords[0]) == 3.0 and math.isnan(keyword_target(keyset.keywords[1]))
    evidence = Evidence.empty(2)
    evidence.add(0, 0.3)
    evidence.hours[:] = 0.5
    path = tmp_path / "set.kws"
    save_keyset(with_evidence(keyset, ["uno", "dos"], evidence), path)
    back = saved_evidence(load_keyset(path))
    assert np.array_equal(back.counts[0], evidence.counts[0]) and back.hours[0] == 0.5
    assert back.counts[1].sum() == 0 and back.hours[1] == 0  # a hand-set threshold keeps none
    reset = saved_evidence(without_evidence(load_keyset(path), "uno"))
    assert reset.counts.sum() == 0 and reset.hours.sum() == 0


def test_detect_adapts_saves_what_it_heard_and_keywords_shows_and_resets_it(tmp_path):
    """detect --adapt adapts and saves the speech it heard with the set; keywords shows it;
    --no-adapt, and the default for an encoder adaptation was not measured to help (MFCC), leave
    the set untouched; --reset-adaptation forgets it."""
    from cli_helpers import run_main as cli

    from kwsstream.demo import data_dir, example_files
    from kwsstream.keyset import load_keyset

    keyset = tmp_path / "k.kws"
    for name, files in example_files().items():
        assert cli("enroll", "-k", keyset, "--encoder", "mfcc", name, *files).returncode == 0
    stream = data_dir() / "stream.flac"
    before = keyset.read_bytes()
    assert cli("detect", "-k", keyset, stream, "--no-adapt").returncode == 0
    assert cli("detect", "-k", keyset, stream).returncode == 0
    assert keyset.read_bytes() == before
    result = cli("detect", "-k", keyset, stream, "--adapt")
    assert result.returncode == 0
    evidence = saved_evidence(load_keyset(keyset))
    assert np.all(evidence.hours > 0) and evidence.counts.sum() > 0
    assert np.all(evidence.hours < 30 / 3600)  # no more speech than the 30 s recording holds
    listing = cli("keywords", "-k", keyset).stdout
    assert listing.count("adapted=") == len(example_files())
    # a second run adds to what the first saved
    assert cli("detect", "-k", keyset, stream, "--adapt").returncode == 0
    again = saved_evidence(load_keyset(keyset))
    assert np.allclose(again.hours, 2 * evidence.hours) and again.counts.sum() == 2 * evidence.counts.sum()
    name = next(iter(example_files()))
    assert cli("keywords", "-k", keyset, "--set", name, "--reset-adaptation").returncode == 0
    reset = saved_evidence(load_keyset(keyset))
    assert reset.hours[0] == 0 and reset.counts[0].sum() == 0 and np.all(reset.hours[1:] > 0)
    assert cli("keywords", "-k", keyset).stdout.count("adapted=") == len(example_files()) - 1


def test_adaptation_is_on_by_default_only_where_it_was_measured_to_help():
    from kwsstream.adapt import HELPS, helps

    assert helps("whisper-base-L5-int8") and not helps("speech-embedding-fp32") and not helps("mfcc")
    assert all(name.startswith("whisper-base") for name in HELPS)


def test_a_set_with_malformed_adaptation_state_is_refused_when_loaded(tmp_path):
    from script_helpers import load_script

    from kwsstream.keyset import load_keyset

    bad_inputs = load_script("make_bad_inputs")
    good = Evidence.empty(1)
    good.add(0, 0.3)
    good.hours[:] = 0.2
    for state, ok in ((good.keyword_json(0), True), ({**good.keyword_json(0), "bins": [[0, -5]]}, False),
                      ({**good.keyword_json(0), "hours": "lots"}, False)):
        header = bad_inputs.valid_header()
        header["keywords"][0]["calibration"]["adaptation"] = state
        path = tmp_path / "k.kws"
        path.write_bytes(bad_inputs.kws_bytes(header, bad_inputs.valid_frames()))
        if ok:
            assert load_keyset(path).keywords[0].calibration["adaptation"] == state
        else:
            with pytest.raises(KeysetError, match="malformed adaptation state"):
                load_keyset(path)


def test_the_benchmarks_adaptive_row_is_the_fixed_row_when_the_bounds_are_zero():
    """eval.streamadapt replays the runtime's adapter: with no room to move, its sweep is the
    fixed thresholds' sweep point for point; with room, the thresholds it ends on moved."""
    from eval import streamscore as scoring
    from eval.streamadapt import sweep_adaptive
    from kwsstream.encoders.base import FrameGrid

    rng = np.random.default_rng(5)
    score = dip_trace(20, exponential_tail(rng), rng, n_keywords=2)
    n = len(score)
    start = np.maximum(np.arange(n)[:, None] - 30, 0).repeat(2, axis=1)
    trace = scoring.Trace(score, start, np.zeros_like(start), n / FRAME_RATE)
    centres = np.arange(50, n, 100)[::7]  # every 7th dip "is" keyword 0
    truth = scoring.Truth(np.zeros(len(centres), np.int64), centres / FRAME_RATE - 0.2, centres / FRAME_RATE + 0.2)
    grid = FrameGrid(sample_rate=16000, hop=160, length=400, pad=0)
    base, targets, offsets = np.array([0.26, 0.24]), np.array([3.0, 3.0]), np.array([-0.02, 0.0, 0.02])
    still = sweep_adaptive(trace, truth, base, targets, offsets, grid, 10, adapt=AdaptOptions(max_up=0, max_down=0))
    fixed = scoring.sweep(trace, truth, base, offsets, grid)
    assert np.array_equal(still.hits, fixed.hits) and np.array_equal(still.false_alarms, fixed.false_alarms)
    moving = sweep_adaptive(trace, truth, base, targets, offsets, grid, 10,
                            adapt=AdaptOptions(prior_hours=0.02, max_down=0.2))
    assert np.all(moving.thresholds[1] < base)  # ~30 impostor dips an hour below 0.26: the thresholds came down
    assert moving.false_alarms[1].sum() < fixed.false_alarms[1].sum()


def test_an_adapting_stream_never_moves_the_shared_spotters_thresholds():
    """Many streams share one Spotter: a stream's adapted thresholds are its own."""
    from kwsstream.demo import data_dir, enroll_examples, example_files
    from kwsstream.encoders import load_encoder
    from kwsstream.spotter import Spotter, SpotterOptions

    encoder = load_encoder("mfcc")
    spotter = Spotter(enroll_examples(encoder, example_files()), encoder,
                      options=SpotterOptions(adapt=AdaptOptions(prior_hours=0.0, update_seconds=1.0)))
    before = spotter.thresholds.copy()
    stream = spotter.create_stream()
    from kwsstream.audio import load_audio

    audio = load_audio(data_dir() / "stream.flac")
    for _ in range(8):  # 4 minutes: enough evidence to move
        stream.feed(audio)
    stream.flush()
    assert not np.array_equal(stream.thresholds, before)  # the stream's own moved
    assert np.array_equal(spotter.thresholds, before)
    assert spotter.learned().hours.sum() > 0
