"""The audio boundary: files and buffers in, 16 kHz mono float32 out, validated once.

Everything after this module trusts its input: one channel, :data:`SAMPLE_RATE`, float32, finite.
Files are read in blocks (``iter_audio_blocks``) so memory does not grow with their length; any
format libsndfile reads (WAV, FLAC, OGG, MP3), any rate (resampled with soxr's streaming
resampler), any channel count (mixed down by averaging), any sample format.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .encoders.base import SAMPLE_RATE
from .errors import AudioError

BLOCK_SECONDS = 10.0
"""Seconds of audio read from a file at a time."""

MIN_SAMPLES = 400
"""The shortest audio accepted: one 25 ms analysis frame at 16 kHz."""

RESAMPLE_QUALITY = "HQ"


def mix_down(block: np.ndarray) -> np.ndarray:
    """Average the channels of a ``(frames, channels)`` block into one float32 channel."""
    if block.ndim == 1:
        return block.astype(np.float32, copy=False)
    if block.shape[1] == 1:
        return block[:, 0].astype(np.float32, copy=False)
    return block.mean(axis=1, dtype=np.float32)


def check_finite(samples: np.ndarray, name: str) -> None:
    """Refuse NaN or infinite samples."""
    if not np.isfinite(samples).all():
        bad = int(np.flatnonzero(~np.isfinite(samples))[0])
        raise AudioError(f"{name}: audio has NaN or infinite samples (first at sample {bad})")


class Resampler:
    """Streaming mono resampler to :data:`SAMPLE_RATE` (soxr); a pass-through at 16 kHz."""

    def __init__(self, rate: int):
        if rate <= 0:
            raise AudioError(f"sample rate {rate} is not positive")
        self.rate = int(rate)
        self._stream = (
            None
            if self.rate == SAMPLE_RATE
            else soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        )

    def __call__(self, mono: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return mono
        return self._stream.resample_chunk(np.ascontiguousarray(mono, dtype=np.float32), last=last)


def iter_audio_blocks(path: str | Path, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Yield a file's audio as 16 kHz mono float32 blocks, reading ``block_seconds`` at a time.

    Raises :class:`AudioError` (naming the file) for a missing, unreadable, empty or non-finite
    file, or one shorter than :data:`MIN_SAMPLES` after resampling; the check for shortness and
    emptiness happens before the first block is yielded only when the file's length is known.
    """
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise AudioError(f"{name}: no such file")
    if path.is_dir():
        raise AudioError(f"{name}: is a folder, not an audio file")
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"{name}: not a readable audio file ({_reason(err)})") from None
    with handle:
        if handle.frames == 0:
            raise AudioError(f"{name}: audio is empty")
        if 0 < handle.frames < 2**62 and handle.frames * SAMPLE_RATE / handle.samplerate < MIN_SAMPLES:
            raise AudioError(
                f"{name}: audio is too short ({handle.frames / handle.samplerate * 1000:.1f} ms; "
                f"at least {MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms needed)"
            )
        resample = Resampler(handle.samplerate)
        blocksize = max(1, int(block_seconds * handle.samplerate))
        total = 0
        try:
            for block in handle.blocks(blocksize=blocksize, dtype="float32", always_2d=True):
                mono = mix_down(block)
                check_finite(mono, name)
                out = resample(mono)
                total += len(out)
                if len(out):
                    yield out
            tail = resample(np.zeros(0, np.float32), last=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(f"{name}: corrupt audio ({_reason(err)})") from None
        total += len(tail)
        if len(tail):
            yield tail
    if total == 0:
        raise AudioError(f"{name}: audio is empty")


def load_audio(path: str | Path) -> np.ndarray:
    """A whole file as 16 kHz mono float32 (through the same block reader as streaming)."""
    blocks = list(iter_audio_blocks(path))
    audio = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if len(audio) < MIN_SAMPLES:
        raise AudioError(
            f"{path}: audio is too short ({len(audio) / SAMPLE_RATE * 1000:.1f} ms; "
            f"at least {MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms needed)"
        )
    return audio


def prepare_samples(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, name: str = "audio") -> np.ndarray:
    """Validate an in-memory buffer (``(n,)`` or ``(n, channels)``, any numeric dtype) and return
    it as 16 kHz mono float32. Integer samples are scaled to [-1, 1)."""
    arr = np.asarray(samples)
    if arr.ndim not in (1, 2):
        raise AudioError(f"{name}: expected samples of shape (n,) or (n, channels), got {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(2 ** (8 * arr.dtype.itemsize - 1))
    elif not np.issubdtype(arr.dtype, np.floating):
        raise AudioError(f"{name}: samples of dtype {arr.dtype} are not audio")
    mono = mix_down(arr)
    check_finite(mono, name)
    if sample_rate != SAMPLE_RATE:
        mono = soxr.resample(mono, sample_rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY).astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__
