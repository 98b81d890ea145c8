"""The synthetic corpus (python -m eval synth) read back by the Common Voice reader, the CTM and
TextGrid readers, the sentence-choice rule and the text normalisation."""

from __future__ import annotations

import ctypes.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from eval.corpus import CorpusError, read_corpus, read_ctm, read_split
from eval.textnorm import crude_stem, fortune_sentences, normalize_text, normalize_word
from kwsstream.audio import load_audio
from kwsstream.errors import KwsError

FORTUNES = Path("/usr/share/games/fortunes/es")
needs_espeak = pytest.mark.skipif(not ctypes.util.find_library("espeak-ng"),
                                  reason="libespeak-ng is not installed")
needs_fortunes = pytest.mark.skipif(not FORTUNES.is_dir(), reason="fortunes-es is not installed")
SENTENCES = 6
SEED = 3


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    if not ctypes.util.find_library("espeak-ng") or not FORTUNES.is_dir():
        pytest.skip("needs libespeak-ng and fortunes-es")
    from eval.__main__ import main

    out = tmp_path_factory.mktemp("corpus")
    assert main(["synth", "--out", str(out), "--sentences", str(SENTENCES),
                 "--seed", str(SEED)]) == 0
    return out


def test_text_normalisation():
    assert normalize_text("¿Dónde está la BIBLIOTECA, señor?") == "dónde está la biblioteca señor"
    assert normalize_text("¡Pingüino! «Canción» año", fold_accents=True) == "pinguino cancion año"
    assert normalize_word("¿Qué?") == "qué" and normalize_word("...") == ""
    assert crude_stem("hombres") == crude_stem("hombre")
    assert crude_stem("razón") == crude_stem("razones")


@needs_fortunes
def test_fortunes_give_clean_sentences():
    sentences = fortune_sentences()
    assert len(sentences) > 9000
    for sentence in sentences[::97]:
        assert 4 <= len(normalize_text(sentence).split()) <= 20
        assert not any(c.isdigit() for c in sentence) and sentence[-1] in ".?!"


def test_layout_and_readback(synth_dir):
    assert (synth_dir / "validated.tsv").is_file() and (synth_dir / "alignments.ctm").is_file()
    clips = read_corpus(synth_dir)
    assert clips.alignment_source == "ctm" and len(clips.clips) == SENTENCES
    info = json.loads((synth_dir / "synth.json").read_text(encoding="utf-8"))
    assert info["sentences"] == SENTENCES and info["seed"] == SEED
    for clip in clips.clips:
        assert clip.path.suffix == ".mp3" and clip.path.parent.name == "clips"
        assert clip.client_id.startswith("espeak-es")
        info_sf = sf.info(str(clip.path))
        assert info_sf.samplerate == 48_000 and info_sf.channels == 1
        # every word of the sentence is aligned, in order, inside the clip
        assert [w.text for w in clip.words] == clip.sentence_words
        previous = 0.0
        for word in clip.words:
            assert previous - 1e-3 <= word.start < word.end <= info_sf.duration + 1e-3
            previous = word.end
        audio = load_audio(clip.path)  # the reader every stage uses (kwsstream.audio)
        assert audio.dtype == np.float32 and abs(len(audio) / 16_000 - info_sf.duration) < 0.01
        first = clip.words[0]
        segment = audio[int(first.start * 16_000):int(first.end * 16_000)]
        assert np.sqrt(np.mean(segment ** 2)) > 0.01  # the first word is sound, not silence
    rows = read_split(synth_dir / "validated.tsv")
    assert {"path", "sentence", "client_id", "sentence_id", "locale"} <= set(rows[0])


def test_deterministic_for_a_seed(synth_dir, tmp_path):
    from eval.synth import synthesize_corpus

    synthesize_corpus(tmp_path, SENTENCES, SEED, workers=1, progress=False)
    for name in ("validated.tsv", "alignments.ctm"):
        assert (tmp_path / name).read_bytes() == (synth_dir / name).read_bytes()
    first = sorted((synth_dir / "clips").iterdir())[0]
    again, _ = sf.read(tmp_path / "clips" / first.name, dtype="float32")
    assert np.array_equal(again, sf.read(first, dtype="float32")[0])


