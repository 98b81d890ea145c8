"""Hostile files and options, as a user meets them: every one is refused with exit status 2 and one
line naming the file or option (or, for search, skipped and reported), in bounded time and memory,
and nothing a search writes damages a file it should not.

Each test is one reported defect (the issue in its docstring); they run the real commands in this
process (``kwsstream.cli.main``, through ``cli_helpers.run_main``), except Ctrl-C, which needs a
process of its own.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cli_helpers import one_line_error, run_main
from script_helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "kwsstream" / "data"
GUARD_SECONDS = 60.0
"""A generous bound: only a hang or a quadratic blow-up trips it."""

bad_inputs = load_script("make_bad_inputs")


def bounded(fn, seconds: float = GUARD_SECONDS):
    """``fn()`` in a daemon thread: its result, or a test failure if it has not finished in
    ``seconds`` (a hang, a blocking open of a FIFO, a quadratic regex)."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"did not finish in {seconds:g} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def in_child(fn, seconds: float = GUARD_SECONDS):
    """``fn()`` in a forked copy of this process, killed after ``seconds``: a guard for code
    that may hold the GIL for minutes (a backtracking regex), which a thread's join timeout
    cannot interrupt. Returns what ``fn`` returned (pickled back)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)

    def child():
        writer.send(fn())

    proc = context.Process(target=child, daemon=True)
    proc.start()
    writer.close()
    try:
        ready = reader.poll(seconds)
        assert ready, f"did not finish in {seconds:g} s"
        return reader.recv()
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()


def refused(*args, needles=(), seconds: float = GUARD_SECONDS) -> str:
    """Run the command; assert exit 2 and exactly one ``kwsstream: error:`` line holding every
    needle, in bounded time. Returns the line."""
    return one_line_error(bounded(lambda: run_main(*args), seconds), *needles, prefix="kwsstream: error: ")


@pytest.fixture(scope="module")
def keyset(tmp_path_factory) -> Path:
    """A real MFCC set (the bundled examples, calibrated)."""
    from kwsstream.demo import example_files
    from kwsstream.encoders import load_encoder
    from kwsstream.enroll import enroll_examples
    from kwsstream.keyset import save_keyset

    path = tmp_path_factory.mktemp("set") / "mfcc.kws"
    save_keyset(enroll_examples(load_encoder("mfcc"), example_files()), path)
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Two recordings with keywords in them."""
    root = tmp_path_factory.mktemp("archive")
    x, sr = sf.read(DATA / "stream.flac", dtype="float32")
    sf.write(root / "a.flac", x[: len(x) // 2], sr)
    sf.write(root / "b.wav", x[len(x) // 2:], sr)
    return root


def write_set(path: Path, header, frames=None) -> Path:
    path.write_bytes(bad_inputs.kws_bytes(header, bad_inputs.valid_frames() if frames is None else frames))
    return path


# --- 1. the header's JSON is checked in linear time ------------------------------------------------

def test_a_crafted_header_is_refused_quickly(tmp_path):
    """``_json_depth`` stripped strings with a backtracking regex: an unterminated string of
    escaped quotes took 327 s for 128 KB (quadratic). 1 MB of it, and 1 MB of brackets."""
    def check(path: Path, needle: str) -> None:  # the regex held the GIL: guarded in a child process
        result = in_child(lambda: run_main("keywords", "-k", path))
        one_line_error(result, str(path), needle, prefix="kwsstream: error: ")

    check(write_set(tmp_path / "quotes.kws", '{"format": "kwsstream-keyset", "x": "' + '\\"' * 500_000),
          "corrupt header")
    check(write_set(tmp_path / "brackets.kws", "[" * 1_000_000), "nested deeper")
    check(write_set(tmp_path / "digits.kws", '{"format": "kwsstream-keyset", "version": ' + "9" * 900_000 + "}"),
          "corrupt header")


# --- 2. special files are never read -----------------------------------------------------------------

@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "pipe.kws"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_as_keyword_set_is_refused(device, archive):
    """``-k /dev/zero`` passed the size check (st_size 0) and was read without end."""
    refused("keywords", "-k", device, needles=[device, "character device"])
    refused("detect", "-k", device, DATA / "biblioteca_1.flac", needles=[device, "character device"])
    refused("search", "-k", device, archive, "--workers", "1", needles=[device, "character device"])


def test_a_fifo_as_keyword_set_is_refused_without_blocking(fifo, archive):
    """A FIFO as ``-k`` blocked forever in its open."""
    refused("keywords", "-k", fifo, needles=[str(fifo), "FIFO"])
    refused("search", "-k", fifo, archive, "--workers", "1", needles=[str(fifo), "FIFO"])


def test_special_files_as_path_lists_are_refused(keyset, archive, tmp_path):
    """``search @/dev/zero`` read without end; ``@FIFO`` blocked."""
    refused("search", "-k", keyset, "@/dev/zero", "--workers", "1", needles=["/dev/zero", "character device"])
    pipe = tmp_path / "list.txt"
    os.mkfifo(pipe)
    refused("search", "-k", keyset, f"@{pipe}", "--workers", "1", needles=[str(pipe), "FIFO"])


def test_a_fifo_inside_a_searched_folder_is_skipped_and_reported(keyset, archive, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.flac").symlink_to(archive / "a.flac")
    os.mkfifo(folder / "trap.wav")  # opened for reading, it would block: no writer
    result = bounded(lambda: run_main("search", "-k", keyset, folder, "--workers", "1", "--no-progress",
                                      "--out", tmp_path / "hits.csv"))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    trap = [line for line in lines if "trap.wav" in line]
    assert len(trap) == 1 and "FIFO" in trap[0] and "skipped" in trap[0], lines
    assert "searched 1 file(s)" in lines[-1]


# --- 3. the zip directory is bounded before it is parsed ---------------------------------------------

def test_a_zip_of_directory_entries_is_refused_in_little_memory(tmp_path):
    """A zip of nothing but central-directory entries made zipfile build an object per entry
    (~8x the file in memory) before the set was refused."""
    entry = (b"PK\x01\x02" + bytes(24) + (8).to_bytes(2, "little") + bytes(16) + b"x.npy" + b"abc")
    count = (4 << 20) // len(entry)
    directory = entry * count
    end = (b"PK\x05\x06" + bytes(4) + min(count, 0xFFFF).to_bytes(2, "little") * 2
           + len(directory).to_bytes(4, "little") + (0).to_bytes(4, "little") + bytes(2))
    path = tmp_path / "entries.kws"
    path.write_bytes(directory + end)
    tracemalloc.start()
    try:
        line = refused("keywords", "-k", path, needles=[str(path), "zip directory"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < (1 << 20), f"{peak} bytes to refuse {path.stat().st_size}: {line}"


# --- 4. an ONNX model is checked before onnxruntime opens it -------------------------------------------

def tiny_onnx(path: Path, seed: int = 0, dim: int = 8) -> Path:
    """A hand-made local model (the contract of onnxmeta.py): [batch, samples] -> [batch, frames, dim]."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    hop, field = 160, 400
    weight = np.random.default_rng(seed).standard_normal((dim, 1, field)).astype(np.float32) / 100
    nodes = [helper.make_node("Unsqueeze", ["audio", "axis1"], ["x3"]),
             helper.make_node("Conv", ["x3", "w"], ["conv"], strides=[hop]),
             helper.make_node("Transpose", ["conv"], ["frames"], perm=[0, 2, 1])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", "n", dim])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array([1], np.int64), "axis1")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = {"kwsstream.format": "1", "sample_rate": "16000", "frame_hop": str(hop), "receptive_field": str(field),
            "hidden_size": str(dim), "context": "local", "source_model": "tiny"}
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def test_an_onnx_model_is_hashed_before_onnxruntime_opens_it(tmp_path, monkeypatch):
    """``detect`` let onnxruntime parse the model a set names before its sha256 was compared,
    and ``keywords`` loaded it unchecked to print frame rates."""
    from kwsstream.encoders import identity_frame_rate
    from kwsstream.encoders.onnx import OnnxEncoder
    from kwsstream.keyset import Keyword, KeywordSet, Template, save_keyset

    model = tiny_onnx(tmp_path / "model.onnx")
    identity = OnnxEncoder(model, threads=1).identity
    frames = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    path = tmp_path / "onnx.kws"
    save_keyset(KeywordSet(identity, (Keyword("hola", 0.4, (Template(frames, "hola.wav", (0.0, 0.1)),), "user"),)),
                path)
    tiny_onnx(model, seed=1)  # another model where the set's was
    opened = []
    import kwsstream.encoders.onnx as onnx_module

    real = onnx_module.make_session
    monkeypatch.setattr(onnx_module, "make_session", lambda *a, **k: opened.append(a) or real(*a, **k))
    refused("detect", "-k", path, DATA / "biblioteca_1.flac", needles=[str(model), "not the model"])
    assert opened == []
    result = run_main("keywords", "-k", path)  # lengths in frames: the model is not the set's
    assert result.returncode == 0, result.stderr
    assert "frames=6" in result.stdout and opened == []
    assert identity_frame_rate(identity) is None and opened == []  # a listing needs no model
    from kwsstream.encoders.mfcc import MfccEncoder

    assert identity_frame_rate(MfccEncoder().identity) == 100.0


# --- 5. everything a later command reads is checked on load -----------------------------------------

GOOD_CALIBRATION = {
    "method": "fa-rate", "fa_per_hour": 3.0, "expected_fa_per_hour": 2.9, "rates": "background", "rate_map": None,
    "background": "built-in", "background_hours": 0.43,
    "curve": {"costs": [0.3, 0.35, 0.4], "hours": 0.43, "anchor": 0.4, "scale": 0.05},
    "positives": [0.2, 0.25], "warning": None,
}


def set_with(change) -> dict:
    header = bad_inputs.valid_header()
    for kw in header["keywords"]:
        kw["calibration"] = json.loads(json.dumps(GOOD_CALIBRATION))
    change(header)
    return header


def calibration(key, value):
    def change(header):
        if value is KeyError:
            del header["keywords"][0]["calibration"][key]
        elif key == "curve.scale":
            header["keywords"][0]["calibration"]["curve"]["scale"] = value
        else:
            header["keywords"][0]["calibration"][key] = value
    return change


def encoder(key, value):
    def change(header):
        header["encoder"][key] = value
    return change


def template_source(value):
    def change(header):
        header["keywords"][0]["templates"][0]["source"] = value
    return change


def test_the_valid_calibration_loads_and_lists(tmp_path):
    path = write_set(tmp_path / "ok.kws", set_with(lambda h: None))
    result = run_main("keywords", "-k", path)
    assert result.returncode == 0, result.stderr
    assert "calibrated to 3 false alarms/hour" in result.stdout


@pytest.mark.parametrize("change,needle", [
    (calibration("expected_fa_per_hour", "3"), "expected_fa_per_hour"),
    (calibration("background_hours", "x"), "background_hours"),
    (calibration("fa_per_hour", KeyError), "fa_per_hour"),
    (calibration("positives", [[1]]), "positives"),
    (calibration("curve.scale", 1e-300), "scale"),
    (calibration("warning", "\x1b[2Jgotcha"), "warning"),
    (calibration("rates", "everywhere"), "rates"),
    (template_source("\ud800"), "surrogate"),
    (encoder("c0_weight", 2**64), "c0_weight"),
    (encoder("fmin", 2**64), "fmin"),
    (encoder("fmax", 2**64), "fmax"),
    (encoder("cmn_seconds", 2**64), "cmn_seconds"),
], ids=["expected_str", "hours_str", "no_fa_per_hour", "positives_nested", "scale_tiny", "warning_escape",
        "rates_unknown", "lone_surrogate", "c0_weight_2_64", "fmin_2_64", "fmax_2_64", "cmn_2_64"])
def test_content_later_commands_would_crash_on_is_refused_on_load(tmp_path, change, needle):
    """Each of these loaded, then crashed ``keywords``/``detect``/``calibrate`` with a traceback
    (TypeError, ValueError, math domain error, UnicodeEncodeError)."""
    path = write_set(tmp_path / "bad.kws", json.dumps(set_with(change)))
    refused("keywords", "-k", path, needles=[str(path), needle])
    refused("detect", "-k", path, DATA / "biblioteca_1.flac", needles=[str(path), needle])


def test_an_npy_shape_of_booleans_is_refused(tmp_path):
    frames = bad_inputs.valid_frames()[:1]
    raw = bad_inputs.npy_bytes(frames).replace(b"(1, 13)", b"(True, 13)")
    header = bad_inputs.valid_header(n_keywords=1, frames_per_template=1)
    path = tmp_path / "bool_shape.kws"
    path.write_bytes(bad_inputs.kws_bytes(header, raw))
    refused("keywords", "-k", path, needles=[str(path), "shape (True, 13)"])


def test_the_calibration_record_round_trips():
    from kwsstream.calibration_record import Calibration, Curve

    record = Calibration.from_json(GOOD_CALIBRATION | {"other_tool": {"x": [1]}}, "here", "calibrated")
    assert isinstance(record.curve, Curve) and record.positives == (0.2, 0.25) and record.rates == "background"
    again = Calibration.from_json(record.to_json(), "here", "calibrated")
    assert again == record and record.to_json()["other_tool"] == {"x": [1]}


# --- 6. what search writes -----------------------------------------------------------------------------

def search_ok(keyset, archive, out, *extra) -> None:
    result = bounded(lambda: run_main("search", "-k", keyset, archive, "--workers", "1", "--no-progress",
                                      "--out", out, *extra))
    assert result.returncode == 0, result.stderr


def test_search_output_keeps_its_mode_and_group(keyset, archive, tmp_path):
    """A 0600 table (and its state file) became 0644."""
    out = tmp_path / "hits.csv"
    state = tmp_path / "hits.csv.state.jsonl"
    out.write_text("old\n")
    state.write_text("")
    out.chmod(0o600)
    state.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(out, 0, 1)
        os.chown(state, 0, 1)
    search_ok(keyset, archive, out)
    for p in (out, state):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        if os.geteuid() == 0:
            assert p.stat().st_gid == 1, p
    assert out.read_text().startswith("keyword,file,")


def test_search_output_through_a_symlink_writes_its_target(keyset, archive, tmp_path):
    """A symlinked output was replaced by a regular file."""
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "hits.jsonl"
    target.write_text("")
    link = tmp_path / "hits.jsonl"
    link.symlink_to(target)
    search_ok(keyset, archive, link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith('{"keyword"')


def test_search_never_writes_through_a_planted_temporary_name(keyset, archive, tmp_path):
    """``OUT.tmp`` and ``OUT.state.jsonl.tmp`` were opened following symlinks: a link planted
    there made the search overwrite its target."""
    victims = []
    for name in ("hits.csv.tmp", "hits.csv.state.jsonl.tmp"):
        victim = tmp_path / f"victim-{name}"
        victim.write_text("precious\n")
        (tmp_path / name).symlink_to(victim)
        victims.append(victim)
    search_ok(keyset, archive, tmp_path / "hits.csv")
    assert all(v.read_text() == "precious\n" for v in victims)
    assert (tmp_path / "hits.csv").read_text().startswith("keyword,file,")


def test_search_refuses_an_output_that_is_an_input(keyset, archive, tmp_path):
    """``search -k victim.kws ... --out victim.kws`` destroyed the keyword set."""
    victim = tmp_path / "victim.kws"
    victim.write_bytes(keyset.read_bytes())
    before = victim.read_bytes()
    refused("search", "-k", victim, archive, "--workers", "1", "--out", victim, needles=["--out", "keyword set"])
    assert victim.read_bytes() == before
    link = tmp_path / "alias.csv"
    link.symlink_to(victim)
    refused("search", "-k", victim, archive, "--workers", "1", "--out", link, needles=["--out", "keyword set"])
    assert victim.read_bytes() == before
    audio = tmp_path / "a.flac"
    audio.write_bytes((archive / "a.flac").read_bytes())
    refused("search", "-k", keyset, audio, "--workers", "1", "--out", audio, needles=["--out", "audio file"])
    assert audio.read_bytes() == (archive / "a.flac").read_bytes()
    listing = tmp_path / "files.txt"
    listing.write_text(f"{audio}\n")
    refused("search", "-k", keyset, f"@{listing}", "--workers", "1", "--out", listing, needles=["--out", "list"])
    assert listing.read_text() == f"{audio}\n"


def test_search_refuses_a_device_as_output(keyset, archive, tmp_path):
    link = tmp_path / "null.csv"
    link.symlink_to("/dev/null")
    refused("search", "-k", keyset, archive, "--workers", "1", "--out", link, needles=["null", "character device"])
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# --- 7. the state file's bad lines are skipped and counted ---------------------------------------------

def test_bad_state_lines_are_skipped_and_counted_in_one_line(keyset, archive, tmp_path):
    """``TypeError: unhashable type: 'list'`` (a hit naming a list) and ``RecursionError``
    (100,000 ``[``) came out of the state loader."""
    out = tmp_path / "hits.csv"
    search_ok(keyset, archive, out)
    state = Path(str(out) + ".state.jsonl")
    lines = state.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["hits"] = [[["a list"], 1.0, 2.0, 0.1]]
    state.write_text("\n".join([lines[0], json.dumps(entry), "[" * 100_000, *lines[2:]]) + "\n")
    result = bounded(lambda: run_main("search", "-k", keyset, archive, "--workers", "1", "--no-progress",
                                      "--out", out))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "invalid line" in line]
    assert len(warnings) == 1 and "2 invalid line(s)" in warnings[0], result.stderr
    assert "searched 1 file(s)" in result.stderr  # the file of the bad line, again


def test_the_state_loader_survives_hostile_lines(tmp_path):
    from kwsstream.searchstate import SearchState

    path = tmp_path / "s.state.jsonl"
    head = json.dumps({"kwsstream_search_state": 1, "spotter": "k"})
    hostile = ["[" * 100_000, '{"path": ["x"]}', "x" * 100,
               '{"path": "a", "size": 1, "mtime_ns": 1, "seconds": 0, "hits": [[{"a": 1}, 0, 0, 0]], "error": null}']
    path.write_bytes((head + "\n" + "\n".join(hostile) + "\n").encode() + b"\xff\xfe not UTF-8\n")
    notes = []
    state = SearchState(path, "k", ["hola"], notes.append)
    bounded(state.load)
    assert state.done == {} and len(notes) == 1 and "5 invalid line(s)" in notes[0], notes


# --- 8. file names that are not UTF-8 -----------------------------------------------------------------------

def test_search_reads_and_writes_non_utf8_file_names(keyset, tmp_path):
    """A folder holding ``canci\\xf3n.wav`` failed with UnicodeEncodeError on every rerun."""
    folder = tmp_path / "music"
    folder.mkdir()
    x, sr = sf.read(DATA / "stream.flac", dtype="float32")
    sf.write(folder / "plain.wav", x[: len(x) // 2], sr)
    os.rename(folder / "plain.wav", os.path.join(os.fsencode(folder), b"canci\xf3n.wav"))
    out = tmp_path / "hits.csv"
    for run in range(2):
        result = bounded(lambda: run_main("search", "-k", keyset, folder, "--workers", "1", "--no-progress",
                                          "--out", out))
        assert result.returncode == 0, result.stderr
        assert f"searched {1 - run} file(s)" in result.stderr, result.stderr  # the rerun resumes
    assert os.path.join(os.fsencode(folder), b"canci\xf3n.wav") in out.read_bytes()
    jsonl = tmp_path / "hits.jsonl"
    result = run_main("search", "-k", keyset, folder, "--workers", "1", "--no-progress", "--out", jsonl)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert rows and os.fsencode(rows[0]["file"]) == os.path.join(os.fsencode(folder), b"canci\xf3n.wav")


# --- 9. globs do not follow links to folders -------------------------------------------------------------

def test_globs_and_walks_do_not_follow_folder_links(archive, tmp_path):
    """``search 'x/**/*.wav'`` counted one file 41 times through ``self -> .``; two links to the
    parent never finished."""
    from kwsstream.searchstate import expand_paths

    root = tmp_path / "x"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "one.wav").write_bytes((archive / "b.wav").read_bytes())
    (root / "self").symlink_to(".")
    (root / "sub" / "up1").symlink_to("..")
    (root / "sub" / "up2").symlink_to("..")
    expected = [str(root / "sub" / "one.wav")]
    assert bounded(lambda: expand_paths([f"{root}/**/*.wav"])) == expected
    assert bounded(lambda: expand_paths([str(root)])) == expected
    assert bounded(lambda: expand_paths([f"{root}/**"])) == expected


# --- 10. local workers open no port; options bounded; Ctrl-C ------------------------------------------

def listening_sockets() -> list:
    psutil = pytest.importorskip("psutil")
    me = psutil.Process()
    found = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet") if hasattr(proc, "net_connections") else proc.connections("inet")
        except psutil.Error:
            continue
        found += [(proc.pid, c.laddr) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def spawned_workers() -> int:
    psutil = pytest.importorskip("psutil")
    count = 0
    for proc in psutil.Process().children(recursive=True):
        try:
            count += "spawn_main" in " ".join(proc.cmdline())
        except psutil.Error:
            pass
    return count


def test_local_workers_open_no_port_and_find_what_one_finds(keyset, archive, tmp_path):
    """``--workers N`` started an unauthenticated Dask LocalCluster listening on 127.0.0.1: any
    local user could run code as the searching user. Two files and 8 workers asked: at most two
    processes."""
    from kwsstream.search import search

    before = listening_sockets()
    seen = {"sockets": [], "workers": 0}

    def watch(_line: str) -> None:  # called while the pool is alive (a file is reported)
        seen["sockets"] += listening_sockets()
        seen["workers"] = max(seen["workers"], spawned_workers())

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "bad.wav").write_bytes(b"RIFF" + b"\0" * 40)
    one = search(keyset, [str(archive)], out=tmp_path / "one.csv", workers=1, progress=False, say=lambda _: None)
    many = bounded(lambda: search(keyset, [str(archive), str(tmp_path / "c")], out=tmp_path / "two.csv",
                                  workers=min(8, 4 * (os.cpu_count() or 1)), progress=False, say=watch))
    assert seen["sockets"] == before == [] or set(seen["sockets"]) <= set(before)
    assert 1 <= seen["workers"] <= 3  # three files: never more processes than files
    assert many.workers == 3 and many.complete
    assert [r for r in many.rows] == [r for r in one.rows]


@pytest.mark.parametrize("args,needle", [
    (["--workers", "0"], "--workers"),
    (["--workers", str(4 * (os.cpu_count() or 1) + 1)], "--workers"),
    (["--workers", "99999999999999999999"], "99999999999999999999"),
    (["--scheduler", "http://example.org:8786"], "--scheduler"),
    (["--scheduler", "tcp://host"], "--scheduler"),
    (["--scheduler", "tcp://host:99999"], "--scheduler"),
    (["--scheduler", "tls://host:8786"], "--tls-ca-file"),
    (["--scheduler", "tcp://host:8786", "--tls-ca-file", "a", "--tls-cert", "b", "--tls-key", "c"], "tls://"),
    (["--tls-ca-file", "a"], "--tls-cert"),
], ids=["workers_0", "workers_too_many", "workers_huge", "scheduler_http", "scheduler_no_port",
        "scheduler_port", "tls_without_files", "tcp_with_tls", "tls_partial"])
def test_worker_and_scheduler_options_are_bounded(keyset, archive, args, needle):
    refused("search", "-k", keyset, archive, *args, needles=[needle])


def test_an_unreachable_scheduler_is_one_line_in_bounded_time(keyset, archive):
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    refused("search", "-k", keyset, archive, "--scheduler", f"tcp://127.0.0.1:{port}",
            needles=["--scheduler", "cannot connect"])
    assert time.monotonic() - started < GUARD_SECONDS


def make_certificates(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a certificate + key it signed (openssl): ``(ca, cert, key)``."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")

    def run(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    ca, ca_key, cert, key = (f"{name}-{p}" for p in ("ca.pem", "ca.key", "cert.pem", "cert.key"))
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", f"/CN={name}-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", f"{name}.csr", "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", f"{name}.csr", "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
        "-days", "2")
    return folder / ca, folder / cert, folder / key


def test_a_tls_scheduler_needs_a_certificate_of_its_ca(keyset, archive, tmp_path):
    """``--scheduler tls://`` with Dask's mutual TLS: the right files find what one process
    finds; a client certificate of another CA is refused in one line."""
    distributed = pytest.importorskip("distributed")
    import logging

    from kwsstream.search import search
    from kwsstream.searchworkers import TlsFiles

    ca, cert, key = make_certificates(tmp_path, "cluster")
    security = distributed.security.Security(
        tls_ca_file=str(ca), tls_scheduler_cert=str(cert), tls_scheduler_key=str(key), tls_worker_cert=str(cert),
        tls_worker_key=str(key), tls_client_cert=str(cert), tls_client_key=str(key), require_encryption=True)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                  protocol="tls://", host="127.0.0.1", scheduler_port=0, security=security,
                                  silence_logs=logging.ERROR) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        one = search(keyset, [str(archive)], workers=1, progress=False, say=lambda _: None)
        remote = bounded(lambda: search(keyset, [str(archive)], scheduler=address, tls=TlsFiles(str(ca), str(cert),
                                        str(key)), progress=False, say=lambda _: None))
        assert remote.rows == one.rows
        _, other_cert, other_key = make_certificates(tmp_path, "intruder")
        refused("search", "-k", keyset, archive, "--scheduler", address, "--tls-ca-file", ca,
                "--tls-cert", other_cert, "--tls-key", other_key, needles=["--scheduler", "cannot connect"])


def test_ctrl_c_stops_local_workers_with_one_line(keyset, tmp_path):
    """Ctrl-C on a local multi-worker search: exit 130, one line, no worker tracebacks, no
    worker left behind."""
    psutil = pytest.importorskip("psutil")
    folder = tmp_path / "many"
    folder.mkdir()
    x, sr = sf.read(DATA / "stream.flac", dtype="float32")
    sf.write(folder / "f00.wav", np.tile(x, 4), sr)
    for i in range(1, 40):
        os.link(folder / "f00.wav", folder / f"f{i:02d}.wav")
    proc = subprocess.Popen([sys.executable, "-m", "kwsstream", "search", "-k", str(keyset), str(folder),
                             "--workers", "2", "--no-progress", "--out", str(tmp_path / "hits.csv")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + GUARD_SECONDS
        parent = psutil.Process(proc.pid)
        while time.monotonic() < deadline and proc.poll() is None:
            if sum("spawn_main" in " ".join(c.cmdline()) for c in parent.children(recursive=True)) >= 2:
                break
            time.sleep(0.1)
        time.sleep(1.0)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends: the whole group
        out, err = proc.communicate(timeout=GUARD_SECONDS)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip() == "kwsstream: interrupted", err
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [p for p in psutil.process_iter(["pid"]) if _session(p) == proc.pid]
        if not left:
            break
        time.sleep(0.2)
    assert not left


def _session(proc) -> int | None:
    try:
        return os.getsid(proc.pid)
    except OSError:
        return None


# --- 11. smaller ones -------------------------------------------------------------------------------------------

def test_a_rewrite_keeps_the_group_of_the_set(tmp_path):
    """640 root:daemon became root:root on rewrite."""
    from kwsstream.keyset import load_keyset, update_keyset

    if os.geteuid() != 0:
        pytest.skip("needs root to give the file another group")
    path = write_set(tmp_path / "a.kws", bad_inputs.valid_header())
    path.chmod(0o640)
    os.chown(path, 0, 1)
    update_keyset(path, lambda ks: ks.without("word0"))
    assert (path.stat().st_gid, stat.S_IMODE(path.stat().st_mode)) == (1, 0o640)
    assert [k.name for k in load_keyset(path).keywords] == ["word1"]


def test_a_set_with_a_long_name_can_be_written(tmp_path):
    """A 244-character set name could be read but never written: the temporary name was too long."""
    from kwsstream.keyset import load_keyset, save_keyset, update_keyset

    path = tmp_path / ("s" * 240 + ".kws")
    write_set(path, bad_inputs.valid_header())
    update_keyset(path, lambda ks: ks.without("word0"))
    save_keyset(load_keyset(path), path)
    assert [k.name for k in load_keyset(path).keywords] == ["word1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, f".{path.name}.lock"])


@pytest.mark.parametrize("name,codepoint", [("evil\u202eslipup", "U+202E"), ("zero\u200bwidth", "U+200B"),
                                           ("\u2066isolate", "U+2066"), ("bom\ufeff", "U+FEFF")])
def test_invisible_characters_in_keyword_names_are_refused(tmp_path, name, codepoint):
    path = tmp_path / "a.kws"
    refused("enroll", "-k", path, name, DATA / "biblioteca_1.flac", needles=["keyword name", codepoint])
    assert not path.exists()
    header = bad_inputs.valid_header()
    header["keywords"][0]["name"] = name
    bad = write_set(tmp_path / "b.kws", header)
    refused("keywords", "-k", bad, needles=[str(bad), codepoint])


def test_keyword_names_are_normalised_to_nfc(tmp_path):
    """One word typed two ways (precomposed é, or e + combining acute) is one keyword."""
    from kwsstream.keyset import load_keyset, update_keyset
    from kwsstream.keysetformat import check_keyword_name

    decomposed, composed = "cafe\u0301", "caf\u00e9"
    assert check_keyword_name(decomposed) == composed
    assert check_keyword_name("pers\u200cian") == "pers\u200cian"  # ZWNJ: needed by some spellings
    header = bad_inputs.valid_header()
    header["keywords"][0]["name"] = decomposed  # written before names were normalised
    path = write_set(tmp_path / "a.kws", header)
    assert [k.name for k in load_keyset(path).keywords] == [composed, "word1"]
    update_keyset(path, lambda ks: ks.without(decomposed))
    assert [k.name for k in load_keyset(path).keywords] == ["word1"]
    header["keywords"][1]["name"] = composed
    refused("keywords", "-k", write_set(tmp_path / "b.kws", header), needles=["repeated"])

