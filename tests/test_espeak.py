"""eval.espeak: word timings from libespeak-ng events, determinism across worker processes."""

from __future__ import annotations

import ctypes.util
import json

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("soxr")
if not ctypes.util.find_library("espeak-ng"):
    pytest.skip("libespeak-ng is not installed", allow_module_level=True)

from eval import espeak  # noqa: E402
from eval.espeak import SAMPLE_RATE, Voice, synthesize, synthesize_many  # noqa: E402
from eval.textnorm import normalize_text  # noqa: E402
from kwsstream.errors import UsageError  # noqa: E402

PAUSED = "Naranja, ventana, biblioteca. Murciélago."
FRAME_S = 0.010
SILENT_RMS = 0.003
LOUD_RMS = 0.03


def _rms(audio: np.ndarray, start: float, end: float) -> float:
    seg = audio[int(round(start * SAMPLE_RATE)):int(round(end * SAMPLE_RATE))]
    return float(np.sqrt(np.mean(seg.astype(np.float64) ** 2))) if len(seg) else 0.0


@pytest.fixture(scope="module")
def paused() -> espeak.Utterance:
    return synthesize(PAUSED, Voice("es", "m3"))


def test_words_match_text_and_times_are_monotonic(paused):
    assert [w.text for w in paused.words] == ["Naranja", "ventana", "biblioteca", "Murciélago"]
    assert paused.audio.dtype == np.float32 and paused.sample_rate == SAMPLE_RATE
    assert np.abs(paused.audio).max() <= 1.0
    previous_end = 0.0
    for word in paused.words:
        assert previous_end <= word.start < word.end
        previous_end = word.end
    assert previous_end <= paused.duration


def test_word_cut_by_its_timing_is_the_loud_region(paused):
    """Every word is speech from edge to edge; the pauses between the clauses are silent."""
    words = paused.words
    for word in words:
        assert _rms(paused.audio, word.start, word.end) > LOUD_RMS
        # the first and last 10 ms of the word already/still sound
        assert _rms(paused.audio, word.start, word.start + FRAME_S) > SILENT_RMS
        assert _rms(paused.audio, word.end - FRAME_S, word.end) > SILENT_RMS
    for before, after in zip(words, words[1:]):
        assert after.start - before.end > 0.1  # a comma or full stop pause
        assert _rms(paused.audio, before.end + 0.005, after.start - 0.005) < SILENT_RMS
        # the word ends (starts) within 10 ms of the sound's end (start)
        assert _rms(paused.audio, before.end, before.end + FRAME_S) < SILENT_RMS
        assert _rms(paused.audio, after.start - FRAME_S, after.start) < SILENT_RMS


def test_word_in_a_sentence_lasts_like_the_word_alone():
    alone, inside = synthesize_many([("ventana", Voice("es-419", "f2")),
                                     ("Abre la ventana de la casa.", Voice("es-419", "f2"))])
    (word,) = alone.words
    found = [w for w in inside.words if w.text == "ventana"]
    assert len(found) == 1
    assert abs((found[0].end - found[0].start) - (word.end - word.start)) < 0.15


def test_deterministic_whatever_the_order_and_the_workers():
    items = [(f"La biblioteca abre a las {n} y cierra tarde.", Voice(name, variant, rate, 50))
             for n, (name, variant, rate) in enumerate(
                 [("es", "m1", 150), ("es-419", "f3", 220), ("es", "klatt", 175)], start=7)]
    items.append(items[0])
    first = synthesize_many(items, workers=2)
    second = synthesize_many(items[::-1], workers=1)[::-1]
    for a, b in zip(first, second):
        assert np.array_equal(a.audio, b.audio) and a.words == b.words
    assert np.array_equal(first[0].audio, first[-1].audio)  # no drift inside one worker


def test_speed_changes_duration():
    slow, fast = synthesize_many([(PAUSED, Voice(rate=120)), (PAUSED, Voice(rate=260))])
    assert slow.duration > 1.5 * fast.duration


def test_variants_are_listed():
    variants = espeak.list_variants()
    assert {"m1", "m8", "f1", "f5", "klatt"} <= set(variants)
    assert set(espeak.SPANISH_VOICES) <= set(espeak.list_languages())


@pytest.mark.parametrize("make", [lambda: Voice(rate=20), lambda: Voice(pitch=101),
                                  lambda: Voice(name="es+m3")])
def test_bad_voice_parameters_are_refused(make):
    with pytest.raises(UsageError):
        make()


def test_unknown_variant_and_empty_text_are_refused():
    with pytest.raises(UsageError, match="nope"):
        synthesize("hola", Voice(variant="nope"))
    with pytest.raises(UsageError):
        synthesize("   ")


# ----------------------------------------------------------------------------- scenes

from eval import scenes  # noqa: E402

SCENE_VOICES = [Voice("es", "m1"), Voice("es-419", "f3")]
FILLERS = ["El perro duerme junto al fuego de la casa.",
           "Mañana iremos todos al mercado del pueblo.",
           "Quien mucho abarca poco aprieta.", "La luna sale tarde en invierno."]


def _scene(snr, seed=5, **kwargs):
    return scenes.build_scene(["naranja", "biblioteca"], FILLERS, SCENE_VOICES,
                              occurrences_per_keyword=2, noise_snr_db=snr, seed=seed, **kwargs)


