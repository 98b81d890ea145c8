"""Where :mod:`kwsstream.search`'s tasks run: what travels to a worker and what runs there.

The spotter travels once per worker, not per file: a :class:`SpotterSpec` (the keyword set
file's bytes, the encoder override, the thresholds) builds the Spotter into a per-process cache
keyed by the spec's content hash (:func:`spotter_for`, also what the in-process search uses);
each task names only that key and a path, and returns the file's :class:`FileResult`.

* **Local workers** (:func:`run_local`, ``--workers N``): a
  :class:`concurrent.futures.ProcessPoolExecutor` of ``spawn``-ed processes (at most one per
  file), talking to this process over pipes: no network port is opened, so no other user of the
  machine can reach them. The spec is each worker's initialiser argument. Workers ignore Ctrl-C;
  this process stops them (exit 130, one line, no worker tracebacks).
* **A Dask cluster** (:func:`run_on_dask`, ``--scheduler tcp://HOST:PORT`` or ``tls://...``):
  the spec is registered as a worker plugin. Whoever can reach a Dask scheduler can run code on
  its workers: a ``tcp://`` cluster must be on a network only its users reach; ``tls://``
  (with ``--tls-ca-file``, ``--tls-cert``, ``--tls-key``: Dask's mutual TLS) authenticates both
  ends. Dask (the ``search`` extra) is imported only there, never when this module is imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
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
        """The spec of a keyword set file, read once (a regular file, bounded) and checked here
        first, so a bad one is refused once, before any worker starts; the bytes checked are the
        bytes the workers get."""
        from .keyset import read_keyset_file

        path = Path(keyset)
        data, keyset_ = read_keyset_file(path)
        names = [kw.name for kw in keyset_.keywords]
        for name in thresholds or {}:
            if name not in names:
                raise UsageError(f"threshold given for unknown keyword {name!r}")
        return cls(data, str(path), encoder, tuple(sorted((thresholds or {}).items())), threads)

    def keyset(self):
        """The keyword set of :attr:`keyset_bytes`."""
        from .keyset import load_keyset_bytes

        return load_keyset_bytes(self.keyset_bytes, self.keyset_name)

    @property
    def key(self) -> str:
        """Content hash: the keyword set's bytes, the encoder override and the thresholds."""
        h = hashlib.sha256(self.keyset_bytes)
        h.update(json.dumps([self.encoder, self.thresholds]).encode())
        return h.hexdigest()

    def build(self):
        """The Spotter (in the process that calls it)."""
        from .encoders import load_encoder
        from .spotter import Spotter

        keyset = self.keyset()
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


# --- local worker processes ------------------------------------------------------------------------

_INIT_ERRORS: dict[str, str] = {}
"""A worker process's one-line error of building its spotter, by spec key (raised by each task)."""


def max_workers() -> int:
    """The most local workers ``--workers`` may ask for: four per CPU."""
    return 4 * (os.cpu_count() or 1)


def _ignore_sigint() -> None:
    """Ctrl-C is the parent's to handle: a worker never prints a traceback for it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _init_worker(spec: SpotterSpec) -> None:
    """A local worker's initialiser: ignore Ctrl-C, build the spotter once (its error is kept and
    raised by every task, so the parent reports it in one line)."""
    _ignore_sigint()
    try:
        spotter_for(spec)
    except KwsError as err:
        _INIT_ERRORS[spec.key] = str(err)


def _pool_task(key: str, path: str, size: int, mtime_ns: int) -> FileResult:
    if key in _INIT_ERRORS:
        raise UsageError(_INIT_ERRORS[key])
    return _task(key, path, size, mtime_ns)


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while worker processes are started (they inherit it from the start, before
    their initialiser runs); a no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def run_local(spec: SpotterSpec, todo: list[FileEntry], workers: int,
              finished: Callable[[FileResult], bool], failed: Callable[[FileEntry, BaseException], None]) -> bool:
    """The tasks on ``workers`` local processes (at most one per file): a ``spawn``
    :class:`~concurrent.futures.ProcessPoolExecutor`, pipes only, no network port. False when
    stopped early (``finished`` said so). On any exception (Ctrl-C included) the workers are
    stopped before it goes on."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    before = {p.pid for p in multiprocessing.active_children()}
    pool = ProcessPoolExecutor(max_workers=max(1, min(workers, len(todo))), mp_context=context,
                               initializer=_init_worker, initargs=(spec,))
    stopped = False
    try:
        with sigint_ignored():
            futures = {pool.submit(_pool_task, spec.key, e.path, e.size, e.mtime_ns): e for e in todo}
        for future in as_completed(futures):
            entry = futures[future]
            try:
                r = future.result()
            except KwsError:
                raise
            except Exception as err:  # noqa: BLE001  (a task or worker that died: reported, searched again on a rerun)
                failed(entry, err)
                continue
            if finished(r):
                stopped = True
                break
    except BaseException:
        for child in multiprocessing.active_children():
            if child.pid not in before:
                child.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True, cancel_futures=True)
    return not stopped


