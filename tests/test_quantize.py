"""``export.quantize.quantize_int8`` on a tiny random XLSR-53-like model: what a user of the int8
file notices - it loads in the runtime's encoder, is smaller, gives frames close to the fp32
model's, and says in its metadata that (and how) it was quantised; named MatMuls can be kept fp32.

The tiny model is wider than the export tests' (64 instead of 32) so that the MatMul weights
dominate the file as they do in XLSR-53 and the size check means something.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnx")

from export_helpers import TINY_XLSR, cosines, make_checkpoint, run_export, speechlike  # noqa: E402

WIDE_TINY_XLSR = dict(TINY_XLSR, hidden_size=64, intermediate_size=256, conv_dim=(64,) * 7)
"""XLSR-53's architecture in miniature, 64 wide."""


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantize")
    checkpoint = make_checkpoint(folder / "tiny-xlsr-64", WIDE_TINY_XLSR)
    path = folder / "L3.onnx"
    result = run_export(checkpoint, "--layer", "3", "--out", path)
    assert result.code == 0, result.stderr
    return path


def _frames(path, audio):
    from kwsstream.encoders.onnx import OnnxEncoder

    encoder = OnnxEncoder(path, threads=1)
    return encoder, encoder.encode(audio)


def test_int8_model_runs_in_the_encoder_smaller_and_close_to_fp32(fp32_model, tmp_path):
    from export.metadata import read_metadata
    from export.quantize import quantize_int8

    out = tmp_path / "new" / "folder" / "L3-int8.onnx"  # the folder is made
    meta = quantize_int8(fp32_model, out)
    assert meta == read_metadata(out)
    assert out.stat().st_size < 0.5 * fp32_model.stat().st_size
    audio = speechlike(3.0, seed=7)
    encoder, got = _frames(out, audio)
    _, want = _frames(fp32_model, audio)
    assert encoder.info.precision == "int8" and encoder.layer == 3
    assert got.shape == want.shape == (149, 64)
    cos = cosines(got, want)
    assert cos.mean() > 0.995 and cos.min() > 0.98, (cos.mean(), cos.min())
    assert not np.array_equal(got, want)  # it really runs int8 arithmetic


def test_int8_metadata_keeps_the_models_identity_and_says_how(fp32_model, tmp_path):
    from export.metadata import read_metadata
    from export.quantize import quantize_int8

    fp32_meta = read_metadata(fp32_model)
    tensor = quantize_int8(fp32_model, tmp_path / "tensor.onnx", per_channel=False, reduce_range=True)
    channel = quantize_int8(fp32_model, tmp_path / "channel.onnx", meta=fp32_meta)
    for meta in (tensor, channel):
        assert meta["precision"] == "int8"
        same = {key: value for key, value in meta.items() if key not in ("precision", "quantization")}
        assert same == {key: value for key, value in fp32_meta.items() if key != "precision"}
    assert "per tensor" in tensor["quantization"] and "reduced range" in tensor["quantization"]
    assert "per channel" in channel["quantization"] and "reduced range" not in channel["quantization"]
    assert "int8" in channel["quantization"] and "MatMul" in channel["quantization"]
    audio = speechlike(2.0, seed=8)
    _, want = _frames(fp32_model, audio)
    assert cosines(_frames(tmp_path / "tensor.onnx", audio)[1], want).mean() > 0.99


def test_quantising_an_int8_model_again_is_refused(fp32_model, tmp_path):
    from export import ExportError
    from export.quantize import quantize_int8

    once = tmp_path / "once.onnx"
    quantize_int8(fp32_model, once)
    with pytest.raises(ExportError, match="once.onnx: already int8"):
        quantize_int8(once, tmp_path / "twice.onnx")
    assert not (tmp_path / "twice.onnx").exists()


def _weight_matmuls(proto) -> list[str]:
    """Names of the MatMul nodes whose second input is a weight (an initializer)."""
    weights = {init.name for init in proto.graph.initializer}
    return [node.name for node in proto.graph.node if node.op_type == "MatMul" and node.input[1] in weights]


def test_excluded_matmuls_stay_fp32_and_the_others_become_int8(fp32_model, tmp_path):
    import onnx

    from export.quantize import quantize_int8

    matmuls = _weight_matmuls(onnx.load(str(fp32_model)))
    assert len(matmuls) >= 8  # 4 per block (q, k, v, out, two feed-forward: some fused) and more
    keep = (matmuls[3], matmuls[-1])
    meta = quantize_int8(fp32_model, tmp_path / "kept.onnx", exclude=keep)
    proto = onnx.load(str(tmp_path / "kept.onnx"))
    floats = {init.name for init in proto.graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    nodes = {node.name: node for node in proto.graph.node}
    for name in keep:  # the same node, still a MatMul, its weight still float32
        assert nodes[name].op_type == "MatMul" and nodes[name].input[1] in floats
    assert sorted(_weight_matmuls(proto)) == sorted(keep)  # every other weight MatMul was quantised
    quantised = [node for node in proto.graph.node if node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    assert len(quantised) == len(matmuls) - len(keep)
    assert meta["quantization"].endswith(f"kept fp32: {keep[0]}, {keep[1]}")
    assert "kept fp32" not in quantize_int8(fp32_model, tmp_path / "all.onnx")["quantization"]
    audio = speechlike(2.0, seed=8)
    _, want = _frames(fp32_model, audio)
    assert cosines(_frames(tmp_path / "kept.onnx", audio)[1], want).mean() > 0.99


def test_excluding_a_node_that_is_not_there_is_refused(fp32_model, tmp_path):
    from export import ExportError
    from export.quantize import quantize_int8

    with pytest.raises(ExportError, match="no MatMul node '/1/blocks.9/fc2/MatMul' to keep fp32"):
        quantize_int8(fp32_model, tmp_path / "x.onnx", exclude=["/1/blocks.9/fc2/MatMul"])
    assert not (tmp_path / "x.onnx").exists()
