"""Search an archive: many audio files through the one detection pipeline, into one ranked table.

    result = search("my.kws", ["archive/", "more/*.mp3", "@list.txt"], out="hits.csv", workers=4)

Each file goes through :meth:`kwsstream.spotter.Spotter.detect_file` (the pipeline ``detect``
uses: blocks read from the file, so a worker's memory stays flat in the length of its files) in
one small task per file that returns the file's hits. The hits of every file make one table
(keyword, file, start, end, cost, rank: the rank of the hit by cost within its keyword over the
whole search; ``top``: each keyword's N best), written as CSV or JSON lines by the suffix of
``out`` (JSON lines on stdout without ``out``).

**Where the tasks run.** In this process (``workers=1``, or Dask not installed and no
``workers`` asked), on a Dask ``LocalCluster`` of ``workers`` processes of one thread each, or on
an existing Dask cluster (``scheduler="tcp://host:8786"``; the files must lie at the same paths on
every worker). Dask (the ``search`` extra) is imported only then. The spotter travels once per
worker, not per file: a :class:`SpotterSpec` (the keyword set file's bytes, the encoder
override, the thresholds) is registered as a worker plugin that builds the Spotter into a
per-process cache keyed by the spec's content hash; each task names only that key and a path.
That side (spec, worker plugin, spotter cache, one file's task, the cluster) is
:mod:`kwsstream.searchworkers`; its names stay importable from here.

**Resumable.** With ``out``, a sidecar state file ``OUT.state.jsonl`` (JSON lines: a header
naming the spotter, then one line per file finished, written and flushed as it finishes, with
the file's path, size, mtime and hits) lets a rerun skip the files already searched, keyed by
path, size and mtime. It is validated line by line when loaded (a bad line: that file is searched
again) and never unpickled. A file that cannot be read (corrupt, empty, ...) is reported in one
line and skipped; it is recorded too, so a rerun does not read it again until it changes.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .searchworkers import (
    SEARCH_EXTRA_HINT, FileEntry, FileResult, SpotterSpec, dask_available, import_dask, run_on_dask, search_file,
    spotter_for,
)

__all__ = [
    "AUDIO_SUFFIXES", "COLUMNS", "PROGRESS_SECONDS", "STATE_SUFFIX", "STATE_VERSION", "Progress", "SearchResult",
    "SearchState", "expand_paths", "rank_hits", "search", "state_path", "write_table",
    # kwsstream.searchworkers's, importable from here as ever
    "SEARCH_EXTRA_HINT", "FileEntry", "FileResult", "SpotterSpec", "dask_available", "search_file", "spotter_for",
]

AUDIO_SUFFIXES = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd",
    ".caf", ".w64", ".rf64", ".voc", ".sd2", ".paf", ".sf", ".ircam", ".nist", ".sph", ".avr", ".htk",
    ".mat", ".pvf", ".xi", ".mpc", ".wve", ".svx", ".8svx",
})
"""File name endings searched for in folders and glob matches (what libsndfile reads); a file
named directly is searched whatever its name."""

STATE_SUFFIX = ".state.jsonl"
STATE_VERSION = 1
COLUMNS = ("keyword", "file", "start", "end", "cost", "rank")
PROGRESS_SECONDS = 10.0
"""How often the plain progress line (no tqdm) is printed."""


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


def _stat(path: str) -> FileEntry:
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


# --- progress ------------------------------------------------------------------------------------

class Progress:
    """Files done, audio hours heard and an ETA (by bytes): a tqdm bar on stderr when tqdm is
    installed, else a plain line every :data:`PROGRESS_SECONDS`. ``write`` prints a line
    without breaking the bar."""

    def __init__(self, files: int, total_bytes: int, enabled: bool, say: Callable[[str], None]):
        self.files, self.total_bytes, self.say = files, max(1, total_bytes), say
        self.done = self.done_bytes = 0
        self.hours = 0.0
        self.start = self._last = time.monotonic()
        self.bar = None
        self.enabled = enabled and files > 0
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=self.total_bytes, unit="B", unit_scale=True, file=sys.stderr,
                                desc=f"search 0/{files} files", dynamic_ncols=True)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            self.say(text)

    def update(self, size: int, seconds: float) -> None:
        self.done += 1
        self.done_bytes += max(0, size)
        self.hours += seconds / 3600
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description(f"search {self.done}/{self.files} files", refresh=False)
            self.bar.set_postfix_str(f"{self.hours:.2f} h audio", refresh=False)
            self.bar.update(max(0, size))
            return
        now = time.monotonic()
        if now - self._last >= PROGRESS_SECONDS or self.done == self.files:
            self._last = now
            elapsed = now - self.start
            fraction = min(1.0, self.done_bytes / self.total_bytes)
            eta = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
            eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
            self.say(f"search: {self.done}/{self.files} files, {self.hours:.2f} h audio, "
                     f"{100 * fraction:.0f} %, ETA {eta_text}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- the search ----------------------------------------------------------------------------------

@dataclass
class SearchResult:
    """What a search did. ``rows``: the table (see :data:`COLUMNS`) when it ran to the end;
    ``searched``: files searched in this run; ``resumed``: files skipped as already searched;
    ``bad``: one line per file skipped for an error; ``complete``: False when stopped early."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    searched: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    seconds: float = 0.0
    wall: float = 0.0
    complete: bool = True
    workers: int = 1


