"""Which files an archive search reads, and which of them it has already searched.

* **Which files** (:func:`expand_paths`): folders (recursively, audio suffixes only), globs,
  ``@list.txt`` files and plain paths, in a stable order, each once; links to folders are not
  followed inside a walk, and FIFOs, devices and sockets are reported and never opened.
* **The state file** (:class:`SearchState`): ``OUT.state.jsonl`` beside the result table, a
  header naming the spotter, then one JSON line per file finished (path, size, mtime, hits),
  written and flushed as each file finishes, so a rerun skips the files already searched. Loaded
  line by line with every value checked (a bad line — not JSON, too long, too deeply nested, of
  the wrong types — is skipped and counted in one warning; that file is searched again); never
  unpickled. File names that are not UTF-8 are written as JSON escapes and read back unchanged.

:mod:`kwsstream.search` runs the search.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import math
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from .errors import UsageError
from .safefile import atomic_write, file_kind, open_regular, read_regular
from .searchworkers import FileEntry, FileResult

AUDIO_SUFFIXES = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd",
    ".caf", ".w64", ".rf64", ".voc", ".sd2", ".paf", ".sf", ".ircam", ".nist", ".sph", ".avr", ".htk",
    ".mat", ".pvf", ".xi", ".mpc", ".wve", ".svx", ".8svx",
})
"""File name endings searched for in folders and glob matches (what libsndfile reads); a file
named directly is searched whatever its name."""

STATE_SUFFIX = ".state.jsonl"
STATE_VERSION = 1
MAX_LIST_BYTES = 64 << 20
"""An ``@list`` file's size."""
MAX_STATE_BYTES = 4 << 30
"""The state file's size (a line per file searched)."""
MAX_STATE_LINE = 16 << 20
"""One state line (a file's hits)."""

# --- which files ---------------------------------------------------------------------------------


def _audio_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES


