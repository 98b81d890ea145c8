"""The audio boundary: files and buffers in, 16 kHz mono float32 out, validated once.

Everything after this module trusts its input: one channel, :data:`SAMPLE_RATE`, float32, finite.
Files are read in blocks (``iter_audio_blocks``) so memory does not grow with their length; any
format libsndfile reads (WAV, FLAC, OGG, MP3), any rate (resampled with soxr's streaming
resampler), any channel count (mixed down by averaging), any sample format.

Only real data is read: the reader stops where the decoder stops delivering, whatever length the
file's header claims (an MP3 whose Xing header claims 60 hours is read for the second it holds),
and refuses more than :data:`MAX_SECONDS` (``load_audio``: :data:`MAX_LOAD_SECONDS`). A file that
ends before its header says, and what the decoder libraries complain about, become one warning
line on the ``kwsstream.audio`` logger instead of library noise: libmpg123 writes its complaints
to file descriptor 2, so MP3 files are decoded in a child process whose stderr is caught
(:mod:`kwsstream.mp3process`); this process's stderr is never redirected, not even for a moment.
:func:`check_example` refuses audio that cannot be a keyword example.

Only regular files are read: the file is opened with ``O_NONBLOCK`` (a FIFO never blocks the
open) and the opened descriptor is checked (a FIFO, ``/dev/zero``, ``/dev/urandom``, a socket or a
folder is refused in one line); libsndfile then reads that descriptor, so any file name the
system takes is read, also one whose bytes are not UTF-8 (:func:`display_name` shows it).
:func:`reading_progress` lets a front end show how far a long file has been read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .encoders.base import SAMPLE_RATE
from .errors import AudioError
from .mp3process import DecoderProcess, looks_like_mpeg
from .safefile import OPEN_FLAGS, file_kind

log = logging.getLogger("kwsstream.audio")

BLOCK_SECONDS = 10.0
"""Seconds of audio read from a file at a time."""

MIN_SAMPLES = 400
"""The shortest audio accepted: one 25 ms analysis frame at 16 kHz."""

MAX_SECONDS = 24 * 3600.0
"""The longest file :func:`iter_audio_blocks` reads (real audio, whatever the header claims)."""

MAX_LOAD_SECONDS = 3600.0
"""The longest file :func:`load_audio` holds in memory at once (230 MB at 16 kHz float32)."""

MAX_BLOCK_VALUES = 1 << 23
"""Most samples (all channels) read from a file at a time: blocks are shortened to fit."""

MIN_RATE, MAX_RATE = 1000, 768_000
"""Sample rates accepted (Hz)."""

TRUNCATION_TOLERANCE = 0.05
"""Seconds a file may fall short of its header's length before it is reported as truncated."""

RESAMPLE_QUALITY = "HQ"

AUDIO_DEBUG_ENV = "KWSSTREAM_AUDIO_DEBUG"
"""Set (to anything) to let decoder libraries write their own diagnostics to stderr."""

ProgressCallback = Callable[[str, float, "float | None", bool], None]
"""``callback(name, seconds_read, seconds_claimed_or_None, finished)``: see :func:`reading_progress`."""
_PROGRESS: ContextVar[ProgressCallback | None] = ContextVar("kwsstream_audio_progress", default=None)

# check_example: what a keyword example must look like
EXAMPLE_MIN_PEAK = 1e-3
"""Peak below -60 dBFS: nothing but the noise floor."""
EXAMPLE_CLIP_LEVEL = 0.99
EXAMPLE_MAX_CLIPPED = 0.25
"""More than this fraction of samples at full scale: clipped throughout (e.g. a square wave)."""
EXAMPLE_MIN_DYNAMICS_DB = 2.0
"""Speech rises and falls: the 10 ms frame levels' 5-95 % range must exceed this (a steady
tone, hum or noise does not; speech spans tens of dB)."""


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


