"""The command line: bad input gives exit 2 and one clear line, and never harms the keyword set."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from cli_helpers import one_line_error
from cli_helpers import run_kwsstream as cli


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


def test_keywords_lists_and_removes(enrolled, tmp_path, speech):
    path, word = enrolled
    copy = tmp_path / "copy.kws"
    copy.write_bytes(path.read_bytes())
    other = list(speech.examples)[1]
    assert cli("enroll", "-k", copy, other, *speech.examples[other][:1]).returncode == 0
    listing = cli("keywords", "-k", copy)
    assert listing.returncode == 0 and word in listing.stdout and other in listing.stdout
    # one example is enough: the threshold comes from the background, not from the examples
    line = next(row for row in listing.stdout.splitlines() if row.startswith(other + "\t"))
    assert "(calibrated)\texpected_fa_per_hour=1\t" in line
    assert cli("keywords", "-k", copy, "--remove", word).returncode == 0
    listing = cli("keywords", "-k", copy).stdout
    assert word not in listing and other in listing


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
    assert any(f'"keyword": "{t.keyword}"' in line and abs(float(line.split('"start": ')[1].split(",")[0]) - t.start) < 0.3
               for line in proc.stdout.splitlines())
