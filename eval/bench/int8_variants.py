"""The int8 variants that ``int8_options.py`` compares: how each file is made and run.

A variant is a quantisation recipe (a function fp32 file -> int8 file) and/or onnxruntime session
settings; variants that only change the session reuse another variant's file. Every recipe uses
onnxruntime's own tools (``quantize_dynamic``, ``quantize_static``, ``MatMulNBitsQuantizer``,
``quant_pre_process``, the ``onnxruntime.transformers`` optimizer); the project's default recipe
is ``export.quantize.quantize_int8`` itself, so the benchmark measures what the exporter writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CALIBRATION_CHUNK_S = 2.5
"""Seconds of audio per calibration batch of the static (QDQ) recipes."""


@dataclass(frozen=True)
class Variant:
    """One row of the comparison.

    Attributes:
        name: short id (``--variants`` takes these).
        about: what it is, for the table.
        build: ``(fp32_path, out_path, calibration_audio) -> None``; ``None`` for a session-only
            variant, which runs the file of ``model``.
        model: the variant whose file a session-only variant runs.
        session: onnxruntime session config entries (``add_session_config_entry``).
        opt_level: graph optimisation level: ``all`` (the runtime's), ``extended``, ``basic``, ``none``.
        spin: let intra-op threads busy-wait between operators.
    """

    name: str
    about: str
    build: Callable[[Path, Path, list[np.ndarray]], None] | None = None
    model: str | None = None
    session: dict[str, str] = field(default_factory=dict)
    opt_level: str = "all"
    spin: bool = False

    @property
    def file_key(self) -> str:
        """The variant whose file this one runs (itself unless session-only)."""
        return self.model or self.name


def _quiet() -> None:
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization logs advice at INFO/WARNING


def project_default(fp32: Path, out: Path, calib: list[np.ndarray]) -> None:
    """What ``python -m export ... --quantize int8`` writes (``export.quantize.quantize_int8``)."""
    from export.quantize import quantize_int8

    quantize_int8(fp32, out)


def dynamic(*, per_channel: bool = True, reduce_range: bool = False, weight: str = "s8", const_b_only: bool = True,
            ops: tuple[str, ...] = ("MatMul",), prepare: str | None = None):
    """A ``quantize_dynamic`` recipe (uint8 activations quantised per tensor at run time).

    ``prepare``: ``"pre_process"`` (onnxruntime's ``quant_pre_process``: shape inference and an
    ORT-optimised graph) or ``"transformers"`` (``onnxruntime.transformers`` optimizer, BERT
    fusions: LayerNorm, SkipLayerNorm, BiasGelu, attention where it matches) first.
    """
    def build(fp32: Path, out: Path, calib: list[np.ndarray]) -> None:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        _quiet()
        source = _prepared(fp32, out, prepare)
        quantize_dynamic(str(source), str(out), op_types_to_quantize=list(ops), per_channel=per_channel,
                         reduce_range=reduce_range,
                         weight_type=QuantType.QInt8 if weight == "s8" else QuantType.QUInt8,
                         extra_options={"MatMulConstBOnly": const_b_only, "DefaultTensorType": onnx.TensorProto.FLOAT})
        if source != fp32:
            source.unlink()
    return build


def _prepared(fp32: Path, out: Path, prepare: str | None) -> Path:
    """``fp32`` rewritten by ``prepare`` into a file beside ``out`` (or ``fp32`` itself)."""
    if prepare is None:
        return fp32
    tmp = out.with_name(out.stem + "-prepared.onnx")
    if prepare == "pre_process":
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(fp32), str(tmp), skip_symbolic_shape=True)
    elif prepare == "transformers":
        from onnxruntime.transformers import optimizer

        hidden, heads = _width_and_heads(fp32)
        model = optimizer.optimize_model(str(fp32), model_type="bert", num_heads=heads, hidden_size=hidden,
                                         opt_level=0, use_gpu=False)
        model.save_model_to_file(str(tmp))  # adds the com.microsoft opset import
    else:
        raise ValueError(f"unknown preparation {prepare!r}")
    return tmp


def _width_and_heads(path: Path) -> tuple[int, int]:
    """hidden size (metadata) and attention heads (XLSR-53 family: 64-wide heads)."""
    from export.metadata import read_metadata

    hidden = int(read_metadata(path)["hidden_size"])
    return hidden, max(1, hidden // 64)


class AudioReader:
    """onnxruntime ``CalibrationDataReader`` over audio chunks (input ``audio`` only; the optional
    ``context`` input keeps its empty default)."""

    def __init__(self, chunks: list[np.ndarray]):
        self._chunks: Iterator[np.ndarray] = iter(chunks)

    def get_next(self):
        chunk = next(self._chunks, None)
        return None if chunk is None else {"audio": chunk[None].astype(np.float32)}


def static_qdq(*, activation: str = "u8", per_channel: bool = True, reduce_range: bool = False):
    """A ``quantize_static`` QDQ recipe: MatMul weights int8, activations with scales fixed by
    MinMax calibration on ``calib`` (speech), attention's activation x activation MatMuls fp32."""
    def build(fp32: Path, out: Path, calib: list[np.ndarray]) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        _quiet()
        quantize_static(str(fp32), str(out), AudioReader(calib), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], per_channel=per_channel, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8 if activation == "u8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"MatMulConstBOnly": True})
    return build


def nbits(bits: int, block: int, accuracy_level: int = 4):
    """``MatMulNBits`` weight-only quantisation (symmetric blocks of ``block`` along K);
    ``accuracy_level`` 4 computes in int8 (activations quantised per block at run time)."""
    def build(fp32: Path, out: Path, calib: list[np.ndarray]) -> None:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        _quiet()
        quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=bits, block_size=block, is_symmetric=True,
                                         accuracy_level=accuracy_level, op_types_to_quantize=("MatMul",))
        quantizer.process()
        quantizer.model.save_model_to_file(str(out), False)
    return build


