"""The keyword set file (``.kws``): keywords, thresholds and templates, for one encoder.

Format (version 1): a NumPy ``.npz`` archive (a zip of *stored*, uncompressed members) of exactly
two arrays. It is read here member by member — the zip directory with :mod:`zipfile`, each
``.npy`` header with :mod:`numpy.lib.format` — so that every size is checked against the limits
below *before* anything is allocated, and nothing in it is ever unpickled:

* ``header``: uint8, UTF-8 JSON::

      {"format": "kwsstream-keyset", "version": 1,
       "encoder": {...encoder identity...},
       "keywords": [{"name": str, "threshold": float, "threshold_source": "calibrated"|"user"|"default",
                     "calibration": {...}, "templates": [{"frames": int, "source": str,
                     "segment": [start_s, end_s]}, ...]}, ...]}

* ``frames``: float32 ``(total_frames, dim)``, the templates' frames one after another in the
  header's order.

Validation (one layer, :func:`_from_header`, used by both loading and saving): the header's schema
(types, ranges, sizes), the encoder identity (checked by its encoder kind,
:func:`kwsstream.encoders.check_identity`), keyword names (:func:`check_keyword_name`),
thresholds (:func:`check_threshold`), template frame counts and values. Every problem is one
:class:`KeysetError` line that names the file.

Changing a set: load, modify and save under a lock, so that two processes enrolling into one set
at the same time both land (the second waits for the first)::

    with locked_keyset(path) as (keyset, save):    # keyset: None when the file does not exist
        save(keyset.with_keyword(kw))

    update_keyset(path, lambda ks: ks.without("casa"))   # the same, as a function

The lock is the file ``.NAME.lock`` beside the set's real target (symlinks are followed: the
target is what gets written). Saving writes a temporary file beside the target, flushes it to
disk, then renames it over the target, so a crash or an error never leaves a half-written or lost
keyword set; temporary files left by writers killed mid-save are removed under the lock. An
existing set keeps its permission bits; a new one gets ``0666`` less the umask.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EncoderError, KeysetError

FORMAT = "kwsstream-keyset"
VERSION = 1
READABLE_VERSIONS = (1,)
THRESHOLD_SOURCES = ("calibrated", "user", "default")

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
LOCK_TIMEOUT = 600.0
"""Seconds a locked update waits for another process's update of the same set."""
MEMBERS = {"header.npy": "header", "frames.npy": "frames"}


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
        """A copy without keyword ``name`` (surrounding blanks ignored, as enrollment strips them)."""
        name = name.strip() if isinstance(name, str) else name
        if self.get(name) is None:
            raise KeysetError(f"no keyword named {name!r} (have: {', '.join(k.name for k in self.keywords) or 'none'})")
        return replace(self, keywords=tuple(k for k in self.keywords if k.name != name))


# --- values ----------------------------------------------------------------------------------

