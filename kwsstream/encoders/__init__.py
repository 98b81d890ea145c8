"""Encoders: MFCC-13 (built in) and exported ONNX models, behind one protocol (see base.py)."""

from __future__ import annotations

from pathlib import Path

from ..errors import EncoderError
from .base import SAMPLE_RATE, Encoder, EncoderState, FrameGrid, same_identity

__all__ = ["SAMPLE_RATE", "Encoder", "EncoderState", "FrameGrid", "check_identity", "encoder_from_identity",
           "load_encoder", "same_identity"]


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


def check_identity(identity: object) -> int | None:
    """Validate a stored encoder identity by its kind (types, ranges, sizes), building nothing;
    returns the frame width it implies. Raises :class:`EncoderError` (no file named: the keyword
    set loader adds its own)."""
    if not isinstance(identity, dict):
        raise EncoderError("the encoder identity is not an object")
    kind = identity.get("kind")
    if kind == "mfcc":
        from .mfcc import options_from_identity

        return options_from_identity(identity).n_mfcc
    if kind == "onnx":
        from .onnx import check_identity as check_onnx

        return check_onnx(identity)
    raise EncoderError(f"unknown encoder kind {kind!r} in keyword set")


def encoder_from_identity(identity: dict, *, threads: int | None = None) -> Encoder:
    """The encoder a keyword set was enrolled with (for ONNX: the model file it names, which
    the caller then checks against the stored sha256 via :func:`same_identity`). The identity
    is checked first (:func:`check_identity`)."""
    check_identity(identity)
    kind = identity.get("kind")
    if kind == "mfcc":
        from .mfcc import MfccEncoder, options_from_identity

        return MfccEncoder(options_from_identity(identity))
    path = identity["path"]
    if not Path(path).is_file():
        raise EncoderError(
            f"{path}: the ONNX model this keyword set was enrolled with is not there (pass --encoder PATH)"
        )
    return load_encoder(path, threads=threads)
