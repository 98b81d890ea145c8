"""Audio that survives anything: only real data is read (no hang, no re-yielded buffer, bounded
length and memory), truncation and decoder complaints are one warning line instead of library
noise, and audio that cannot be a keyword example is refused (check_example / load_example)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kwsstream.audio import (
    MAX_BLOCK_VALUES, check_example, iter_audio_blocks, load_audio, load_example, prepare_samples,
)
from kwsstream.cli import main
from script_helpers import load_script
from kwsstream.errors import AudioError
from kwsstream.keyset import save_keyset

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "kwsstream" / "data"


bad_inputs = load_script("make_bad_inputs")


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad-audio")
    return out, bad_inputs.audio_cases(out)


@pytest.fixture(scope="module")
def keyset(tmp_path_factory):
    from kwsstream.keyset import load_keyset

    path = tmp_path_factory.mktemp("set") / "ok.kws"
    path.write_bytes(bad_inputs.kws_bytes(bad_inputs.valid_header(), bad_inputs.valid_frames()))
    save_keyset(load_keyset(path), path)
    return path


def cli(capfd, *args):
    code = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return code, out, err


def test_mp3_whose_header_claims_84_hours_is_read_for_what_it_holds(bad, caplog):
    path = bad[0] / "xing_frames.mp3"
    assert sf.info(str(path)).frames / 16_000 > 80 * 3600  # what libsndfile believes
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="kwsstream.audio"):
        blocks = list(iter_audio_blocks(path, block_seconds=0.1))
    assert time.monotonic() - started < 5
    total = sum(len(b) for b in blocks)
    assert 0.5 * 16_000 < total < 2 * 16_000
    # never the old buffer again: no two consecutive blocks are the same data
    assert not any(len(a) == len(b) and np.array_equal(a, b) for a, b in zip(blocks, blocks[1:]))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and str(path) in warnings[0] and "83.9 h" in warnings[0]


@pytest.mark.parametrize("name", ["xing_frames.mp3", "cut_mid_frame.wav", "damaged_frames.mp3"])
def test_detect_on_damaged_audio_warns_in_one_line_without_library_noise(bad, keyset, capfd, name):
    path, case = bad[0] / name, bad[1][name]
    code, out, err = cli(capfd, "detect", "-k", keyset, path, "--json")
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # libmpg123's own lines are gone
    assert lines[0].startswith("kwsstream: warning: ") and str(path) in lines[0] and case.needle in lines[0]


def test_enroll_from_the_lying_mp3_stays_small(bad, tmp_path, capfd):
    """It once took 4 GB: load_audio kept the re-yielded buffer for the header's 84 hours."""
    path = bad[0] / "xing_frames.mp3"
    assert len(load_audio(path)) < 2 * 16_000
    started = time.monotonic()
    code, _, err = cli(capfd, "enroll", "-k", tmp_path / "a.kws", "hola", path)
    assert time.monotonic() - started < 30
    assert code in (0, 2), err  # enrolled with a warning, or refused by enrollment's own checks
    assert "Traceback" not in err