def check_keyword_name(name: Any) -> str:
    """A keyword name as stored: stripped of surrounding blanks, non-empty, at most
    :data:`MAX_NAME_CHARS`, without control characters (newlines, tabs, ...). Raises
    :class:`KeysetError` (without a file name: callers add theirs)."""
    if not isinstance(name, str):
        raise KeysetError(f"keyword name {name!r} is not a string")
    stripped = name.strip()
    if not stripped:
        raise KeysetError("the keyword name is empty")
    if len(stripped) > MAX_NAME_CHARS:
        raise KeysetError(f"keyword name {stripped[:20]!r}... is longer than {MAX_NAME_CHARS} characters")
    bad = [c for c in stripped if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")]
    if bad:
        raise KeysetError(f"keyword name {stripped!r} holds control characters ({bad[0]!r})")
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


# --- saving ----------------------------------------------------------------------------------

def _header_of(keyset: KeywordSet) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "encoder": keyset.encoder,
        "keywords": [
            {
                "name": kw.name,
                "threshold": _plain(kw.threshold),
                "threshold_source": kw.threshold_source,
                "calibration": kw.calibration,
                "templates": [
                    {"frames": int(len(t.frames)), "source": t.source, "segment": [_plain(s) for s in t.segment]}
                    for t in kw.templates
                ],
            }
            for kw in keyset.keywords
        ],
    }


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
    except (TypeError, ValueError, RecursionError) as err:
        raise KeysetError(f"{path}: cannot be saved: the header is not plain JSON ({err})") from None
    parts = [np.asarray(t.frames) for kw in keyset.keywords for t in kw.templates]
    try:
        dim = keyset.dim or 0
        frames = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, dim), np.float32)
    except (ValueError, TypeError, IndexError) as err:
        raise KeysetError(f"{path}: cannot be saved: templates of different shapes ({err})") from None
    blob = np.frombuffer(text.encode("utf-8"), np.uint8)
    if blob.nbytes > MAX_HEADER_BYTES:
        raise KeysetError(f"{path}: cannot be saved: header of {blob.nbytes} bytes is over {MAX_HEADER_BYTES}")
    if frames.nbytes > MAX_FRAMES_BYTES:
        raise KeysetError(f"{path}: cannot be saved: {frames.nbytes} bytes of frames is over {MAX_FRAMES_BYTES}")
    _from_header(path, json.loads(text), frames)  # the loader's rules, before anything is written
    return blob, frames


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: the classic read-and-restore
    os.umask(mask)
    return mask


def _real_target(path: Path) -> Path:
    """Where the set really is: symlinks (also dangling ones) resolved."""
    return Path(os.path.realpath(path))