def check_example(audio: np.ndarray, name: str) -> None:
    """Refuse audio that cannot be an example of a spoken keyword (raises :class:`AudioError`
    naming ``name``): digital silence, a peak below -60 dBFS, clipped throughout (more than a
    quarter of the samples at full scale, e.g. a full-scale square wave), or a steady sound with
    no rise and fall (a tone, a hum). ``audio`` is 16 kHz mono float32 (e.g. from
    :func:`load_audio`); enrollment calls this on each example recording."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1 or len(audio) == 0:
        raise AudioError(f"{name}: no audio")
    check_finite(audio, name)
    peak = float(np.abs(audio).max())
    if peak == 0:
        raise AudioError(f"{name}: the recording is digital silence, not a keyword")
    if peak < EXAMPLE_MIN_PEAK:
        raise AudioError(f"{name}: the recording is too quiet to hold speech (peak {20 * np.log10(peak):.0f} dBFS)")
    clipped = float(np.mean(np.abs(audio) >= EXAMPLE_CLIP_LEVEL))
    if clipped > EXAMPLE_MAX_CLIPPED:
        raise AudioError(f"{name}: the recording is clipped throughout ({clipped:.0%} of samples at full scale), "
                         "not a usable keyword example")
    hop, win = SAMPLE_RATE // 100, SAMPLE_RATE // 40
    if len(audio) >= win:
        frames = np.lib.stride_tricks.sliding_window_view(audio, win)[::hop]
        level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
        low, high = np.percentile(level, [5, 95])
        if high - low < EXAMPLE_MIN_DYNAMICS_DB:
            raise AudioError(f"{name}: the recording is a steady sound (level varies by {high - low:.1f} dB), "
                             "not a spoken keyword")


class Resampler:
    """Streaming mono resampler to :data:`SAMPLE_RATE` (soxr); a pass-through at 16 kHz."""

    def __init__(self, rate: int):
        if not MIN_RATE <= rate <= MAX_RATE:
            raise AudioError(f"sample rate {rate} Hz is not supported ({MIN_RATE}-{MAX_RATE} Hz)")
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


def display_name(path: str | Path) -> str:
    """``path`` as text that can be printed and stored: bytes of the name that are not UTF-8
    (a Latin-1 ``canci\\xf3n.wav``) are shown as ``\\xNN`` instead of lone surrogates."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@contextlib.contextmanager
def reading_progress(callback: ProgressCallback | None) -> Iterator[None]:
    """Within the block, every file read through :func:`iter_audio_blocks` in this thread (or
    context) reports each block to ``callback(name, seconds_read, seconds_claimed, finished)``
    (``seconds_claimed``: the length the header gives, ``None`` when unknown), and once more with
    ``finished=True`` when its reading ends, however it ends. For a front end's progress bar (the
    CLI's, on a terminal); a reader running in another thread reports nothing; ``None``: no
    reports within the block (a live run, which has its own status line)."""
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def _open_regular(path: Path, name: str) -> int:
    """A descriptor of ``path`` opened for reading, after checking that the opened file is a
    regular file (the caller closes it)."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        raise AudioError(f"{name}: no such file") from None
    except OSError as err:
        raise AudioError(f"{name}: cannot be read ({err.strerror or _reason(err)})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = file_kind(mode)
            raise AudioError(f"{name}: is {kind}, not an audio file" + ("" if kind == "a folder" else
                             " (only regular files are read)"))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open(fd: int, name: str, block_seconds: float, stack: contextlib.ExitStack):
    """The decoder of the open file ``fd``: a child process for MP3 (see
    :mod:`kwsstream.mp3process`), libsndfile in this process for every other format."""
    try:
        if looks_like_mpeg(fd):
            return stack.enter_context(DecoderProcess(fd, block_seconds, MAX_BLOCK_VALUES,
                                                      show_messages=bool(os.environ.get(AUDIO_DEBUG_ENV))))
        return stack.enter_context(sf.SoundFile(fd, closefd=False))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OverflowError) as err:
        raise AudioError(f"{name}: not a readable audio file ({_reason(err)})") from None
    except OSError as err:
        raise AudioError(f"{name}: cannot be read ({err.strerror or _reason(err)})") from None


def iter_audio_blocks(
    path: str | Path, block_seconds: float = BLOCK_SECONDS, *, max_seconds: float = MAX_SECONDS,
    truncated: str = "warn",
) -> Iterator[np.ndarray]:
    """Yield a file's audio as 16 kHz mono float32 blocks, reading ``block_seconds`` at a time.

    Raises :class:`AudioError` (naming the file) for a missing, unreadable, empty or non-finite
    file, one shorter than :data:`MIN_SAMPLES` after resampling, or one longer than
    ``max_seconds``; the check for shortness and emptiness happens before the first block is
    yielded only when the file's length is known. Reading stops where the decoder's data ends.
    A file that ends more than :data:`TRUNCATION_TOLERANCE` before its header says, or whose
    decoder complained, is reported as one warning (``truncated="error"``: a truncated file is
    refused instead).
    """
    path = Path(path)
    name = display_name(path)
    progress = _Progress(name, _PROGRESS.get())
    fd = _open_regular(path, name)
    with contextlib.ExitStack() as stack:  # closed in reverse: the decoder, the progress, the file
        stack.callback(os.close, fd)
        stack.callback(progress.finish)
        handle = _open(fd, name, block_seconds, stack)
        yield from _read_blocks(handle, name, block_seconds, max_seconds, truncated, progress)


class _Progress:
    """One file's reading, told to a :func:`reading_progress` callback (if any)."""

    def __init__(self, name: str, callback: ProgressCallback | None):
        self.name, self.callback, self.seconds = name, callback, 0.0

    def block(self, seconds: float, claimed: float | None) -> None:
        self.seconds = seconds
        if self.callback is not None:
            self.callback(self.name, seconds, claimed, False)

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(self.name, self.seconds, None, True)


