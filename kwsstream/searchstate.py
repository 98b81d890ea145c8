"""Which files an archive search reads, and which of them it has already searched.

* **Which files** (:func:`expand_paths`): folders (recursively, audio suffixes only), globs,
  ``@list.txt`` files and plain paths, in a stable order, each once.
* **The state file** (:class:`SearchState`): ``OUT.state.jsonl`` beside the result table, a
  header naming the spotter, then one JSON line per file finished (path, size, mtime, hits),
  written and flushed as each file finishes, so a rerun skips the files already searched. Loaded
  line by line with every value checked (a bad line: that file is searched again); never
  unpickled.

:mod:`kwsstream.search` runs the search and re-exports these names.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import UsageError
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

# --- which files ---------------------------------------------------------------------------------


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in AUDIO_SUFFIXES:
                yield Path(root) / name


def expand_paths(items: Sequence[str], say: Callable[[str], None] = lambda _: None) -> list[str]:
    """The audio files of ``items``: folders (recursive, files with an audio suffix), globs
    (``**`` spans folders; matched folders are walked, matched files kept if their suffix is an
    audio one), ``@list.txt`` (one item of these kinds a line, ``#`` comments) and files named
    directly (searched whatever their name; a missing one is reported later, as a bad file).
    Absolute paths, each once, sorted."""
    found: dict[str, None] = {}

    def add(path: Path) -> None:
        found.setdefault(os.path.abspath(path), None)

    def one(item: str, depth: int = 0) -> None:
        if item.startswith("@") and depth == 0:
            listing = Path(item[1:])
            try:
                lines = listing.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                raise UsageError(f"{listing}: cannot read the list of paths ({getattr(err, 'strerror', None) or err})") from None
            for line in lines:
                line = line.strip()
                if line and not line.startswith("#"):
                    one(line, depth + 1)
            return
        path = Path(item)
        if path.is_dir():
            for f in _walk(path):
                add(f)
        elif glob.has_magic(item) and not path.exists():
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                say(f"kwsstream: warning: {item}: matches no file")
            for m in matches:
                if Path(m).is_dir():
                    for f in _walk(Path(m)):
                        add(f)
                elif Path(m).suffix.lower() in AUDIO_SUFFIXES:
                    add(Path(m))
        else:
            add(path)

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
    if not isinstance(d["path"], str) or not d["path"]:
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
        if not (isinstance(h, list) and len(h) == 4 and h[0] in names and all(_finite(v) for v in h[1:])):
            raise ValueError("bad hit")
        hits.append((h[0], float(h[1]), float(h[2]), float(h[3])))
    return FileResult(d["path"], d["size"], d["mtime_ns"], float(d["seconds"]), tuple(hits), d["error"])


class SearchState:
    """The sidecar JSON-lines file: a header (format version, the spotter's key), then one line
    per file finished. :meth:`load` validates it; :meth:`record` appends a line and flushes."""

    def __init__(self, path: Path, key: str, names: Sequence[str], say: Callable[[str], None]):
        self.path, self.key, self.names, self.say = path, key, set(names), say
        self.done: dict[str, FileResult] = {}
        self._handle: io.TextIOBase | None = None

    def header(self) -> dict[str, Any]:
        return {"kwsstream_search_state": STATE_VERSION, "spotter": self.key}

    def load(self) -> None:
        if not self.path.exists():
            return
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            self.say(f"kwsstream: warning: {self.path}: unreadable search state ({err}); searching every file again")
            return
        try:
            head = json.loads(lines[0]) if lines else None
        except ValueError:
            head = None
        if head != self.header():
            self.say(f"kwsstream: note: {self.path} is the state of another search (other keyword set, "
                     "thresholds or format); searching every file again")
            return
        bad = 0
        for line in lines[1:]:
            try:
                entry = _entry_from_json(json.loads(line), self.names)
            except ValueError:  # json.JSONDecodeError is a ValueError
                bad += 1
                continue
            self.done[entry.path] = entry
        if bad:
            self.say(f"kwsstream: warning: {self.path}: {bad} invalid line(s) ignored (those files are searched again)")

    def open(self) -> None:
        """Rewrite the file with the valid entries (atomically), then append to it."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(self.header()) + "\n")
            for entry in self.done.values():
                f.write(json.dumps(entry.to_json(), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._handle = open(self.path, "a", encoding="utf-8")

    def is_done(self, entry: FileEntry) -> bool:
        old = self.done.get(entry.path)
        return old is not None and old.size == entry.size and old.mtime_ns == entry.mtime_ns

    def record(self, result: FileResult) -> None:
        self.done[result.path] = result
        if self._handle is not None:
            self._handle.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