def rank_hits(results: Iterable[FileResult], names: Sequence[str], top: int | None = None) -> list[dict[str, Any]]:
    """The table: every hit with its rank by cost within its keyword (ties: file, start), the
    keyword set's order, then rank; ``top``: each keyword's N best."""
    by_keyword: dict[str, list[tuple[float, str, float, float]]] = {n: [] for n in names}
    for r in results:
        for keyword, start, end, cost in r.hits:
            by_keyword.setdefault(keyword, []).append((cost, r.path, start, end))
    rows = []
    for keyword, hits in by_keyword.items():
        hits.sort()
        for rank, (cost, path, start, end) in enumerate(hits[:top] if top else hits, 1):
            rows.append({"keyword": keyword, "file": path, "start": start, "end": end, "cost": cost, "rank": rank})
    return rows


def write_table(rows: list[dict[str, Any]], out: str | Path | None) -> None:
    """CSV (``.csv``) or JSON lines (anything else) at ``out``, written atomically; JSON lines on
    stdout when ``out`` is None."""
    if out is None:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False), flush=False)
        sys.stdout.flush()
        return
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        if out.suffix.lower() == ".csv":
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        else:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)


def search(
    keyset: str | Path | SpotterSpec,
    paths: Sequence[str],
    *,
    out: str | Path | None = None,
    top: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    stop_after: int | None = None,
) -> SearchResult:
    """Search the audio files of ``paths`` (see :func:`expand_paths`) for the keywords of
    ``keyset`` (a keyword set file, or a :class:`SpotterSpec` for threshold/encoder overrides).

    Args:
        out: the table's file (``.csv``: CSV, else JSON lines) and the base of the resumable state
            file (``None``: JSON lines on stdout, no state).
        top: keep each keyword's ``top`` best hits.
        workers: worker processes of a local Dask cluster (``1``: in this process; ``None``: one
            per CPU, at most one per file, in this process when Dask is not installed).
        scheduler: address of an existing Dask scheduler (``workers`` is then ignored).
        progress: show the progress bar / lines on stderr.
        say: where the one-line reports go (default: stderr).
        stop_after: for tests: stop (as an interruption would) once this many files are done
            in this run; the table is not written, the state file holds what was done.
    """
    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    if top is not None and top < 1:
        raise UsageError(f"--top must be at least 1, got {top}")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if scheduler is not None and workers is not None and workers > 1:
        raise UsageError("--workers and --scheduler do not go together: a cluster has its own workers")
    spec = keyset if isinstance(keyset, SpotterSpec) else SpotterSpec.from_file(keyset)
    if scheduler is not None or (workers or 1) > 1:
        import_dask("--scheduler" if scheduler is not None else f"--workers {workers}")
    files = expand_paths(paths, say)
    if not files:
        raise UsageError("no audio files to search in " + " ".join(paths))
    names = _keyword_names(spec)
    if out is not None and Path(out).parent != Path("") and not Path(out).parent.is_dir():
        raise UsageError(f"{out}: folder {Path(out).parent} does not exist")
    state = SearchState(state_path(out) if out is not None else Path(os.devnull), spec.key, names, say)
    if out is not None:
        state.load()
    entries = [_stat(f) for f in files]
    todo = [e for e in entries if not state.is_done(e)]
    result = SearchResult(resumed=[e.path for e in entries if state.is_done(e)])
    if result.resumed:
        say(f"kwsstream: resuming: {len(result.resumed)} of {len(entries)} file(s) already searched "
            f"({state.path})")
    if workers is None and scheduler is None:
        workers = min(os.cpu_count() or 1, len(todo)) if dask_available() else 1
    result.workers = max(1, workers or 1)
    if out is not None:
        state.open()
    bar = Progress(len(todo), sum(max(0, e.size) for e in todo), progress, say)
    start = time.monotonic()

    def finished(r: FileResult) -> bool:
        """Record one file; True when the search should stop (``stop_after``)."""
        if r.error is not None:
            line = f"kwsstream: skipped: {r.error}"
            result.bad.append(line)
            bar.write(line)
        state.record(r)
        result.searched.append(r.path)
        result.seconds += r.seconds
        bar.update(r.size, r.seconds)
        return stop_after is not None and len(result.searched) >= stop_after

    def failed(entry: FileEntry, err: BaseException) -> None:  # not recorded: searched again on a rerun
        line = f"kwsstream: skipped: {entry.path}: {type(err).__name__}: {err}"
        result.bad.append(line)
        bar.write(line)
        bar.update(entry.size, 0.0)

    try:
        if todo and scheduler is None and result.workers == 1:
            spotter = spotter_for(spec)
            for entry in todo:
                try:
                    r = search_file(spotter, entry.path, entry.size, entry.mtime_ns)
                except Exception as err:  # noqa: BLE001  (one bad file is never fatal)
                    failed(entry, err)
                    continue
                if finished(r):
                    result.complete = False
                    break
        elif todo:
            result.complete = run_on_dask(spec, todo, scheduler, result.workers, finished, failed, say)
    finally:
        bar.close()
        state.close()
    result.wall = time.monotonic() - start
    if result.complete:
        wanted = set(files)
        result.rows = rank_hits((r for p, r in state.done.items() if p in wanted), names, top)
        write_table(result.rows, out)
    return result


def _keyword_names(spec: SpotterSpec) -> list[str]:
    from .keyset import load_keyset

    with tempfile.TemporaryDirectory(prefix="kwsstream-search-") as folder:
        path = Path(folder) / "set.kws"
        path.write_bytes(spec.keyset_bytes)
        return [kw.name for kw in load_keyset(path).keywords]
