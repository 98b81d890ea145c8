"""Keyword sets that survive anything: every regression input of scripts/make_bad_inputs.py is
refused with one line naming the file (through the CLI, where a user meets it), thresholds follow
one rule in every command, and load-modify-save is locked (concurrent enrolls lose nothing),
cleans up after killed writers, keeps permissions and follows symlinks."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kwsstream import Spotter
from kwsstream.cli import main
from script_helpers import load_script
from kwsstream.errors import KeysetError
from kwsstream.keyset import (
    Keyword, KeywordSet, Template, load_keyset, lock_path, locked_keyset, save_keyset, update_keyset,
)
from kwsstream.keysetformat import MAX_THRESHOLD, check_keyword_name, check_threshold

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "kwsstream" / "data"


bad_inputs = load_script("make_bad_inputs")
KEYSET_CASES = sorted(bad_inputs.keyset_cases()) + ["big_header.kws"]


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad")
    return out, bad_inputs.make_all(out)


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kwsstream: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def small_set(names=("uno", "dos"), dim=13, frames=6) -> KeywordSet:
    from kwsstream.encoders.mfcc import MfccEncoder

    rng = np.random.default_rng(3)
    return KeywordSet(MfccEncoder().identity, tuple(
        Keyword(n, 0.41, tuple(Template(rng.standard_normal((frames, dim)).astype(np.float32), f"{n}.wav", (0.1, 0.5))
                               for _ in range(2)), "calibrated", {"positives": [0.2]})
        for n in names))


# --- every regression input, through the CLI --------------------------------------------------

@pytest.mark.parametrize("name", KEYSET_CASES)
def test_bad_keyset_is_one_line_naming_the_file(bad, capsys, name):
    folder, cases = bad
    path, case = folder / name, cases[name]
    line = one_line(*cli(capsys, "keywords", "-k", path)[::2], str(path), case.needle)
    assert "pickle" not in line and "unsafe" not in line
    one_line(*cli(capsys, "detect", "-k", path, DATA / "biblioteca_1.flac")[::2], str(path), case.needle)


@pytest.mark.parametrize("name", ["plain.npy", "make.py", "nested_brackets.kws", "n_mels_1e9.kws", "threshold_true.kws"])
def test_enroll_into_a_bad_set_refuses_and_leaves_it_as_it_was(bad, capsys, name):
    path = bad[0] / name
    before = path.read_bytes()
    one_line(*cli(capsys, "enroll", "-k", path, "hola", DATA / "biblioteca_1.flac")[::2], str(path))
    assert path.read_bytes() == before


def test_the_valid_seed_loads_and_builds_a_spotter(tmp_path):
    path = tmp_path / "ok.kws"
    path.write_bytes(bad_inputs.kws_bytes(bad_inputs.valid_header(), bad_inputs.valid_frames()))
    spotter = Spotter(load_keyset(path))
    assert spotter.names == ["word0", "word1"]


def test_a_set_written_by_the_previous_code_still_loads(tmp_path):
    """Version 1 as np.savez wrote it (the format did not change)."""
    import json

    path = tmp_path / "old.kws"
    blob = np.frombuffer(json.dumps(bad_inputs.valid_header()).encode(), np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, header=blob, frames=bad_inputs.valid_frames())
    assert [k.name for k in load_keyset(path).keywords] == ["word0", "word1"]


# --- thresholds: one rule everywhere ------------------------------------------------------------

@pytest.mark.parametrize("value", ["abc", "-1", "0", "1e308", "nan", "inf", "2.5", ""])
@pytest.mark.parametrize("command", ["detect", "enroll", "listen"])
def test_threshold_option_is_checked_the_same_in_every_command(capsys, tmp_path, command, value):
    args = {"detect": ["detect", "-k", tmp_path / "x.kws", "a.wav"],
            "enroll": ["enroll", "-k", tmp_path / "x.kws", "hola", "a.wav"],
            "listen": ["listen", "-k", tmp_path / "x.kws"]}[command]
    one_line(*cli(capsys, *args, "--threshold", value)[::2], "--threshold")
    assert not (tmp_path / "x.kws").exists()


def test_threshold_rule():
    for good in (0.01, 1, 2.0, np.float32(0.4)):
        assert check_threshold(good) == float(good)
    for wrong in (True, False, 0, -5, 2.0001, float("nan"), float("inf"), 1e308, "0.4", None):
        with pytest.raises(KeysetError):
            check_threshold(wrong)
    assert MAX_THRESHOLD == 2.0


def test_a_set_that_detect_would_refuse_is_never_saved(tmp_path):
    ks = small_set()
    bad_kw = replace(ks.keywords[0], threshold=1e308)
    with pytest.raises(KeysetError, match="threshold"):
        save_keyset(ks.with_keyword(bad_kw), tmp_path / "a.kws")
    assert not (tmp_path / "a.kws").exists()


# --- names -------------------------------------------------------------------------------------

def test_names_are_stripped_the_same_in_enroll_and_remove(capsys, tmp_path):
    path = tmp_path / "a.kws"
    code, _, err = cli(capsys, "enroll", "-k", path, " pad ", DATA / "biblioteca_1.flac", DATA / "biblioteca_2.flac")
    assert code == 0, err
    assert [k.name for k in load_keyset(path).keywords] == ["pad"]
    code, out, err = cli(capsys, "keywords", "-k", path, "--remove", " pad ")
    assert code == 0, err
    assert load_keyset(path).keywords == ()


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "nul\x00", "   ", "bell\x07"])
def test_control_characters_in_names_are_refused(capsys, tmp_path, name):
    one_line(*cli(capsys, "enroll", "-k", tmp_path / "a.kws", name, DATA / "biblioteca_1.flac")[::2], "keyword name")
    assert not (tmp_path / "a.kws").exists()
    with pytest.raises(KeysetError):
        check_keyword_name(name)


# --- the files around a set ----------------------------------------------------------------------

def test_stale_temporary_files_are_removed_when_the_set_is_opened_for_writing(tmp_path):
    """A writer killed (kill -9) in the save window leaves ``.a.kws.XXXXXX.tmp``: the next
    writer removes those over a minute old (ours, our pattern), never a fresh one (a concurrent
    blind save may be writing it) nor another set's."""
    path = tmp_path / "a.kws"
    save_keyset(small_set(), path)
    stale = [tmp_path / ".a.kws.x1y2z3.tmp", tmp_path / ".a.kws.killed.tmp"]
    fresh = tmp_path / ".a.kws.f7e8d9.tmp"
    other = tmp_path / ".b.kws.abcdef.tmp"
    for p in (*stale, fresh, other):
        p.write_bytes(b"half a keyword set")
    for p in (*stale, other):
        os.utime(p, (1_000_000_000, 1_000_000_000))  # 2001
    update_keyset(path, lambda ks: ks.without("uno"))
    assert not any(p.exists() for p in stale) and fresh.exists() and other.exists()
    assert [k.name for k in load_keyset(path).keywords] == ["dos"]
    fresh.unlink()
    stale[0].write_bytes(b"killed again")
    os.utime(stale[0], (1_000_000_000, 1_000_000_000))
    save_keyset(small_set(), path)  # the blind save cleans up too
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".a.kws.lock", "a.kws", other.name])


