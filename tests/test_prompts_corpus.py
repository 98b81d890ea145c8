"""The real-speech stream corpora (eval/prompts.py, eval/align.py, eval/debian_audio.py), offline:
no package is downloaded here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval import align as aligner
from eval import debian_audio as deb
from eval import prompts
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
    assert truth == [["hello", round(starts["p1"] + 0.25, 3), round(starts["p1"] + 0.5, 3), "p1"]]
    entry = prompts.write_stream(tmp_path, "t", pieces, 1, "speech", ["s"])
    assert entry["prompts"] == 3 and (tmp_path / "streams" / "t.truth.csv").read_text(
        ).splitlines()[0] == "keyword,start,end,prompt"
    assert (tmp_path / "streams" / "t.prompts.csv").read_text().startswith(
        "prompt,start,end,transcript")


def test_whole_word_prompt_spans_its_energy():
    rate = prompts.SAMPLE_RATE
    audio = np.zeros(rate, dtype=np.float32)
    audio[4000:12000] = 0.5 * np.sin(np.arange(8000) * 0.3)
    word = prompts.whole_word_alignment(audio, "seven").words[0]
    assert word.trusted and abs(word.start - 0.25) < 0.06 and abs(word.end - 0.75) < 0.06


def _item(name: str, text: str, untrusted: tuple[str, ...] = ()) -> prompts.Item:
    words = deb.words_of(text)
    times = tuple(aligner.WordTime(w, i, 0.1 * i, 0.1 * i + 0.1, 0.0, w not in untrusted)
                  for i, w in enumerate(words))
    prompt = deb.Prompt(name, deb.Path("/nonexistent.npy"), text, "s")
    return prompts.Item(prompt, aligner.Alignment(times, 0.5))


def test_keyword_selection_keeps_untrusted_occurrences_out_of_the_stream():
    items = [_item(f"a{i}", "please type the password now") for i in range(8)]
    items.append(_item("bad", "the password again", untrusted=("password",)))
    items += [_item(f"b{i}", "conference volume") for i in range(3)]
    selection = prompts.select_keywords(items, items, "en", count=1, seed=0, same_speaker=True)
    assert list(selection.enroll) == ["password"]
    enrolled = {i.prompt.name for i, _ in selection.enroll["password"]}
    stream = {i.prompt.name for i in selection.stream}
    assert len(enrolled) == 3 and not enrolled & stream
    assert [i.prompt.name for i in selection.dropped] == ["bad"]
    assert len(stream) == len(items) - 4
