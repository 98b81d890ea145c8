"""The stateful streaming export (``python -m export ... --stateful``) and its runtime driver:
parity with PyTorch's reference of the same chunked computation, equality with the one-shot and
windowed encoders where the geometry makes them equal, chunk-size invariance, the latency bound,
and clear errors for broken metadata and bad options."""

from __future__ import annotations

import numpy as np
import pytest

from kwsstream.encoders.onnx import OnnxEncoder, StreamOptions
from kwsstream.encoders.onnxstate import StatePlan
from kwsstream.errors import EncoderError, UsageError

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

from export_helpers import assert_chunk_invariant, cosines, run_export, speechlike, stateful_models, stream_all, tiny_models  # noqa: E402

GEOMETRY = StreamOptions(chunk=0.3, lookahead=0.1, left=0.6)
"""15 committed + 5 lookahead frames per call, 30 cached: a 3 s clip makes ~10 calls."""
WHOLE = StreamOptions(chunk=0.3, lookahead=100.0, left=100.0)
"""Right and left context beyond any test clip."""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def stateful(tmp_path_factory):
    return stateful_models(tmp_path_factory.getbasetemp())


def close(got, want, relative=1e-4):
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= relative * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("which, checkpoint", [("xlsr", "xlsr"), ("base", "base")])
def test_stream_matches_pytorch_chunked_reference(models, stateful, which, checkpoint):
    from export.streamref import reference_for
    from export.wav2vec2 import load_model

    enc = OnnxEncoder(getattr(stateful, which), threads=1, stream=GEOMETRY)
    assert enc.plan == StatePlan(chunk=15, lookahead=5, left=30)
    audio = speechlike(3.1, seed=7)
    model = load_model(str(getattr(models, checkpoint)))
    want = reference_for(model, audio, [2], chunk=0.3, lookahead=0.1, left=0.6, two_stage=which == "xlsr")[2]
    got = stream_all(enc, audio, [1600])
    assert got.shape == (enc.grid.n_frames(len(audio)), enc.dim)
    close(got, want)
    # the limited context changes the frames (else this test could not tell the modes apart)
    assert np.abs(got - enc.encode(audio)).max() > 1e-3


