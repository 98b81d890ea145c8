"""The Dask side of :mod:`kwsstream.search`: what travels to the workers and what runs there.

The spotter travels once per worker, not per file: a :class:`SpotterSpec` (the keyword set file's
bytes, the encoder override, the thresholds) is registered as a worker plugin that builds the
Spotter into a per-process cache keyed by the spec's content hash (:func:`spotter_for`, also what
the in-process search uses); each task names only that key and a path, and returns the file's
:class:`FileResult`. Dask (the ``search`` extra) is imported only inside :func:`import_dask`,
the plugin and :func:`run_on_dask`, never when this module is imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import KwsError, UsageError

SEARCH_EXTRA_HINT = "pip install 'kwsstream[search]'"


# --- the spotter, sent once per worker ---------------------------------------------------------

@dataclass(frozen=True)
class SpotterSpec:
    """What a worker needs to build the Spotter: the keyword set file's bytes, the encoder
    override (``--encoder``: an ONNX model's path), threshold overrides and encoder threads."""

    keyset_bytes: bytes
    keyset_name: str
    encoder: str | None = None
    thresholds: tuple[tuple[str, float], ...] = ()
    threads: int | None = None

    @classmethod
    def from_file(cls, keyset: str | Path, *, encoder: str | None = None,
                  thresholds: Mapping[str, float] | None = None, threads: int | None = None) -> SpotterSpec:
        """The spec of a keyword set file; the set is loaded and checked here first, so a bad one
        is refused once, before any worker starts."""
        from .keyset import load_keyset

        path = Path(keyset)
        names = [kw.name for kw in load_keyset(path).keywords]
        for name in thresholds or {}:
            if name not in names:
                raise UsageError(f"threshold given for unknown keyword {name!r}")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise UsageError(f"{path}: cannot be read ({err.strerror or err})") from None
        return cls(data, str(path), encoder, tuple(sorted((thresholds or {}).items())), threads)

    @property
    def key(self) -> str:
        """Content hash: the keyword set's bytes, the encoder override and the thresholds."""
        h = hashlib.sha256(self.keyset_bytes)
        h.update(json.dumps([self.encoder, self.thresholds]).encode())
        return h.hexdigest()

    def build(self):
        """The Spotter (in the process that calls it)."""
        from .encoders import load_encoder
        from .keyset import load_keyset
        from .spotter import Spotter

        with tempfile.TemporaryDirectory(prefix="kwsstream-search-") as folder:
            path = Path(folder) / Path(self.keyset_name).name
            path.write_bytes(self.keyset_bytes)
            keyset = load_keyset(path)
        encoder = load_encoder(self.encoder, threads=self.threads) if self.encoder else None
        return Spotter(keyset, encoder, thresholds=dict(self.thresholds) or None, threads=self.threads)


_SPOTTERS: dict[str, Any] = {}
"""This process's spotters by :attr:`SpotterSpec.key` (one per worker process)."""


def spotter_for(spec: SpotterSpec):
    """The cached Spotter of ``spec`` in this process, built on first use."""
    key = spec.key
    if key not in _SPOTTERS:
        from .matcher import limit_blas_threads

        limit_blas_threads()
        _SPOTTERS[key] = spec.build()
    return _SPOTTERS[key]


def _worker_plugin(spec: SpotterSpec):
    """A Dask ``WorkerPlugin`` that builds the spotter on each worker once (also on workers that
    join later). Made here so that ``distributed`` is imported only when a cluster is used."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class SpotterPlugin(WorkerPlugin):
        def __init__(self, spec: SpotterSpec):
            self.spec = spec

        def setup(self, worker) -> None:
            spotter_for(self.spec)

    return SpotterPlugin(spec)


# --- one file ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileResult:
    """One file searched: its identity (path, size, mtime), seconds of audio heard, its hits as
    ``(keyword, start, end, cost)`` rows, or the one-line error that made it skipped."""

    path: str
    size: int
    mtime_ns: int
    seconds: float = 0.0
    hits: tuple[tuple[str, float, float, float], ...] = ()
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns, "seconds": round(self.seconds, 3),
                "hits": [list(h) for h in self.hits], "error": self.error}


def search_file(spotter, path: str, size: int, mtime_ns: int) -> FileResult:
    """The hits of one file (``Spotter.detect_file``, the pipeline ``detect`` uses). A file the
    audio boundary refuses gives a result with ``error`` set; other exceptions propagate."""
    pipeline = spotter.detect_file(path)
    hits = []
    try:
        for event in pipeline:
            d = event.to_dict()
            hits.append((d["keyword"], d["start"], d["end"], d["cost"]))
    except KwsError as err:
        return FileResult(path, size, mtime_ns, error=str(err))
    seconds = pipeline.summary.seconds if pipeline.summary is not None else 0.0
    return FileResult(path, size, mtime_ns, seconds, tuple(hits))


def _task(key: str, path: str, size: int, mtime_ns: int) -> FileResult:
    """A Dask task: one file with this worker's cached spotter (put there by the plugin)."""
    spotter = _SPOTTERS.get(key)
    if spotter is None:
        raise RuntimeError("the kwsstream search plugin did not set up a spotter on this worker")
    return search_file(spotter, path, size, mtime_ns)


# --- a file to search ----------------------------------------------------------------------------

@dataclass(frozen=True)
class FileEntry:
    path: str  # absolute
    size: int
    mtime_ns: int


# --- the cluster -------------------------------------------------------------------------------

def dask_available() -> bool:
    return importlib.util.find_spec("distributed") is not None and importlib.util.find_spec("dask") is not None


def import_dask(why: str):
    try:
        import distributed
    except ImportError:
        raise UsageError(f"{why} needs Dask distributed, which is not installed: {SEARCH_EXTRA_HINT}") from None
    return distributed


def run_on_dask(spec: SpotterSpec, todo: list[FileEntry], scheduler: str | None, workers: int,
                finished: Callable[[FileResult], bool], failed: Callable[[FileEntry, BaseException], None],
                say: Callable[[str], None]) -> bool:
    """The tasks on a Dask cluster (local or at ``scheduler``); False when stopped early."""
    import logging

    import_dask("--scheduler" if scheduler is not None else f"--workers {workers}")
    from distributed import Client, LocalCluster, as_completed

    if scheduler is not None:
        cluster = None
        client = Client(scheduler, timeout="30s")
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        replies = client.register_plugin(_worker_plugin(spec), name=f"kwsstream-spotter-{spec.key[:16]}")
        for reply in (replies or {}).values():
            if isinstance(reply, dict) and reply.get("status") == "error":
                raise UsageError(f"a worker could not load the keyword set: {reply.get('exception')}")
        futures = {client.submit(_task, spec.key, e.path, e.size, e.mtime_ns, pure=False): e
                   for e in todo}
        stopped = False
        for future in as_completed(futures):
            entry = futures[future]
            try:
                r = future.result()
            except KwsError:
                raise
            except Exception as err:  # noqa: BLE001  (a task that died: reported, searched again on a rerun)
                failed(entry, err)
                continue
            if finished(r):
                stopped = True
                break
        if stopped:
            client.cancel(list(futures))
        return not stopped
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
