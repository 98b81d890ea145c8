"""Window framer and MFCC-13: chunk-size invariance, librosa reference, streaming == whole file."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from kwsstream.encoders.mfcc import MfccEncoder, MfccOptions
from kwsstream.framing import WindowFramer

CHUNKS = [1, 160, 1000, 16000]


def feed(state, signal, chunk):
    parts = [state.push(signal[i : i + chunk]) for i in range(0, len(signal), chunk)]
    flush = getattr(state, "flush", None)
    if flush:
        parts.append(flush())
    return np.concatenate(parts)


@pytest.mark.parametrize("window,hop", [(400, 160), (32000, 16000), (5, 7)])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_framer_windows_do_not_depend_on_chunk_size(window, hop, chunk):
    signal = np.arange(40_000, dtype=np.float32)
    windows = feed(WindowFramer(window, hop), signal, chunk)
    n = 1 + (len(signal) - window) // hop
    assert windows.shape == (n, window)
    np.testing.assert_array_equal(windows[:, 0], np.arange(n) * hop)
    np.testing.assert_array_equal(windows[-1], signal[(n - 1) * hop : (n - 1) * hop + window])


def speechlike(seconds=2.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (envelope * (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * t)) + 0.05 * rng.standard_normal(len(t)))).astype(np.float32)


def test_mfcc_matches_librosa():
    y = speechlike()
    ours = MfccEncoder(MfccOptions(cmn_seconds=None, c0_weight=1.0)).encode(y)
    mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=400, hop_length=160, win_length=400, window="hann",
                                         center=False, n_mels=40, fmin=20, fmax=7600, htk=False, power=2.0)
    ref = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=13).T
    assert ours.shape == ref.shape == (1 + (len(y) - 400) // 160, 13)
    np.testing.assert_allclose(ours, ref, atol=2e-3 * np.abs(ref).max())


@pytest.mark.parametrize("chunk", CHUNKS)
def test_streaming_mfcc_equals_whole_file_bit_for_bit(chunk):
    enc = MfccEncoder()
    y = speechlike(1.3, seed=1)
    whole = enc.encode(y)
    streamed = feed(enc.create_state(), y, chunk)
    assert streamed.dtype == np.float32
    np.testing.assert_array_equal(streamed, whole)


def test_cmn_removes_a_constant_channel_and_is_causal():
    enc = MfccEncoder(MfccOptions(cmn_seconds=0.5, c0_weight=1.0))
    y = speechlike(3.0, seed=2)
    a, b = enc.encode(y), enc.encode(3.0 * y)  # +9.5 dB gain: a constant offset on c0
    late = slice(150, None)  # after the 0.5 s horizon the running mean has caught up
    np.testing.assert_allclose(a[late], b[late], atol=0.5)
    # causal: changing the end does not change earlier frames
    y2 = y.copy()
    y2[-8000:] = 0
    np.testing.assert_array_equal(enc.encode(y2)[:200], a[:200])


def test_grid_times():
    enc = MfccEncoder()
    assert enc.grid.frame_rate == 100
    assert enc.grid.centre(0) == pytest.approx(0.0125)
    assert enc.grid.n_frames(16000) == len(enc.encode(np.zeros(16000, np.float32))) == 98