@pytest.mark.parametrize("kernel", [16, 15])
def test_positional_convolution_computes_only_the_calls_frames(kernel):
    """The graph's positional convolution (one output per call frame, no padding) equals the
    original module's (own zero padding and SamePad, over cached + call frames, cached outputs
    dropped) for every amount of cached frames: none, fewer than, exactly and more than it reads."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from export.stateful import build_stateful_module
    from export.streamref import padded_positional
    from export_helpers import TINY_XLSR

    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config(**dict(TINY_XLSR, num_conv_pos_embeddings=kernel)))
    module = build_stateful_module(model, [1], two_stage=True)
    reference = padded_positional(module)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for past, frames in ((0, 5), (3, 5), (kernel // 2, 5), (kernel // 2 + 4, 5), (kernel // 2, 1), (2, 40)):
            cache = torch.randn(1, past, 32, generator=generator)
            hidden = torch.randn(1, frames, 32, generator=generator)
            got = module.positional(cache, hidden)
            assert got.shape == (1, frames, 32)
            torch.testing.assert_close(got, reference(cache, hidden), rtol=1e-5, atol=1e-5)


def test_whole_context_equals_one_shot_and_windowed(models, stateful):
    audio = speechlike(2.3, seed=8)
    enc = OnnxEncoder(stateful.xlsr, threads=1, stream=WHOLE)
    whole = enc.encode(audio)
    windowed = OnnxEncoder(models.l2, threads=1)
    close(whole, windowed.encode(audio))  # the stateful graph with empty state is the one-shot graph
    close(stream_all(enc, audio, [1000]), whole, 1e-5)
    wide = OnnxEncoder(models.l2, threads=1, stream=StreamOptions(window=100.0, hop=0.3, lookahead=50.0))
    close(stream_all(wide, audio, [1000]), whole)


def test_stream_close_to_whole_utterance(stateful):
    enc = OnnxEncoder(stateful.xlsr, threads=1, stream=GEOMETRY)
    audio = speechlike(4.0, seed=9)
    cos = cosines(stream_all(enc, audio, [2000]), enc.encode(audio))
    assert cos.mean() > 0.995 and cos.min() > 0.98  # tiny random model; XLSR-size: models/README.md


@pytest.mark.parametrize("which", ["xlsr", "base", "xlsr_int8"])
def test_stream_is_chunk_size_invariant(stateful, which):
    enc = OnnxEncoder(getattr(stateful, which), threads=1, stream=GEOMETRY)
    assert_chunk_invariant(enc, speechlike(3.3, seed=1))


def test_frames_come_out_after_chunk_plus_lookahead(stateful):
    enc = OnnxEncoder(stateful.xlsr, threads=1, stream=GEOMETRY)
    plan, grid = enc.plan, enc.grid
    audio = speechlike(3.0, seed=3)
    state, emitted = enc.create_state(), 0
    for end in range(320, len(audio) + 1, 320):
        got = len(state.push(audio[end - 320:end]))
        assert got in (0, plan.chunk)
        emitted += got
        available = grid.n_frames(end)
        assert available - (plan.chunk + plan.lookahead) < emitted <= max(0, available - plan.lookahead)
    assert emitted + len(state.flush()) == grid.n_frames(len(audio))


def test_short_audio_reset_and_life_cycle(stateful):
    enc = OnnxEncoder(stateful.xlsr, threads=1, stream=GEOMETRY)
    for samples in (0, 399, 400, 719, 16_000):
        audio = np.zeros(samples, np.float32) + 0.01
        frames = enc.encode(audio)
        assert frames.shape == (enc.grid.n_frames(samples), enc.dim) and np.isfinite(frames).all()
        assert stream_all(enc, audio, [100]).shape == frames.shape
    audio = speechlike(2.0, seed=4)
    first = stream_all(enc, audio, [3000])
    state = enc.create_state()
    state.push(speechlike(1.7, seed=9))
    state.reset()
    np.testing.assert_array_equal(np.concatenate([state.push(audio), state.flush()]), first)
    with pytest.raises(UsageError, match="flushed"):
        state.push(audio)


def test_geometry_from_metadata_and_options(stateful):
    from export.metadata import read_metadata

    meta = read_metadata(stateful.xlsr)
    assert meta["stream_mode"] == "stateful" and meta["input_context"] == "context"
    assert (meta["input_pos_cache"], meta["input_kv_cache"], meta["output_kv"]) == ("pos_cache", "kv_cache", "kv")
    assert (meta["kv_layers"], meta["kv_size"], meta["pos_cache_frames"]) == ("2", "32", "8")
    assert "input_context" not in read_metadata(stateful.base)  # group-norm front end: one stage
    enc = OnnxEncoder(stateful.xlsr, threads=1)
    rate = enc.grid.frame_rate
    want = [round(float(meta[f"stream_{key}"]) * rate) for key in ("chunk", "lookahead", "left")]
    assert [enc.plan.chunk, enc.plan.lookahead, enc.plan.left] == want
    assert OnnxEncoder(stateful.xlsr, threads=1, stream=StreamOptions(left=0.0)).plan.left == 0
    with pytest.raises(UsageError, match="chunk"):
        OnnxEncoder(stateful.xlsr, stream=StreamOptions(chunk=float("nan")))


def test_exported_with_custom_geometry(models, tmp_path):
    out = tmp_path / "custom.onnx"
    done = run_export(models.xlsr, "--layer", "1", "--stateful", "--chunk", "0.64", "--lookahead", "0.2",
                      "--left", "1", "--out", out)
    assert done.code == 0, done.stderr
    assert "stream (chunk 32, lookahead 10, left 50 frames)" in done.stderr
    assert OnnxEncoder(out, threads=1).plan == StatePlan(32, 10, 50)


def broken(path, tmp_path, **changes):
    """A copy of ``path`` with metadata keys changed (``None``: removed)."""
    model = onnx.load(str(path))
    meta = {entry.key: entry.value for entry in model.metadata_props}
    meta.update(changes)
    del model.metadata_props[:]
    for key, value in meta.items():
        if value is not None:
            model.metadata_props.add(key=key, value=value)
    out = tmp_path / "broken.onnx"
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("changes, message", [
    ({"input_kv_cache": None}, "needs metadata ['input_kv_cache']"),
    ({"output_kv": "keys"}, "output_kv names output 'keys'"),
    ({"stream_mode": "magic"}, "stream_mode='magic'"),
    ({"kv_layers": "0"}, "stateful sizes out of range"),
    ({"pos_cache_frames": "many"}, "'pos_cache_frames' = 'many' is not an integer"),
])
def test_broken_stateful_metadata_is_one_clear_error(stateful, tmp_path, changes, message):
    path = broken(stateful.xlsr, tmp_path, **changes)
    with pytest.raises(EncoderError) as err:
        OnnxEncoder(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_bad_stateful_options_exit_2(models, tmp_path):
    from cli_helpers import one_line_error

    line = one_line_error(run_export(models.xlsr, "--layer", "2", "--chunk", "0.5"), prefix="error: ")
    assert "--stateful" in line
    line = one_line_error(run_export(models.xlsr, "--layer", "0", "--stateful", "--out", tmp_path / "x.onnx"),
                          prefix="error: ")
    assert "layer >= 1" in line
    line = one_line_error(run_export(models.xlsr, "--layer", "2", "--stateful", "--chunk", "0",
                                     "--out", tmp_path / "x.onnx"), prefix="error: ")
    assert "--chunk" in line
    assert not list(tmp_path.glob("*.onnx"))


def test_default_output_name_of_a_stateful_export():
    from export.__main__ import default_out

    assert str(default_out("facebook/wav2vec2-large-xlsr-53", 12, False, "int8", True)) == \
        "models/wav2vec2-large-xlsr-53-L12-stream-int8.onnx"
