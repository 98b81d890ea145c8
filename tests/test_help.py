"""What a newcomer reads: --help text for every argument of every command, the direction of every
threshold option, an example per command; ``keywords`` in seconds and words; and the Ctrl-C
convention (a user stopping a live run is not an error: exit 0 and one "stopped" line)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys

import pytest
from cli_helpers import run_main as cli

from kwsstream.calibrate import DEFAULT_FA_PER_HOUR
from kwsstream.cli import build_parser
from kwsstream.demo import data_dir


COMMANDS = ("enroll", "calibrate", "detect", "keywords", "demo", "listen", "devices", "search")
"""The commands held to this; a new one joins the list once it has its help texts and examples
(``kwsstream.cli.add_command``)."""


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return parser, {name: sub.choices[name] for name in COMMANDS}


def test_every_argument_of_every_command_has_help_and_every_command_an_example():
    parser, commands = _commands()
    assert "exit status" in parser.epilog and "Ctrl-C" in parser.epilog
    for name, p in commands.items():
        for action in p._actions:
            assert action.help and action.help.strip(), f"kwsstream {name}: {action.dest} has no help"
        assert p.description and p.epilog and f"kwsstream {name}" in p.epilog, name
        text = p.format_help()
        assert f"  kwsstream {name}" in text, name  # the examples are shown as written


@pytest.mark.parametrize("option", ["--threshold", "--fa-per-hour"])
def test_every_threshold_option_says_which_way_it_goes(option):
    _, commands = _commands()
    seen = 0
    for name, p in commands.items():
        for action in p._actions:
            if option in action.option_strings:
                assert "higher: more detections and more false alarms" in action.help.lower(), (name, action.help)
                seen += 1
    assert seen >= 3


def test_help_runs_for_every_command():
    _, commands = _commands()
    for name in commands:
        result = cli(name, "--help")
        assert result.returncode == 0 and "example" in result.stdout, name


@pytest.fixture(scope="module")
def keyset(tmp_path_factory):
    path = tmp_path_factory.mktemp("help") / "k.kws"
    files = sorted(data_dir().glob("mariposa_*.flac"))
    proc = cli("enroll", "-k", path, "mariposa", *files, "--encoder", "mfcc")
    assert proc.returncode == 0, proc.stderr
    return path


def test_keywords_shows_lengths_in_seconds_and_the_threshold_in_words(keyset, monkeypatch):
    import soundfile as sf

    listing = cli("keywords", "-k", keyset)
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()
    assert header == f"# {keyset}: encoder MFCC-13"
    fields = row.split("\t")
    assert fields[0] == "mariposa" and fields[1].startswith("threshold=") and "templates=3" in fields
    seconds = [float(x) for x in next(f for f in fields if f.startswith("seconds=")).split("=")[1].split(",")]
    longest = max(sf.info(f).duration for f in data_dir().glob("mariposa_*.flac"))
    assert len(seconds) == 3 and all(0.2 < s <= longest + 0.05 for s in seconds)  # trimmed words, in seconds
    assert fields[-1].startswith(f"# calibrated to {DEFAULT_FA_PER_HOUR:g} false alarms/hour")
    assert "in the speaker's own speech (built-in background" in fields[-1]

    from kwsstream import encoders
    from kwsstream.errors import EncoderError

    def missing(identity, **kw):
        raise EncoderError("the ONNX model is not there")

    monkeypatch.setattr(encoders, "encoder_from_identity", missing)  # e.g. a moved ONNX model: frames instead
    row = cli("keywords", "-k", keyset).stdout.splitlines()[1]
    assert "\tframes=" in row and "seconds=" not in row


def _read_line(stream, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def test_ctrl_c_stops_detect_realtime_with_exit_0_and_one_stopped_line(keyset):
    """A user's Ctrl-C of a live run while it plays (after the first detection): exit 0,
    pending output intact, the last line 'stopped (Ctrl-C) ...'. (While it loads: below.)"""
    command = [sys.executable, "-m", "kwsstream", "detect", "--realtime", "--json", "-k", str(keyset),
               str(data_dir() / "stream.flac")]  # 30 s: 'mariposa' is said at 5.6 s
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = _read_line(proc.stdout, 25)
        assert first, "no detection within 25 s"
        assert json.loads(first)["keyword"] == "mariposa"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    for line in out.splitlines():
        json.loads(line)  # nothing but JSON on stdout
    lines = err.strip().splitlines()
    assert lines[-1].startswith("stopped (Ctrl-C) at ") and "stream.flac" in lines[-1], err
    assert "interrupted" not in err and "Traceback" not in err


PAUSE_POINTS = ("start", "parsed", "ready", "loaded")
"""Where ``main`` can be held (``KWSSTREAM_PAUSE_AT``): its first line, before any import of
its own; after parsing; after the heavy imports (numba); with the spotter loaded (a live
detect, before it plays)."""


def _interrupted_at(point: str, args: list[str], times: int = 1) -> subprocess.CompletedProcess:
    """``python -m kwsstream ARGS`` held at ``point``, then sent Ctrl-C ``times`` times in a row
    once it says it is there: no guess of how long anything takes."""
    env = {**os.environ, "KWSSTREAM_PAUSE_AT": point}
    proc = subprocess.Popen([sys.executable, "-m", "kwsstream", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        while f"paused at {point}" not in seen:
            line = _read_line(proc.stderr, 120)
            assert line, f"never paused at {point}: {seen}"
            seen += line
        for _ in range(times):
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(args, proc.returncode, out, seen + err)


@pytest.mark.parametrize("point", PAUSE_POINTS)
def test_ctrl_c_at_any_point_of_a_live_run_exits_0_with_one_line(keyset, point):
    """A live run (here detect --realtime) stopped while still loading - at its first line, after
    parsing, inside the heavy imports' place, with the spotter loaded - exits 0 with 'stopped'."""
    result = _interrupted_at(point, ["detect", "--realtime", "-k", keyset, data_dir() / "stream.flac"])
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "interrupted" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "stopped (Ctrl-C)", result.stderr