def test_permissions_are_kept_and_new_sets_follow_the_umask(tmp_path):
    path = tmp_path / "a.kws"
    old = os.umask(0o022)
    try:
        update_keyset(path, lambda ks: small_set())
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        path.chmod(0o640)
        update_keyset(path, lambda ks: ks.without("uno"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        save_keyset(small_set(), path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_a_symlinked_set_writes_its_target(tmp_path, capsys):
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    target = real_dir / "t.kws"
    save_keyset(small_set(), target)
    link = tmp_path / "link.kws"
    link.symlink_to(target)
    code, _, err = cli(capsys, "enroll", "-k", link, "hola", DATA / "biblioteca_1.flac", DATA / "biblioteca_2.flac")
    assert code == 0, err
    assert link.is_symlink()
    assert [k.name for k in load_keyset(target).keywords] == ["uno", "dos", "hola"]
    assert lock_path(link) == real_dir / ".t.kws.lock"


def test_locked_update_saves_only_when_asked_and_not_on_error(tmp_path):
    path = tmp_path / "a.kws"
    assert update_keyset(path, lambda ks: None) is None and not path.exists()
    with locked_keyset(path) as (ks, save):
        assert ks is None
        save(small_set())
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with locked_keyset(path) as (ks, save):
            raise RuntimeError("changed my mind")
    with pytest.raises(KeysetError, match="no keyword named"):
        update_keyset(path, lambda ks: ks.without("tres"))
    assert path.read_bytes() == before


def test_a_second_locked_update_waits_then_times_out_with_one_line(tmp_path):
    path = tmp_path / "a.kws"
    save_keyset(small_set(), path)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from kwsstream.keyset import locked_keyset
        with locked_keyset({str(path)!r}):
            print("locked", flush=True)
            time.sleep(5)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(KeysetError, match="another process") as err:
            update_keyset(path, lambda ks: ks, timeout=0.2)
        assert str(path) in str(err.value)
    finally:
        holder.kill()
        holder.wait()


WORKER = """
import sys, time
from kwsstream.keyset import Keyword, Template, update_keyset
import numpy as np
path, prefix, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
for r in range(rounds):
    name = f"{prefix}_{r}"
    frames = np.random.default_rng(r).standard_normal((6, 13)).astype(np.float32)

    def add(ks):
        time.sleep(0.05)  # a slow enroll: without the lock the others would load the old set meanwhile
        return ks.with_keyword(Keyword(name, 0.4, (Template(frames, name + ".wav", (0.0, 0.1)),), "user", {}))

    update_keyset(path, add)
"""


def test_concurrent_updates_lose_nothing(tmp_path):
    """3 processes x 4 rounds of load-modify-save into one set, each holding the set for 50 ms."""
    path = tmp_path / "a.kws"
    save_keyset(small_set(names=("base",)), path)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(path), f"p{i}", "4"]) for i in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    names = sorted(k.name for k in load_keyset(path).keywords)
    assert names == sorted(["base"] + [f"p{i}_{r}" for i in range(3) for r in range(4)])


def test_concurrent_cli_enrolls_both_land(tmp_path):
    path = tmp_path / "a.kws"
    words = {"biblioteca": DATA / "biblioteca_1.flac", "mariposa": DATA / "mariposa_1.flac"}
    procs = [subprocess.Popen([sys.executable, "-m", "kwsstream", "enroll", "-k", str(path), w, str(f)],
                              stderr=subprocess.PIPE, text=True) for w, f in words.items()]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    assert sorted(k.name for k in load_keyset(path).keywords) == sorted(words)
