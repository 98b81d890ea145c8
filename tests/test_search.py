"""``kwsstream search``: an archive through the detect pipeline, in process and on a Dask cluster."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import soundfile as sf

from kwsstream.cli import main
from kwsstream.errors import UsageError
from kwsstream.search import search
from kwsstream.searchstate import expand_paths, state_path
from kwsstream.searchworkers import SpotterSpec
from kwsstream.spotter import Spotter


@pytest.fixture(scope="module")
def keyset(tmp_path_factory) -> Path:
    from kwsstream.demo import example_files
    from kwsstream.encoders import load_encoder
    from kwsstream.enroll import enroll_examples
    from kwsstream.keyset import save_keyset

    path = tmp_path_factory.mktemp("set") / "mfcc.kws"
    save_keyset(enroll_examples(load_encoder("mfcc"), example_files()), path)
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """The bundled stream cut into three pieces (FLAC, WAV, one in a subfolder), a corrupt file
    and a text file that is not searched."""
    from kwsstream.demo import data_dir

    root = tmp_path_factory.mktemp("archive")
    (root / "sub").mkdir()
    x, sr = sf.read(data_dir() / "stream.flac", dtype="float32")
    n = len(x) // 3
    sf.write(root / "a.flac", x[:n], sr)
    sf.write(root / "b.wav", x[n:2 * n], sr)
    sf.write(root / "sub" / "c.flac", x[2 * n:], sr)
    (root / "corrupt.wav").write_bytes(b"RIFF" + b"\x00garbage" * 50)
    (root / "notes.txt").write_text("not audio")
    return root


GOOD = ("a.flac", "b.wav", "sub/c.flac")


def _table(rows):
    return sorted((r["keyword"], r["file"], r["start"], r["end"], r["cost"]) for r in rows)


def _detect_by_file(keyset: Path, archive: Path):
    spotter = Spotter.load(keyset)
    rows = []
    for name in GOOD:
        path = str(archive / name)
        for e in spotter.detect_file(path):
            d = e.to_dict()
            rows.append((d["keyword"], path, d["start"], d["end"], d["cost"]))
    return sorted(rows)


def test_search_gives_the_same_events_as_detect_file_by_file(keyset, archive, tmp_path):
    lines = []
    result = search(keyset, [str(archive)], out=tmp_path / "hits.jsonl", workers=1, progress=False, say=lines.append)
    assert result.complete and len(result.searched) == 4  # three good files and the corrupt one; not notes.txt
    expected = _detect_by_file(keyset, archive)
    assert len(expected) >= 3
    assert _table(result.rows) == expected
    written = [json.loads(line) for line in (tmp_path / "hits.jsonl").read_text().splitlines()]
    assert written == result.rows
    for kw in {r["keyword"] for r in result.rows}:  # rank: by cost within the keyword, 1..n
        mine = [r for r in result.rows if r["keyword"] == kw]
        assert [r["rank"] for r in mine] == list(range(1, len(mine) + 1))
        assert [r["cost"] for r in mine] == sorted(r["cost"] for r in mine)


def test_a_corrupt_file_is_skipped_with_one_line(keyset, archive, tmp_path, capsys):
    code = main(["search", "-k", str(keyset), str(archive), "--workers", "1", "--no-progress",
                 "--out", str(tmp_path / "hits.csv"), "--top", "1"])
    assert code == 0
    err = capsys.readouterr().err.splitlines()
    skipped = [line for line in err if "skipped:" in line]
    assert len(skipped) == 1 and "corrupt.wav" in skipped[0]
    assert not any("Traceback" in line for line in err)
    with open(tmp_path / "hits.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == ["keyword", "file", "start", "end", "cost", "rank"]
    assert all(r["rank"] == "1" for r in rows) and len({r["keyword"] for r in rows}) == len(rows)  # --top 1


def test_an_interrupted_search_resumes_without_searching_a_file_twice(keyset, archive, tmp_path):
    out = tmp_path / "hits.csv"
    first = search(keyset, [str(archive)], out=out, workers=1, progress=False, say=lambda _: None, stop_after=2)
    assert not first.complete and len(first.searched) == 2 and not out.exists()
    assert len(state_path(out).read_text().splitlines()) == 1 + 2  # header + one line per file finished
    second = search(keyset, [str(archive)], out=out, workers=1, progress=False, say=lambda _: None)
    assert second.complete and sorted(second.resumed) == sorted(first.searched)
    assert not set(first.searched) & set(second.searched)
    assert len(first.searched) + len(second.searched) == 4
    assert _table(second.rows) == _detect_by_file(keyset, archive)
    third = search(keyset, [str(archive)], out=out, workers=1, progress=False, say=lambda _: None)
    assert third.searched == [] and third.rows == second.rows  # the corrupt file is not read again either


def test_the_state_file_is_validated(keyset, archive, tmp_path):
    out = tmp_path / "hits.jsonl"
    full = search(keyset, [str(archive)], out=out, workers=1, progress=False, say=lambda _: None)
    state = state_path(out)
    lines = state.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["hits"] = [["no-such-keyword", 1.0, 2.0, 0.1]]
    state.write_text("\n".join([lines[0], json.dumps(entry), "{not json", *lines[2:]]) + "\n")
    notes = []
    again = search(keyset, [str(archive)], out=out, workers=1, progress=False, say=notes.append)
    assert again.searched == [entry["path"]]  # only the file whose line was bad
    assert any("2 invalid line(s)" in n for n in notes)
    assert again.rows == full.rows
    # another spotter (a threshold override): its state does not count
    other = SpotterSpec.from_file(keyset, thresholds={"mariposa": 0.05})
    notes.clear()
    fresh = search(other, [str(archive)], out=out, workers=1, progress=False, say=notes.append)
    assert len(fresh.searched) == 4 and any("another search" in n for n in notes)


def test_paths_folders_globs_and_lists(archive, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two of them\n{archive / 'a.flac'}\n\n{archive}/sub\n")
    assert expand_paths([f"@{listing}"]) == [str(archive / "a.flac"), str(archive / "sub" / "c.flac")]
    assert expand_paths([f"{archive}/**/*.flac"]) == [str(archive / "a.flac"), str(archive / "sub" / "c.flac")]
    assert len(expand_paths([str(archive)])) == 4  # audio suffixes only: notes.txt is left out
    with pytest.raises(UsageError, match="list of paths"):
        expand_paths([f"@{tmp_path / 'missing.txt'}"])


def test_missing_dask_is_one_line_naming_the_extra(keyset, archive, monkeypatch, capsys):
    """Only a cluster (--scheduler) needs Dask; local workers do not."""
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed → ImportError
    assert main(["search", "-k", str(keyset), str(archive), "--scheduler", "tcp://127.0.0.1:8786"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kwsstream[search]" in err[0]


def test_local_workers_give_what_the_in_process_search_gives(keyset, archive, tmp_path):
    local = search(keyset, [str(archive)], out=tmp_path / "one.csv", workers=1, progress=False, say=lambda _: None)
    lines = []
    pool = search(keyset, [str(archive)], out=tmp_path / "two.csv", workers=2, progress=False, say=lines.append)
    assert pool.workers == 2 and pool.complete
    assert pool.rows == local.rows
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()
    assert sorted(pool.searched) == sorted(local.searched)
    assert len([line for line in lines if "skipped:" in line]) == 1


@pytest.fixture
def scheduler():
    """A one-worker Dask cluster in this process (its scheduler on a free port of 127.0.0.1)."""
    distributed = pytest.importorskip("distributed")
    import logging

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                  protocol="tcp://", host="127.0.0.1", scheduler_port=0,
                                  silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


def test_a_dask_cluster_gives_what_the_in_process_search_gives(keyset, archive, tmp_path, scheduler):
    local = search(keyset, [str(archive)], out=tmp_path / "one.csv", workers=1, progress=False, say=lambda _: None)
    lines = []
    remote = search(keyset, [str(archive)], out=tmp_path / "two.csv", scheduler=scheduler, progress=False,
                    say=lines.append)
    assert remote.complete and remote.rows == local.rows
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()
    assert len([line for line in lines if "skipped:" in line]) == 1
