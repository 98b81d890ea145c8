"""The keyword set file (``.kws``): keywords, thresholds and templates, for one encoder.

The data classes (:class:`KeywordSet`, :class:`Keyword`, :class:`Template`), saving, loading and
the locked update. The file format itself — its layout, the size limits, reading it before
anything is allocated, and every check of its values (:func:`check_keyword_name`,
:func:`check_threshold`, ...) — is :mod:`kwsstream.keysetformat`. Loading and saving validate
by the same rules (:func:`kwsstream.keysetformat.check_header`).

Changing a set: load, modify and save under a lock, so that two processes enrolling into one set
at the same time both land (the second waits for the first)::

    with locked_keyset(path) as (keyset, save):    # keyset: None when the file does not exist
        save(keyset.with_keyword(kw))

    update_keyset(path, lambda ks: ks.without("casa"))   # the same, as a function

The lock is the file ``.NAME.lock`` beside the set's real target (symlinks are followed: the
target is what gets written). Saving (:func:`kwsstream.safefile.atomic_write`) writes an
unpredictable temporary file beside the target, flushes it to disk, then renames it over the
target, so a crash or an error never leaves a half-written or lost keyword set; an existing set
keeps its permission bits and group (and owner, for root), a new one gets ``0666`` less the
umask. Temporary files left by writers killed mid-save (ours, over a minute old) are removed
whenever a set is opened for writing.
"""

from __future__ import annotations

import contextlib
import json
import os
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .calibration_record import ThresholdSource
from .errors import KeysetError
from .keysetformat import FORMAT, MAX_FRAMES_BYTES, MAX_HEADER_BYTES, VERSION, check_header
from .keysetread import read_bytes, read_file
from .safefile import atomic_write, real_target, remove_stale_temporaries, umask

__all__ = [
    "LOCK_TIMEOUT", "Keyword", "KeywordSet", "Template", "load_keyset", "load_keyset_bytes", "lock_path",
    "locked_keyset", "read_keyset_file", "save_keyset", "update_keyset",
]

LOCK_TIMEOUT = 600.0
"""Seconds a locked update waits for another process's update of the same set."""


@dataclass(frozen=True)
class Template:
    """One example recording of a keyword, encoded: ``frames`` ``(M, dim)`` float32."""

    frames: np.ndarray
    source: str
    segment: tuple[float, float]


@dataclass(frozen=True)
class Keyword:
    """A keyword: its name (stored in Unicode NFC), threshold, templates, who set the threshold
    (``threshold_source``) and the calibration record, a plain JSON object whose known keys a
    loaded set has checked (:class:`kwsstream.calibration_record.Calibration`)."""

    name: str
    threshold: float
    templates: tuple[Template, ...]
    threshold_source: ThresholdSource = "calibrated"
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
        """The keyword ``name`` (compared in Unicode NFC, as names are stored), or None."""
        name = unicodedata.normalize("NFC", name) if isinstance(name, str) else name
        return next((k for k in self.keywords if k.name == name), None)

    def with_keyword(self, keyword: Keyword) -> KeywordSet:
        """A copy with ``keyword`` added, or replacing the keyword of the same name."""
        others = [k for k in self.keywords if k.name != keyword.name]
        pos = next((i for i, k in enumerate(self.keywords) if k.name == keyword.name), len(others))
        others.insert(pos, keyword)
        return replace(self, keywords=tuple(others))

    def without(self, name: str) -> KeywordSet:
        """A copy without keyword ``name`` (surrounding blanks ignored, as enrollment strips them)."""
        name = unicodedata.normalize("NFC", name.strip()) if isinstance(name, str) else name
        if self.get(name) is None:
            raise KeysetError(f"no keyword named {name!r} (have: {', '.join(k.name for k in self.keywords) or 'none'})")
        return replace(self, keywords=tuple(k for k in self.keywords if k.name != name))


# --- saving ----------------------------------------------------------------------------------

def _header_of(keyset: KeywordSet) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "encoder": keyset.encoder,
        "keywords": [
            {
                "name": unicodedata.normalize("NFC", kw.name) if isinstance(kw.name, str) else kw.name,
                "threshold": _plain(kw.threshold),
                "threshold_source": kw.threshold_source,
                "calibration": kw.calibration,
                "templates": [
                    {"frames": int(len(t.frames)), "source": _printable_path(t.source),
                     "segment": [_plain(s) for s in t.segment]}
                    for t in kw.templates
                ],
            }
            for kw in keyset.keywords
        ],
    }


