"""Reading a keyword set file (``.kws``) without trusting it: the container, before the format's
checks (:func:`kwsstream.keysetformat.check_header`) judge what is in it.

* Only a regular file is opened (``O_NONBLOCK``, then ``fstat`` of the opened file: a FIFO, a
  device such as ``/dev/zero`` or a folder is refused without a read; :mod:`kwsstream.safefile`).
* The zip's end record is read first and its directory bounded (:data:`MAX_ZIP_ENTRIES`,
  :data:`MAX_ZIP_DIRECTORY`) before :mod:`zipfile` parses it; then each member's ``.npy``
  header with :mod:`numpy.lib.format`, so that every size is checked against the format's
  limits *before* anything is allocated, and nothing is ever unpickled.
* The JSON header is parsed in one linear pass (:func:`json.loads`: nesting deeper than the
  recursion limit is refused, whole numbers are bounded), then walked without recursion for its
  depth and for lone surrogates (text that could be neither printed nor written back).

Every problem is one :class:`KeysetError` line that names the file.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import KeysetError
from .keysetformat import MAX_FILE_BYTES, MAX_FRAMES_BYTES, MAX_HEADER_BYTES, MAX_JSON_DEPTH, MAX_NPY_HEADER, MAX_DIM, \
    MEMBERS, utf8_ok
from .safefile import open_regular, read_limited

MAX_ZIP_ENTRIES = 16
"""Entries a set's zip directory may declare (it has two; a few more get a clear message)."""
MAX_ZIP_DIRECTORY = 64 << 10
"""Bytes of the zip's central directory (two entries take ~200): read before it is parsed."""
MAX_INT_DIGITS = 30
"""Digits of a whole number in the header (the largest legitimate one has 10)."""


def read_file(path: Path, data: bytes | None = None) -> tuple[Any, np.ndarray]:
    """The parsed JSON header and the frames of the set file at ``path`` (or of its bytes
    ``data``, already read; ``path`` then only names it). Only a regular file is opened (a FIFO
    or a device is refused without a read); every size is checked before anything is read;
    never unpickles. Raises :class:`KeysetError`."""
    if data is None:
        with open_regular(path, MAX_FILE_BYTES, KeysetError, "keyword set") as handle:
            arrays = _read_members(path, handle)
    else:
        if len(data) > MAX_FILE_BYTES:
            raise KeysetError(f"{path}: {len(data)} bytes is more than a keyword set may hold ({MAX_FILE_BYTES})")
        arrays = _read_members(path, io.BytesIO(data))
    blob, frames = arrays["header"], arrays["frames"]
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise KeysetError(f"{path}: corrupt header (array of {blob.dtype} {blob.shape})")
    return _parse_json(path, blob.tobytes()), frames


def read_bytes(path: Path) -> bytes:
    """The bytes of the set file at ``path``: a regular file of at most :data:`MAX_FILE_BYTES`
    (for a copy that cannot change between its check and its use: :func:`read_file` ``data``)."""
    with open_regular(path, MAX_FILE_BYTES, KeysetError, "keyword set") as handle:
        return read_limited(handle, MAX_FILE_BYTES, path, KeysetError, "keyword set")


def _not_a_set(path: Path, why: str) -> KeysetError:
    return KeysetError(f"{path}: not a keyword set file ({why})")