@pytest.fixture(scope="module")
def clean_scene():
    return _scene(None)


def test_scene_truth_is_inside_the_sentences_and_loud(clean_scene):
    scene = clean_scene
    assert [o.keyword for o in scene.truth].count("naranja") >= 2
    assert [o.keyword for o in scene.truth].count("biblioteca") >= 2
    assert scene.audio.dtype == np.float32 and scene.sample_rate == SAMPLE_RATE
    for occurrence in scene.truth:
        (segment,) = [s for s in scene.segments if s.start <= occurrence.start < s.end]
        assert occurrence.end <= segment.end
        assert normalize_text(occurrence.keyword) in normalize_text(segment.text)
        assert _rms(scene.audio, occurrence.start, occurrence.end) > LOUD_RMS
    starts = [o.start for o in scene.truth]
    assert starts == sorted(starts)
    for a, b in zip(scene.segments, scene.segments[1:]):
        assert b.start - a.end >= scenes.PAUSE_S[0] - 1e-3
        assert _rms(scene.audio, a.end + 0.01, b.start - 0.01) == 0.0
    assert len({s.voice.variant for s in scene.segments}) == 2
    assert len({(s.voice.rate, s.voice.pitch) for s in scene.segments}) > 2  # speed/pitch spread


def test_scene_is_deterministic_and_noise_has_the_asked_snr(clean_scene):
    noisy = _scene(10.0)
    again = _scene(10.0)
    assert np.array_equal(noisy.audio, again.audio)
    assert noisy.truth == clean_scene.truth
    assert not np.array_equal(_scene(None, seed=6).audio, clean_scene.audio)
    clean = clean_scene.audio.astype(np.float64)
    mixed = noisy.audio.astype(np.float64)
    scale = float(np.dot(mixed, clean) / np.dot(clean, clean))
    noise = mixed - scale * clean
    active = np.concatenate([clean[int(s.start * SAMPLE_RATE):int(s.end * SAMPLE_RATE)]
                             for s in clean_scene.segments])
    snr = 10 * np.log10(scale ** 2 * np.mean(active ** 2) / np.mean(noise ** 2))
    assert abs(snr - 10.0) < 1.0


def test_babble_scene_and_enrollment_clips(tmp_path):
    scene = _scene(5.0, babble_voices=[Voice("es", "m6")])
    assert len(scene.truth) >= 4
    clips = scenes.enrollment_clips("ventana", [Voice("es", "f1"), Voice("es-419", "m2", 140)])
    assert [len(c.words) for c in clips] == [1, 1] and clips[0].words[0].text == "ventana"
    scenes.write_scene(scene, tmp_path / "s.flac", tmp_path / "s.json")
    audio, rate = sf.read(tmp_path / "s.flac", dtype="float32")
    assert rate == SAMPLE_RATE and len(audio) == len(scene.audio)
    record = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert record["truth"][0]["keyword"] == scene.truth[0].keyword


def test_room_reverberation(clean_scene):
    rng = np.random.default_rng(0)
    response = scenes.room_response(0.5, rng)
    assert len(response) == SAMPLE_RATE // 2 and response[0] == 1.0
    predelay = int(scenes.ROOM_PREDELAY_S * SAMPLE_RATE)
    assert not response[1:predelay].any()
    tail = response[predelay:] ** 2
    assert abs(10 * np.log10(tail.sum()) - (-scenes.ROOM_DRR_DB)) < 1e-6  # direct/reverberant energy
    decay = 10 * np.log10(tail[-800:].mean() / tail[:800].mean())  # first vs last 50 ms of the tail
    apart = (len(tail) - 800) / SAMPLE_RATE
    assert abs(decay - (-60 * apart / 0.5)) < 3  # 60 dB per RT60
    roomy = _scene(None, room_rt60=0.5)
    assert roomy.truth == clean_scene.truth and len(roomy.audio) == len(clean_scene.audio)
    assert roomy.room_rt60 == 0.5 and clean_scene.room_rt60 is None
    dry, wet = clean_scene.audio.astype(np.float64), roomy.audio.astype(np.float64)
    assert abs(np.sqrt(np.mean(wet ** 2) / np.mean(dry ** 2)) - 1) < 0.01  # same power
    assert np.corrcoef(dry, wet)[0, 1] > 0.5  # the direct sound is still there...
    for a in clean_scene.segments[:-1]:  # ...and the pauses after sentences ring
        lag = slice(int(a.end * SAMPLE_RATE) + 80, int(a.end * SAMPLE_RATE) + 1600)
        assert np.abs(wet[lag]).max() > 1e-3 and dry[lag].max() == 0.0
    with pytest.raises(UsageError, match="reverberation time"):
        scenes.room_response(10.0, rng)


def test_scene_refuses_bad_input():
    with pytest.raises(UsageError):
        scenes.build_scene([], FILLERS, SCENE_VOICES, seed=0)
    with pytest.raises(UsageError):
        scenes.build_scene(["¿?"], FILLERS, SCENE_VOICES, seed=0)
    with pytest.raises(UsageError):
        scenes.build_scene(["hola"], FILLERS, [], seed=0)
    with pytest.raises(UsageError, match="suffix|.wav"):
        scenes.write_audio("x.ogg", np.zeros(10, np.float32))
