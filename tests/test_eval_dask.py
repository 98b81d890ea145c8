"""The eval's encode and per-layer stages on workers (``python -m eval run --workers N |
--scheduler``): local worker processes and a Dask cluster give the same files and results as this
process; local workers open no network port and are stopped when a run fails; a Dask worker that
cannot see the shared cache is a clear error."""

from __future__ import annotations

import hashlib
import importlib.util
import multiprocessing
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kwsstream.searchworkers import dask_available

needs_dask = pytest.mark.skipif(not dask_available(), reason="Dask distributed is not installed")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny all-layers model (tests/export_helpers.py; one file a session)."""
    if not all(importlib.util.find_spec(m) for m in ("torch", "transformers", "onnx")):
        pytest.skip("the export extra (torch, transformers, onnx) is not installed")
    from export_helpers import tiny_all_layers_model

    return tiny_all_layers_model(tmp_path_factory.getbasetemp())


def _run(corpus: Path, encoder: Path | str, out: Path, *extra: str) -> int:
    from eval.__main__ import main

    return main(["run", "--corpus", str(corpus), "--encoder", str(encoder), "--out", str(out), "--quick",
                 "--no-progress", *extra])


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


THREADS = "1"
"""Threads per worker task in these runs, and BLAS threads in this process's reference run: float32
matrix products (OpenBLAS) differ in their last bits between thread counts (scores by ~1e-7), so
"the same files" holds for the same code on the same thread counts."""


@pytest.fixture(scope="module")
def in_process(corpus_dir, tiny_model, tmp_path_factory) -> Path:
    """The run in this process, the reference for the others."""
    from threadpoolctl import threadpool_limits

    here = tmp_path_factory.mktemp("eval-here")
    with threadpool_limits(limits=int(THREADS), user_api="blas"):
        assert _run(corpus_dir, tiny_model, here) == 0
    cached = _digests(here / "cache")
    # every layer of both encoders (the model and the MFCC baseline): encodings, scores, anisotropy
    assert sum("/L03/" in name for name in cached) > 40 and any("scores" in name for name in cached)
    return here


def _same_as(there: Path, here: Path) -> None:
    assert _digests(there / "cache") == _digests(here / "cache")
    for name in ("results.csv", "anisotropy.csv", "protocol.json"):
        assert (there / name).read_bytes() == (here / name).read_bytes(), name


def _listening_sockets() -> list:
    """The listening sockets of this process and its children."""
    psutil = pytest.importorskip("psutil")
    me = psutil.Process()
    found = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            found += [(proc.pid, c.laddr) for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    return found


def test_local_workers_give_the_in_process_files_and_results_and_open_no_port(corpus_dir, tiny_model, in_process,
                                                                             tmp_path, monkeypatch):
    """``--workers N`` once started an unauthenticated Dask LocalCluster on 127.0.0.1 (any local
    user could run code as the benchmark's user): now a spawn process pool, pipes only."""
    from eval.distributed import PoolEngine

    before, children = _listening_sockets(), {p.pid for p in multiprocessing.active_children()}
    seen = {"sockets": [], "workers": 0}
    real = PoolEngine._completed

    def watched(self, futures):  # looked at while the workers are alive, as each task ends
        for future in real(self, futures):
            seen["sockets"] += _listening_sockets()
            seen["workers"] = max(seen["workers"], len(multiprocessing.active_children()))
            yield future

    monkeypatch.setattr(PoolEngine, "_completed", watched)
    there = tmp_path / "workers"
    assert _run(corpus_dir, tiny_model, there, "--workers", "2", "--threads", THREADS) == 0
    assert seen["workers"] >= 1 and set(seen["sockets"]) <= set(before)
    _same_as(there, in_process)
    # a rerun finds everything in the cache and rewrites nothing
    stamps = {p: p.stat().st_mtime_ns for p in (there / "cache").rglob("*.npy")}
    assert _run(corpus_dir, tiny_model, there, "--workers", "2", "--threads", THREADS) == 0
    assert {p: p.stat().st_mtime_ns for p in (there / "cache").rglob("*.npy")} == stamps
    assert {p.pid for p in multiprocessing.active_children()} <= children  # the workers are gone after the run


def test_local_workers_are_stopped_when_a_run_fails():
    import time

    from eval.distributed import ClusterOptions, PoolEngine, open_engine

    before = {p.pid for p in multiprocessing.active_children()}
    with pytest.raises(KeyboardInterrupt):
        with open_engine(ClusterOptions(workers=2)) as engine:
            assert isinstance(engine, PoolEngine) and engine.local is not None
            engine._submit(time.sleep, 0).result()  # the processes are started
            busy = engine._submit(time.sleep, 600)
            raise KeyboardInterrupt
    assert busy.done() or busy.cancelled()
    assert {p.pid for p in multiprocessing.active_children()} <= before


@needs_dask
def test_a_dask_scheduler_gives_the_in_process_files_and_results(corpus_dir, tiny_model, in_process, tmp_path):
    from distributed import LocalCluster

    there = tmp_path / "dask"
    # one worker thread in this process: encode_one's per-process encoder is not shared by threads
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=None) as cluster:
        assert _run(corpus_dir, tiny_model, there, "--scheduler", cluster.scheduler_address, "--threads", THREADS) == 0
    _same_as(there, in_process)


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                          capture_output=True).returncode == 0


@needs_dask
@pytest.mark.skipif(not _can_unshare(), reason="needs unshare --mount (a worker with its own view of the files)")
def test_a_worker_that_cannot_see_the_cache_is_one_clear_error(corpus_dir, tmp_path, capsys):
    """A worker on "another machine": its own mount namespace, where the results folder is an
    empty tmpfs, so it cannot see the cache this process writes."""
    from distributed import Client, LocalCluster

    out = tmp_path / "results"
    out.mkdir()
    with LocalCluster(n_workers=0, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        worker = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f'mount -t tmpfs none "{out}" && exec "{sys.executable}" -m distributed.cli.dask_worker '
             f'{cluster.scheduler_address} --nworkers 1 --nthreads 1 --no-dashboard'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client.wait_for_workers(1, timeout=60)
            code = _run(corpus_dir, "mfcc", out, "--scheduler", cluster.scheduler_address)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: Dask worker tcp://"), err
    assert f"cannot read the cache folder {out / 'cache'}" in err[-1] and "every worker shares" in err[-1]
    assert not (out / "results.csv").exists()


def test_workers_and_scheduler_do_not_go_together(corpus_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run(corpus_dir, "mfcc", tmp_path / "r", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1")
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
