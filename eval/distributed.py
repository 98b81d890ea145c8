"""The eval's heavy stages on workers: ``python -m eval run ... --workers N | --scheduler ADDRESS``.

Two engines run the same tasks:

* ``--workers N`` (N >= 2): N local processes, a ``spawn``
  :class:`~concurrent.futures.ProcessPoolExecutor` (:class:`PoolEngine`): pipes only, no
  network port, so no other local user can reach the workers (as ``kwsstream search --workers``,
  :func:`kwsstream.searchworkers.run_local`); Dask is not needed;
* ``--scheduler tcp://host:8786``: an existing Dask cluster (:class:`DaskEngine`, the ``search``
  extra), as ``kwsstream search --scheduler``.

With neither (or ``--workers 1``) nothing here runs and the stages stay in this process.

What runs on the workers is the single-process code itself, so the files and numbers are the same:

* ``encode``: tasks of a few recordings each, :func:`eval.representations.encode_one` (the
  encoder is opened once per worker process and kept); each writes its recordings' per-layer files
  into the shared cache, atomically, exactly as the in-process stage does;
* per layer (``load``, ``distances``, ``dtw``, ``anisotropy``): one task per layer,
  :func:`eval.sweep.score_layers` on that layer alone, which writes the layer's scores and
  anisotropy into the shared cache and returns its rows; the rows come back in layer order.

The cache folder is shared by every worker and this process: on a Dask cluster, ``--cache`` (or
``--out``) must be a path that every machine mounts at the same place (NFS, a cluster file
system), and so must the corpus and the model. Before any task runs there, every worker is asked
to read a probe file written here into the cache folder, to write its own, and to see the
corpus's first clip and the model; a worker that cannot is a :class:`~kwsstream.errors.UsageError`
naming it and the path (local processes see this process's files). Threads: each task's
onnxruntime, BLAS and numba threads are the worker host's physical cores divided by its workers
(on a cluster: by the Dask threads on that host; ``--threads`` overrides); local workers with
fewer layers than workers give each layer's task more. Memory: a layer task holds one layer's
sentence frames in float32 plus one block of products (about 1 GB for 1000 sentences of
1024-wide frames), per worker thread. ``timings.json``: the stage seconds are the workers'
summed; ``layers (wall, on workers)`` is the per-layer stages' wall time.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kwsstream.errors import UsageError

log = logging.getLogger(__name__)

PROBE_PREFIX = ".dask-probe-"
CONNECT_TIMEOUT = "30s"
MAX_ITEMS_PER_TASK = 16
TASKS_PER_WORKER = 8
"""Encode tasks carry up to 16 recordings (a task's cost is a few ms, MFCC's per recording as
much) and each worker gets at least 8 tasks, so the load stays balanced."""


@dataclass(frozen=True)
class ClusterOptions:
    """Where the heavy stages run.

    Attributes:
        workers: local worker processes (0 or 1 and no ``scheduler``: all in this process).
        scheduler: address of an existing Dask scheduler, e.g. ``tcp://10.0.0.5:8786``.
        threads: threads per task (``None``: the host's physical cores / its workers).
    """

    workers: int = 0
    scheduler: str | None = None
    threads: int | None = None

    @property
    def enabled(self) -> bool:
        return self.scheduler is not None or self.workers > 1


# --- what runs on a worker -----------------------------------------------------------------------

def _limit_threads(threads: int):
    """A context limiting BLAS to ``threads`` and numba's parallel loops to as many."""
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    return threadpool_limits(limits=threads, user_api="blas")


def _host_facts(cache: str, probe: str, token: str, must_see: Sequence[str]) -> dict[str, Any]:
    """On a worker: its host, physical cores, and what it cannot see or write (``problems``)."""
    from kwsstream.onnxsession import physical_cores

    problems = []
    try:
        seen = (Path(cache) / probe).read_text(encoding="utf-8")
        if seen != token:
            problems.append(f"the cache folder {cache} holds another run's probe (not the same folder)")
    except OSError as error:
        problems.append(f"cannot read the cache folder {cache} ({error.strerror or error})")
    if not problems:
        mine = Path(cache) / f"{probe}.{socket.gethostname()}.{os.getpid()}"
        try:
            mine.write_text(token, encoding="utf-8")
            mine.unlink()
        except OSError as error:
            problems.append(f"cannot write into the cache folder {cache} ({error.strerror or error})")
    problems += [f"cannot see {path}" for path in must_see if not Path(path).exists()]
    return {"host": socket.gethostname(), "cores": physical_cores(), "problems": problems}


def _encode_task(items, info, cache: str, threads: int) -> list[float]:
    from eval.representations import encode_one

    with _limit_threads(threads):
        return [encode_one(item, info, cache, threads)[1] for item in items]


def _layer_task(protocol, info, layer: int, cache: str, options, primary: bool, threads: int):
    from eval.sweep import score_layers

    timings: dict[str, float] = {}
    with _limit_threads(threads):
        scored = score_layers(protocol, info, [layer], Path(cache), options, timings, primary=primary)
    return scored, timings


# --- this side -----------------------------------------------------------------------------------

class Engine:
    """Where the stages' tasks run (see :func:`open_engine`): ``threads`` per task, ``where``
    in words. The stages are the same on every engine; a subclass says how a task is sent
    (:meth:`_submit`), how results come back (:meth:`_completed`), how a value every task uses
    travels (:meth:`_share`) and how many workers there are (:meth:`_workers`).

    ``local``: the (workers, physical cores) of local workers, whose layer tasks get more threads
    when there are fewer layers than workers; ``None`` on a cluster."""

    def __init__(self, threads: int, where: str, local: tuple[int, int] | None = None):
        self.threads, self.where, self.local = threads, where, local

    def _share(self, value):
        return value

    def _submit(self, fn, *args):
        raise NotImplementedError

    def _completed(self, futures):
        raise NotImplementedError

    def _workers(self) -> int:
        raise NotImplementedError

    def check_shared(self, cache: Path, must_see: Sequence[str | Path]) -> None:
        """Make ``cache``; a cluster also checks that every worker shares it (see :class:`DaskEngine`)."""
        Path(cache).resolve().mkdir(parents=True, exist_ok=True)

    def encode(self, items: Sequence, info, cache: Path, progress: bool) -> dict[str, float]:
        """The encode stage's items not cached yet, a few per task; same return as
        :func:`eval.representations.encode_items`."""
        from tqdm import tqdm

        from eval.representations import FeatureCache

        done = FeatureCache(cache, info)
        unique = {item.key: item for item in items}
        todo = [item for item in unique.values() if not done.done(item.key)]
        stats = {"items": float(len(unique)), "encoded": float(len(todo)), "audio_seconds": 0.0}
        if not todo:
            return stats
        shared_info = self._share(info)
        size = max(1, min(MAX_ITEMS_PER_TASK, len(todo) // (TASKS_PER_WORKER * max(1, self._workers()))))
        futures = {self._submit(_encode_task, todo[i:i + size], shared_info, str(cache), self.threads):
                   min(size, len(todo) - i) for i in range(0, len(todo), size)}
        bar = tqdm(total=len(todo), desc=f"encode {info.label or info.name} ({self.where})", unit="rec",
                   disable=not progress or None)
        for future in self._completed(futures):
            stats["audio_seconds"] += sum(future.result())
            bar.update(futures[future])
        bar.close()
        return stats

    def score(self, protocol, info, layers: Sequence[int], cache: Path, options, timings: dict[str, float],
              primary: bool):
        """:func:`eval.sweep.score_layers` with one task per layer; the stage seconds the
        workers spent are added to ``timings`` (worker seconds, summed over workers)."""
        from tqdm import tqdm

        from eval.sweep import Scored

        quiet = replace(options, progress=False)
        threads = self.threads
        if self.local is not None and options.cluster.threads is None:
            workers, cores = self.local
            threads = max(threads, cores // max(1, min(workers, len(layers))))
        shared = self._share(protocol)
        futures = [self._submit(_layer_task, shared, info, layer, str(cache), quiet, primary, threads)
                   for layer in layers]
        out = Scored()
        bar = tqdm(total=len(futures), desc=f"layers {info.label or info.name} ({self.where})", unit="layer",
                   disable=not options.progress or None)
        for future in futures:  # in layer order, as the in-process sweep appends them
            scored, spent = future.result()
            out.rows += scored.rows
            out.anisotropy += scored.anisotropy
            for stage, seconds in spent.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
            bar.update()
        bar.close()
        return out


class PoolEngine(Engine):
    """``workers`` local processes: a ``spawn`` :class:`~concurrent.futures.ProcessPoolExecutor`
    (pipes only, no network port; started with SIGINT ignored, so Ctrl-C reaches this process
    alone). :meth:`close` stops them; after an error or Ctrl-C, at once."""

    def __init__(self, workers: int, threads: int | None):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from kwsstream.onnxsession import physical_cores

        cores = physical_cores()
        super().__init__(threads or max(1, cores // workers), f"{workers} local worker processes", (workers, cores))
        self.workers = workers
        self._before = {p.pid for p in multiprocessing.active_children()}
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def _submit(self, fn, *args):
        from kwsstream.searchworkers import sigint_ignored

        with sigint_ignored():  # the first submit starts the processes
            return self.pool.submit(fn, *args)

    def _completed(self, futures):
        from concurrent.futures import as_completed

        return as_completed(futures)

    def _workers(self) -> int:
        return self.workers

    def close(self, failed: bool = False) -> None:
        if failed:  # a task still running is not waited for
            import multiprocessing

            for child in multiprocessing.active_children():
                if child.pid not in self._before:
                    child.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskEngine(Engine):
    """A connected Dask client (an existing cluster: ``--scheduler``)."""

    def __init__(self, client, threads: int, where: str):
        super().__init__(threads, where)
        self.client = client

    def _share(self, value):
        return self.client.scatter(value, broadcast=True, hash=False)

    def _submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def _completed(self, futures):
        from distributed import as_completed

        return as_completed(futures)

    def _workers(self) -> int:
        return len(self.client.scheduler_info()["workers"])

    def check_shared(self, cache: Path, must_see: Sequence[str | Path]) -> None:
        """Every worker reads a probe written here into ``cache``, writes its own, and sees
        ``must_see`` (the corpus's first clip, the model).

        Raises:
            UsageError: a worker that cannot, naming it, the path and why.
        """
        cache = Path(cache).resolve()
        cache.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        probe = cache / f"{PROBE_PREFIX}{token[:12]}"
        probe.write_text(token, encoding="utf-8")
        try:
            facts = self.client.run(_host_facts, str(cache), probe.name, token,
                                    [str(Path(p).resolve()) for p in must_see])
        finally:
            probe.unlink(missing_ok=True)
        if not facts:
            raise UsageError(f"the Dask cluster {self.where} has no workers")
        bad = {address: f["problems"] for address, f in facts.items() if f["problems"]}
        if bad:
            address, problems = sorted(bad.items())[0]
            raise UsageError(
                f"Dask worker {address} (host {facts[address]['host']}) {'; '.join(problems)}"
                + (f" (and {len(bad) - 1} other worker(s))" if len(bad) > 1 else "")
                + ": on a cluster the cache (--cache or --out), the corpus and the model must be paths "
                  "every worker shares at the same place (e.g. an NFS mount)")
        if self.threads == 0:  # the host's physical cores over its Dask threads
            per_host: dict[str, list[int]] = {}
            nthreads = {a: w.get("nthreads", 1) for a, w in self.client.scheduler_info()["workers"].items()}
            for address, f in facts.items():
                per_host.setdefault(f["host"], [f["cores"], 0])[1] += nthreads.get(address, 1)
            self.threads = max(1, min(cores // max(n, 1) for cores, n in per_host.values()))


@contextmanager
def open_engine(options: ClusterOptions) -> Iterator[Engine | None]:
    """Local worker processes (``workers``, :class:`PoolEngine`) or a Dask client at
    ``scheduler`` (:class:`DaskEngine`); ``None`` when ``options`` asks for neither. The
    workers are stopped, or the client closed, on exit.

    Raises:
        UsageError: both a scheduler and workers; for a scheduler, Dask not installed or a
            scheduler that cannot be reached.
    """
    if not options.enabled:
        yield None
        return
    if options.scheduler is not None and options.workers > 1:
        raise UsageError("--workers and --scheduler do not go together: a cluster has its own workers")
    if options.scheduler is None:
        engine = PoolEngine(options.workers, options.threads)
        log.info("%s", engine.where)
        try:
            yield engine
        except BaseException:
            engine.close(failed=True)
            raise
        engine.close()
        return
    from kwsstream.searchworkers import import_dask

    import_dask("--scheduler")
    from distributed import Client

    t = time.perf_counter()
    try:
        client = Client(options.scheduler, timeout=CONNECT_TIMEOUT)
    except OSError as error:
        raise UsageError(f"cannot reach the Dask scheduler {options.scheduler}: {error}") from None
    log.info("Dask: %s, ready in %.1f s", options.scheduler, time.perf_counter() - t)
    try:
        yield DaskEngine(client, options.threads or 0, options.scheduler)
    finally:
        client.close()
