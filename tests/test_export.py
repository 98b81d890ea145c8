"""``python -m export``: parity with the explicit layer definition, truncation, metadata, int8,
the wav2vec2-base family, and one clear line with exit status 2 for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")

import cli_helpers  # noqa: E402
from export_helpers import ROOT, TINY_BASE, TINY_XLSR, cosines, make_checkpoint, run_export, speechlike, tiny_models  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def torch_model(models):
    from export.wav2vec2 import load_model

    return load_model(str(models.xlsr))


def explicit_layer(model, audio: np.ndarray, layer: int) -> np.ndarray:
    """Layer L written out from the modules: conv features -> projection -> + positional conv ->
    blocks 1..L (stable LayerNorm model: no encoder LayerNorm before the blocks)."""
    import torch

    with torch.no_grad():
        hidden = model.feature_extractor(torch.from_numpy(audio[None])).transpose(1, 2)
        hidden, _ = model.feature_projection(hidden)
        hidden = hidden + model.encoder.pos_conv_embed(hidden)
        for block in model.encoder.layers[:layer]:
            hidden = block(hidden)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    return hidden[0].numpy()


def onnx_frames(path, audio, layer=None):
    from kwsstream.encoders.onnx import OnnxEncoder

    return OnnxEncoder(path, threads=1, layer=layer).encode(audio)


@pytest.mark.parametrize("which, layer", [("l2", 2), ("l4", 4)])
def test_parity_with_explicit_layer_definition(models, torch_model, which, layer):
    audio = speechlike(2.3, seed=3)  # not the length used to trace nor to verify
    got = onnx_frames(getattr(models, which), audio)
    want = explicit_layer(torch_model, audio, layer)
    assert got.shape == want.shape == (1 + (len(audio) - 400) // 320, TINY_XLSR["hidden_size"])
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_last_layer_is_before_the_final_layernorm(models, torch_model):
    import torch

    audio = speechlike(1.5)
    got = onnx_frames(models.l4, audio)
    with torch.no_grad():
        after_norm = torch_model(torch.from_numpy(audio[None])).last_hidden_state[0].numpy()
    normed = torch_model.encoder.layer_norm(torch.from_numpy(got)).detach().numpy()
    assert np.abs(normed - after_norm).max() < 1e-4  # LayerNorm(our layer 4) is the model's output
    assert np.abs(got - after_norm).max() > 1e-2  # ... and ours is not normalised


def test_blocks_above_layer_are_absent(models):
    hidden, ffn = TINY_XLSR["hidden_size"], TINY_XLSR["intermediate_size"]

    def blocks(path):  # one softmax and one feed-forward input weight per transformer block
        graph = onnx.load(str(path)).graph
        softmax = sum(node.op_type == "Softmax" for node in graph.node)
        ffn_in = sum(list(init.dims) == [hidden, ffn] for init in graph.initializer)
        return softmax, ffn_in

    assert blocks(models.l2) == (2, 2)
    assert blocks(models.l4) == (4, 4)
    assert blocks(models.all3) == (3, 3)
    assert models.l2.stat().st_size < models.l4.stat().st_size


def test_metadata_contract(models):
    from export.metadata import read_metadata
    from kwsstream.encoders.onnxmeta import WAV2VEC2_CONVENTION

    meta = read_metadata(models.l2)
    assert meta["kwsstream.format"] == "1"
    assert meta["source_model"] == str(models.xlsr)
    assert (meta["layer"], meta["layers"], meta["outputs"]) == ("2", "2", "layer_2")
    assert meta["layer_convention"] == WAV2VEC2_CONVENTION
    assert (meta["sample_rate"], meta["frame_hop"], meta["frame_rate"]) == ("16000", "320", "50")
    assert (meta["receptive_field"], meta["pad"], meta["hidden_size"]) == ("400", "0", "32")
    assert meta["precision"] == "fp32" and meta["exporter_version"].startswith("kwsstream-export")
    assert (meta["input_audio"], meta["input_context"], meta["output_features"]) == ("audio", "context", "features")
    assert read_metadata(models.l2_int8)["precision"] == "int8"
    assert read_metadata(models.all3)["layers"] == "0,1,2,3"


def test_int8_is_quantised_and_close(models):
    graph = onnx.load(str(models.l2_int8)).graph
    ops = {node.op_type for node in graph.node}
    assert "MatMulInteger" in ops and "ConvInteger" not in ops
    audio = speechlike(2.0, seed=4)
    cos = cosines(onnx_frames(models.l2_int8, audio), onnx_frames(models.l2, audio))
    assert cos.mean() > 0.995 and cos.min() > 0.98
    assert models.l2_int8.stat().st_size < models.l2.stat().st_size


def test_all_layers_model_matches_single_layer_exports(models, torch_model):
    from kwsstream.encoders.onnx import OnnxEncoder

    audio = speechlike(1.7, seed=5)
    layers = OnnxEncoder(models.all3, threads=1).encode_layers(audio)
    assert sorted(layers) == [0, 1, 2, 3]
    np.testing.assert_allclose(layers[2], onnx_frames(models.l2, audio), atol=1e-5)
    for layer, frames in layers.items():
        want = explicit_layer(torch_model, audio, layer)
        assert np.abs(frames - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_base_family_exports_with_parity(models, tmp_path):
    out = tmp_path / "base-L3.onnx"
    result = run_export(models.base, "--layer", "3", "--out", out)
    assert result.code == 0, result.stderr
    assert "layer  3" in result.stderr and out.is_file()
    from export.metadata import read_metadata

    meta = read_metadata(out)
    assert "input_context" not in meta  # group-norm front end is not local: one stage
    from export.wav2vec2 import load_model
    from export.verify import reference_layers

    audio = speechlike(1.2, seed=6)
    want = reference_layers(load_model(str(models.base)), audio, [3])[3]
    got = onnx_frames(out, audio)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_verify_rerun_and_mismatch(models, tmp_path):
    assert run_export(models.xlsr, "--layer", "2", "--out", models.l2, "--verify").code == 0
    other = make_checkpoint(tmp_path / "other", TINY_XLSR, seed=7)
    result = run_export(other, "--layer", "2", "--out", models.l2, "--verify")
    assert result.code == 1 and "parity check failed" in result.stderr


def one_line_error(result) -> str:
    return cli_helpers.one_line_error(result, prefix="error: ")


def test_bad_inputs_one_line_exit_2(models, tmp_path):
    line = one_line_error(run_export(tmp_path / "nowhere", "--layer", "2"))
    assert "nowhere" in line and "no such model folder" in line
    line = one_line_error(run_export(models.xlsr, "--layer", "9", "--out", tmp_path / "x.onnx"))
    assert "layer 9" in line and "0..4" in line
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    line = one_line_error(run_export(bert, "--layer", "1"))
    assert "bert" in line and "not a wav2vec2" in line
    line = one_line_error(run_export(tmp_path, "--layer", "1"))
    assert "config.json" in line
    one_line_error(run_export(models.xlsr))  # --layer missing
    one_line_error(run_export(models.xlsr, "--layer", "1", "--out", tmp_path / "x.txt"))
    one_line_error(run_export(models.xlsr, "--layer", "1", "--out", tmp_path / "missing.onnx", "--verify"))
    assert not list(tmp_path.glob("*.onnx"))


def test_real_cli_process_exit_status(tmp_path):
    done = subprocess.run([sys.executable, "-m", "export", str(tmp_path / "absent"), "--layer", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "absent" in done.stderr
    assert done.stdout == ""


def test_default_output_name():
    from export.__main__ import default_out

    assert str(default_out("facebook/wav2vec2-large-xlsr-53", 12, False, "int8")) == \
        "models/wav2vec2-large-xlsr-53-L12-int8.onnx"
    assert str(default_out("/data/ckpt/", 3, True, None)) == "models/ckpt-L3-all.onnx"


def test_conv_geometry_of_wav2vec2():
    from export.metadata import conv_geometry

    assert conv_geometry([10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2]) == (320, 400)


def test_base_config_is_the_base_family():
    assert TINY_BASE["feat_extract_norm"] == "group" and not TINY_BASE["do_stable_layer_norm"]