def _write(keyset: KeywordSet, path: Path, shown: Path) -> None:
    """Write ``keyset`` to the real file ``path`` atomically; errors name ``shown``."""
    blob, frames = _encode(shown, keyset)
    folder = path.parent
    if not folder.is_dir():
        raise KeysetError(f"{shown}: folder {folder} does not exist")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    except OSError as err:
        raise KeysetError(f"{shown}: cannot be written ({err.strerror or err})") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise KeysetError(f"{shown}: cannot be written in {folder} ({err.strerror or err})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            np.savez(fh, header=blob, frames=frames)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the rename itself to disk
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of writers killed mid-save (only called under the set's lock, where no
    other writer can be busy)."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[^/]*\.tmp$")
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if pattern.match(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def lock_path(path: str | Path) -> Path:
    """The lock file of the set at ``path``: ``.NAME.lock`` beside its real target."""
    real = _real_target(Path(path))
    return real.parent / f".{real.name}.lock"


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[Path]:
    from filelock import FileLock, Timeout

    real = _real_target(path)
    if not real.parent.is_dir():
        raise KeysetError(f"{path}: folder {real.parent} does not exist")
    lock = FileLock(str(lock_path(path)), timeout=timeout, mode=0o666 & ~_umask())
    try:
        lock.acquire()
    except Timeout:
        raise KeysetError(f"{path}: another process has been changing this keyword set for over "
                          f"{timeout:g} s (lock {lock.lock_file})") from None
    except OSError as err:
        raise KeysetError(f"{path}: cannot lock the keyword set ({err.strerror or err})") from None
    try:
        _remove_stale_temporaries(real)
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
    real = _real_target(path)
    if not real.parent.is_dir():
        raise KeysetError(f"{path}: folder {real.parent} does not exist")
    _write(keyset, real, path)


# --- loading ---------------------------------------------------------------------------------

def load_keyset(path: str | Path) -> KeywordSet:
    """Read and validate a keyword set file (never unpickles; sizes checked before reading)."""
    path = Path(path)
    if not path.exists():
        raise KeysetError(f"{path}: no such keyword set (create it with 'kwsstream enroll')")
    if path.is_dir():
        raise KeysetError(f"{path}: is a folder, not a keyword set")
    arrays = _read_members(path)
    blob, frames = arrays["header"], arrays["frames"]
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise KeysetError(f"{path}: corrupt header (array of {blob.dtype} {blob.shape})")
    header = _parse_json(path, blob.tobytes())
    return _from_header(path, header, frames)


def _not_a_set(path: Path, why: str) -> KeysetError:
    return KeysetError(f"{path}: not a keyword set file ({why})")


def _read_members(path: Path) -> dict[str, np.ndarray]:
    try:
        size = path.stat().st_size
    except OSError as err:
        raise KeysetError(f"{path}: cannot be read ({err.strerror or err})") from None
    if size > MAX_FILE_BYTES:
        raise KeysetError(f"{path}: {size} bytes is more than a keyword set may hold ({MAX_FILE_BYTES})")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = [i.filename for i in infos]
            if sorted(names) != sorted(MEMBERS):
                shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
                raise KeysetError(f"{path}: not a keyword set (arrays {shown or 'none'})")
            return {MEMBERS[i.filename]: _read_npy(path, archive, i) for i in infos}
    except KeysetError:
        raise
    except zipfile.BadZipFile as err:
        raise _not_a_set(path, f"not a valid zip archive: {_line(err)}") from None
    except (zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError, OverflowError) as err:
        raise _not_a_set(path, f"corrupt archive: {_line(err)}") from None
    except OSError as err:
        raise KeysetError(f"{path}: cannot be read ({err.strerror or _line(err)})") from None
    except MemoryError:
        raise KeysetError(f"{path}: too large to read") from None


def _read_npy(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    label = MEMBERS[info.filename]
    limit = MAX_HEADER_BYTES if label == "header" else MAX_FRAMES_BYTES
    if info.compress_type != zipfile.ZIP_STORED:
        raise _not_a_set(path, f"array {label!r} is compressed; keyword sets are written uncompressed")
    if info.flag_bits & 0x1:
        raise _not_a_set(path, f"array {label!r} is encrypted")
    if info.file_size > limit + MAX_NPY_HEADER + 16:
        raise KeysetError(f"{path}: array {label!r} of {info.file_size} bytes is over the limit ({limit})")
    with archive.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=MAX_NPY_HEADER)
            elif version in ((2, 0), (3, 0)):
                reader = np.lib.format.read_array_header_2_0
                shape, fortran, dtype = reader(fh, max_header_size=MAX_NPY_HEADER)
            else:
                raise ValueError(f"unknown .npy version {version}")
        except zipfile.BadZipFile:
            raise
        except Exception as err:  # numpy parses the header with ast/tokenize: anything can come out
            raise _not_a_set(path, f"corrupt header of array {label!r}: {_line(err)}") from None
        expected = np.dtype(np.uint8) if label == "header" else np.dtype("<f4")
        if dtype != expected or dtype.hasobject:
            raise _not_a_set(path, f"array {label!r} holds {dtype}, not {expected}")
        if fortran:
            raise _not_a_set(path, f"array {label!r} is in Fortran order")
        ndim = 1 if label == "header" else 2
        if len(shape) != ndim or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise _not_a_set(path, f"array {label!r} has shape {shape}, expected {ndim} dimensions")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if nbytes > limit:
            raise KeysetError(f"{path}: array {label!r} claims {nbytes} bytes, over the limit ({limit})")
        if label == "frames" and not (1 <= shape[1] <= MAX_DIM or shape == (0, 0)):
            raise KeysetError(f"{path}: frames are {shape[1]} wide (1 to {MAX_DIM} allowed)")
        if fh.tell() + nbytes != info.file_size:
            raise _not_a_set(path, f"array {label!r} holds {info.file_size - fh.tell()} bytes of data, "
                                   f"its header says {nbytes}")
        data = fh.read(nbytes)
        if len(data) != nbytes or fh.read(1):  # reading to the end checks the CRC
            raise _not_a_set(path, f"array {label!r} is truncated")
    return np.frombuffer(data, dtype).reshape(shape)


def _json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON ``text`` (strings skipped), vectorised."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    codes = np.frombuffer(stripped.encode("utf-8", "surrogatepass"), np.uint8)
    steps = np.zeros(len(codes), np.int64)
    steps[(codes == ord("[")) | (codes == ord("{"))] = 1
    steps[(codes == ord("]")) | (codes == ord("}"))] = -1
    return int(np.cumsum(steps).max(initial=0))


def _parse_json(path: Path, raw: bytes) -> Any:
    if len(raw) > MAX_HEADER_BYTES:
        raise KeysetError(f"{path}: header of {len(raw)} bytes is over the limit ({MAX_HEADER_BYTES})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise KeysetError(f"{path}: corrupt header (not UTF-8: {err.reason} at byte {err.start})") from None
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise KeysetError(f"{path}: corrupt header (JSON nested deeper than {MAX_JSON_DEPTH})")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as err:
        raise KeysetError(f"{path}: corrupt header ({_line(err)})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number in a keyword set")


def _line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(err).__name__)


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


def _from_header(path: Path, header: Any, frames: np.ndarray) -> KeywordSet:
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
    keywords, pos, seen = [], 0, set()
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
        if checked != name:
            raise bad(f"keyword name {name!r} has surrounding blanks")
        if name in seen:
            raise bad(f"keyword name {name!r} is repeated")
        seen.add(name)
        try:
            threshold = check_threshold(threshold, f"keyword {name!r}: threshold")
        except KeysetError as err:
            raise bad(str(err)) from None
        if not isinstance(source, str) or source not in THRESHOLD_SOURCES:
            raise bad(f"keyword {name!r} has threshold source {source!r} (one of {', '.join(THRESHOLD_SOURCES)})")
        _check_calibration(bad, name, calibration)
        if not isinstance(tpls, list) or not tpls:
            raise bad(f"keyword {name!r} has no templates")
        if len(tpls) > MAX_TEMPLATES:
            raise bad(f"keyword {name!r} has {len(tpls)} templates (at most {MAX_TEMPLATES})")
        templates = []
        for t in tpls:
            if not isinstance(t, dict) or not {"frames", "source", "segment"} <= t.keys():
                raise bad(f"keyword {name!r} has a malformed template entry")
            n, src, seg = t["frames"], t["source"], t["segment"]
            if not _is_int(n) or not MIN_TEMPLATE_FRAMES <= n <= MAX_TEMPLATE_FRAMES:
                raise bad(f"keyword {name!r} has a template of {n!r} frames "
                          f"(a whole number from {MIN_TEMPLATE_FRAMES} to {MAX_TEMPLATE_FRAMES})")
            if not isinstance(src, str) or len(src) > MAX_SOURCE_CHARS:
                raise bad(f"keyword {name!r} has a template whose source is not a path")
            if (not isinstance(seg, list) or len(seg) != 2 or not all(_is_number(s) for s in seg)
                    or not 0 <= seg[0] <= seg[1]):
                raise bad(f"keyword {name!r} has a template segment {seg!r} (two times in seconds, start <= end)")
            if pos + n > len(frames):
                raise bad(f"keyword {name!r}: template sizes do not add up to the {len(frames)} stored frames")
            if zero_rows[pos : pos + n].mean() > MAX_ZERO_ROWS:
                raise bad(f"keyword {name!r} has a template of all-zero frames (digital silence)")
            templates.append(Template(frames[pos : pos + n].copy(), src, (float(seg[0]), float(seg[1]))))
            pos += n
        keywords.append(Keyword(name, threshold, tuple(templates), source, calibration))
    if pos != len(frames):
        raise bad(f"{len(frames) - pos} stored frames belong to no template")
    return KeywordSet(encoder=encoder, keywords=tuple(keywords))


def _check_calibration(bad: Callable[[str], KeysetError], name: str, calibration: Any) -> None:
    """Free-form JSON (other tools extend it): an object of bounded size and depth."""
    if not isinstance(calibration, dict):
        raise bad(f"keyword {name!r} has calibration {type(calibration).__name__}, not an object")
    if _depth(calibration, MAX_CALIBRATION_DEPTH + 1) > MAX_CALIBRATION_DEPTH:
        raise bad(f"keyword {name!r} has calibration nested deeper than {MAX_CALIBRATION_DEPTH}")
    try:
        size = len(json.dumps(calibration, allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError):
        raise bad(f"keyword {name!r} has calibration that is not plain JSON") from None
    if size > MAX_CALIBRATION_BYTES:
        raise bad(f"keyword {name!r} has {size} bytes of calibration (at most {MAX_CALIBRATION_BYTES})")
