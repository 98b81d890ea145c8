"""The real-speech stream corpora (eval/prompts.py, eval/align.py, eval/debian_audio.py), offline:
no package is downloaded here."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from eval import align as aligner
from eval import debian_audio as deb
from eval import keywords, prompts
from eval.espeak import Voice, synthesize_many

SENTENCES = (
    "Please enter your password followed by the pound key.",
    "Your call cannot be completed as dialed. Please check the number and dial again.",
    "To speak with a customer advocate, press two. For accounting, press three.",
)
LEAD_S = 0.4
"""Silence (low noise) put before the 'real' utterance, as in a recorded prompt."""


def test_aligner_recovers_word_times_of_another_voice():
    """eSpeak voice A (f3, fast) plays the real speaker, whose word times are known; the aligner
    (default and m3 voices) must find them."""
    real = synthesize_many([(s, Voice(name="en-US", variant="f3", rate=190)) for s in SENTENCES])
    rng = np.random.default_rng(0)
    items = []
    for utterance in real:
        lead = 1e-3 * rng.standard_normal(int(LEAD_S * 16_000)).astype(np.float32)
        items.append((np.concatenate([lead, utterance.audio, lead[:3000]]), utterance.text))
    errors, trusted_errors = [], []
    for utterance, alignment in zip(real, aligner.align_many(items, "en-US")):
        truth = aligner.synthetic_word_times(utterance, utterance.text)
        for span, word in zip(truth, alignment.words):
            if span is None or not np.isfinite(word.start):
                continue
            pair = [abs(span[0] + LEAD_S - word.start), abs(span[1] + LEAD_S - word.end)]
            errors += pair
            trusted_errors += pair if word.trusted else []
    assert len(errors) >= 60
    assert np.median(errors) < 0.04 and np.percentile(errors, 90) < 0.15
    assert np.percentile(trusted_errors, 90) < 0.1
    assert len(trusted_errors) >= 0.6 * len(errors)


def test_transcripts_are_parsed_and_normalised():
    text = ("; Core Asterisk Sounds in English\n\nagent-pass: Please enter your password.\n"
            'digits/1: one\nletters/at: at [@]\nbeep: [this is a simple beep tone]\n'
            'confbridge-pin: Entrez votre code d\'identification, suivi du dièse."\n'
            "silence/1: (1 second of silence)\nnot a line\n")
    parsed = deb.parse_transcripts(text)
    assert parsed["digits/1"] == "one"
    assert parsed["confbridge-pin"] == "Entrez votre code d'identification, suivi du dièse."
    assert "not a line" not in parsed and len(parsed) == 6
    assert deb.words_of(parsed["agent-pass"]) == ["please", "enter", "your", "password"]
    assert deb.words_of(parsed["letters/at"]) == ["at"]
    assert deb.words_of(parsed["beep"]) == [] and deb.words_of(parsed["silence/1"]) == []
    assert deb.words_of(parsed["confbridge-pin"])[3:5] == ["d", "identification"]
    assert deb.words_of("Press 1 or 22") == ["press", "1", "or", "22"]


def test_elided_word_is_timed_with_its_token():
    """``d'identification``: eSpeak gives one word; the clitic ``d`` is left untimed and the
    long word takes the token's span."""
    text = "Entrez votre code d'identification."
    utterance = synthesize_many([(text, Voice(name="fr"))])[0]
    times = aligner.synthetic_word_times(utterance, text)
    assert [t is None for t in times] == [False, False, False, True, False]
    assert times[4][1] - times[4][0] > 0.4


def test_manifest_round_trip(tmp_path):
    manifest = {"name": "en", "language": "en", "sample_rate": 16000,
                "sources": [{"package": "p", "version": "1", "licence": "CC-BY-SA-3.0"}],
                "keywords": {"password": [{"audio": "enroll/a.flac", "segment": [0.1, 0.5],
                                           "speaker": "s"}] * 3},
                "streams": [], "alignment": {"method": "m", "occurrences_kept": 1,
                                             "dropped": 0, "agreement_median_s": 0.01,
                                             "agreement_p90_s": 0.05}}
    prompts.write_manifest(tmp_path / "en", manifest)
    read = prompts.read_manifest(tmp_path / "en")
    assert read == {"format": prompts.FORMAT, "version": prompts.VERSION, **manifest}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "corpus.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(prompts.CorpusError, match="not a kwsstream-streams"):
        prompts.read_manifest(tmp_path / "bad")
    with pytest.raises(prompts.CorpusError, match="cannot read"):
        prompts.read_manifest(tmp_path / "missing")