class _Finder:
    """Walks folders and globs without following links to folders (a link to a file is kept):
    each folder is read once (by device and inode), so ``self -> .`` or two links to a parent
    cannot make a walk repeat or run forever. Files that are not regular files (FIFOs, devices,
    sockets) are reported through ``say`` and never opened."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.seen: set[tuple[int, int]] = set()

    def _entries(self, folder: str) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as err:
            self.say(f"kwsstream: warning: {folder}: cannot be listed ({err.strerror or err})")
            return []

    def _first_visit(self, path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def audio_file(self, path: str, entry: os.DirEntry | None = None) -> bool:
        """Whether ``path`` is one to search: a regular file (a link to one too); a FIFO, device
        or socket is reported and left alone; a missing one is kept (reported later, as a bad
        file)."""
        try:
            mode = entry.stat().st_mode if entry is not None else os.stat(path).st_mode
        except OSError:
            return True
        if stat.S_ISREG(mode):
            return True
        if not stat.S_ISDIR(mode):
            self.say(f"kwsstream: skipped: {path}: is {file_kind(mode)}, not an audio file (not opened)")
        return False

    def walk(self, folder: str) -> Iterator[str]:
        """The audio files under ``folder``, recursively (``folder`` itself may be a link)."""
        stack = [folder]
        while stack:
            current = stack.pop()
            if not self._first_visit(current):
                continue
            subfolders = []
            for entry in self._entries(current):
                path = os.path.join(current, entry.name)
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    subfolders.append(path)
                elif _audio_name(entry.name) and not _is_dir_link(entry) and self.audio_file(path, entry):
                    yield path
            stack.extend(reversed(subfolders))

    def glob(self, pattern: str) -> list[str]:
        """Paths matching ``pattern`` (``*``, ``?``, ``[...]`` within a name, names starting with
        ``.`` only by a pattern that does; ``**`` any number of folders, never through a link)."""
        parts = pattern.split(os.sep)
        base = os.sep if pattern.startswith(os.sep) else os.curdir
        if pattern.startswith(os.sep):
            parts = parts[1:]
        while parts and not glob.has_magic(parts[0]) and len(parts) > 1:
            base = os.path.join(base, parts.pop(0))
        candidates = [base]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            found: list[str] = []
            for folder in candidates:
                if part == "**":
                    found.extend(self._folders(folder, include_files=last))
                elif glob.has_magic(part):
                    hidden_ok = part.startswith(".")
                    for entry in self._entries(folder):
                        if fnmatch.fnmatchcase(entry.name, part) and (hidden_ok or not entry.name.startswith(".")):
                            path = os.path.join(folder, entry.name)
                            if last or _is_dir(entry):
                                found.append(path)
                elif part:
                    path = os.path.join(folder, part)
                    if os.path.lexists(path) if last else os.path.isdir(path):
                        found.append(path)
                else:
                    found.append(folder)
            candidates = found
        return [_clean(c) for c in candidates]

    def _folders(self, top: str, include_files: bool) -> list[str]:
        """``top`` and every folder under it (not through links, hidden ones left out, each
        once); with ``include_files`` the files too."""
        out, stack, seen = [], [top], set()
        while stack:
            current = stack.pop()
            try:
                st = os.stat(current)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            out.append(current)
            subfolders = []
            for entry in self._entries(current):
                if entry.name.startswith("."):
                    continue
                path = os.path.join(current, entry.name)
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    subfolders.append(path)
                elif include_files:
                    out.append(path)
            stack.extend(reversed(subfolders))
        return out


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_dir_link(entry: os.DirEntry) -> bool:
    return entry.is_symlink() and _is_dir(entry)


def _clean(path: str) -> str:
    return path[2:] if path.startswith(os.curdir + os.sep) else path


def read_list(listing: Path) -> list[str]:
    """The items of an ``@list`` file: a regular file (a FIFO or a device is refused without a
    read) of at most :data:`MAX_LIST_BYTES`, one item a line, ``#`` comments; names that are not
    UTF-8 are kept as the file system's own (``surrogateescape``, as :func:`os.fsdecode`)."""
    data = read_regular(listing, MAX_LIST_BYTES, UsageError, "list of paths")
    lines = data.decode("utf-8", "surrogateescape").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def expand_paths(items: Sequence[str], say: Callable[[str], None] = lambda _: None) -> list[str]:
    """The audio files of ``items``: folders (recursive, files with an audio suffix), globs
    (``**`` spans folders; matched folders are walked, matched files kept if their suffix is an
    audio one), ``@list.txt`` (one item of these kinds a line, ``#`` comments) and files named
    directly (searched whatever their name; a missing one is reported later, as a bad file).
    Links to folders are not followed inside a walk; FIFOs, devices and sockets are reported in
    one line each and never opened. Absolute paths, each once, sorted."""
    found: dict[str, None] = {}
    finder = _Finder(say)

    def add(path: str) -> None:
        found.setdefault(os.path.abspath(path), None)

    def one(item: str, depth: int = 0) -> None:
        if item.startswith("@") and depth == 0:
            for line in read_list(Path(item[1:])):
                one(line, depth + 1)
            return
        if os.path.isdir(item):
            for f in finder.walk(item):
                add(f)
        elif glob.has_magic(item) and not os.path.lexists(item):
            matches = sorted(finder.glob(item))
            if not matches:
                say(f"kwsstream: warning: {item}: matches no file")
            for m in matches:
                if os.path.isdir(m):
                    for f in finder.walk(m):
                        add(f)
                elif _audio_name(m) and finder.audio_file(m):
                    add(m)
        elif finder.audio_file(item):
            add(item)

    for item in items:
        one(item)
    return sorted(found)


def file_entry(path: str) -> FileEntry:
    try:
        st = os.stat(path)
        return FileEntry(path, st.st_size, st.st_mtime_ns)
    except OSError:
        return FileEntry(path, -1, -1)


# --- the state file ------------------------------------------------------------------------------

def state_path(out: str | Path) -> Path:
    """The sidecar state file of an output table."""
    return Path(str(out) + STATE_SUFFIX)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _entry_from_json(d: Any, names: set[str]) -> FileResult:
    """Validate one state line (raises ValueError with the reason)."""
    if not isinstance(d, dict) or set(d) != {"path", "size", "mtime_ns", "seconds", "hits", "error"}:
        raise ValueError("not a file entry")
    if not isinstance(d["path"], str) or not d["path"] or "\0" in d["path"]:
        raise ValueError("bad path")
    for k in ("size", "mtime_ns"):
        if not isinstance(d[k], int) or isinstance(d[k], bool) or d[k] < 0:
            raise ValueError(f"bad {k}")
    if not _finite(d["seconds"]) or d["seconds"] < 0:
        raise ValueError("bad seconds")
    if d["error"] is not None and not isinstance(d["error"], str):
        raise ValueError("bad error")
    if not isinstance(d["hits"], list):
        raise ValueError("bad hits")
    hits = []
    for h in d["hits"]:
        if not (isinstance(h, list) and len(h) == 4 and isinstance(h[0], str) and h[0] in names
                and all(_finite(v) for v in h[1:])):
            raise ValueError("bad hit")
        hits.append((h[0], float(h[1]), float(h[2]), float(h[3])))
    return FileResult(d["path"], d["size"], d["mtime_ns"], float(d["seconds"]), tuple(hits), d["error"])