@needs_fortunes
def test_sentence_choice_makes_the_protocol_possible():
    from eval.synth import QUERIES_PER_TARGET, select_sentences

    selection = select_sentences(fortune_sentences(), 200, np.random.default_rng(0))
    assert len(selection.sentences) == 200 and len(selection.targets) == 6
    words = [set(normalize_text(s).split()) for s in selection.sentences]
    for target in selection.targets:
        assert sum(target in w for w in words) == QUERIES_PER_TARGET
    with_target = [w for w in words if w & set(selection.targets)]
    assert all(len(w & set(selection.targets)) == 1 for w in with_target)
    assert len(words) - len(with_target) == 200 - 6 * QUERIES_PER_TARGET


def test_common_voice_column_variants_and_suffixless_paths(tmp_path):
    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "a1.mp3", np.zeros(4800, np.float32), 48_000, format="MP3")
    (tmp_path / "train.tsv").write_text(
        'speaker_id\tfile\ttext\tup_votes\nspk\ta1\t"Hola," dijo él.\t2\n', encoding="utf-8")
    (tmp_path / "alignments.ctm").write_text(
        ";; comment\na1 1 0.01 0.02 Hola\na1 A 0.05 0.03 dijo\na1 1 0.08 0.01 <unk>\n",
        encoding="utf-8")
    read = read_corpus(tmp_path, "train")
    (clip,) = read.clips
    assert clip.path.name == "a1.mp3" and clip.sentence == '"Hola," dijo él.'
    assert clip.sentence_words == ["hola", "dijo", "él"] and dict(clip.extra)["up_votes"] == "2"
    assert [w.text for w in clip.words] == ["hola", "dijo"]


def test_textgrid_alignments(tmp_path):
    pytest.importorskip("praatio")
    from praatio import textgrid
    from praatio.data_classes.interval_tier import IntervalTier

    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "u1.mp3", np.zeros(48_000, np.float32), 48_000, format="MP3")
    (tmp_path / "validated.tsv").write_text("client_id\tpath\tsentence\nc\tu1.mp3\tLa casa.\n",
                                            encoding="utf-8")
    grid = textgrid.Textgrid()
    grid.addTier(IntervalTier("words", [(0.1, 0.3, "la"), (0.3, 0.5, ""), (0.5, 0.9, "casa")],
                              0, 1.0))
    grid.addTier(IntervalTier("phones", [(0.1, 0.2, "l")], 0, 1.0))
    (tmp_path / "alignments" / "c").mkdir(parents=True)
    grid.save(str(tmp_path / "alignments" / "c" / "u1.TextGrid"), "long_textgrid", True)
    (clip,) = read_corpus(tmp_path).clips
    assert [(w.text, w.start, w.end) for w in clip.words] == [("la", 0.1, 0.3), ("casa", 0.5, 0.9)]


@pytest.mark.parametrize("tsv, ctm, message", [
    ("path\tsentence\nx.mp3\thola\n", None, "client_id"),
    ("client_id\tpath\tsentence\nc\tmissing.mp3\thola\n", None, "missing.mp3"),
    ("client_id\tpath\tsentence\n", "u 1 zero 0.1 hola\n", "alignments.ctm:1"),
])
def test_bad_corpus_input_names_the_problem(tmp_path, tsv, ctm, message):
    (tmp_path / "clips").mkdir()
    (tmp_path / "validated.tsv").write_text(tsv, encoding="utf-8")
    if ctm is not None:
        (tmp_path / "alignments.ctm").write_text(ctm, encoding="utf-8")
    with pytest.raises(CorpusError, match=message):
        read_corpus(tmp_path)
    assert issubclass(CorpusError, KwsError)


def test_missing_corpus_and_bad_ctm(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        read_corpus(tmp_path / "nope")
    (tmp_path / "a.ctm").write_text("u 1 0.1\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="a.ctm:1"):
        read_ctm(tmp_path / "a.ctm")


@needs_espeak
def test_synth_cli_refuses_a_non_empty_folder(tmp_path, capsys):
    from eval.__main__ import main

    (tmp_path / "x").write_text("keep", encoding="utf-8")
    assert main(["synth", "--out", str(tmp_path), "--sentences", "2"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_synth_warns_when_the_default_protocol_cannot_fit():
    from eval.synth import protocol_fit_warning

    small = {"sentences": 200, "targets": ["a"] * 6, "queries_per_target": 10}
    text = protocol_fit_warning(small)
    assert "--targets auto" in text and "--targets 6 --negatives 140" in text
    assert protocol_fit_warning({"sentences": 1000, "targets": ["a"] * 30, "queries_per_target": 10}) is None
