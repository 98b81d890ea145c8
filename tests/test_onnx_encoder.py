"""The runtime's ONNX encoder: metadata contract, identity, streaming == chunk-size invariant,
every frame once, streamed frames close to whole-utterance frames, local models exact, clear
errors for bad model files; and the stitcher's plan."""

from __future__ import annotations

import numpy as np
import pytest

from kwsstream.encoders.onnx import OnnxEncoder, StreamOptions
from kwsstream.errors import EncoderError, KwsError, UsageError
from kwsstream.onnxsession import make_session, physical_cores
from kwsstream.stitch import StitchPlan, Stitcher

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

from export_helpers import assert_chunk_invariant, cosines, speechlike, stream_all, tiny_models  # noqa: E402

STREAM = StreamOptions(window=1.0, hop=0.4, lookahead=0.2)
"""Small windows so that short test audio spans many of them."""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.getbasetemp())


def test_identity_and_grid(models):
    enc = OnnxEncoder(models.l2, threads=1)
    ident = enc.identity
    assert ident["kind"] == "onnx" and ident["layer"] == 2 and ident["precision"] == "fp32"
    assert ident["layer_convention"] == "block-output-before-final-layernorm"
    assert ident["source_model"] == str(models.xlsr) and ident["path"] == str(models.l2)
    assert len(ident["sha256"]) == 64
    assert enc.dim == 32 and (enc.grid.hop, enc.grid.length, enc.grid.pad) == (320, 400, 0)
    assert enc.grid.frame_rate == 50 and enc.name == "tiny-xlsr-L2-fp32"
    other = OnnxEncoder(models.l4, threads=1).identity
    from kwsstream.encoders.base import same_identity

    assert not same_identity(ident, other)
    assert same_identity(ident, {**ident, "path": "/elsewhere/model.onnx"})


def test_load_encoder_dispatches_onnx(models):
    from kwsstream.encoders import load_encoder

    enc = load_encoder(str(models.l2), threads=1)
    assert isinstance(enc, OnnxEncoder) and enc.layer == 2


def test_encode_frame_counts_and_short_audio(models):
    enc = OnnxEncoder(models.l2, threads=1)
    for samples in (0, 399, 400, 719, 720, 16_000):
        frames = enc.encode(np.zeros(samples, np.float32) + 0.01)
        assert frames.shape == (enc.grid.n_frames(samples), 32)
        assert np.isfinite(frames).all()
    state = enc.create_state()
    assert state.push(np.zeros(100, np.float32)).shape == (0, 32)
    assert state.flush().shape == (0, 32)


@pytest.mark.parametrize("which", ["l2", "l2_int8", "base_l2"])
def test_streaming_is_chunk_size_invariant(models, which):
    enc = OnnxEncoder(getattr(models, which), threads=1, stream=STREAM)
    assert_chunk_invariant(enc, speechlike(3.3, seed=1))


def test_streamed_frames_match_whole_utterance(models):
    enc = OnnxEncoder(models.l2, threads=1, stream=STREAM)
    audio = speechlike(4.1, seed=2)
    streamed, whole = stream_all(enc, audio, [2000]), enc.encode(audio)
    assert streamed.shape == whole.shape
    cos = cosines(streamed, whole)
    assert cos.mean() > 0.999 and cos.min() > 0.99  # tiny random model; XLSR-size: models/README.md
    # an utterance shorter than hop + lookahead is one window at flush: exactly the whole
    short = audio[:9_000]
    assert enc.grid.n_frames(len(short)) < enc.plan.hop + enc.plan.lookahead
    np.testing.assert_array_equal(stream_all(enc, short, [len(short)]), enc.encode(short))


def test_frames_come_out_within_the_latency_bound(models):
    enc = OnnxEncoder(models.l2, threads=1, stream=STREAM)
    plan, grid = enc.plan, enc.grid
    audio = speechlike(3.0, seed=3)
    state, emitted = enc.create_state(), 0
    for end in range(320, len(audio) + 1, 320):
        emitted += len(state.push(audio[end - 320:end]))
        available = grid.n_frames(end)
        assert available - (plan.hop + plan.lookahead) < emitted <= available or available < plan.hop + plan.lookahead
    assert emitted + len(state.flush()) == grid.n_frames(len(audio))


