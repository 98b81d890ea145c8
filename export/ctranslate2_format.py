"""Read CTranslate2's ``model.bin`` (a converted model's variables) without CTranslate2.

The format, as ``ctranslate2::models::Model::load`` reads it (``src/models/model.cc``) and
``ModelSpec._serialize`` writes it (``python/ctranslate2/specs/model_spec.py``); every number
little-endian, a *string* is a ``uint16`` byte count ``n`` (the terminating NUL included) and
``n`` bytes of UTF-8 ending in NUL:

==============================  ==============================================================
``uint32``                      binary version (CTranslate2 4.x writes 6; read here: 4..6)
string                          spec name (``WhisperSpec``)
``uint32``                      spec revision
``uint32``                      number of variables, then for each:
  string                        name, ``/``-separated (``encoder/layer_0/ffn/linear_0/weight``)
  ``uint8``                     rank, then ``uint32`` x rank: the dimensions
  ``uint8``                     dtype id: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16,
                                5 bfloat16 (binary version >= 4; older files store an item
                                size instead, not read here)
  ``uint32``                    payload bytes (= product of dimensions x item size)
  bytes                         the payload, row-major
``uint32``                      number of aliases (binary version >= 3), then for each two
                                strings: the alias and the variable it names
==============================  ==============================================================

and nothing after the last alias. :func:`read_index` walks the headers (seeking over the
payloads: reading the index of a 145 MB file reads a few kB) and checks every field and that the
file holds exactly what they promise; :func:`read_arrays` then reads only the variables asked
for, as float32 where they are floating point. Every problem is one :class:`ExportError` line
naming the file, the variable and the offending value.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from . import ExportError

MIN_BINARY_VERSION, MAX_BINARY_VERSION = 4, 6
"""Binary versions read here (4: dtype ids; 5 and 6 changed nothing in the variable records)."""
DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
"""CTranslate2's ``DataType`` enum (``include/ctranslate2/types.h``) -> numpy name."""
ITEM_SIZES = {"float32": 4, "int8": 1, "int16": 2, "int32": 4, "float16": 2, "bfloat16": 2}
FLOAT_DTYPES = ("float32", "float16", "bfloat16")
MAX_RANK = 8
"""A sanity bound on a variable's rank (CTranslate2 models use at most 4)."""
MAX_COUNT = 1 << 20
"""A sanity bound on the numbers of variables and aliases."""


