"""The keyword set file's format (``.kws``): its layout, its limits, and every check of what is in it.

Format (version 1): a NumPy ``.npz`` archive (a zip of *stored*, uncompressed members) of exactly
two arrays (read member by member, every size checked against the limits below before anything
is allocated, never unpickled: :mod:`kwsstream.keysetread`):

* ``header``: uint8, UTF-8 JSON::

      {"format": "kwsstream-keyset", "version": 1,
       "encoder": {...encoder identity...},
       "keywords": [{"name": str, "threshold": float, "threshold_source": "calibrated"|"user",
                     "calibration": {...}, "templates": [{"frames": int, "source": str,
                     "segment": [start_s, end_s]}, ...]}, ...]}

* ``frames``: float32 ``(total_frames, dim)``, the templates' frames one after another in the
  header's order.

Validation (one layer, :func:`check_header`, used by both loading and saving): the header's schema
(types, ranges, sizes), the encoder identity (checked by its encoder kind,
:func:`kwsstream.encoders.check_identity`), keyword names (:func:`check_keyword_name`),
thresholds (:func:`check_threshold`), template frame counts and values, each keyword's
calibration record (:class:`kwsstream.calibration_record.Calibration`). Every problem is one
:class:`KeysetError` line that names the file.

The data classes, saving, loading and the locked update are :mod:`kwsstream.keyset`'s; this
module knows nothing of them: :func:`check_header` returns plain values.
"""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from .calibration_record import THRESHOLD_SOURCES, Calibration
from .errors import EncoderError, KeysetError

FORMAT = "kwsstream-keyset"
VERSION = 1
READABLE_VERSIONS = (1,)

MAX_THRESHOLD = 2.0
"""Scores are normalised cosine-distance path costs, in [0, 2]: a threshold above 2 means nothing."""
MIN_TEMPLATE_FRAMES = 2
"""The shortest template a set may hold (enrollment itself asks for more: enroll.MIN_TEMPLATE_SECONDS)."""
MAX_TEMPLATE_FRAMES = 6000
"""The longest template (60 s at 100 frames/s)."""
MAX_TEMPLATES = 1000
"""Templates per keyword."""
MAX_KEYWORDS = 10_000
MAX_DIM = 8192
"""Widest frames."""
MAX_FRAME_VALUE = 1e6
"""Largest absolute frame value (MFCCs and model activations are far below it)."""
MAX_ZERO_ROWS = 0.5
"""A template with more than this fraction of all-zero frames is refused (digital silence)."""
MAX_NAME_CHARS = 200
MAX_SOURCE_CHARS = 4096
MAX_HEADER_BYTES = 16 << 20
"""The JSON header's size."""
MAX_JSON_DEPTH = 32
"""Nesting of the JSON header (arrays and objects)."""
MAX_CALIBRATION_BYTES = 64 << 10
"""A keyword's free-form ``calibration`` object, as JSON."""
MAX_CALIBRATION_DEPTH = 8
MAX_FRAMES_BYTES = 1 << 30
"""The frames array (float32)."""
MAX_FILE_BYTES = MAX_FRAMES_BYTES + MAX_HEADER_BYTES + (1 << 20)
MAX_NPY_HEADER = 10_000
"""Bytes of an ``.npy`` member's own header (numpy's limit)."""
MEMBERS = {"header.npy": "header", "frames.npy": "frames"}
NAME_FORMAT_ALLOWED = frozenset("\u200c\u200d")
"""Invisible format characters a keyword name may hold: the zero-width (non-)joiners that
Persian and Indic spellings need. Every other (bidi overrides, zero-width spaces, ...) is refused."""


# --- values ----------------------------------------------------------------------------------

def check_keyword_name(name: Any) -> str:
    """A keyword name as stored: stripped of surrounding blanks, in Unicode NFC (so that one
    word typed two ways is one keyword), non-empty, at most :data:`MAX_NAME_CHARS`, without
    control characters (newlines, tabs, ...) or invisible format characters (bidi overrides such
    as U+202E, zero-width spaces such as U+200B; see :data:`NAME_FORMAT_ALLOWED`). Raises
    :class:`KeysetError` (without a file name: callers add theirs)."""
    if not isinstance(name, str):
        raise KeysetError(f"keyword name {name!r} is not a string")
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")]
    if bad:
        raise KeysetError(f"keyword name {name[:40]!r} holds control characters ({bad[0]!r})")
    bad = [c for c in name if unicodedata.category(c) == "Cf" and c not in NAME_FORMAT_ALLOWED]
    if bad:
        raise KeysetError(f"keyword name {name[:40]!r} holds an invisible format character "
                          f"(U+{ord(bad[0]):04X} {unicodedata.name(bad[0], '')})".replace(" )", ")"))
    stripped = unicodedata.normalize("NFC", name.strip())
    if not stripped:
        raise KeysetError("the keyword name is empty")
    if len(stripped) > MAX_NAME_CHARS:
        raise KeysetError(f"keyword name {stripped[:20]!r}... is longer than {MAX_NAME_CHARS} characters")
    return stripped


