"""The keyword set file (``.kws``): keywords, thresholds and templates, for one encoder.

Format (version 1): a NumPy ``.npz`` archive (a zip) of exactly two arrays, read with
``allow_pickle=False`` — nothing in it can execute code:

* ``header``: uint8, UTF-8 JSON::

      {"format": "kwsstream-keyset", "version": 1,
       "encoder": {...encoder identity...},
       "keywords": [{"name": str, "threshold": float, "threshold_source": "calibrated"|"user"|"default",
                     "calibration": {...}, "templates": [{"frames": int, "source": str,
                     "segment": [start_s, end_s]}, ...]}, ...]}

* ``frames``: float32 ``(total_frames, dim)``, the templates' frames one after another in the
  header's order.

Saving writes a temporary file beside the target, flushes it to disk, then renames it over the
target, so a crash or an error never leaves a half-written or lost keyword set. Loading validates
everything and raises :class:`KeysetError` naming the file and the problem.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import KeysetError

FORMAT = "kwsstream-keyset"
VERSION = 1
THRESHOLD_SOURCES = ("calibrated", "user", "default")


@dataclass(frozen=True)
class Template:
    """One example recording of a keyword, encoded: ``frames`` ``(M, dim)`` float32."""

    frames: np.ndarray
    source: str
    segment: tuple[float, float]


@dataclass(frozen=True)
class Keyword:
    name: str
    threshold: float
    templates: tuple[Template, ...]
    threshold_source: str = "calibrated"
    calibration: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KeywordSet:
    """Keywords enrolled with one encoder (``encoder`` is its identity)."""

    encoder: dict[str, Any]
    keywords: tuple[Keyword, ...] = ()

    @property
    def dim(self) -> int | None:
        for kw in self.keywords:
            for t in kw.templates:
                return t.frames.shape[1]
        return None

    def get(self, name: str) -> Keyword | None:
        return next((k for k in self.keywords if k.name == name), None)

    def with_keyword(self, keyword: Keyword) -> KeywordSet:
        """A copy with ``keyword`` added, or replacing the keyword of the same name."""
        others = [k for k in self.keywords if k.name != keyword.name]
        pos = next((i for i, k in enumerate(self.keywords) if k.name == keyword.name), len(others))
        others.insert(pos, keyword)
        return replace(self, keywords=tuple(others))

    def without(self, name: str) -> KeywordSet:
        if self.get(name) is None:
            raise KeysetError(f"no keyword named {name!r} (have: {', '.join(k.name for k in self.keywords) or 'none'})")
        return replace(self, keywords=tuple(k for k in self.keywords if k.name != name))


def save_keyset(keyset: KeywordSet, path: str | Path) -> None:
    """Write atomically (temporary file + fsync + rename)."""
    path = Path(path)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "encoder": keyset.encoder,
        "keywords": [
            {
                "name": kw.name,
                "threshold": float(kw.threshold),
                "threshold_source": kw.threshold_source,
                "calibration": kw.calibration,
                "templates": [
                    {"frames": int(len(t.frames)), "source": t.source, "segment": [float(s) for s in t.segment]}
                    for t in kw.templates
                ],
            }
            for kw in keyset.keywords
        ],
    }
    dim = keyset.dim or 0
    parts = [t.frames for kw in keyset.keywords for t in kw.templates]
    frames = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, dim), np.float32)
    blob = np.frombuffer(json.dumps(header, ensure_ascii=False).encode("utf-8"), np.uint8)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise KeysetError(f"{path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, header=blob, frames=frames)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_keyset(path: str | Path) -> KeywordSet:
    """Read and validate a keyword set file (never unpickles)."""
    path = Path(path)
    if not path.exists():
        raise KeysetError(f"{path}: no such keyword set (create it with 'kwsstream enroll')")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            if names != {"header", "frames"}:
                raise KeysetError(f"{path}: not a keyword set (arrays {sorted(names)})")
            blob, frames = npz["header"], npz["frames"]
    except KeysetError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise KeysetError(f"{path}: not a keyword set file ({type(err).__name__}: {err})") from None
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise KeysetError(f"{path}: corrupt header")
    try:
        header = json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise KeysetError(f"{path}: corrupt header ({err})") from None
    return _from_header(path, header, frames)


def _from_header(path: Path, header: Any, frames: np.ndarray) -> KeywordSet:
    def bad(problem: str) -> KeysetError:
        return KeysetError(f"{path}: {problem}")

    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise bad("not a kwsstream keyword set")
    if header.get("version") != VERSION:
        raise bad(f"keyword set format version {header.get('version')!r}; this kwsstream reads version {VERSION}")
    encoder = header.get("encoder")
    if not isinstance(encoder, dict) or not isinstance(encoder.get("kind"), str):
        raise bad("no encoder identity")
    if frames.dtype != np.float32 or frames.ndim != 2:
        raise bad(f"template frames must be float32 (n, dim), got {frames.dtype} {frames.shape}")
    if not np.isfinite(frames).all():
        raise bad("template frames hold NaN or infinite values")
    entries = header.get("keywords")
    if not isinstance(entries, list):
        raise bad("no keyword list")
    keywords, pos, seen = [], 0, set()
    for e in entries:
        try:
            name, threshold = e["name"], e["threshold"]
            source, calibration, tpls = e["threshold_source"], e["calibration"], e["templates"]
        except (KeyError, TypeError):
            raise bad("a keyword entry lacks name/threshold/threshold_source/calibration/templates") from None
        if not isinstance(name, str) or not name.strip() or name in seen:
            raise bad(f"keyword name {name!r} is empty or repeated")
        seen.add(name)
        if not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise bad(f"keyword {name!r} has threshold {threshold!r}")
        if source not in THRESHOLD_SOURCES or not isinstance(calibration, dict):
            raise bad(f"keyword {name!r} has a bad threshold source or calibration")
        if not isinstance(tpls, list) or not tpls:
            raise bad(f"keyword {name!r} has no templates")
        templates = []
        for t in tpls:
            try:
                n, src, seg = int(t["frames"]), str(t["source"]), t["segment"]
                seg = (float(seg[0]), float(seg[1]))
            except (KeyError, TypeError, ValueError, IndexError):
                raise bad(f"keyword {name!r} has a malformed template entry") from None
            if n < 1 or pos + n > len(frames):
                raise bad(f"keyword {name!r}: template sizes do not add up to the {len(frames)} stored frames")
            templates.append(Template(frames[pos : pos + n].copy(), src, seg))
            pos += n
        keywords.append(Keyword(name, float(threshold), tuple(templates), source, calibration))
    if pos != len(frames):
        raise bad(f"{len(frames) - pos} stored frames belong to no template")
    return KeywordSet(encoder=encoder, keywords=tuple(keywords))