def json_line(value: Any) -> str:
    """One JSON line (no newline) that is valid UTF-8 whatever the file names in it: text as it
    is, but a name that is not UTF-8 (its bytes held as surrogates, :func:`os.fsdecode`) as JSON
    escapes, which :func:`json.loads` reads back to the very same name."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True)
    return text


def _lines(handle: BinaryIO) -> Iterator[bytes | None]:
    """The lines of ``handle``; ``None`` for a line over :data:`MAX_STATE_LINE` bytes (skipped
    to its end without keeping it)."""
    while True:
        line = handle.readline(MAX_STATE_LINE + 1)
        if not line:
            return
        if len(line) > MAX_STATE_LINE and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = handle.readline(MAX_STATE_LINE)
            yield None
            continue
        yield line


def _parse_line(line: bytes | None) -> Any:
    """A state line's JSON (ValueError for anything that is not: too long, not UTF-8, not JSON,
    nested past the recursion limit)."""
    if line is None:
        raise ValueError("line too long")
    try:
        return json.loads(line.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None


class SearchState:
    """The sidecar JSON-lines file: a header (format version, the spotter's key), then one line
    per file finished. :meth:`load` validates it line by line (a bad line is skipped and
    counted in one warning line; its file is searched again); :meth:`open` rewrites it
    atomically (:func:`kwsstream.safefile.atomic_write`: the file's mode and group kept, a
    symlink's target written) and keeps it open; :meth:`record` appends a line and flushes."""

    def __init__(self, path: Path, key: str, names: Sequence[str], say: Callable[[str], None]):
        self.path, self.key, self.names, self.say = path, key, set(names), say
        self.done: dict[str, FileResult] = {}
        self._handle: BinaryIO | None = None

    def header(self) -> dict[str, Any]:
        return {"kwsstream_search_state": STATE_VERSION, "spotter": self.key}

    def load(self) -> None:
        if not os.path.lexists(self.path):
            return
        try:
            with open_regular(self.path, MAX_STATE_BYTES, UsageError, "search state file") as handle:
                self._load_lines(_lines(handle))
        except UsageError as err:
            self.say(f"kwsstream: warning: unreadable search state ({err}); searching every file again")
        except OSError as err:
            self.say(f"kwsstream: warning: {self.path}: unreadable search state ({err.strerror or err}); "
                     "searching every file again")

    def _load_lines(self, lines: Iterator[bytes | None]) -> None:
        try:
            head = _parse_line(next(lines, b""))
        except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            head = None
        if head != self.header():
            self.say(f"kwsstream: note: {self.path} is the state of another search (other keyword set, "
                     "thresholds or format); searching every file again")
            return
        bad = 0
        for line in lines:
            try:
                entry = _entry_from_json(_parse_line(line), self.names)
            except (ValueError, TypeError):
                bad += 1
                continue
            self.done[entry.path] = entry
        if bad:
            self.say(f"kwsstream: warning: {self.path}: {bad} invalid line(s) ignored (those files are searched again)")

    def open(self) -> None:
        """Rewrite the file with the valid entries (atomically), then keep it open to append to."""
        def keep(handle: BinaryIO) -> None:
            self._handle = handle

        with atomic_write(self.path, UsageError, keep_open=keep) as handle:
            handle.write((json_line(self.header()) + "\n").encode("utf-8"))
            for entry in self.done.values():
                handle.write((json_line(entry.to_json()) + "\n").encode("utf-8"))

    def is_done(self, entry: FileEntry) -> bool:
        old = self.done.get(entry.path)
        return old is not None and old.size == entry.size and old.mtime_ns == entry.mtime_ns

    def record(self, result: FileResult) -> None:
        self.done[result.path] = result
        if self._handle is not None:
            self._handle.write((json_line(result.to_json()) + "\n").encode("utf-8"))
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
