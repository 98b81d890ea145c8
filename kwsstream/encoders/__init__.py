"""Encoders: MFCC-13 (built in) and exported ONNX models, behind one protocol (see base.py)."""

from __future__ import annotations

from pathlib import Path

from ..errors import EncoderError
from .base import SAMPLE_RATE, Encoder, EncoderState, FrameGrid, same_identity

__all__ = ["SAMPLE_RATE", "Encoder", "EncoderState", "FrameGrid", "encoder_from_identity", "load_encoder", "same_identity"]


def load_encoder(spec: str | Path, *, threads: int | None = None) -> Encoder:
    """Make an encoder from a user's spec: ``"mfcc"`` or the path of an exported ``.onnx`` model."""
    text = str(spec)
    if text == "mfcc":
        from .mfcc import MfccEncoder

        return MfccEncoder()
    path = Path(text)
    if path.suffix.lower() == ".onnx":
        from .onnx import OnnxEncoder

        return OnnxEncoder(path, threads=threads)
    raise EncoderError(f"{text}: unknown encoder (use 'mfcc' or the path of an exported .onnx model)")


def encoder_from_identity(identity: dict, *, threads: int | None = None) -> Encoder:
    """The encoder a keyword set was enrolled with (for ONNX: the model file it names, which
    the caller then checks against the stored sha256 via :func:`same_identity`)."""
    kind = identity.get("kind")
    if kind == "mfcc":
        from .mfcc import MfccEncoder, MfccOptions

        fields = MfccOptions.__dataclass_fields__
        return MfccEncoder(MfccOptions(**{k: v for k, v in identity.items() if k in fields}))
    if kind == "onnx":
        path = identity.get("path")
        if not path or not Path(path).exists():
            raise EncoderError(
                f"{path}: the ONNX model this keyword set was enrolled with is not there (pass --encoder PATH)"
            )
        return load_encoder(path, threads=threads)
    raise EncoderError(f"unknown encoder kind {kind!r} in keyword set")