def _check_directory(path: Path, handle: BinaryIO) -> None:
    """Bound the zip's directory before :mod:`zipfile` parses it (it keeps an object per entry:
    a file of nothing but directory entries would cost several times its size in memory). Finds
    the end record as :mod:`zipfile` does (at the very end, else the last one in the final
    64 KiB) and its zip64 twin, and refuses more than :data:`MAX_ZIP_ENTRIES` entries or a
    directory over :data:`MAX_ZIP_DIRECTORY` bytes."""
    end, end64 = b"PK\x05\x06", b"PK\x06\x06"
    size = handle.seek(0, io.SEEK_END)
    if size < 22:
        raise _not_a_set(path, "not a valid zip archive: File is not a zip file")
    handle.seek(size - 22)
    tail = handle.read(22)
    if tail[:4] == end and tail[-2:] == b"\0\0":
        at, record = size - 22, tail
    else:
        first = max(size - (1 << 16) - 22, 0)
        handle.seek(first)
        window = handle.read(size - first)
        found = window.rfind(end)
        if found < 0 or len(window) - found < 22:
            raise _not_a_set(path, "not a valid zip archive: File is not a zip file")
        at, record = first + found, window[found:found + 22]
    _, _, _, _, entries, directory, _, _ = struct.unpack("<4s4H2LH", record)
    if at >= 76:
        handle.seek(at - 76)
        before = handle.read(76)
        if before[56:60] == b"PK\x06\x07" and before[:4] == end64:
            entries, directory = struct.unpack("<QQ", before[32:48])
    if entries > MAX_ZIP_ENTRIES or directory > MAX_ZIP_DIRECTORY:
        raise _not_a_set(path, f"its zip directory declares {entries} entries in {directory} bytes "
                               f"(a keyword set has 2 in a few hundred)")
    handle.seek(0)


def _read_members(path: Path, handle: BinaryIO) -> dict[str, np.ndarray]:
    try:
        _check_directory(path, handle)
        with zipfile.ZipFile(handle) as archive:
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
    except (zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError, OverflowError, struct.error) as err:
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
    if info.file_size != info.compress_size or info.file_size > limit + MAX_NPY_HEADER + 16:
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
        if len(shape) != ndim or not all(type(n) is int and n >= 0 for n in shape):  # not bool, not numpy
            raise _not_a_set(path, f"array {label!r} has shape {shape}, expected {ndim} dimensions of whole numbers")
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


def _parse_json(path: Path, raw: bytes) -> Any:
    """The header's JSON, parsed in one linear pass (:func:`json.loads`; nesting deeper than
    Python's recursion limit is a :class:`RecursionError`, refused), then its depth and strings
    checked (:func:`_check_parsed`)."""
    if len(raw) > MAX_HEADER_BYTES:
        raise KeysetError(f"{path}: header of {len(raw)} bytes is over the limit ({MAX_HEADER_BYTES})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise KeysetError(f"{path}: corrupt header (not UTF-8: {err.reason} at byte {err.start})") from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_int=_bounded_int)
    except RecursionError:
        raise KeysetError(f"{path}: corrupt header (JSON nested deeper than {MAX_JSON_DEPTH})") from None
    except (json.JSONDecodeError, ValueError) as err:
        raise KeysetError(f"{path}: corrupt header ({_line(err)})") from None
    _check_parsed(path, value, escapes=_SURROGATE_ESCAPE.search(text) is not None)
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
"""A JSON escape of a UTF-16 surrogate (fixed length: a linear search)."""


def _check_parsed(path: Path, value: Any, escapes: bool) -> None:
    """Nesting at most :data:`MAX_JSON_DEPTH` (a walk without recursion); with ``escapes``
    (the text escapes surrogates), no string holding a lone surrogate (a pair is one character;
    a lone one cannot be printed or written as UTF-8)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values()) + (list(item) if escapes else [])
        elif isinstance(item, list):
            children = item
        else:
            if escapes and isinstance(item, str) and not utf8_ok(item):
                raise KeysetError(f"{path}: corrupt header (text {item[:40]!r} holds a lone surrogate)")
            continue
        if depth > MAX_JSON_DEPTH:
            raise KeysetError(f"{path}: corrupt header (JSON nested deeper than {MAX_JSON_DEPTH})")
        stack.extend((child, depth + 1) for child in children if escapes or isinstance(child, (dict, list)))


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"a whole number of {len(digits)} digits")
    return int(digits)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number in a keyword set")


def _line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(err).__name__)
