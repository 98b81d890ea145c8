"""The eval's encode and per-layer stages on Dask (``python -m eval run --workers N | --scheduler``):
the same files and results as in this process, and a clear error when a worker cannot see the
shared cache."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kwsstream.searchworkers import dask_available

pytestmark = pytest.mark.skipif(not dask_available(), reason="Dask distributed is not installed")


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


def test_a_local_dask_cluster_gives_the_in_process_files_and_results(corpus_dir, tiny_model, tmp_path):
    here, there = tmp_path / "here", tmp_path / "dask"
    assert _run(corpus_dir, tiny_model, here) == 0
    assert _run(corpus_dir, tiny_model, there, "--workers", "2") == 0
    cached = _digests(here / "cache")
    # every layer of both encoders (the model and the MFCC baseline): encodings, scores, anisotropy
    assert sum("/L03/" in name for name in cached) > 40 and any("scores" in name for name in cached)
    assert _digests(there / "cache") == cached
    for name in ("results.csv", "anisotropy.csv", "protocol.json"):
        assert (there / name).read_bytes() == (here / name).read_bytes(), name
    # a rerun on the cluster finds everything in the cache and rewrites nothing
    stamps = {p: p.stat().st_mtime_ns for p in (there / "cache").rglob("*.npy")}
    assert _run(corpus_dir, tiny_model, there, "--workers", "2") == 0
    assert {p: p.stat().st_mtime_ns for p in (there / "cache").rglob("*.npy")} == stamps


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                          capture_output=True).returncode == 0


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