def test_reset_and_reuse(models):
    enc = OnnxEncoder(models.l2, threads=1, stream=STREAM)
    audio = speechlike(2.5, seed=4)
    first = stream_all(enc, audio, [3000])
    state = enc.create_state()
    state.push(speechlike(1.7, seed=9))
    state.reset()
    again = np.concatenate([state.push(audio), state.flush()])
    np.testing.assert_array_equal(again, first)
    # flush finishes the stream (the contract of every encoder state); reset starts a new one
    with pytest.raises(UsageError, match="flushed"):
        state.push(audio)
    state.reset()
    np.testing.assert_array_equal(np.concatenate([state.push(audio), state.flush()]), first)


def test_all_layers_model_selects_its_layer(models):
    enc = OnnxEncoder(models.all3, threads=1, layer=1)
    audio = speechlike(1.0)
    assert enc.identity["layer"] == 1
    np.testing.assert_array_equal(enc.encode(audio), enc.encode_layers(audio)[1])
    with pytest.raises(EncoderError, match="layer 7 is not in this model"):
        OnnxEncoder(models.all3, layer=7)


def local_model(path, hop=1280, field=12400, pad=6200, dim=8, seed=0):
    """A speech_embedding-like local model by hand: [batch, samples] -> [batch, frames, 1, dim]."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(seed).standard_normal((dim, 1, field)).astype(np.float32) / 100
    nodes = [
        helper.make_node("Unsqueeze", ["input_1", "axis1"], ["x3"]),
        helper.make_node("Conv", ["x3", "w"], ["conv"], strides=[hop]),
        helper.make_node("Transpose", ["conv"], ["tr"], perm=[0, 2, 1]),
        helper.make_node("Unsqueeze", ["tr", "axis2"], ["emb"]),
    ]
    graph = helper.make_graph(
        nodes, "speech_embedding_like",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", "frames", 1, dim])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array([1], np.int64), "axis1"),
         numpy_helper.from_array(np.array([2], np.int64), "axis2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = {"kwsstream.format": "1", "sample_rate": "16000", "frame_hop": str(hop), "receptive_field": str(field),
            "pad": str(pad), "hidden_size": str(dim), "context": "local", "source_model": "hand-made"}
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def test_local_model_through_the_same_code(tmp_path):
    enc = OnnxEncoder(local_model(tmp_path / "local.onnx"), threads=1)
    assert (enc.grid.hop, enc.grid.length, enc.grid.pad, enc.dim) == (1280, 12400, 6200, 8)
    assert enc.plan.lookahead == 0 and enc.plan.window == enc.plan.hop
    audio = speechlike(3.7, seed=5)
    whole = enc.encode(audio)
    assert whole.shape == (enc.grid.n_frames(len(audio)), 8) == (1 + (len(audio) + 12400 - 12400) // 1280, 8)
    streamed = stream_all(enc, audio, [999])
    np.testing.assert_allclose(streamed, whole, atol=1e-5)
    np.testing.assert_array_equal(stream_all(enc, audio, [len(audio)]), streamed)
    assert enc.grid.centre(0) == pytest.approx(0.0)  # padded: frame 0 is centred on sample 0


def test_bad_model_files(tmp_path, models):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    cases = [(tmp_path / "absent.onnx", "no such model file"), (junk, "not a model onnxruntime can load")]
    bare = tmp_path / "bare.onnx"
    model = onnx.load(str(local_model(tmp_path / "plain.onnx")))
    del model.metadata_props[:]
    onnx.save(model, str(bare))
    cases.append((bare, "not a model exported for kwsstream"))
    wrong = tmp_path / "wrong.onnx"
    model = onnx.load(str(local_model(tmp_path / "plain.onnx")))
    model.metadata_props.add(key="outputs", value="nope")
    onnx.save(model, str(wrong))
    cases.append((wrong, "do not match"))
    for path, message in cases:
        with pytest.raises(EncoderError) as err:
            OnnxEncoder(path)
        text = str(err.value)
        assert message in text and str(path) in text and "\n" not in text


def test_stream_options_validation(models):
    with pytest.raises(UsageError):
        OnnxEncoder(models.l2, stream=StreamOptions(window=0.5, hop=0.4, lookahead=0.3))
    with pytest.raises(KwsError):
        OnnxEncoder(models.l2, stream=StreamOptions(hop=float("nan")))
    enc = OnnxEncoder(models.l2, stream=StreamOptions(window=2.0, hop=1.0))
    assert (enc.plan.window, enc.plan.hop, enc.plan.lookahead) == (100, 50, 25)


def test_sessions():
    assert physical_cores() >= 1
    with pytest.raises(EncoderError, match="threads"):
        make_session(b"", threads=0)


@pytest.mark.parametrize("window, hop, lookahead", [(10, 3, 2), (5, 5, 0), (7, 1, 6), (20, 8, 4)])
def test_stitcher_emits_every_frame_once_with_context(window, hop, lookahead):
    plan = StitchPlan(window, hop, lookahead)
    rng = np.random.default_rng(window * 100 + hop)
    for total in (0, 1, hop + lookahead - 1, hop + lookahead, 57):
        stitcher, available, emitted = Stitcher(plan), 0, []
        while available < total:
            available = min(total, available + int(rng.integers(0, 9)))
            for step in stitcher.steps(available):
                assert step.end <= available and step.end - step.start <= window
                assert step.start <= step.emit_from < step.emit_to <= step.end
                assert step.end - step.emit_to >= lookahead  # right context before the end
                assert step.emit_from - step.start == min(plan.left, step.emit_from)  # left context
                emitted.extend(range(step.emit_from, step.emit_to))
        for step in stitcher.steps(total, final=True):
            assert step.end == total and step.end - step.start <= window
            emitted.extend(range(step.emit_from, step.emit_to))
        assert emitted == list(range(total))


def test_stitch_plan_validation():
    with pytest.raises(UsageError):
        StitchPlan(window=4, hop=3, lookahead=2)
    with pytest.raises(UsageError):
        StitchPlan(window=4, hop=0, lookahead=0)


# -- end to end through the kwsstream CLI -----------------------------------------------------------
def run_kwsstream(*args):
    """The CLI in this process (``kwsstream.cli.main``)."""
    from cli_helpers import run_main

    return run_main(*args)


@pytest.fixture(scope="module")
def sentence(tmp_path_factory):
    """A synthetic Spanish sentence (espeak-ng) with word times, as a 16 kHz WAV file."""
    import shutil

    if shutil.which("espeak-ng") is None:  # as tests/conftest.py decides
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    import soundfile

    from eval.espeak import Voice, synthesize

    utt = synthesize("ayer vimos una mariposa azul en el jardín de la biblioteca", Voice("es"))
    path = tmp_path_factory.mktemp("e2e") / "sentence.wav"
    soundfile.write(str(path), utt.audio, utt.sample_rate)
    word = next(w for w in utt.words if "mariposa" in w.text)
    return path, word.start, word.end


@pytest.mark.slow
def test_enroll_and_detect_with_an_exported_model(models, sentence, tmp_path):
    import json
    import shutil

    wav, start, end = sentence
    model = tmp_path / "model.onnx"
    shutil.copy(models.l2, model)
    keyset = tmp_path / "words.kws"
    done = run_kwsstream("enroll", "-k", keyset, "mariposa", wav, "--segment", f"{start:.3f}", f"{end:.3f}",
                         "--encoder", model, "--threshold", "0.05")
    assert done.returncode == 0, done.stderr
    done = run_kwsstream("detect", "-k", keyset, wav, "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events, done.stderr
    best = min(events, key=lambda e: e["cost"])
    assert best["keyword"] == "mariposa" and best["source"] == str(wav)
    assert abs(best["start"] - start) < 0.1 and abs(best["end"] - end) < 0.1, (best, start, end)
    assert best["cost"] < 0.01  # the enrolled audio itself: only streaming changes the frames

    # the keyword set refuses another model, passed explicitly or swapped in at the same path
    for refused in (models.l4, None):
        if refused is None:
            shutil.copy(models.l2_int8, model)
        args = ["detect", "-k", keyset, wav, "--json"] + (["--encoder", refused] if refused else [])
        from cli_helpers import one_line_error

        one_line_error(run_kwsstream(*args), "enrolled with", no_stdout=True)
