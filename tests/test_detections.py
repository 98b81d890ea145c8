"""Detections a user can trust: silence never fires, one event per spoken word, matches that
cannot stretch or squeeze, thresholds calibrated to a false-alarm rate, warnings for nonsense.

Real components throughout: the bundled example recordings (eSpeak voices), the bundled
calibration background, the MFCC encoder, the voice-activity gate.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kwsstream.audio import load_audio
from kwsstream.calibrate import DEFAULT_FA_PER_HOUR, Background, FaCurve, impostor_costs
from kwsstream.demo import example_files
from kwsstream.encoders import load_encoder
from kwsstream.enroll import calibrate_keywords, enroll, enroll_examples, set_sensitivity
from kwsstream.ratemap import RateMap, rate_map_for
from kwsstream.spotter import Spotter

RATE = 16_000


@pytest.fixture(scope="module")
def mfcc():
    return load_encoder("mfcc")


@pytest.fixture(scope="module")
def keyset(mfcc):
    return enroll_examples(mfcc, example_files())


@pytest.fixture(scope="module")
def word():
    """One example of 'computadora' (not the one a test enrolls from where it matters)."""
    return load_audio(example_files()["computadora"][0])


def events(keyset, encoder, audio):
    stream = Spotter(keyset, encoder).create_stream()
    return [(e.keyword, e.start, e.end) for e in stream.feed(audio.astype(np.float32)) + stream.flush()]


def level(x, dbfs):
    return (x / np.sqrt(np.mean(x ** 2)) * 10 ** (dbfs / 20)).astype(np.float32)


@pytest.mark.parametrize("after", ["digital silence", "dither at -60 dBFS", "white noise at -50 dBFS",
                                   "pink noise at -45 dBFS"])
def test_a_word_followed_by_ten_seconds_of_quiet_gives_exactly_one_event(keyset, mfcc, word, after):
    rng = np.random.default_rng(1)
    n = 10 * RATE
    tail = {"digital silence": np.zeros(n, np.float32),
            "dither at -60 dBFS": level(rng.standard_normal(n), -60),
            "white noise at -50 dBFS": level(rng.standard_normal(n), -50),
            "pink noise at -45 dBFS": level(np.cumsum(rng.standard_normal(n)) * 0.02 + rng.standard_normal(n), -45)}[after]
    got = events(keyset, mfcc, np.concatenate([word, tail]))
    assert len(got) == 1 and got[0][0] == "computadora"
    assert got[0][2] <= len(word) / RATE + 0.1  # the match ends with the word, not in the quiet after it


def test_a_word_between_stretches_of_noise_gives_one_event_at_its_place(keyset, mfcc, word):
    rng = np.random.default_rng(2)
    noise = level(rng.standard_normal(5 * RATE), -45)
    got = events(keyset, mfcc, np.concatenate([noise, word, noise]))
    assert len(got) == 1 and got[0][0] == "computadora" and 4.9 < got[0][1] < 5.2


@pytest.mark.parametrize("what", ["digital silence", "dither", "white noise", "loud white noise", "hum"])
def test_silence_or_noise_alone_gives_nothing(keyset, mfcc, what):
    rng = np.random.default_rng(3)
    n = 30 * RATE
    t = np.arange(n) / RATE
    audio = {"digital silence": np.zeros(n, np.float32), "dither": level(rng.standard_normal(n), -60),
             "white noise": level(rng.standard_normal(n), -40), "loud white noise": level(rng.standard_normal(n), -12),
             "hum": level(np.sin(2 * np.pi * 50 * t) + 0.3 * np.sin(2 * np.pi * 150 * t), -20)}[what]
    assert events(keyset, mfcc, audio) == []


def test_a_word_played_at_a_third_of_its_speed_or_three_times_as_fast_does_not_fire(keyset, mfcc, word):
    """Outside the warping band (0.5x-2x of the template) a match cannot fire: the word is
    stretched or squeezed in time by resampling its frames' audio (pitch moves too)."""
    import soxr

    assert events(keyset, mfcc, word)[0][0] == "computadora"
    slow = soxr.resample(word, RATE, RATE * 3).astype(np.float32)  # played at RATE: 3x longer
    fast = soxr.resample(word, RATE, RATE // 3).astype(np.float32)
    for audio in (slow, fast):
        assert [e for e in events(keyset, mfcc, audio) if e[0] == "computadora"] == []


def test_thresholds_are_calibrated_to_the_target_rate_and_movable_without_audio(keyset, mfcc):
    for kw in keyset.keywords:
        cal = kw.calibration
        assert kw.threshold_source == "calibrated" and cal["method"] == "fa-rate"
        assert cal["background"] == "built-in" and cal["background_hours"] > 0.4
        assert cal["fa_per_hour"] == DEFAULT_FA_PER_HOUR
        assert cal["expected_fa_per_hour"] == pytest.approx(DEFAULT_FA_PER_HOUR, rel=0.05)
    name = keyset.keywords[0].name
    looser = set_sensitivity(keyset, name, fa_per_hour=10.0).get(name)
    stricter = set_sensitivity(keyset, name, fa_per_hour=DEFAULT_FA_PER_HOUR / 10).get(name)
    assert stricter.threshold < keyset.keywords[0].threshold < looser.threshold
    assert looser.calibration["expected_fa_per_hour"] == pytest.approx(10.0, rel=0.1)
    user = set_sensitivity(keyset, name, threshold=0.2).get(name)
    assert user.threshold == 0.2 and user.threshold_source == "user"
    assert user.calibration["expected_fa_per_hour"] < 0.1  # what 0.2 means in the speaker's speech


def test_on_the_builtin_background_a_target_is_a_rate_of_the_speakers_own_speech(keyset, mfcc):
    """The built-in background (other speakers) is asked for fewer false alarms than the target,
    through the encoder's shipped own-speech map; a user's own background is taken as it is."""
    shipped = rate_map_for(mfcc.name)
    name = keyset.keywords[0].name
    kw = keyset.get(name)
    assert kw.calibration["rates"] == "own speech"
    assert RateMap.from_json(kw.calibration["rate_map"], name) == shipped
    curve = FaCurve.from_json(kw.calibration["curve"], name)
    assert curve.rate(kw.threshold) == pytest.approx(shipped.to_background(DEFAULT_FA_PER_HOUR), rel=0.05)
    assert curve.rate(kw.threshold) < DEFAULT_FA_PER_HOUR / 10  # far stricter than on the background's own rates
    # a set calibrated before the maps (its target a rate on the background) keeps its thresholds' meaning
    older = {k: v for k, v in kw.calibration.items() if k not in ("rates", "rate_map")}
    older_set = keyset.with_keyword(dataclasses.replace(kw, calibration={**older, "fa_per_hour": 0.1}))
    again = calibrate_keywords(older_set, mfcc, [name]).get(name)
    assert again.calibration["rates"] == "own speech"
    assert again.calibration["fa_per_hour"] == pytest.approx(shipped.to_own(0.1))
    assert curve.rate(again.threshold) == pytest.approx(0.1, rel=0.05)
    noise = [p for p in Background.builtin().paths if p.stem == "speech-ru"]
    own = calibrate_keywords(keyset, mfcc, [name], background=Background.files(noise)).get(name)
    assert own.calibration["rates"] == "background" and own.calibration["rate_map"] is None
    assert own.calibration["expected_fa_per_hour"] == pytest.approx(DEFAULT_FA_PER_HOUR, rel=0.05)


def test_fa_curve_counts_and_extrapolates():
    """Below the anchor (the 20th lowest impostor cost) the rate falls exponentially with the
    scale fitted there; above it, it is the plain count per hour."""
    costs = np.linspace(0.30, 0.69, 40)  # evenly spaced: 40 events in 2 hours
    curve = FaCurve.fit(costs, hours=2.0)
    assert curve.anchor == pytest.approx(costs[19]) and curve.anchor_rate == pytest.approx(10.0)
    assert curve.scale == pytest.approx(np.mean(costs[19] - costs[:19]))
    assert curve.rate(0.605) == pytest.approx(np.sum(costs < 0.605) / 2.0)
    assert curve.rate(curve.anchor - curve.scale) == pytest.approx(10.0 / np.e)
    for target in (0.1, 1.0, 5.0, 15.0):
        assert curve.rate(curve.threshold_for(target)) == pytest.approx(target, rel=0.1)


@pytest.mark.slow
def test_calibration_predicts_false_alarms_on_other_background(tmp_path, mfcc):
    """Thresholds calibrated on generated background (eSpeak sentences by some voices) give about
    the asked false-alarm rate on other generated background (other sentences, other voices):
    within a factor of two, counted over all keywords at a rate high enough to count."""
    pytest.importorskip("eval.scenes")
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from eval.espeak import Voice
    from eval.scenes import script_scene, write_audio
    from eval.textnorm import fortune_sentences

    sentences = [s for s in fortune_sentences() if 6 <= len(s.split()) <= 16 and "computadora" not in s.lower()
                 and "mariposa" not in s.lower() and "biblioteca" not in s.lower()]
    voices_a = [Voice("es", "m2", 165, 45), Voice("es-419", "f3", 185, 60), Voice("es", "m5", 150, 50)]
    voices_b = [Voice("es-419", "m6", 175, 40), Voice("es", "f5", 195, 65), Voice("es-419", "m4", 160, 55)]
    words = list(example_files())
    a = script_scene(sentences[:150], words, voices_a, noise_snr_db=30, seed=5)
    b = script_scene(sentences[150:300], words, voices_b, noise_snr_db=30, seed=6)
    assert not a.truth and not b.truth
    back_a = Background.files([write_audio(tmp_path / "a.flac", a.audio)])
    back_b = Background.files([write_audio(tmp_path / "b.flac", b.audio)])
    target = 60.0  # per hour per keyword: ~ a dozen per keyword in these few minutes
    keyset = calibrate_keywords(enroll_examples(mfcc, example_files(), background=back_a), mfcc,
                                background=back_a, fa_per_hour=target)
    costs, hours = impostor_costs(keyset, mfcc, back_b)
    spotter_rate = sum(np.sum(costs[kw.name] < kw.threshold) for kw in keyset.keywords) / hours / len(keyset.keywords)
    assert target / 2 <= spotter_rate <= target * 2, spotter_rate


def test_an_enrollment_that_makes_no_sense_gets_a_warning(mfcc, tmp_path):
    """Three 'examples' of one keyword that are three different words: the examples score far
    apart, and enrollment says so (what to check) instead of calling the threshold calibrated
    without a word."""
    files = example_files()
    mixed = [files["computadora"][0], files["mariposa"][1], files["biblioteca"][2]]
    kw = enroll(None, mfcc, "nonsense", mixed).get("nonsense")
    assert kw.calibration["warning"] and "do not sound alike" in kw.calibration["warning"]
    good = enroll(None, mfcc, "computadora", files["computadora"]).get("computadora")
    assert good.calibration["warning"] is None


def test_a_keyword_at_the_very_start_of_its_recording_is_normalised_as_in_a_stream(mfcc, tmp_path):
    """MFCC's running mean normalisation has nothing to normalise against at a recording's first
    frames; enrollment puts the recording's own start, mirrored, before it. The template of a
    word cut at 0 s then looks like the same word cut out of a longer recording with speech
    before it — closer than without that context (which is what the encoder alone gives)."""
    import soundfile as sf

    from kwsstream.enroll import keyword_frames, make_template, speech_span
    from kwsstream.matcher import unit_rows

    files = example_files()
    word, before = load_audio(files["computadora"][1]), load_audio(files["mariposa"][0])
    start, end = speech_span(word)
    alone = tmp_path / "alone.wav"
    sf.write(alone, word[int(start * RATE):], RATE)  # the word starts at 0 s
    context = tmp_path / "context.wav"
    sf.write(context, np.concatenate([before, word[int(start * RATE):]]), RATE)
    shift = len(before) / RATE
    in_context = make_template(mfcc, context, (shift, shift + end - start)).frames
    padded = make_template(mfcc, alone, (0.0, end - start)).frames
    raw = mfcc.encode(word[int(start * RATE):])
    raw = raw[keyword_frames(mfcc.grid, len(raw), 0.0, end - start)]

    def distance(a, b):
        n = min(len(a), len(b))
        return float(np.mean(1 - np.sum(unit_rows(a[:n]) * unit_rows(b[:n]), axis=1)))

    assert mfcc.context_seconds == 1.0
    assert distance(padded, in_context) < 0.6 * distance(raw, in_context)
