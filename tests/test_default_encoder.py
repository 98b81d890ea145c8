"""The encoder a new keyword set gets: Whisper base's layer 5 where it has been made (the one the
streaming benchmark measured best on real speech), else speech_embedding, else MFCC, with a note
saying how to get the default."""

from __future__ import annotations

import shutil

import pytest

from kwsstream.cli import main
from kwsstream.demo import example_files
from kwsstream.keyset import load_keyset
from kwsstream.models import DEFAULT_ENCODER, MAKE_COMMANDS, MAKE_DEFAULT, NAMED_MODELS, default_encoder_spec, find_model


def test_without_the_model_mfcc_is_used_and_the_user_is_told(tmp_path, capsys):
    assert find_model(DEFAULT_ENCODER) is None  # conftest points KWSSTREAM_MODELS at an empty folder
    spec, note = default_encoder_spec()
    assert spec == "mfcc" and MAKE_DEFAULT in note
    path = tmp_path / "k.kws"
    assert main(["enroll", "-k", str(path), "mariposa", *map(str, example_files()["mariposa"])]) == 0
    assert load_keyset(path).encoder["kind"] == "mfcc"
    assert MAKE_DEFAULT in capsys.readouterr().err


def test_a_named_model_that_is_not_made_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "k.kws"
    assert main(["enroll", "-k", str(path), "mariposa", "--encoder", "speech-embedding",
                 *map(str, example_files()["mariposa"])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and MAKE_COMMANDS["speech-embedding"] in err and not path.exists()


def test_the_best_model_made_is_the_default(tmp_path, tmp_path_factory, monkeypatch, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("torch")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from export_helpers import speech_embedding_model, tiny_whisper_export

    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("KWSSTREAM_MODELS", str(folder))
    # speech_embedding alone: used, with a note saying how to make the default
    made, _ = speech_embedding_model(tmp_path_factory.getbasetemp())
    shutil.copy(made, folder / NAMED_MODELS["speech-embedding"])
    spec, note = default_encoder_spec()
    assert spec == str(folder / "speech-embedding.onnx") and MAKE_DEFAULT in note
    # with Whisper made (a tiny random one stands in for it): the default, no note
    shutil.copy(tiny_whisper_export(tmp_path_factory.getbasetemp(), "--layer", "2"),
                folder / NAMED_MODELS[DEFAULT_ENCODER])
    assert default_encoder_spec() == (str(folder / NAMED_MODELS[DEFAULT_ENCODER]), None)
    path = tmp_path / "k.kws"
    assert main(["enroll", "-k", str(path), "mariposa", *map(str, example_files()["mariposa"])]) == 0
    identity = load_keyset(path).encoder
    assert identity["kind"] == "onnx" and identity["path"] == str(folder / NAMED_MODELS[DEFAULT_ENCODER])
    assert MAKE_DEFAULT not in capsys.readouterr().err