FP32 = Variant("fp32", "fp32 reference (the exported graph)")
DEFAULT = Variant("default", "this project's int8 (`export.quantize.quantize_int8`)", project_default)
BASELINE = Variant("dyn", "quantize_dynamic MatMul, s8 weights per channel, u8 activations (the exporter's "
                          "recipe before this benchmark)", dynamic())

VARIANTS: tuple[Variant, ...] = (
    BASELINE,
    Variant("dyn-tensor", "dyn, weights per tensor", dynamic(per_channel=False)),
    Variant("dyn-rr", "dyn, reduce_range (7-bit weights)", dynamic(reduce_range=True)),
    Variant("dyn-u8w", "dyn, u8 weights (U8U8 kernel)", dynamic(weight="u8")),
    Variant("dyn-attn", "dyn, attention's activation x activation MatMuls int8 too", dynamic(const_b_only=False)),
    Variant("dyn-conv", "dyn, Conv too (ConvInteger: first conv, positional conv)", dynamic(ops=("MatMul", "Conv"))),
    Variant("dyn-pre", "quant_pre_process, then dyn", dynamic(prepare="pre_process")),
    Variant("dyn-trf", "onnxruntime.transformers optimizer (BERT fusions), then dyn", dynamic(prepare="transformers")),
    Variant("qdq-u8s8", "static QDQ MatMul, u8 activations / s8 weights per channel, MinMax calibration",
            static_qdq()),
    Variant("qdq-s8s8", "static QDQ MatMul, s8 activations / s8 weights per channel", static_qdq(activation="s8")),
    Variant("nbits8", "MatMulNBits 8-bit weights, blocks of 128, int8 compute (accuracy_level 4)", nbits(8, 128)),
    Variant("nbits4", "MatMulNBits 4-bit weights, blocks of 32, int8 compute (accuracy_level 4)", nbits(4, 32)),
    Variant("dyn+spin", "dyn, intra-op threads spin between operators", model="dyn", spin=True),
    Variant("dyn-noprepack", "dyn, weight pre-packing off (`session.disable_prepacking`)", model="dyn",
            session={"session.disable_prepacking": "1"}),
    Variant("dyn-u8u8prec", "dyn, `session.x64quantprecision` 1 (U8U8 on AVX2, no saturation)", model="dyn",
            session={"session.x64quantprecision": "1"}),
    Variant("dyn-gelu-approx", "dyn, `optimization.enable_gelu_approximation` 1 (tanh Gelu)", model="dyn",
            session={"optimization.enable_gelu_approximation": "1"}),
    Variant("dyn-opt-extended", "dyn, graph optimisation `extended` (runtime: `all`)", model="dyn", opt_level="extended"),
    Variant("dyn-opt-basic", "dyn, graph optimisation `basic`", model="dyn", opt_level="basic"),
)
"""Every variant compared by default (plus :data:`FP32` and :data:`DEFAULT`, always measured)."""


def make_session(path: Path, variant: Variant, threads: int, profile_prefix: Path | None = None):
    """An onnxruntime session for ``variant`` (the runtime's settings otherwise: sequential,
    ``intra_op_num_threads = threads``, CPU provider); profiling into ``profile_prefix*.json``."""
    import onnxruntime as ort

    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[variant.opt_level]
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if variant.spin else "0")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    for key, value in variant.session.items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
