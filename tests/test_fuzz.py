"""Property-based fuzzing (hypothesis, bounded and derandomized for CI): whatever the bytes, the
keyword set loader, Spotter construction from what it loads, and the audio loader either succeed
or raise the project's one-line errors, never anything else. The long run is
``scripts/fuzz.py --inputs N`` (subprocesses, hang and crash detection)."""

from __future__ import annotations

import io
import json
import random
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kwsstream.audio import check_example, iter_audio_blocks, load_audio  # noqa: E402
from kwsstream.errors import AudioError, KeysetError, KwsError  # noqa: E402
from kwsstream.keyset import load_keyset  # noqa: E402
from kwsstream.spotter import Spotter  # noqa: E402
from script_helpers import load_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


make_bad_inputs = load_script("make_bad_inputs")
fuzz = load_script("fuzz")

FAST = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
KEYSET_SEEDS = fuzz.keyset_seeds()
AUDIO_SEEDS = fuzz.audio_seeds()
FOLDER = Path(tempfile.mkdtemp(prefix="kwsstream-fuzz-"))

edits = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 2**31), st.binary(min_size=1, max_size=8)),
                 min_size=1, max_size=6)


def apply_edits(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op, where, blob in ops:
        if not b:
            b = bytearray(blob)
        at = where % len(b)
        if op == 0:
            b[at] ^= blob[0] or 1
        elif op == 1:
            b[at:at + len(blob)] = blob
        elif op == 2:
            del b[at:]
        elif op == 3:
            del b[at:at + blob[0] + 1]
        elif op == 4:
            b[at:at] = blob
        elif op == 5:
            b[at:at + 4] = (0xFFFFFFFF if blob[0] & 1 else 0x7FFFFFFF).to_bytes(4, "little")
        elif op == 6:
            b[at] = 0
        else:
            b[at:at] = b[at:at + 64 * (blob[0] % 8 + 1)]
    return bytes(b)


def write(name: str, data: bytes) -> Path:
    path = FOLDER / name
    path.write_bytes(data)
    return path


def load_and_build(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            keyset = load_keyset(path)
        except KeysetError as err:
            assert str(path) in str(err) and "\n" not in str(err)
            return
        try:
            Spotter(keyset)
        except KwsError as err:
            assert "\n" not in str(err)


@FAST
@given(seed=st.sampled_from(range(len(KEYSET_SEEDS))), ops=edits)
def test_keyset_bytes(seed, ops):
    load_and_build(write("bytes.kws", apply_edits(KEYSET_SEEDS[seed], ops)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@FAST
@given(which=st.integers(0, 10_000), value=json_values, drop=st.booleans(), rows=st.integers(-3, 3),
       width=st.integers(-2, 2))
def test_keyset_header_fields(which, value, drop, rows, width):
    header = make_bad_inputs.valid_header()
    frames = make_bad_inputs.valid_frames()
    paths = [p for p in fuzz._paths(header) if p]
    path = paths[which % len(paths)]
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    if drop and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    frames = frames[: max(0, len(frames) + rows)] if rows < 0 else np.concatenate([frames, frames[:rows]])
    frames = np.ascontiguousarray(frames[:, : max(0, 13 + width)] if width < 0 else frames)
    text = json.dumps(header, allow_nan=True)
    load_and_build(write("fields.kws", make_bad_inputs.kws_bytes(text, frames)))


@FAST
@given(seed=st.sampled_from(range(len(AUDIO_SEEDS))), ops=edits)
def test_audio_bytes(seed, ops):
    suffix, data = AUDIO_SEEDS[seed]
    path = write(f"audio.{suffix}", apply_edits(data, ops))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            total = sum(len(b) for b in iter_audio_blocks(path, block_seconds=0.5))
            assert total <= 4 * 16_000  # the seeds are under a second: never a re-yielded buffer
            check_example(load_audio(path), str(path))
        except AudioError as err:
            assert str(path) in str(err) and "\n" not in str(err)


def test_the_script_runs_a_few_inputs_of_each():
    counts = {t: fuzz.fuzz(t, 30, 0, 30, 30.0, 4.0, None, say=lambda text: None) for t in ("keyset", "audio")}
    for target, c in counts.items():
        assert sum(c.values()) == 30, (target, c)
        assert c["other"] == c["hang"] == c["crash"] == 0, (target, c)


def test_byte_mutations_are_deterministic():
    rng_a, rng_b = random.Random(5), random.Random(5)
    seed = KEYSET_SEEDS[0]
    assert fuzz.mutate_bytes(seed, rng_a) == fuzz.mutate_bytes(seed, rng_b)
    assert fuzz.make_input("audio", 7, 0, AUDIO_SEEDS) == fuzz.make_input("audio", 7, 0, AUDIO_SEEDS)
    assert io.BytesIO(fuzz.make_input("keyset", 3, 0, KEYSET_SEEDS)[1]).getvalue()