def check_threshold(value: Any, what: str = "threshold") -> float:
    """A detection threshold: a finite number (not a bool) in ``(0, MAX_THRESHOLD]`` — scores are
    normalised cosine distances in [0, 2]. Used for the set's thresholds and for ``--threshold``
    of every command. Raises :class:`KeysetError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise KeysetError(f"{what} {value!r} is not a number")
    number = float(value)
    if not math.isfinite(number) or not 0 < number <= MAX_THRESHOLD:
        raise KeysetError(f"{what} {value!r} is not a number above 0 and at most {MAX_THRESHOLD:g} "
                          "(scores are cosine distances in [0, 2])")
    return number


def parse_threshold(text: str) -> float:
    """``--threshold`` of the command line (an argparse ``type``): :func:`check_threshold` of
    the number in ``text``. Raises :class:`kwsstream.errors.UsageError` (one line, no usage text)."""
    from .errors import UsageError

    try:
        number = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"--threshold {text!r} is not a number") from None
    try:
        return check_threshold(number, "--threshold")
    except KeysetError as err:
        raise UsageError(str(err)) from None


def utf8_ok(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value (stops counting past ``limit``)."""
    if limit < 0:
        return 1
    if isinstance(value, dict):
        return 1 + max((_depth(v, limit - 1) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v, limit - 1) for v in value), default=0)
    return 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --- checking ------------------------------------------------------------------------------

TemplateFields = tuple[np.ndarray, str, tuple[float, float]]
"""A template as checked: its frames (a copy), source and segment."""
KeywordFields = tuple[str, float, str, dict[str, Any], list[TemplateFields]]
"""A keyword as checked: name, threshold, threshold source, calibration, templates."""