@pytest.mark.parametrize("point", PAUSE_POINTS[:3])
def test_ctrl_c_at_any_point_of_another_command_exits_130_with_one_line(keyset, point):
    result = _interrupted_at(point, ["detect", "-k", keyset, data_dir() / "stream.flac"])
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "kwsstream: interrupted", result.stderr


@pytest.mark.parametrize("args,status,line", [(["demo", "--fast"], 0, "stopped (Ctrl-C)"),
                                              (["keywords", "-k", "KWS"], 130, "kwsstream: interrupted")])
def test_ctrl_c_twice_in_a_row_still_one_line_and_the_same_status(keyset, args, status, line):
    """A second Ctrl-C lands wherever the first left the process (unwinding, saying its line,
    exiting): the outcome is the same."""
    result = _interrupted_at("start", [str(keyset) if a == "KWS" else a for a in args], times=2)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count(line) == 1, result.stderr


def test_ctrl_c_of_a_batch_command_is_still_130():
    """Only live runs treat Ctrl-C as a stop; an interrupted batch command did not finish."""
    from kwsstream import cli as cli_module

    def interrupted(args):
        raise KeyboardInterrupt

    parser_args = ["keywords", "-k", "x.kws"]
    real = cli_module.cmd_keywords
    try:
        cli_module.cmd_keywords = interrupted
        result = cli(*parser_args)
    finally:
        cli_module.cmd_keywords = real
    assert result.returncode == 130 and result.stderr.strip() == "kwsstream: interrupted"


def test_the_defaults_the_help_names_are_the_codes():
    """Every default a help text states is the constant the code uses: the target rate of
    enroll and calibrate (DEFAULT_FA_PER_HOUR), listen's queue (QUEUE_SECONDS)."""
    from kwsstream.pipeline import QUEUE_SECONDS

    _, commands = _commands()
    for name in ("enroll", "calibrate"):
        text = " ".join(commands[name].format_help().split())  # argparse wraps lines anywhere
        assert f"(default: the keyword's earlier target, else {DEFAULT_FA_PER_HOUR:g})" in text, text
        assert "else 0.1)" not in text
    assert f"(default {QUEUE_SECONDS:g})" in " ".join(commands["listen"].format_help().split())