def _read_blocks(handle, name: str, block_seconds: float, max_seconds: float, truncated: str,
                 progress: _Progress) -> Iterator[np.ndarray]:
    """The blocks of an open decoder (``soundfile.SoundFile`` or
    :class:`~kwsstream.mp3process.DecoderProcess`; the caller closes it), checked."""
    claimed = handle.frames if 0 <= handle.frames < 2**62 else None
    rate, channels = handle.samplerate, handle.channels
    if claimed == 0:
        raise AudioError(f"{name}: audio is empty")
    if channels < 1:
        raise AudioError(f"{name}: audio has {channels} channels")
    if claimed is not None and rate > 0 and claimed * SAMPLE_RATE / rate < MIN_SAMPLES:
        raise AudioError(
            f"{name}: audio is too short ({claimed / rate * 1000:.1f} ms; "
            f"at least {MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms needed)"
        )
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{name}: sample rate {rate} Hz is not supported ({MIN_RATE}-{MAX_RATE} Hz)")
    resample = Resampler(rate)
    blocksize = max(1, min(int(block_seconds * rate), MAX_BLOCK_VALUES // channels))
    limit = int(max_seconds * SAMPLE_RATE)
    total = read = 0
    try:
        while True:
            block = handle.read(blocksize, dtype="float32", always_2d=True)
            if len(block) == 0:  # the decoder's true end, whatever the header claimed
                break
            read += len(block)
            progress.block(read / rate, None if claimed is None else claimed / rate)
            with np.errstate(all="ignore"):
                mono = mix_down(block)
            check_finite(mono, name)
            out = resample(mono)
            total += len(out)
            if total > limit:
                raise AudioError(f"{name}: audio is longer than {_duration(max_seconds)}, the most read from a file")
            if len(out):
                yield out
        tail = resample(np.zeros(0, np.float32), last=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, OverflowError) as err:
        raise AudioError(f"{name}: corrupt audio ({_reason(err)})") from None
    except MemoryError:
        raise AudioError(f"{name}: audio blocks too large to decode") from None
    total += len(tail)
    if len(tail):
        yield tail
    short = _truncation(handle, claimed, read, rate)
    if total == 0:
        raise AudioError(f"{name}: audio is empty" + (f" (the file is truncated: {short})" if short else ""))
    if total < MIN_SAMPLES:
        raise AudioError(f"{name}: audio is too short ({total / SAMPLE_RATE * 1000:.1f} ms; at least "
                         f"{MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms needed)" + (f"; the file is truncated: {short}" if short else ""))
    problems = []
    if short:
        if truncated == "error":
            raise AudioError(f"{name}: the file is truncated ({short})")
        problems.append(f"the file is truncated ({short})")
    count, first = handle.messages() if isinstance(handle, DecoderProcess) else (0, "")
    if count:
        problems.append(f"the decoder reported {count} problem(s), first: {first!r}")
    if problems:
        log.warning("%s: %s; the audio may be incomplete or damaged", name, "; ".join(problems))


def _truncation(handle, claimed: int | None, read: int, rate: int) -> str:
    """Why the file looks cut short ('' if it does not)."""
    if claimed is not None and claimed - read > TRUNCATION_TOLERANCE * rate:
        return f"its header claims {_duration(claimed / rate)}, the audio ends after {_duration(read / rate)}"
    try:
        info = handle.extra_info
    except Exception:  # noqa: BLE001 - a diagnostic only
        return ""
    lines = [line for line in info.splitlines() if "should be" in line and ":" in line]
    lines.sort(key=lambda line: line.split(":")[0].strip().lower() != "data")
    for line in lines:
        if line.split(":")[0].strip().lower() in ("data", "riff", "form", "ssnd"):
            return f"the header's data size is {' '.join(line.split(':', 1)[1].split())}"
    return ""


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2f} s"


def load_audio(path: str | Path, *, max_seconds: float = MAX_LOAD_SECONDS, truncated: str = "warn") -> np.ndarray:
    """A whole file as 16 kHz mono float32 (through the same block reader as streaming), at
    most ``max_seconds`` long."""
    blocks = list(iter_audio_blocks(path, max_seconds=max_seconds, truncated=truncated))
    audio = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if len(audio) < MIN_SAMPLES:
        raise AudioError(
            f"{display_name(path)}: audio is too short ({len(audio) / SAMPLE_RATE * 1000:.1f} ms; "
            f"at least {MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms needed)"
        )
    return audio


def load_example(path: str | Path) -> np.ndarray:
    """An enrollment example: :func:`load_audio` that refuses a truncated file, then
    :func:`check_example`."""
    audio = load_audio(path, truncated="error")
    check_example(audio, display_name(path))
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
    with np.errstate(all="ignore"):
        mono = mix_down(arr)
    check_finite(mono, name)
    if sample_rate != SAMPLE_RATE:
        if not MIN_RATE <= sample_rate <= MAX_RATE:
            raise AudioError(f"{name}: sample rate {sample_rate} Hz is not supported ({MIN_RATE}-{MAX_RATE} Hz)")
        mono = soxr.resample(mono, sample_rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY).astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__