# --- a Dask cluster ------------------------------------------------------------------------------

SCHEDULER_PATTERN = re.compile(r"(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)"
                               r":([0-9]{1,5})")
CONNECT_SECONDS = 10
"""How long connecting to a scheduler may take before it is reported as unreachable."""


@dataclass(frozen=True)
class TlsFiles:
    """Dask's mutual TLS for a ``tls://`` scheduler: the CA that signed the cluster's
    certificates, and this client's certificate and key (PEM files)."""

    ca_file: str
    cert: str
    key: str


def check_scheduler(address: str, tls: TlsFiles | None) -> None:
    """``--scheduler`` and the TLS files, refused in one line (:class:`UsageError`): a
    ``tcp://HOST:PORT`` or ``tls://HOST:PORT`` address (port 1 to 65535); ``tls://`` needs all
    three TLS files, ``tcp://`` none."""
    match = SCHEDULER_PATTERN.fullmatch(address) if isinstance(address, str) else None
    if match is None or not 1 <= int(match.group(3)) <= 65535:
        raise UsageError(f"--scheduler {address!r} is not a Dask scheduler address (tcp://HOST:PORT or tls://HOST:PORT)")
    if match.group(1) == "tls" and tls is None:
        raise UsageError(f"--scheduler {address}: a tls:// scheduler needs --tls-ca-file, --tls-cert and --tls-key")
    if match.group(1) == "tcp" and tls is not None:
        raise UsageError(f"--scheduler {address}: the TLS files need a tls:// scheduler address")
    for option, path in (() if tls is None else (("--tls-ca-file", tls.ca_file), ("--tls-cert", tls.cert),
                                                    ("--tls-key", tls.key))):
        if not os.path.isfile(path):
            raise UsageError(f"{option} {path}: no such file")


def dask_available() -> bool:
    return importlib.util.find_spec("distributed") is not None and importlib.util.find_spec("dask") is not None


def import_dask(why: str):
    try:
        import distributed
    except ImportError:
        raise UsageError(f"{why} needs Dask distributed, which is not installed: {SEARCH_EXTRA_HINT}") from None
    return distributed


def connect_scheduler(scheduler: str, tls: TlsFiles | None):
    """A Dask client of the scheduler (checked by :func:`check_scheduler`), or one
    :class:`UsageError` line within :data:`CONNECT_SECONDS` (Dask's own log lines held back
    meanwhile). The caller closes it."""
    import logging

    import_dask("--scheduler")
    check_scheduler(scheduler, tls)
    from distributed import Client
    from distributed.security import Security

    security = None if tls is None else Security(tls_ca_file=tls.ca_file, tls_client_cert=tls.cert,
                                                 tls_client_key=tls.key, require_encryption=True)
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return Client(scheduler, timeout=f"{CONNECT_SECONDS}s", security=security)
    except (OSError, TimeoutError, ValueError) as err:
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise UsageError(f"--scheduler {scheduler}: cannot connect ({reason})") from None
    finally:
        logger.setLevel(level)


def run_on_dask(spec: SpotterSpec, todo: list[FileEntry], client,
                finished: Callable[[FileResult], bool], failed: Callable[[FileEntry, BaseException], None]) -> bool:
    """The tasks on the Dask cluster of ``client`` (:func:`connect_scheduler`); False when
    stopped early."""
    from distributed import as_completed

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
