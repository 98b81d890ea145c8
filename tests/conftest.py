"""Shared fixtures: real synthetic Spanish speech (espeak-ng), made once per test session.

Keywords are enrolled from three voices and searched in sentences spoken by four *other* voices
(with a speed and pitch spread per sentence) in noise, so a pass means the spotter generalises
across speakers, not that it recognised the very recording it was enrolled with.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

KEYWORDS = ["biblioteca", "mariposa", "computadora"]
SEED = 1234


@pytest.fixture(scope="session", autouse=True)
def no_named_models(tmp_path_factory):
    """Tests never pick up a model a developer made in ./models: the default encoder of a new
    set is MFCC here (the fallback) unless a test names another. Subprocesses inherit it."""
    import os

    folder = tmp_path_factory.mktemp("no-models")
    old = os.environ.get("KWSSTREAM_MODELS")
    os.environ["KWSSTREAM_MODELS"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("KWSSTREAM_MODELS", None)
    else:
        os.environ["KWSSTREAM_MODELS"] = old


def _have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


@dataclass(frozen=True)
class Speech:
    examples: dict[str, list[Path]]  # keyword -> enrollment recordings
    stream: Path  # sentences by other voices, keywords inside, noise
    truth: tuple  # eval.words.TimedWord: the true keyword occurrences
    negative: Path  # other sentences, no keyword, same voices and noise
    duration: float


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> Speech:
    if not _have_espeak():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from eval.espeak import Voice
    from eval.scenes import build_scene, enrollment_clips, script_scene, write_audio
    from eval.textnorm import fortune_sentences

    root = tmp_path_factory.mktemp("speech")
    enroll_voices = [Voice("es", "m1", 160, 45), Voice("es-419", "f2", 190, 60), Voice("es", "klatt", 175, 50)]
    other_voices = [Voice("es-419", "m3", 150, 40), Voice("es", "f4", 200, 65),
                    Voice("es-419", "m7", 170, 55), Voice("es", "f1", 140, 50)]
    examples = {}
    for word in KEYWORDS:
        clips = enrollment_clips(word, enroll_voices)
        examples[word] = [write_audio(root / f"{word}_{i}.wav", c.audio) for i, c in enumerate(clips)]
    scene = build_scene(KEYWORDS, None, other_voices, occurrences_per_keyword=2, noise_snr_db=15, seed=SEED)
    stream = write_audio(root / "stream.flac", scene.audio)
    plain = [s for s in fortune_sentences() if 6 <= len(s.split()) <= 14][200:208]
    negative_scene = script_scene(plain, KEYWORDS, other_voices, noise_snr_db=15, seed=SEED + 1)
    assert not negative_scene.truth, "the negative sentences must not contain a keyword"
    return Speech(examples, stream, scene.truth, write_audio(root / "negative.flac", negative_scene.audio),
                  scene.duration)


EVAL_CORPUS_SENTENCES = 100
EVAL_CORPUS_SEED = 5


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """A small synthetic corpus in the Common Voice layout (``python -m eval synth``), once per
    session: the benchmark's ``--quick`` chain runs on it."""
    import ctypes.util

    if not ctypes.util.find_library("espeak-ng") or not Path("/usr/share/games/fortunes/es").is_dir():
        pytest.skip("needs libespeak-ng and fortunes-es")
    from eval.__main__ import main

    out = tmp_path_factory.mktemp("eval-corpus")
    args = ["synth", "--out", str(out), "--sentences", str(EVAL_CORPUS_SENTENCES), "--seed", str(EVAL_CORPUS_SEED)]
    assert main(args) == 0
    return out