@dataclass(frozen=True)
class Variable:
    """One variable's header: where its payload lies in the file."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    nbytes: int


@dataclass(frozen=True)
class ModelIndex:
    """The headers of a ``model.bin``: what is in it and where."""

    path: Path
    binary_version: int
    spec: str
    revision: int
    variables: dict[str, Variable]
    aliases: dict[str, str]


class _Reader:
    """Little-endian fields from a file whose size is known (a short read is a truncated file)."""

    def __init__(self, handle: BinaryIO, path: Path, size: int):
        self.handle, self.path, self.size = handle, path, size

    def take(self, count: int, what: str) -> bytes:
        at = self.handle.tell()
        data = self.handle.read(count)
        if len(data) != count:
            raise ExportError(f"{self.path}: truncated: {what} needs {count} bytes at offset {at}, "
                              f"the file ends at {self.size}")
        return data

    def number(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        length = self.number("H", f"the length of {what}")
        raw = self.take(length, what) if length else b""
        if length == 0 or raw[-1:] != b"\0":
            raise ExportError(f"{self.path}: {what} at offset {self.handle.tell() - length} is not a "
                              f"NUL-terminated string (length {length})")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise ExportError(f"{self.path}: {what} is not UTF-8 ({raw[:40]!r})") from None

    def skip(self, count: int, what: str) -> None:
        at = self.handle.tell()
        if at + count > self.size:
            raise ExportError(f"{self.path}: truncated: {what} needs {count} bytes at offset {at}, "
                              f"the file ends at {self.size}")
        self.handle.seek(count, 1)


def read_index(path: str | Path) -> ModelIndex:
    """The headers of the ``model.bin`` at ``path``, every field checked (see the module
    docstring); raises :class:`ExportError` for a file that is not exactly that format."""
    path = Path(path)
    try:
        size = path.stat().st_size
        handle = open(path, "rb")
    except OSError as err:
        raise ExportError(f"{path}: cannot read ({err.strerror or err})") from None
    with handle:
        reader = _Reader(handle, path, size)
        version = reader.number("I", "the binary version")
        if not MIN_BINARY_VERSION <= version <= MAX_BINARY_VERSION:
            raise ExportError(f"{path}: binary version {version} is not one this reader knows "
                              f"({MIN_BINARY_VERSION}..{MAX_BINARY_VERSION}; not a CTranslate2 model.bin?)")
        spec = reader.string("the spec name")
        revision = reader.number("I", "the spec revision")
        count = reader.number("I", "the variable count")
        if count > MAX_COUNT:
            raise ExportError(f"{path}: {count} variables (more than {MAX_COUNT}: a corrupt header?)")
        variables: dict[str, Variable] = {}
        for number in range(count):
            variable = _read_variable(reader, f"variable {number}")
            if variable.name in variables:
                raise ExportError(f"{path}: variable '{variable.name}' appears twice")
            variables[variable.name] = variable
        aliases = {}
        for number in range(_count(reader, "the alias count")):
            alias = reader.string(f"alias {number}")
            aliases[alias] = reader.string(f"the target of alias '{alias}'")
            if aliases[alias] not in variables:
                raise ExportError(f"{path}: alias '{alias}' names '{aliases[alias]}', which is not a variable")
        extra = size - handle.tell()
        if extra:
            raise ExportError(f"{path}: {extra} bytes after the last alias (at offset {handle.tell()}): not one model")
    return ModelIndex(path, version, spec, revision, variables, aliases)


def _count(reader: _Reader, what: str) -> int:
    count = reader.number("I", what)
    if count > MAX_COUNT:
        raise ExportError(f"{reader.path}: {what} {count} is more than {MAX_COUNT} (a corrupt file?)")
    return count


def _read_variable(reader: _Reader, what: str) -> Variable:
    name = reader.string(f"the name of {what}")
    rank = reader.number("B", f"the rank of '{name}'")
    if rank > MAX_RANK:
        raise ExportError(f"{reader.path}: variable '{name}' has rank {rank} (more than {MAX_RANK}: a corrupt file?)")
    shape = tuple(reader.number("I", f"a dimension of '{name}'") for _ in range(rank))
    type_id = reader.number("B", f"the dtype of '{name}'")
    if type_id not in DTYPES:
        raise ExportError(f"{reader.path}: variable '{name}' has dtype id {type_id} (known: {sorted(DTYPES)})")
    dtype = DTYPES[type_id]
    nbytes = reader.number("I", f"the payload size of '{name}'")
    want = int(np.prod(shape, dtype=np.int64)) * ITEM_SIZES[dtype]
    if nbytes != want:
        raise ExportError(f"{reader.path}: variable '{name}' {list(shape)} {dtype} has a {nbytes}-byte payload, "
                          f"expected {want}")
    offset = reader.handle.tell()
    reader.skip(nbytes, f"the payload of '{name}'")
    return Variable(name, shape, dtype, offset, nbytes)


def read_arrays(index: ModelIndex, names: list[str]) -> dict[str, np.ndarray]:
    """The payloads of ``names`` (variables or aliases): floating-point ones as float32 (float16
    and bfloat16 widened exactly), integer ones in their own type.

    Raises:
        ExportError: a name that is not in the file, or a file that changed since its index was read.
    """
    missing = [name for name in names if index.aliases.get(name, name) not in index.variables]
    if missing:
        raise ExportError(f"{index.path}: no variable {missing[0]!r} (a {index.spec} with "
                          f"{len(index.variables)} variables; {len(missing)} missing in all)")
    arrays = {}
    try:
        with open(index.path, "rb") as handle:
            for name in names:
                variable = index.variables[index.aliases.get(name, name)]
                handle.seek(variable.offset)
                raw = handle.read(variable.nbytes)
                if len(raw) != variable.nbytes:
                    raise ExportError(f"{index.path}: truncated since it was indexed (variable '{variable.name}')")
                arrays[name] = _decode(raw, variable)
    except OSError as err:
        raise ExportError(f"{index.path}: cannot read ({err.strerror or err})") from None
    return arrays


def _decode(raw: bytes, variable: Variable) -> np.ndarray:
    if variable.dtype == "bfloat16":  # the upper half of a float32: widen by a 16-bit shift
        wide = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
        return wide.view(np.float32).reshape(variable.shape)
    values = np.frombuffer(raw, "<" + np.dtype(variable.dtype).str[1:]).reshape(variable.shape)
    return values.astype(np.float32) if variable.dtype in FLOAT_DTYPES else values.copy()
