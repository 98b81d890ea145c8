"""Dynamic int8 quantisation of an exported model (MatMul weights only, per output channel).

Choices, measured on XLSR-53-size models with onnxruntime 1.32 (see models/README.md):

* Only ``MatMul`` is quantised (the transformer's projections and feed-forward layers, ~95% of
  the weights). Quantising the conv front end (``ConvInteger``) made it ~2x *slower* than fp32.
* Weights per output channel (symmetric int8), activations dynamically per tensor (uint8): same
  speed as per-tensor weights, better cosine to fp32.
* ``MatMul`` of two activations (attention scores) stays fp32 (``MatMulConstBOnly``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from . import ExportError
from .metadata import read_metadata, set_metadata

QUANTIZED_OPS = ("MatMul",)
"""Operator types whose weights are quantised."""


def quantize_int8(fp32_path: Path, out: Path, *, meta: dict[str, str] | None = None, per_channel: bool = True,
                  reduce_range: bool = False) -> dict[str, str]:
    """Write an int8 copy of the fp32 model at ``fp32_path`` to ``out``; metadata is carried over
    with ``precision = int8``.

    Args:
        fp32_path: an exported fp32 model.
        out: where to write the int8 model (replaced atomically).
        meta: the fp32 model's metadata when the caller has it (what ``export_graph`` returned);
            else it is read from ``fp32_path`` (which loads the whole model).
        per_channel: one weight scale per output channel (else one per tensor).
        reduce_range: 7-bit weights, for CPUs without VNNI where u8*s8 products may saturate.

    Returns:
        The metadata written.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .wav2vec2 import save_model

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
            extra_options={"MatMulConstBOnly": True},
        )
        proto = onnx.load(str(raw))
    meta["precision"] = "int8"
    meta["quantization"] = (f"dynamic int8: {'+'.join(QUANTIZED_OPS)} weights "
                            f"{'per channel' if per_channel else 'per tensor'}"
                            f"{', reduced range' if reduce_range else ''}")
    set_metadata(proto, meta)
    save_model(proto, out)
    return meta
