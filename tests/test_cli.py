"""The command line: bad input gives exit 2 and one clear line, and never harms the keyword set.

Commands run in this process (``kwsstream.cli.main``, :func:`cli_helpers.run_main`); the entry
point as a real process is tested once here (exit statuses) and in ``test_end_to_end.py``
(nothing but JSON lines on stdout)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from cli_helpers import one_line_error, run_kwsstream
from cli_helpers import run_main as cli
from kwsstream.calibrate import DEFAULT_FA_PER_HOUR


@pytest.fixture(scope="module")
def enrolled(speech, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "set.kws"
    word, files = next(iter(speech.examples.items()))
    proc = cli("enroll", "-k", path, word, *files)
    assert proc.returncode == 0, proc.stderr
    assert "threshold" in proc.stderr
    return path, word


def test_bad_inputs_exit_2_and_leave_the_set_unharmed(enrolled, tmp_path, speech):
    path, word = enrolled
    before = path.read_bytes()
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"not audio at all")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    one_line_error(cli("enroll", "-k", path, "otra", tmp_path / "missing.wav"), "missing.wav", "no such file")
    one_line_error(cli("enroll", "-k", path, "otra", nan), "nan.wav", "NaN")
    one_line_error(cli("enroll", "-k", path, "otra", empty), "empty.wav", "empty")
    one_line_error(cli("enroll", "-k", path, "otra", corrupt), "corrupt.wav", "not a readable audio file")
    one_line_error(cli("enroll", "-k", path, "otra", silent), "silent.wav", "silence")
    one_line_error(cli("enroll", "-k", path, "otra", speech.examples[word][0], "--segment", "0.5", "99"), "segment")
    one_line_error(cli("enroll", "-k", path, "otra", speech.examples[word][0], "--encoder", "nope.bin"), "nope.bin")
    one_line_error(cli("detect", "-k", path, corrupt), "corrupt.wav")
    one_line_error(cli("detect", "-k", tmp_path / "none.kws", speech.stream), "none.kws", "no such keyword set")
    one_line_error(cli("detect", "-k", corrupt, speech.stream), "corrupt.wav", "not a keyword set file")
    one_line_error(cli("keywords", "-k", path, "--remove", "nadie"), "nadie")
    assert path.read_bytes() == before
    assert cli("detect", "-k", path).returncode == 2  # argparse: missing AUDIO


def test_the_entry_point_process_exits_0_and_2(enrolled, tmp_path):
    """The real ``python -m kwsstream``: status 0 with the listing on stdout, status 2 with one
    line for bad input and for a usage error."""
    path, word = enrolled
    ok = run_kwsstream("keywords", "-k", path)
    assert ok.returncode == 0 and ok.stdout.startswith(f"# {path}: encoder MFCC-13\n") and f"\n{word}\t" in ok.stdout
    one_line_error(run_kwsstream("detect", "-k", tmp_path / "none.kws", tmp_path / "a.wav"), "none.kws",
                   prefix="kwsstream: error: ", no_stdout=True)
    usage = run_kwsstream("detect", "-k", path)  # argparse: missing AUDIO
    assert usage.returncode == 2 and "usage:" in usage.stderr and usage.stdout == ""


def test_keywords_lists_and_removes(enrolled, tmp_path, speech):
    path, word = enrolled
    copy = tmp_path / "copy.kws"
    copy.write_bytes(path.read_bytes())
    other = list(speech.examples)[1]
    assert cli("enroll", "-k", copy, other, *speech.examples[other][:1]).returncode == 0
    listing = cli("keywords", "-k", copy)
    assert listing.returncode == 0 and listing.stdout.splitlines()[0] == f"# {copy}: encoder MFCC-13"
    rows = {line.split("\t")[0]: line for line in listing.stdout.splitlines()[1:]}
    assert set(rows) == {word, other}
    # one example is enough: the threshold comes from the background, not from the examples
    assert f"(calibrated)\texpected_fa_per_hour={DEFAULT_FA_PER_HOUR:.2g}\t" in rows[other] and "templates=1\t" in rows[other]
    assert cli("keywords", "-k", copy, "--remove", word).returncode == 0
    rows = [line.split("\t")[0] for line in cli("keywords", "-k", copy).stdout.splitlines()[1:]]
    assert rows == [other]


def test_user_threshold_survives_recalibration(tmp_path, speech):
    path = tmp_path / "t.kws"
    (a, fa), (b, fb) = list(speech.examples.items())[:2]
    assert cli("enroll", "-k", path, a, *fa, "--threshold", "0.123").returncode == 0
    assert cli("enroll", "-k", path, b, *fb).returncode == 0
    assert f"{a}\tthreshold=0.123 (user)" in cli("keywords", "-k", path).stdout


def test_segment_takes_the_keyword_out_of_a_longer_recording(tmp_path, speech):
    t = speech.truth[0]
    path = tmp_path / "seg.kws"
    proc = cli("enroll", "-k", path, t.keyword, speech.stream, "--segment", t.start, t.end)
    assert proc.returncode == 0, proc.stderr
    proc = cli("detect", "-k", path, speech.stream, "--json")
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert any(e["keyword"] == t.keyword and abs(e["start"] - t.start) < 0.3 for e in events), events


def test_a_mistyped_option_gets_its_commands_usage_and_a_suggestion(enrolled, speech):
    path, _ = enrolled
    result = cli("detect", "-k", path, speech.stream, "--jsn")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("usage: kwsstream detect "), result.stderr  # not the top-level usage
    assert result.stderr.strip().splitlines()[-1] == (
        "kwsstream detect: error: unrecognized argument: --jsn (did you mean --json?)")
    typo = cli("keywords", "-k", path, "--fa-per-houre", "2", "--set", "x")
    assert typo.returncode == 2 and "usage: kwsstream keywords " in typo.stderr and "did you mean --fa-per-hour?" in typo.stderr


@pytest.mark.parametrize("args", [("enroll", "-k", "{kws}", "otra", "{audio}", "--fa-per-hour", "0"),
                                  ("calibrate", "-k", "{kws}", "--fa-per-hour", "-3"),
                                  ("keywords", "-k", "{kws}", "--set", "{word}", "--fa-per-hour", "1e9")])
def test_a_bad_value_names_its_option(enrolled, speech, args):
    path, word = enrolled
    before = path.read_bytes()
    filled = [a.format(kws=path, audio=speech.examples[word][0], word=word) for a in args]
    line = one_line_error(cli(*filled), "must be", prefix="kwsstream: error: --fa-per-hour: ")
    assert "between" in line
    assert path.read_bytes() == before