def check_header(path: Path, header: Any, frames: np.ndarray) -> tuple[dict[str, Any], list[KeywordFields]]:
    """Check a parsed header and its frames by every rule of the format; the encoder identity and
    the keywords, in order, as plain values (:mod:`kwsstream.keyset` makes them its data
    classes). Raises :class:`KeysetError` naming ``path``."""
    def bad(problem: str) -> KeysetError:
        return KeysetError(f"{path}: {problem}")

    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise bad("not a kwsstream keyword set")
    version = header.get("version")
    if not _is_int(version) or version not in READABLE_VERSIONS:
        raise bad(f"keyword set format version {version!r}; this kwsstream reads version {VERSION}")
    encoder = header.get("encoder")
    if not isinstance(encoder, dict) or not isinstance(encoder.get("kind"), str):
        raise bad("no encoder identity")
    from .encoders import check_identity

    try:
        dim = check_identity(encoder)
    except EncoderError as err:
        raise bad(f"encoder identity: {err}") from None
    if frames.dtype != np.float32 or frames.ndim != 2:
        raise bad(f"template frames must be float32 (n, dim), got {frames.dtype} {frames.shape}")
    if not (1 <= frames.shape[1] <= MAX_DIM or frames.shape == (0, 0)):
        raise bad(f"template frames are {frames.shape[1]} wide (1 to {MAX_DIM} allowed)")
    if dim is not None and len(frames) and frames.shape[1] != dim:
        raise bad(f"template frames are {frames.shape[1]} wide; encoder {encoder['kind']} gives {dim}")
    with np.errstate(all="ignore"):
        finite = bool(np.isfinite(frames).all())
        peak = float(np.abs(frames).max(initial=0.0)) if finite else math.inf
    if not finite:
        raise bad("template frames hold NaN or infinite values")
    if peak > MAX_FRAME_VALUE:
        raise bad(f"template frames hold values up to {peak:.3g} (at most {MAX_FRAME_VALUE:g} allowed)")
    entries = header.get("keywords")
    if not isinstance(entries, list):
        raise bad("no keyword list")
    if len(entries) > MAX_KEYWORDS:
        raise bad(f"{len(entries)} keywords (at most {MAX_KEYWORDS})")
    zero_rows = ~frames.any(axis=1)
    keywords: list[KeywordFields] = []
    pos, seen = 0, set()
    for e in entries:
        if not isinstance(e, dict):
            raise bad("a keyword entry is not an object")
        try:
            name, threshold = e["name"], e["threshold"]
            source, calibration, tpls = e["threshold_source"], e["calibration"], e["templates"]
        except KeyError:
            raise bad("a keyword entry lacks name/threshold/threshold_source/calibration/templates") from None
        try:
            checked = check_keyword_name(name)
        except KeysetError as err:
            raise bad(str(err)) from None
        if checked != unicodedata.normalize("NFC", name):
            raise bad(f"keyword name {name!r} has surrounding blanks")
        name = checked  # NFC: a set written before names were normalised reads as if they had been
        if name in seen:
            raise bad(f"keyword name {name!r} is repeated")
        seen.add(name)
        try:
            threshold = check_threshold(threshold, f"keyword {name!r}: threshold")
        except KeysetError as err:
            raise bad(str(err)) from None
        if not isinstance(source, str) or source not in THRESHOLD_SOURCES:
            raise bad(f"keyword {name!r} has threshold source {source!r} (one of {', '.join(THRESHOLD_SOURCES)})")
        _check_calibration(path, name, calibration, source)
        if not isinstance(tpls, list) or not tpls:
            raise bad(f"keyword {name!r} has no templates")
        if len(tpls) > MAX_TEMPLATES:
            raise bad(f"keyword {name!r} has {len(tpls)} templates (at most {MAX_TEMPLATES})")
        templates: list[TemplateFields] = []
        for t in tpls:
            if not isinstance(t, dict) or not {"frames", "source", "segment"} <= t.keys():
                raise bad(f"keyword {name!r} has a malformed template entry")
            n, src, seg = t["frames"], t["source"], t["segment"]
            if not _is_int(n) or not MIN_TEMPLATE_FRAMES <= n <= MAX_TEMPLATE_FRAMES:
                raise bad(f"keyword {name!r} has a template of {n!r} frames "
                          f"(a whole number from {MIN_TEMPLATE_FRAMES} to {MAX_TEMPLATE_FRAMES})")
            if not isinstance(src, str) or len(src) > MAX_SOURCE_CHARS or "\0" in src or not utf8_ok(src):
                raise bad(f"keyword {name!r} has a template whose source is not a path")
            if (not isinstance(seg, list) or len(seg) != 2 or not all(_is_number(s) for s in seg)
                    or not 0 <= seg[0] <= seg[1]):
                raise bad(f"keyword {name!r} has a template segment {seg!r} (two times in seconds, start <= end)")
            if pos + n > len(frames):
                raise bad(f"keyword {name!r}: template sizes do not add up to the {len(frames)} stored frames")
            if zero_rows[pos : pos + n].mean() > MAX_ZERO_ROWS:
                raise bad(f"keyword {name!r} has a template of all-zero frames (digital silence)")
            templates.append((frames[pos : pos + n].copy(), src, (float(seg[0]), float(seg[1]))))
            pos += n
        keywords.append((name, threshold, source, calibration, templates))
    if pos != len(frames):
        raise bad(f"{len(frames) - pos} stored frames belong to no template")
    return encoder, keywords


def _check_calibration(path: Path, name: str, calibration: Any, source: str) -> None:
    """An object of bounded size and depth (other tools may add keys of their own) whose keys
    that kwsstream reads have their types and ranges (:meth:`Calibration.from_json`)."""
    where = f"{path}: keyword {name!r}"
    if not isinstance(calibration, dict):
        raise KeysetError(f"{where} has calibration {type(calibration).__name__}, not an object")
    if _depth(calibration, MAX_CALIBRATION_DEPTH + 1) > MAX_CALIBRATION_DEPTH:
        raise KeysetError(f"{where} has calibration nested deeper than {MAX_CALIBRATION_DEPTH}")
    try:
        size = len(json.dumps(calibration, allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError):  # UnicodeEncodeError (a lone surrogate) is a ValueError
        raise KeysetError(f"{where} has calibration that is not plain JSON") from None
    if size > MAX_CALIBRATION_BYTES:
        raise KeysetError(f"{where} has {size} bytes of calibration (at most {MAX_CALIBRATION_BYTES})")
    Calibration.from_json(calibration, where, source)
