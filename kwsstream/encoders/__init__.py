"""Encoders behind one protocol (``base.py``), and the registry of encoder kinds.

The registry maps an identity's ``kind`` to its class: the built-in ``mfcc`` (``mfcc.py``) and
``onnx`` (``onnx.py``: exported models), plus any class given to :func:`register_encoder`. Every
question about a stored identity or a user's ``--encoder`` text goes through it
(:func:`load_encoder`, :func:`check_identity`, :func:`encoder_from_identity`,
:func:`describe_identity`); this is the one place that knows the kinds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import EncoderError
from .base import SAMPLE_RATE, Encoder, EncoderBase, EncoderState, FrameGrid, same_identity

__all__ = ["SAMPLE_RATE", "Encoder", "EncoderBase", "EncoderState", "FrameGrid", "check_identity",
           "describe_identity", "encoder_class", "encoder_from_identity", "encoder_kinds", "identity_frame_rate",
           "load_encoder",
           "register_encoder", "same_identity", "unregister_encoder"]


def _mfcc() -> type:
    from .mfcc import MfccEncoder

    return MfccEncoder


def _onnx() -> type:
    from .onnx import OnnxEncoder

    return OnnxEncoder


_BUILT_IN: dict[str, Callable[[], type]] = {"mfcc": _mfcc, "onnx": _onnx}
"""Built-in kinds, imported when first asked for (``import kwsstream`` stays cheap)."""
_REGISTERED: dict[str, type] = {}


def register_encoder(cls: type) -> type:
    """Add an encoder class (see :class:`~kwsstream.encoders.base.Encoder`; usually a subclass
    of :class:`~kwsstream.encoders.base.EncoderBase`) under its ``kind``; usable as a decorator.

    Raises:
        EncoderError: an empty kind, or one that another class already has.
    """
    kind = getattr(cls, "kind", "")
    if not isinstance(kind, str) or not kind:
        raise EncoderError(f"{cls.__name__}: an encoder class needs a non-empty 'kind'")
    taken = _REGISTERED.get(kind) or (_BUILT_IN[kind]() if kind in _BUILT_IN else None)
    if taken is not None and taken is not cls:
        raise EncoderError(f"encoder kind {kind!r} is already registered ({taken.__name__})")
    _REGISTERED[kind] = cls
    return cls


def unregister_encoder(kind: str) -> None:
    """Remove a class added by :func:`register_encoder` (built-in kinds stay)."""
    _REGISTERED.pop(kind, None)


def encoder_kinds() -> tuple[str, ...]:
    """Every kind, built-in first, in the order :func:`load_encoder` tries them."""
    return tuple(_BUILT_IN) + tuple(k for k in _REGISTERED if k not in _BUILT_IN)


def encoder_class(kind: object) -> type:
    """The class of ``kind``. Raises :class:`EncoderError` for an unknown kind."""
    if isinstance(kind, str):
        if kind in _REGISTERED:
            return _REGISTERED[kind]
        if kind in _BUILT_IN:
            return _BUILT_IN[kind]()
    raise EncoderError(f"unknown encoder kind {kind!r} (known: {', '.join(encoder_kinds())})")


def load_encoder(spec: str | Path, *, threads: int | None = None) -> Encoder:
    """Make an encoder from a user's spec (``--encoder``): the first kind whose ``from_spec``
    accepts it (``"mfcc"``, the path of an exported ``.onnx`` model, a registered kind)."""
    text = str(spec)
    for kind in encoder_kinds():
        encoder = encoder_class(kind).from_spec(text, threads=threads)
        if encoder is not None:
            return encoder
    helps = [encoder_class(kind).spec_help or repr(kind) for kind in encoder_kinds()]
    raise EncoderError(f"{text}: unknown encoder (use {', '.join(helps[:-1])} or {helps[-1]})")


def _kind_of(identity: object) -> type:
    if not isinstance(identity, dict):
        raise EncoderError("the encoder identity is not an object")
    return encoder_class(identity.get("kind"))


MAX_IDENTITY_INT = 2**53
"""Largest whole number (in magnitude) a stored identity may hold: beyond it JSON numbers lose
precision, and numpy cannot take them."""
MAX_IDENTITY_ITEMS = 256
MAX_IDENTITY_TEXT = 4096


def _plain_identity_problem(identity: dict[str, Any]) -> str | None:
    """What makes a stored identity more than a small object of plain values (the same rule for
    every kind, before the kind's own checks): at most :data:`MAX_IDENTITY_ITEMS` entries of
    text, booleans, ``null``, finite numbers of at most :data:`MAX_IDENTITY_INT`, or short lists
    of those."""
    if len(identity) > MAX_IDENTITY_ITEMS:
        return f"the encoder identity has {len(identity)} entries (at most {MAX_IDENTITY_ITEMS})"
    for key, value in identity.items():
        for item in value if isinstance(value, list) and len(value) <= MAX_IDENTITY_ITEMS else [value]:
            if isinstance(item, bool) or item is None:
                continue
            if isinstance(item, int):
                if abs(item) > MAX_IDENTITY_INT:
                    return f"encoder setting {key!r} = {item!r} is out of range"
            elif isinstance(item, float):
                if not math.isfinite(item) or abs(item) > MAX_IDENTITY_INT:
                    return f"encoder setting {key!r} = {item!r} is out of range"
            elif isinstance(item, str):
                if len(item) > MAX_IDENTITY_TEXT:
                    return f"encoder setting {key!r} is longer than {MAX_IDENTITY_TEXT} characters"
            else:
                return f"encoder setting {key!r} is {type(item).__name__}, not a plain value"
    return None


def check_identity(identity: object) -> int:
    """Validate a stored encoder identity by its kind (types, ranges, sizes), building nothing;
    returns the frame width it implies. Every kind's identity is first a small object of plain
    values (:func:`_plain_identity_problem`); a kind's check that fails other than with
    :class:`EncoderError` is an :class:`EncoderError` too. Raises :class:`EncoderError` (no file
    named: the keyword set loader adds its own)."""
    cls = _kind_of(identity)
    problem = _plain_identity_problem(identity)
    if problem:
        raise EncoderError(problem)
    try:
        return cls.check_identity(identity)
    except (TypeError, ValueError, OverflowError, KeyError) as err:
        raise EncoderError(f"{cls.kind} identity is malformed ({type(err).__name__}: {str(err)[:120]})") from None


def identity_frame_rate(identity: object) -> float | None:
    """Frames per second of a stored identity *without opening any file*: the encoder is built
    (its grid read) only when the identity names no file (no ``path`` entry, e.g. MFCC); an
    identity naming a model file (ONNX) gives ``None`` (lengths are then shown in frames). For
    listings (``kwsstream keywords``), which must not open a model to print a length. Raises
    :class:`EncoderError` for an identity :func:`check_identity` refuses."""
    check_identity(identity)
    if "path" in identity:  # type: ignore[operator]  (a dict: checked above)
        return None
    try:
        return float(encoder_from_identity(identity).grid.frame_rate)  # type: ignore[arg-type]
    except EncoderError:
        return None


def encoder_from_identity(identity: dict[str, Any], *, threads: int | None = None) -> Encoder:
    """The encoder a keyword set was enrolled with (for ONNX: the model file it names, which
    the caller then checks against the stored sha256 via :func:`same_identity`). The identity
    is checked first (:func:`check_identity`)."""
    cls = _kind_of(identity)
    check_identity(identity)
    return cls.from_identity(identity, threads=threads)


def describe_identity(identity: object) -> str:
    """A stored identity in words (its class's ``describe``), e.g. ``MFCC-13``; never raises."""
    try:
        return _kind_of(identity).describe(identity)
    except EncoderError:
        kind = identity.get("kind") if isinstance(identity, dict) else None
        return f"unknown encoder kind {kind!r}"