def test_stream_layout_truth_and_pauses(tmp_path):
    rate = prompts.SAMPLE_RATE
    tone = (0.3 * np.sin(np.arange(rate) * 0.2)).astype(np.float32)
    pieces = [prompts.Piece(f"p{i}", tone * (i + 1) / 4, f"text {i}",
                            (("hello", 0.25, 0.5),) if i % 2 else ()) for i in range(3)]
    audio, rows, truth = prompts.layout(pieces, seed=1)
    assert sorted(r[0] for r in rows) == ["p0", "p1", "p2"]
    for before, after in zip(rows, rows[1:]):
        pause = after[1] - before[2]
        assert prompts.PAUSE_RANGE_S[0] - 1e-3 <= pause <= prompts.PAUSE_RANGE_S[1] + 1e-3
        gap = audio[int(round(before[2] * rate)) + 10:int(round(after[1] * rate)) - 10]
        assert np.count_nonzero(gap) == len(gap)
        level = 20 * np.log10(np.sqrt(np.mean(gap.astype(np.float64) ** 2)))
        assert abs(level - prompts.PAUSE_LEVEL_DBFS) < 3
    assert len(audio) == pytest.approx(rows[-1][2] * rate, abs=rate // 1000)
    starts = {r[0]: r[1] for r in rows}
    assert truth == [["hello", round(starts["p1"] + 0.25, 3), round(starts["p1"] + 0.5, 3), "p1",
                      "keyword"]]
    entry = prompts.write_stream(tmp_path, "t", pieces, 1, "speech", ["s"])
    assert entry["prompts"] == 3 and (tmp_path / "streams" / "t.truth.csv").read_text(
        ).splitlines()[0] == "keyword,start,end,prompt,kind"
    assert (tmp_path / "streams" / "t.prompts.csv").read_text().startswith(
        "prompt,start,end,transcript")


def test_whole_word_prompt_spans_its_energy():
    rate = prompts.SAMPLE_RATE
    audio = np.zeros(rate, dtype=np.float32)
    audio[4000:12000] = 0.5 * np.sin(np.arange(8000) * 0.3)
    word = keywords.whole_word_alignment(audio, "seven").words[0]
    assert word.trusted and abs(word.start - 0.25) < 0.06 and abs(word.end - 0.75) < 0.06


def _item(name: str, text: str, untrusted: tuple[str, ...] = ()) -> keywords.Item:
    words = deb.words_of(text)
    times = tuple(aligner.WordTime(w, i, 0.1 * i, 0.1 * i + 0.1, 0.0, w not in untrusted)
                  for i, w in enumerate(words))
    prompt = deb.Prompt(name, deb.Path("/nonexistent.npy"), text, "s")
    return keywords.Item(prompt, aligner.Alignment(times, 0.5))


def test_keyword_selection_keeps_untrusted_occurrences_as_dont_care():
    """A prompt with an untrusted occurrence stays in the stream, the whole prompt a don't-care
    for that keyword; it is never an enrollment prompt."""
    items = [_item(f"a{i}", "please type the password now") for i in range(8)]
    items.append(_item("bad", "the password again", untrusted=("password",)))
    items += [_item(f"b{i}", "conference volume") for i in range(3)]
    selection = keywords.select_keywords(items, items, "en", count=1, seed=0, same_speaker=True)
    assert list(selection.enroll) == ["password"]
    enrolled = {i.prompt.name for i, _ in selection.enroll["password"]}
    stream = {i.prompt.name for i in selection.stream}
    assert len(enrolled) == 3 and not enrolled & stream and "bad" not in enrolled
    assert selection.dropped == [] and "bad" in stream and len(stream) == len(items) - 3
    bad = next(i for i in selection.stream if i.prompt.name == "bad")
    assert prompts.ignore_spans(bad, ["password"], 2.5) == (("password", 0.0, 2.5),)


def test_keyword_rule():
    """At least 2 syllables (vowel groups; French mute final e, English silent e/es/ed not
    counted), 5 letters, no function word; no two chosen keywords related."""
    assert [keywords.syllables(w, "en") for w in
            ("press", "pressed", "phone", "simple", "enter", "entered", "sorry", "voices",
             "names", "wanted", "conference")] == [1, 1, 1, 2, 2, 2, 2, 2, 1, 2, 3]
    assert [keywords.syllables(w, "fr") for w in
            ("passe", "passes", "dièse", "message", "désolé", "joindre", "personne",
             "conférence", "appuyez")] == [1, 1, 1, 2, 3, 1, 2, 3, 2]
    assert not keywords.eligible("press", "en") and not keywords.eligible("phone", "en")
    assert not keywords.eligible("about", "en") and not keywords.eligible("dial", "en")
    assert not keywords.eligible("pin2go", "en") and keywords.eligible("password", "en")
    assert not keywords.eligible("passe", "fr") and keywords.eligible("message", "fr")
    assert keywords.related("participant", "participants")
    assert keywords.related("enter", "entered") and keywords.related("porte", "ports")
    assert not keywords.related("increase", "decrease")
    assert not keywords.related("password", "conference")
    items = [_item(f"a{i}", "the participants may enter the conference") for i in range(6)]
    items += [_item(f"b{i}", "one participant entered the conference") for i in range(6)]
    items += [_item(f"c{i}", "press volume to increase the volume") for i in range(4)]
    items += [_item(f"d{i}", "press to decrease") for i in range(4)]
    selection = keywords.select_keywords(items, items, "en", count=10, seed=0, same_speaker=True)
    chosen = list(selection.enroll)
    assert chosen[:2] == ["conference", "volume"]
    assert "press" not in chosen and {"increase", "decrease"} <= set(chosen)
    assert not ({"participant", "participants"} <= set(chosen))
    assert not ({"enter", "entered"} <= set(chosen))
    for a in chosen:
        assert not any(keywords.related(a, b) for b in chosen if b != a)


def test_ignore_rows_from_a_hand_made_transcript(tmp_path):
    """Words containing or inflecting a keyword, and keyword occurrences inside a hyphenated
    compound, become ``ignore`` rows with their own times, or the whole prompt when untrusted."""
    assert keywords.dont_care("entered", "enter") and keywords.dont_care("passwords", "password")
    assert keywords.dont_care("participant", "participants")
    assert keywords.dont_care("increasing", "increase") and keywords.dont_care("entrer", "entrez")
    assert not keywords.dont_care("enter", "enter") and not keywords.dont_care("decrease", "increase")
    assert not keywords.dont_care("center", "entered") and not keywords.dont_care("pass", "password")
    text = "Please re-enter your password. Passwords entered: enter them again."
    item = _item("p", text)
    words = [w.word for w in item.alignment.words]
    assert words[1:3] == ["re", "enter"] and item.compound_indices == {1, 2}
    assert [w.index for w in item.occurrences("enter")] == [7]
    assert [w.word for w in item.dont_cares("enter")] == ["enter", "entered"]
    assert [w.word for w in item.dont_cares("password")] == ["passwords"]
    spans = prompts.ignore_spans(item, ["enter", "password"], 1.5)
    assert [k for k, _, _ in spans] == ["enter", "enter", "password"]
    assert np.allclose([s[1:] for s in spans], [(0.2, 0.3), (0.6, 0.7), (0.5, 0.6)])
    untrusted = _item("q", text, untrusted=("entered",))
    assert prompts.ignore_spans(untrusted, ["enter", "password"], 1.5) == (
        ("enter", 0.0, 1.5), ("password", 0.5, 0.6))
    rate = prompts.SAMPLE_RATE
    piece = prompts.Piece("p", np.zeros(int(1.5 * rate), np.float32), text,
                          tuple(("enter", w.start, w.end) for w in item.occurrences("enter")),
                          spans)
    entry = prompts.write_stream(tmp_path, "t", [piece], 0, "speech", ["s"])
    with (tmp_path / entry["truth"]).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["keyword"], r["start"], r["end"], r["kind"]) for r in rows] == [
        ("enter", "0.2", "0.3", "ignore"), ("password", "0.5", "0.6", "ignore"),
        ("enter", "0.6", "0.7", "ignore"), ("enter", "0.7", "0.8", "keyword")]
    assert all(r["prompt"] == "p" for r in rows)
