"""Keyword set files: round trip, validation without pickle, atomic writes, encoder identity."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from kwsstream import Spotter
from kwsstream.encoders.mfcc import MfccEncoder, MfccOptions
from kwsstream.errors import KeysetError
from kwsstream.keyset import Keyword, KeywordSet, Template, load_keyset, save_keyset


def sample_set(dim=13) -> KeywordSet:
    rng = np.random.default_rng(0)
    kws = tuple(
        Keyword(name, 0.3 + i / 10, tuple(Template(rng.standard_normal((5 + j, dim)).astype(np.float32), f"{name}{j}.wav", (0.1, 0.6))
                                          for j in range(2)), "calibrated", {"positives": [0.1]})
        for i, name in enumerate(["uno", "dós ñ"])
    )
    return KeywordSet(MfccEncoder().identity, kws)


def test_round_trip(tmp_path):
    ks = sample_set()
    save_keyset(ks, tmp_path / "a.kws")
    back = load_keyset(tmp_path / "a.kws")
    assert back.encoder == ks.encoder
    assert [k.name for k in back.keywords] == ["uno", "dós ñ"]
    for a, b in zip(ks.keywords, back.keywords):
        assert a.threshold == b.threshold and a.calibration == b.calibration
        for ta, tb in zip(a.templates, b.templates):
            np.testing.assert_array_equal(ta.frames, tb.frames)
            assert (ta.source, ta.segment) == (tb.source, tb.segment)


def test_a_failed_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "a.kws"
    save_keyset(sample_set(), path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        save_keyset(sample_set().without("uno"), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.kws"]  # no temporary file left behind


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("content,message", [
    (b"hello", "not a keyword set file"),
    (pickle.dumps({"header": 1}), "not a keyword set file"),
    (npz_bytes(header=np.array([{"a": 1}], dtype=object), frames=np.zeros((1, 13), np.float32)), "not a keyword set file"),
    (npz_bytes(x=np.zeros(3)), "not a keyword set"),
    (npz_bytes(header=np.frombuffer(b'{"format": "kwsstream-keyset", "version": 99}', np.uint8), frames=np.zeros((0, 13), np.float32)), "version 99"),
])
def test_bad_files_are_refused_without_unpickling(tmp_path, content, message):
    path = tmp_path / "bad.kws"
    path.write_bytes(content)
    with pytest.raises(KeysetError, match=message) as err:
        load_keyset(path)
    assert str(path) in str(err.value)


def test_inconsistent_frames_are_refused(tmp_path):
    path = tmp_path / "a.kws"
    save_keyset(sample_set(), path)
    with zipfile.ZipFile(path) as z:
        header = np.load(io.BytesIO(z.read("header.npy")))
    path.write_bytes(npz_bytes(header=header, frames=np.zeros((3, 13), np.float32)))
    with pytest.raises(KeysetError, match="do not add up"):
        load_keyset(path)
    path.write_bytes(npz_bytes(header=header, frames=np.full((100, 13), np.nan, np.float32)))
    with pytest.raises(KeysetError, match="NaN"):
        load_keyset(path)


def test_a_set_is_never_used_with_another_encoder(tmp_path):
    ks = sample_set()
    with pytest.raises(KeysetError, match="enrolled with encoder"):
        Spotter(ks, MfccEncoder(MfccOptions(cmn_seconds=None)))
    assert Spotter(ks).encoder.identity == ks.encoder
