"""The eval's heavy stages on Dask distributed: ``python -m eval run ... --workers N | --scheduler ADDRESS``.

The same engine as ``kwsstream search`` (``kwsstream.searchworkers``): ``--workers N`` (N >= 2)
starts a Dask ``LocalCluster`` of N processes, ``--scheduler tcp://host:8786`` uses an existing
cluster; with neither (or ``--workers 1``) nothing here runs and the stages stay in this process.

What runs on the workers is the single-process code itself, so the files and numbers are the same:

* ``encode``: tasks of a few recordings each, :func:`eval.representations.encode_one` (the
  encoder is opened once per worker process and kept); each writes its recordings' per-layer files
  into the shared cache, atomically, exactly as the in-process stage does;
* per layer (``load``, ``distances``, ``dtw``, ``anisotropy``): one task per layer,
  :func:`eval.sweep.score_layers` on that layer alone, which writes the layer's scores and
  anisotropy into the shared cache and returns its rows; the rows come back in layer order.

The cache folder is shared by every worker and this process: on a real cluster, ``--cache`` (or
``--out``) must be a path that every machine mounts at the same place (NFS, a cluster file
system), and so must the corpus and the model. Before any task runs, every worker is asked to
read a probe file written here into the cache folder, to write its own, and to see the corpus's
first clip and the model; a worker that cannot is a :class:`~kwsstream.errors.UsageError` naming
it and the path. Threads: each task's onnxruntime, BLAS and numba threads are the worker host's
physical cores divided by the Dask threads on that host (``--threads`` overrides); a local cluster
with fewer layers than workers gives each layer's task more. Memory: a layer task holds one
layer's sentence frames in float32 plus one block of products (about 1 GB for 1000 sentences of
1024-wide frames), per Dask thread. ``timings.json``: the stage seconds are the workers' summed;
``layers (wall, on Dask)`` is the per-layer stages' wall time.
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
"""Encode tasks carry up to 16 recordings (Dask's per-task cost is a few ms, MFCC's per
recording as much) and each worker gets at least 8 tasks, so the load stays balanced."""


@dataclass(frozen=True)
class ClusterOptions:
    """Where the heavy stages run.

    Attributes:
        workers: processes of a local Dask cluster (0 or 1 and no ``scheduler``: no cluster).
        scheduler: address of an existing Dask scheduler, e.g. ``tcp://10.0.0.5:8786``.
        threads: threads per task (``None``: the host's physical cores / its Dask threads).
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
    """A connected Dask client and the threads each task gets (see :func:`open_engine`)."""

    def __init__(self, client, threads: int, where: str, local: tuple[int, int] | None = None):
        self.client, self.threads, self.where = client, threads, where
        self.local = local  # a local cluster's (workers, physical cores): fewer tasks than workers get more threads

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

    def encode(self, items: Sequence, info, cache: Path, progress: bool) -> dict[str, float]:
        """The encode stage's items not cached yet, a few per task; same return as
        :func:`eval.representations.encode_items`."""
        from distributed import as_completed
        from tqdm import tqdm

        from eval.representations import FeatureCache

        done = FeatureCache(cache, info)
        unique = {item.key: item for item in items}
        todo = [item for item in unique.values() if not done.done(item.key)]
        stats = {"items": float(len(unique)), "encoded": float(len(todo)), "audio_seconds": 0.0}
        if not todo:
            return stats
        info_future = self.client.scatter(info, broadcast=True, hash=False)
        workers = max(1, len(self.client.scheduler_info()["workers"]))
        size = max(1, min(MAX_ITEMS_PER_TASK, len(todo) // (TASKS_PER_WORKER * workers)))
        futures = {self.client.submit(_encode_task, todo[i:i + size], info_future, str(cache), self.threads,
                                      pure=False): min(size, len(todo) - i) for i in range(0, len(todo), size)}
        bar = tqdm(total=len(todo), desc=f"encode {info.label or info.name} ({self.where})", unit="rec",
                   disable=not progress or None)
        for future in as_completed(futures):
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
        shared = self.client.scatter(protocol, broadcast=True, hash=False)
        futures = [self.client.submit(_layer_task, shared, info, layer, str(cache), quiet, primary, threads,
                                      pure=False) for layer in layers]
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


@contextmanager
def open_engine(options: ClusterOptions) -> Iterator[Engine | None]:
    """A Dask client on a local cluster (``workers``) or at ``scheduler``; ``None`` when
    ``options`` asks for no cluster. The local cluster is closed on exit.

    Raises:
        UsageError: Dask not installed, both a scheduler and workers, or a scheduler that cannot
            be reached.
    """
    if not options.enabled:
        yield None
        return
    if options.scheduler is not None and options.workers > 1:
        raise UsageError("--workers and --scheduler do not go together: a cluster has its own workers")
    from kwsstream.searchworkers import import_dask

    import_dask("--scheduler" if options.scheduler is not None else f"--workers {options.workers}")
    from distributed import Client, LocalCluster

    from kwsstream.onnxsession import physical_cores

    cluster = None
    t = time.perf_counter()
    if options.scheduler is not None:
        try:
            client = Client(options.scheduler, timeout=CONNECT_TIMEOUT)
        except OSError as error:
            raise UsageError(f"cannot reach the Dask scheduler {options.scheduler}: {error}") from None
        where, threads = options.scheduler, options.threads or 0
    else:
        cluster = LocalCluster(n_workers=options.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
        where = f"{options.workers} local Dask workers"
        threads = options.threads or max(1, physical_cores() // options.workers)
    log.info("Dask: %s, ready in %.1f s", where, time.perf_counter() - t)
    try:
        yield Engine(client, threads, where, None if cluster is None else (options.workers, physical_cores()))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