@pytest.mark.parametrize("name", ["cut_mid_frame.wav", "xing_frames.mp3"])
def test_load_example_refuses_a_truncated_file(bad, name):
    path = bad[0] / name
    with pytest.raises(AudioError, match="truncated") as err:
        load_example(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("name", ["square_full_scale.wav", "steady_tone.wav", "digital_silence.wav"])
def test_what_cannot_be_a_keyword_example_is_refused(bad, name):
    path, case = bad[0] / name, bad[1][name]
    with pytest.raises(AudioError, match=case.needle) as err:
        load_example(path)
    assert str(path) in str(err.value)
    with pytest.raises(AudioError, match=case.needle):
        check_example(load_audio(path), str(path))


def test_real_examples_pass_check_example():
    for path in sorted(DATA.glob("*_[123].flac")):
        check_example(load_example(path), str(path))


def test_noise_and_a_quiet_signal_are_refused_speech_like_dynamics_pass():
    rng = np.random.default_rng(0)
    with pytest.raises(AudioError, match="steady"):
        check_example((0.1 * rng.standard_normal(16_000)).astype(np.float32), "noise")
    t = np.arange(16_000) / 16_000
    syllables = (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * np.sin(2 * np.pi * 200 * t)
    check_example((0.3 * syllables).astype(np.float32), "syllables")
    with pytest.raises(AudioError, match="too quiet"):
        check_example((1e-4 * syllables).astype(np.float32), "whisper")


def test_overflowing_mix_down_is_one_line_without_numpy_warnings(bad, keyset, capfd):
    path = bad[0] / "float_overflow.wav"
    code, out, err = cli(capfd, "detect", "-k", keyset, path)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "infinite" in lines[0], err
    with pytest.raises(AudioError, match="infinite"):
        prepare_samples(np.full((10, 2), 3e38, np.float32))


def test_length_is_bounded(tmp_path):
    path = tmp_path / "two.wav"
    sf.write(path, np.random.default_rng(0).uniform(-0.3, 0.3, 32_000).astype(np.float32), 16_000)
    with pytest.raises(AudioError, match="longer than") as err:
        list(iter_audio_blocks(path, block_seconds=0.25, max_seconds=1.0))
    assert str(path) in str(err.value)
    with pytest.raises(AudioError, match="longer than"):
        load_audio(path, max_seconds=1.0)


def test_blocks_of_many_channels_are_bounded(tmp_path):
    path = tmp_path / "many.wav"
    channels = 64
    sf.write(path, np.zeros((48_000 * 3, channels), np.int16) + 100, 48_000, subtype="PCM_16")
    blocks = list(iter_audio_blocks(path, block_seconds=10.0))
    assert max(len(b) for b in blocks) * 48_000 / 16_000 * channels <= MAX_BLOCK_VALUES + 48_000
    assert sum(len(b) for b in blocks) == pytest.approx(3 * 16_000, abs=4)


@pytest.mark.parametrize("rate", [1, 500, 2_000_000])
def test_absurd_sample_rates_are_refused_naming_the_file(tmp_path, rate):
    path = tmp_path / "rate.wav"
    sf.write(path, np.zeros(4000, np.int16), 16_000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[24:28] = rate.to_bytes(4, "little")  # the fmt chunk's sample rate
    path.write_bytes(bytes(data))
    with pytest.raises(AudioError) as err:
        list(iter_audio_blocks(path))
    assert str(path) in str(err.value)


# --- the process's stderr is never taken: decoders' messages are caught without it -------------

@pytest.mark.parametrize("name", ["speech.flac", "speech.mp3", "damaged_frames.mp3"])
def test_another_threads_stderr_arrives_whole_while_a_file_is_read(bad, tmp_path, capfd, caplog, monkeypatch, name):
    """A thread prints numbered lines to file descriptor 2 for as long as a file is read (a
    paced file is read in a background thread while the main thread prints detections): every
    line arrives, and none of them is taken for a decoder problem."""
    import os
    import re
    import threading

    logger = logging.getLogger("kwsstream")  # warnings to caplog only (an earlier main() routes them to stderr)
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)

    if name == "damaged_frames.mp3":
        path = bad[0] / name
    else:
        path = tmp_path / name
        long = np.tile(load_audio(DATA / "stream.flac"), 2)  # 60 s: hundreds of decoder calls
        sf.write(path, long, 16_000, format="MP3" if name.endswith(".mp3") else "FLAC")
    done, written = threading.Event(), []

    def writer() -> None:
        while not done.is_set() or len(written) < 200:
            os.write(2, f"line {len(written)} of the writer\n".encode())
            written.append(len(written))
            time.sleep(1e-4)  # pacing only: the reader gets its share of the interpreter

    thread = threading.Thread(target=writer)
    with caplog.at_level(logging.WARNING, logger="kwsstream.audio"):
        thread.start()
        try:
            blocks = list(iter_audio_blocks(path, block_seconds=0.05))
        finally:
            done.set()
            thread.join()
    _, err = capfd.readouterr()
    arrived = [int(n) for n in re.findall(r"line (\d+) of the writer", err)]
    assert arrived == written and len(written) >= 200
    assert sum(len(b) for b in blocks) > 8_000
    warnings = [r.getMessage() for r in caplog.records]
    assert not any("writer" in w for w in warnings), warnings  # no line of ours taken for the decoder's
    if name == "speech.flac":
        assert warnings == []
    if name == "damaged_frames.mp3":  # the decoder's own complaints, in one line
        assert len(warnings) == 1 and "decoder reported" in warnings[0], warnings


def test_an_mp3_decodes_the_same_in_any_block_size(tmp_path):
    """libmpg123 decodes (and complains) differently when read in other pieces: the decoder
    process reads fixed pieces, so a paced file (0.05 s blocks) gets the samples a whole read gets."""
    path = tmp_path / "s.mp3"
    sf.write(path, load_audio(DATA / "stream.flac")[: 20 * 16_000], 16_000, format="MP3")
    whole = np.concatenate(list(iter_audio_blocks(path)))
    np.testing.assert_array_equal(np.concatenate(list(iter_audio_blocks(path, block_seconds=0.05))), whole)


# --- only regular files; any file name --------------------------------------------------------

def test_a_fifo_as_audio_is_refused_at_once_instead_of_blocking(tmp_path, keyset):
    """``mkfifo f.wav`` with no writer: opening it for reading would wait forever."""
    import os

    from cli_helpers import one_line_error, run_kwsstream

    fifo = tmp_path / "f.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioError, match="FIFO") as err:
        load_audio(fifo)
    assert str(fifo) in str(err.value)
    one_line_error(run_kwsstream("detect", "-k", keyset, fifo), "f.wav", "FIFO", "not an audio file",
                   prefix="kwsstream: error: ")  # the real process: would hang (timeout) before the fix


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_endless_devices_are_refused_naming_them(device, keyset, capfd):
    with pytest.raises(AudioError, match="character device") as err:
        load_audio(device)
    assert str(err.value).startswith(f"{device}: ")
    code, out, err_text = cli(capfd, "detect", "-k", keyset, device)
    assert code == 2 and out == "" and err_text.strip() == (
        f"kwsstream: error: {device}: is a character device, not an audio file (only regular files are read)")


def test_a_file_name_that_is_not_utf8_is_read_and_shown(tmp_path, capfd):
    """``canci\\xf3n.wav`` (Latin-1 bytes): enrolled and searched like any other, shown with
    the odd byte escaped (in lines, in JSON and in the keyword set)."""
    import json
    import os

    from kwsstream.keyset import load_keyset

    folder = os.fsencode(tmp_path)
    raw = os.path.join(folder, b"canci\xf3n.flac")
    with open(raw, "wb") as handle:
        handle.write((DATA / "mariposa_1.flac").read_bytes())
    name = os.fsdecode(raw)  # what a shell hands Python: a str with a lone surrogate
    kws = tmp_path / "n.kws"
    code, _, err = cli(capfd, "enroll", "-k", kws, "mariposa", name, DATA / "mariposa_2.flac", "--encoder", "mfcc")
    assert code == 0, err
    shown = os.fsdecode(folder) + "/canci\\xf3n.flac"
    assert load_keyset(kws).get("mariposa").templates[0].source == shown
    code, out, err = cli(capfd, "detect", "-k", kws, name, "--json")
    assert code == 0 and "Traceback" not in err, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events and all(e["source"] == shown for e in events)