def _printable_path(source: Any) -> Any:
    """A template's source as stored: a file name that is not UTF-8 (its undecodable bytes held
    as surrogates, ``os.fsdecode``) gets U+FFFD for them (the source is a record, never opened)."""
    if isinstance(source, str):
        return source.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return source


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers (anything else unchanged: validation judges it)."""
    return value.item() if isinstance(value, np.generic) else value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.size <= 100_000:
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _encode(path: Path, keyset: KeywordSet) -> tuple[np.ndarray, np.ndarray]:
    """Header blob and frames of ``keyset``, validated exactly as loading validates them."""
    header = _header_of(keyset)
    try:
        text = json.dumps(header, ensure_ascii=False, allow_nan=False, default=_json_default)
        raw = text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as err:  # a lone surrogate: UnicodeEncodeError
        raise KeysetError(f"{path}: cannot be saved: the header is not plain JSON ({str(err)[:200]})") from None
    parts = [np.asarray(t.frames) for kw in keyset.keywords for t in kw.templates]
    try:
        dim = keyset.dim or 0
        frames = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, dim), np.float32)
    except (ValueError, TypeError, IndexError) as err:
        raise KeysetError(f"{path}: cannot be saved: templates of different shapes ({err})") from None
    blob = np.frombuffer(raw, np.uint8)
    if blob.nbytes > MAX_HEADER_BYTES:
        raise KeysetError(f"{path}: cannot be saved: header of {blob.nbytes} bytes is over {MAX_HEADER_BYTES}")
    if frames.nbytes > MAX_FRAMES_BYTES:
        raise KeysetError(f"{path}: cannot be saved: {frames.nbytes} bytes of frames is over {MAX_FRAMES_BYTES}")
    check_header(path, json.loads(text), frames)  # the loader's rules, before anything is written
    return blob, frames


def _write(keyset: KeywordSet, path: Path, shown: Path) -> None:
    """Write ``keyset`` to the real file ``path`` atomically (:func:`kwsstream.safefile.atomic_write`:
    mode, group and owner kept); errors name ``shown``."""
    blob, frames = _encode(shown, keyset)
    remove_stale_temporaries(path)
    with atomic_write(path, KeysetError, shown=shown) as handle:
        np.savez(handle, header=blob, frames=frames)


def lock_path(path: str | Path) -> Path:
    """The lock file of the set at ``path``: ``.NAME.lock`` beside its real target."""
    real = real_target(Path(path))
    return real.parent / f".{real.name}.lock"


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[Path]:
    from filelock import FileLock, Timeout

    real = real_target(path)
    if not real.parent.is_dir():
        raise KeysetError(f"{path}: folder {real.parent} does not exist")
    lock = FileLock(str(lock_path(path)), timeout=timeout, mode=0o666 & ~umask())
    try:
        lock.acquire()
    except Timeout:
        raise KeysetError(f"{path}: another process has been changing this keyword set for over "
                          f"{timeout:g} s (lock {lock.lock_file})") from None
    except OSError as err:
        raise KeysetError(f"{path}: cannot lock the keyword set ({err.strerror or err})") from None
    try:
        remove_stale_temporaries(real)
        yield real
    finally:
        lock.release()


@contextlib.contextmanager
def locked_keyset(
    path: str | Path, *, timeout: float = LOCK_TIMEOUT
) -> Iterator[tuple[KeywordSet | None, Callable[[KeywordSet], None]]]:
    """Load, modify and save a set with no other process doing the same meanwhile::

        with locked_keyset(path) as (keyset, save):   # keyset None: no such file yet
            save(new_keyset)                           # optional; atomic; may be called again

    The lock is held for the whole block (another ``locked_keyset`` of the same set waits, up to
    ``timeout`` seconds, then raises :class:`KeysetError`). Nothing is written unless ``save`` is
    called; an exception in the block leaves the file as it was."""
    path = Path(path)
    with _locked(path, timeout) as real:
        keyset = load_keyset(path) if os.path.exists(real) else None

        def save(new: KeywordSet) -> None:
            _write(new, real, path)

        yield keyset, save


def update_keyset(
    path: str | Path, fn: Callable[[KeywordSet | None], KeywordSet | None], *, timeout: float = LOCK_TIMEOUT
) -> KeywordSet | None:
    """``fn(current set or None)`` under the set's lock; what it returns is saved (``None``:
    nothing is written) and returned. See :func:`locked_keyset`."""
    with locked_keyset(path, timeout=timeout) as (keyset, save):
        new = fn(keyset)
        if new is not None:
            save(new)
        return new


def save_keyset(keyset: KeywordSet, path: str | Path) -> None:
    """Write atomically (temporary file + fsync + rename), validated as loading validates. This
    is a blind overwrite, without the lock: to change a set that may exist, use
    :func:`locked_keyset` / :func:`update_keyset`, whose load and save the lock covers."""
    path = Path(path)
    real = real_target(path)
    if not real.parent.is_dir():
        raise KeysetError(f"{path}: folder {real.parent} does not exist")
    _write(keyset, real, path)


# --- loading ---------------------------------------------------------------------------------

def load_keyset(path: str | Path) -> KeywordSet:
    """Read and validate a keyword set file (a regular file only; never unpickles; sizes checked
    before reading)."""
    path = Path(path)
    if not path.exists():
        raise KeysetError(f"{path}: no such keyword set (create it with 'kwsstream enroll')")
    if path.is_dir():
        raise KeysetError(f"{path}: is a folder, not a keyword set")
    header, frames = read_file(path)
    return _from_header(path, header, frames)


def load_keyset_bytes(data: bytes, path: str | Path) -> KeywordSet:
    """:func:`load_keyset` of a set file's bytes, read earlier (``path`` names it in errors)."""
    header, frames = read_file(Path(path), data)
    return _from_header(Path(path), header, frames)


def read_keyset_file(path: str | Path) -> tuple[bytes, KeywordSet]:
    """The bytes of the set file at ``path`` (one bounded read of a regular file) and the set
    they hold: what is checked is what is kept (a worker gets these very bytes)."""
    path = Path(path)
    if not path.exists():
        raise KeysetError(f"{path}: no such keyword set (create it with 'kwsstream enroll')")
    data = read_bytes(path)
    return data, load_keyset_bytes(data, path)


def _from_header(path: Path, header: Any, frames: np.ndarray) -> KeywordSet:
    """The set of a parsed header and its frames, checked by the format's rules."""
    encoder, entries = check_header(path, header, frames)
    keywords = tuple(
        Keyword(name, threshold, tuple(Template(f, src, seg) for f, src, seg in templates), source, calibration)
        for name, threshold, source, calibration, templates in entries
    )
    return KeywordSet(encoder=encoder, keywords=keywords)
