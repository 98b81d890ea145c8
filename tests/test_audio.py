"""The audio boundary: formats, rates, channels in; clear one-line errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from kwsstream.audio import iter_audio_blocks, load_audio, prepare_samples
from kwsstream.errors import AudioError

SR = 16_000


def tone(seconds=1.0, rate=SR, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt,subtype,suffix", [("WAV", "PCM_16", "wav"), ("WAV", "FLOAT", "wav"),
                                                ("FLAC", "PCM_24", "flac"), ("OGG", "VORBIS", "ogg"),
                                                ("MP3", "MPEG_LAYER_III", "mp3")])
def test_formats_are_read_as_16k_mono_float32(tmp_path, fmt, subtype, suffix):
    path = tmp_path / f"a.{suffix}"
    sf.write(path, tone(1.0, 48_000), 48_000, format=fmt, subtype=subtype)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - SR) < 0.06 * SR  # lossy codecs add a little padding
    # still a 440 Hz tone after resampling: the spectrum peaks there
    spectrum = np.abs(np.fft.rfft(audio[2000:14000]))
    assert abs(np.argmax(spectrum) * SR / 12000 - 440) < 3


def test_stereo_is_mixed_down_and_rate_converted(tmp_path):
    """Two different channels (300 Hz left, 700 Hz right at half its level): the result is their
    average, so a mix-down that kept one channel, or summed them, fails."""
    left, right = 0.6 * tone(0.5, 44_100, 300) / 0.5, 0.3 * tone(0.5, 44_100, 700) / 0.5
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 44_100, subtype="FLOAT")
    sf.write(tmp_path / "mean.wav", (left + right) / 2, 44_100, subtype="FLOAT")
    audio = load_audio(tmp_path / "s.wav")
    assert len(audio) == pytest.approx(8000, abs=2)
    np.testing.assert_allclose(audio, load_audio(tmp_path / "mean.wav"), atol=1e-6)
    spectrum = np.abs(np.fft.rfft(audio[1000:7000]))  # 6000 samples: bins of 16000/6000 Hz
    peak = {hz: spectrum[round(hz * 6000 / SR) - 2:round(hz * 6000 / SR) + 3].max() for hz in (300, 700)}
    assert peak[700] / peak[300] == pytest.approx(0.5, rel=0.05)  # both channels, at their levels


def test_blocks_are_bounded_and_add_up_to_the_whole(tmp_path):
    signal = np.random.default_rng(0).uniform(-0.5, 0.5, 22_050 * 7).astype(np.float32)
    sf.write(tmp_path / "long.wav", signal, 22_050, subtype="FLOAT")
    blocks = list(iter_audio_blocks(tmp_path / "long.wav", block_seconds=0.5))
    assert max(len(b) for b in blocks) <= 0.5 * SR + 256  # the resampler holds back a little
    assert len(blocks) >= 13
    whole = np.concatenate(blocks)
    assert len(whole) == pytest.approx(7 * SR, abs=2)
    np.testing.assert_array_equal(whole, load_audio(tmp_path / "long.wav"))


def write_bytes(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case,message", [
    ("missing", "no such file"),
    ("corrupt", "not a readable audio file"),
    ("empty", "audio is empty"),
    ("short", "too short"),
    ("nan", "NaN or infinite"),
    ("folder", "is a folder"),
])
def test_bad_files_are_refused_with_the_file_named(tmp_path, case, message):
    path = tmp_path / f"{case}.wav"
    if case == "corrupt":
        write_bytes(path, b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    elif case == "empty":
        sf.write(path, np.zeros(0, np.float32), SR)
    elif case == "short":
        sf.write(path, np.zeros(100, np.float32), SR)
    elif case == "nan":
        x = tone(0.2)
        x[1000] = np.nan
        sf.write(path, x, SR, subtype="FLOAT")
    elif case == "folder":
        path.mkdir()
    with pytest.raises(AudioError) as err:
        load_audio(path)
    text = str(err.value)
    assert str(path) in text and message in text and "\n" not in text


def test_in_memory_buffers_are_normalised():
    stereo = np.stack([tone(0.5, 8000), np.zeros(4000, np.float32)], axis=1)  # the right channel silent
    out = prepare_samples((stereo * 32767).astype(np.int16), 8000)
    assert out.dtype == np.float32 and len(out) == pytest.approx(8000, abs=2)
    assert np.abs(out).max() == pytest.approx(0.25, abs=0.01)  # the average of the two channels
    np.testing.assert_allclose(prepare_samples(stereo[:, ::-1].copy(), 8000), out, atol=1e-4)  # either side
    with pytest.raises(AudioError, match="NaN"):
        prepare_samples(np.array([0.0, np.inf], np.float32))
