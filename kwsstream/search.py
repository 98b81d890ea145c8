"""Search an archive: many audio files through the one detection pipeline, into one ranked table.

    result = search("my.kws", ["archive/", "more/*.mp3", "@list.txt"], out="hits.csv", workers=4)

Each file goes through :meth:`kwsstream.spotter.Spotter.detect_file` (the pipeline ``detect``
uses: blocks read from the file, so a worker's memory stays flat in the length of its files) in
one small task per file that returns the file's hits. The hits of every file make one table
(keyword, file, start, end, cost, rank: the rank of the hit by cost within its keyword over the
whole search; ``top``: each keyword's N best), written as CSV or JSON lines by the suffix of
``out`` (JSON lines on stdout without ``out``).

**Where the tasks run.** In this process (``workers=1``), on ``workers`` local processes
(:func:`kwsstream.searchworkers.run_local`: a ``spawn`` process pool over pipes, no network
port), or on an existing Dask cluster (``scheduler="tls://host:8786"`` with ``tls`` files, or
``tcp://`` on a network only its users reach; the files must lie at the same paths on every
worker). Dask (the ``search`` extra) is imported only for a cluster. The spotter travels once per
worker, not per file: a :class:`SpotterSpec` (the keyword set file's bytes, the encoder
override, the thresholds) builds the Spotter into a per-process cache keyed by the spec's
content hash; each task names only that key and a path. That side (spec, spotter cache, one
file's task, the pool, the cluster) is :mod:`kwsstream.searchworkers`.

**Resumable** (:mod:`kwsstream.searchstate`, which also expands the paths). With ``out``, a
sidecar state file ``OUT.state.jsonl`` (JSON lines: a header
naming the spotter, then one line per file finished, written and flushed as it finishes, with
the file's path, size, mtime and hits) lets a rerun skip the files already searched, keyed by
path, size and mtime. It is validated line by line when loaded (a bad line: that file is searched
again) and never unpickled. A file that cannot be read (corrupt, empty, ...) is reported in one
line and skipped; it is recorded too, so a rerun does not read it again until it changes.

**The files written** (the table, the state file) are replaced as keyword sets are
(:func:`kwsstream.safefile.atomic_write`: an unpredictable temporary name in the target's
folder, the target's mode and group kept, a symlink's target written), and never one that is an
input of the search (the keyword set, an ``@list``, an audio file). File names that are not
UTF-8 are written back byte for byte (CSV) or as JSON escapes (JSON lines).
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .safefile import atomic_write, existing_regular, real_target
from .searchstate import SearchState, expand_paths, file_entry, json_line, state_path
from .searchworkers import (
    FileEntry, FileResult, SpotterSpec, TlsFiles, check_scheduler, connect_scheduler, import_dask, max_workers,
    run_local, run_on_dask, search_file, spotter_for,
)

__all__ = ["COLUMNS", "PROGRESS_SECONDS", "Progress", "SearchResult", "rank_hits", "search", "write_table"]

COLUMNS = ("keyword", "file", "start", "end", "cost", "rank")
PROGRESS_SECONDS = 10.0
"""How often the plain progress line (no tqdm) is printed."""


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
    """CSV (``.csv``) or JSON lines (anything else) at ``out``, written atomically
    (:func:`kwsstream.safefile.atomic_write`); JSON lines on stdout when ``out`` is None."""
    if out is None:
        for row in rows:
            print(json_line(row), flush=False)
        sys.stdout.flush()
        return
    out = Path(out)
    with atomic_write(out, UsageError) as handle:
        if out.suffix.lower() == ".csv":
            text = io.TextIOWrapper(handle, encoding="utf-8", errors="surrogateescape", newline="")
            writer = csv.DictWriter(text, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
            text.flush()
            text.detach()  # the handle stays atomic_write's
        else:
            for row in rows:
                handle.write((json_line(row) + "\n").encode("utf-8"))


def _check_outputs(outputs: list[Path], inputs: dict[tuple[int, int], str]) -> None:
    """An output (the table or its state file) is a regular file or none yet (never a device or
    a FIFO), and not one of the search's inputs (the very file, through any name or link):
    writing it would destroy what is being searched."""
    for out in outputs:
        st = existing_regular(real_target(out), out, UsageError)
        if st is None:
            continue
        what = inputs.get((st.st_dev, st.st_ino))
        if what is not None:
            raise UsageError(f"--out {out}: is {what} of this search; write the table elsewhere")


def _input_files(spec: SpotterSpec, paths: Sequence[str], entries: list[FileEntry]) -> dict[tuple[int, int], str]:
    """(device, inode) -> what it is, of every file the search reads."""
    named = [(spec.keyset_name, "the keyword set")]
    named += [(p[1:], "a list of paths") for p in paths if p.startswith("@")]
    named += [(e.path, "an audio file") for e in entries]
    found: dict[tuple[int, int], str] = {}
    for path, what in named:
        try:
            st = os.stat(path)
        except OSError:
            continue
        found.setdefault((st.st_dev, st.st_ino), f"{what} ({path})" if what != "an audio file" else what)
    return found


def search(
    keyset: str | Path | SpotterSpec,
    paths: Sequence[str],
    *,
    out: str | Path | None = None,
    top: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    tls: TlsFiles | None = None,
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
        workers: local worker processes (``1``: in this process; ``None``: one per CPU; never more
            than files to search; at most :func:`kwsstream.searchworkers.max_workers`).
        scheduler: address of an existing Dask scheduler, ``tcp://HOST:PORT`` or
            ``tls://HOST:PORT`` (then with ``tls``).
        tls: Dask's mutual TLS files for a ``tls://`` scheduler.
        progress: show the progress bar / lines on stderr.
        say: where the one-line reports go (default: stderr).
        stop_after: for tests: stop (as an interruption would) once this many files are done
            in this run; the table is not written, the state file holds what was done.
    """
    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    if top is not None and top < 1:
        raise UsageError(f"--top must be at least 1, got {top}")
    if workers is not None and not 1 <= workers <= max_workers():
        raise UsageError(f"--workers must be from 1 to {max_workers()} (4 per CPU), got {workers}")
    if scheduler is not None and workers is not None and workers > 1:
        raise UsageError("--workers and --scheduler do not go together: a cluster has its own workers")
    if scheduler is not None:
        import_dask("--scheduler")
        check_scheduler(scheduler, tls)
    elif tls is not None:
        raise UsageError("the TLS files are for a tls:// --scheduler")
    spec = keyset if isinstance(keyset, SpotterSpec) else SpotterSpec.from_file(keyset)
    files = expand_paths(paths, say)
    if not files:
        raise UsageError("no audio files to search in " + " ".join(paths))
    names = [kw.name for kw in spec.keyset().keywords]
    if out is not None and not real_target(out).parent.is_dir():
        raise UsageError(f"{out}: folder {real_target(out).parent} does not exist")
    entries = [file_entry(f) for f in files]
    if out is not None:
        _check_outputs([Path(out), state_path(out)], _input_files(spec, paths, entries))
    state = SearchState(state_path(out) if out is not None else Path(os.devnull), spec.key, names, say)
    if out is not None:
        state.load()
    todo = [e for e in entries if not state.is_done(e)]
    result = SearchResult(resumed=[e.path for e in entries if state.is_done(e)])
    if result.resumed:
        say(f"kwsstream: resuming: {len(result.resumed)} of {len(entries)} file(s) already searched "
            f"({state.path})")
    if workers is None and scheduler is None:
        workers = os.cpu_count() or 1
    result.workers = max(1, min(workers or 1, len(todo)))
    client = connect_scheduler(scheduler, tls) if todo and scheduler is not None else None
    try:
        if out is not None:
            state.open()
    except BaseException:
        if client is not None:
            client.close()
        raise
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
        elif todo and scheduler is None:
            result.complete = run_local(spec, todo, result.workers, finished, failed)
        elif todo:
            result.complete = run_on_dask(spec, todo, client, finished, failed)
    finally:
        bar.close()
        state.close()
        if client is not None:
            client.close()
    result.wall = time.monotonic() - start
    if result.complete:
        wanted = set(files)
        result.rows = rank_hits((r for p, r in state.done.items() if p in wanted), names, top)
        write_table(result.rows, out)
    return result
