"""Dynamic int8 quantisation of an exported model (MatMul weights only, per output channel).

Choices, measured on XLSR-53-size random-weight models with onnxruntime 1.32 by
``python -m eval.bench.int8_options`` (table and machine in models/README.md; each alternative
timed in rounds interleaved with this recipe and fp32; fidelity = per-frame cosine to the fp32
model's frames at layers 6/12/18/24):

* ``quantize_dynamic`` of ``MatMul`` only (the transformer's projections and feed-forward layers
  and the conv front end's MatMuls, ~95% of the weights): 2.0-2.7x faster than fp32 at L12 on
  10 s, cosine to fp32 0.9991. No alternative was faster at equal fidelity beyond the run's noise
  (+-5%): static QDQ (u8 or s8 activations, calibrated on speech) 0.72-0.83x, ``MatMulNBits``
  8-bit 0.73x (4-bit: cosine 0.95), u8 weights 0.56x, int8 attention (activation x activation)
  MatMuls 0.92x, ``ConvInteger`` for the convolutions 0.75x, preparing the graph first
  (``quant_pre_process``, the ``onnxruntime.transformers`` optimizer) 0.90-0.94x; weights per
  tensor 1.03x with 0.0007 lower cosine.
* Weights per output channel (symmetric int8), activations dynamically per tensor (uint8).
* ``MatMul`` of two activations (attention scores) stays fp32 (``MatMulConstBOnly``).
* ``reduce_range`` (7-bit weights) is for CPUs without VNNI, where the u8 x s8 products of
  ``vpmaddubsw`` may saturate; it costs 0.0014 cosine and is off by default.
* ``exclude``: named MatMul nodes kept fp32, for a model where a few products carry most of the
  int8 loss (Whisper base: block 4's second feed-forward MatMul, ``whisper.py``). Every name must
  be a MatMul of the graph; the written model is checked to have kept each one fp32.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import ExportError
from .metadata import read_metadata, set_metadata

QUANTIZED_OPS = ("MatMul",)
"""Operator types whose weights are quantised."""


def quantize_int8(fp32_path: Path, out: Path, *, meta: dict[str, str] | None = None, per_channel: bool = True,
                  reduce_range: bool = False, exclude: Sequence[str] = ()) -> dict[str, str]:
    """Write an int8 copy of the fp32 model at ``fp32_path`` to ``out``; metadata is carried over
    with ``precision = int8``.

    Args:
        fp32_path: an exported fp32 model.
        out: where to write the int8 model (replaced atomically).
        meta: the fp32 model's metadata when the caller has it (what ``export_graph`` returned);
            else it is read from ``fp32_path`` (which loads the whole model).
        per_channel: one weight scale per output channel (else one per tensor).
        reduce_range: 7-bit weights, for CPUs without VNNI where u8*s8 products may saturate.
        exclude: names of MatMul nodes of the fp32 graph to keep fp32 (``nodes_to_exclude``);
            named in the ``quantization`` metadata.

    Returns:
        The metadata written.

    Raises:
        ExportError: the model is not fp32, or a name in ``exclude`` is not a MatMul node of the
            written model (not in the graph: onnxruntime itself would ignore it silently).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .wav2vec2 import save_model

    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    meta = read_metadata(fp32_path) if meta is None else dict(meta)
    if meta.get("precision", "fp32") != "fp32":
        raise ExportError(f"{fp32_path}: already {meta.get('precision')}, quantise an fp32 export")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        raw = Path(tmp) / "int8.onnx"
        quantize_dynamic(
            str(fp32_path), str(raw),
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            # DefaultTensorType: a type for tensors that shape inference cannot type (contrib ops)
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        proto = onnx.load(str(raw))
    _check_kept(proto, exclude, fp32_path)
    meta["precision"] = "int8"
    meta["quantization"] = (f"dynamic int8 (onnxruntime quantize_dynamic): {'+'.join(QUANTIZED_OPS)} weights s8 "
                            f"{'per channel' if per_channel else 'per tensor'}"
                            f"{', reduced range' if reduce_range else ''}; activations u8 per tensor at run time; "
                            "activation x activation MatMuls fp32"
                            + (f"; kept fp32: {', '.join(exclude)}" if exclude else ""))
    set_metadata(proto, meta)
    save_model(proto, out)
    return meta


def _check_kept(proto, exclude: Sequence[str], fp32_path: Path) -> None:
    """Every node named in ``exclude`` is still a MatMul in the quantised graph (onnxruntime
    ignores a name it does not find, so a misspelt or renamed node would pass silently)."""
    kept = {node.name for node in proto.graph.node if node.op_type == "MatMul"}
    missing = [name for name in exclude if name not in kept]
    if missing:
        raise ExportError(f"{fp32_path}: no MatMul node {', '.join(map(repr, missing))} to keep fp32")
