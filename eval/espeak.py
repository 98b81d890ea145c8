"""Spanish speech with exact word timings from libespeak-ng (ctypes, no CLI).

How the timings are obtained (facts measured with libespeak-ng 1.51 on this machine):

- Synchronous mode (``AUDIO_OUTPUT_SYNCHRONOUS``) hands back 22,050 Hz int16 audio together with
  events. A WORD event's ``sample`` is the exact sample index in that call's audio and its
  ``text_position`` a 1-based code-point index into the text.
- WORD events come ~20-40 ms before the word's first sound; PHONEME events (enabled with
  ``espeakINITIALIZE_PHONEME_EVENTS``) mark the sample where each phoneme starts (pauses are
  phonemes whose name starts with ``_``). A word therefore starts at its first phoneme and ends
  where the next phoneme, pause or clause end begins, trimmed of trailing silence: the rule lives
  in :func:`word_spans` and nowhere else.
- The library is not thread-safe, its output drifts slightly from call to call within one process,
  and ``espeak_Terminate`` deadlocks in synchronous mode. So synthesis never runs in the caller's
  process: a pool of *spawned* workers each initialise the library once (and never synthesise
  themselves), and every task runs in a child *forked* from that pristine state (~17 ms): the
  output is a pure function of (text, voice), whatever the order, the pool size or the process.

The audio is resampled to 16 kHz with soxr (HQ); word times are seconds, so they survive that.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import pickle
import re
import select
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from eval.words import TimedWord
from kwsstream.encoders.base import SAMPLE_RATE  # the rate of every Utterance
from kwsstream.errors import UsageError

ESPEAK_SAMPLE_RATE = 22_050
"""What libespeak-ng's synchronous mode produces (Hz); checked at initialisation."""
SPANISH_VOICES = ("es", "es-419")
"""eSpeak NG's Spanish voices: Castilian and Latin American."""
RATE_RANGE = (80, 450)
"""Speaking rates accepted by libespeak-ng (words per minute)."""
PITCH_RANGE = (0, 100)
"""Base pitches accepted by libespeak-ng (50 is the voice's normal pitch)."""
SILENCE_LEVEL = 100
"""int16 peak at or below which eSpeak audio counts as silence (-50 dBFS; its pauses are zeros)."""
SILENCE_FRAME = 44
"""Frame (samples at 22,050 Hz, 2 ms) over which trailing silence is trimmed from a word."""
CHILD_TIMEOUT_S = 120.0
"""Seconds a forked synthesis child may take before it is killed."""
_LIBRARY_NAMES = ("espeak-ng", "libespeak-ng.so.1")
_DATA_DIRS = tuple(f"/usr/{d}/espeak-ng-data" for d in (
    "lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu", "share", "lib", "local/share"))

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS, _INITIALIZE_PHONEME_EVENTS, _CHARS_UTF8, _POS_CHARACTER = 2, 0x0001, 1, 1
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_END, _EVENT_MSG_TERMINATED = 0, 1, 5, 6
_EVENT_PHONEME, _PARAM_RATE, _PARAM_PITCH = 7, 1, 3
_TOKEN = re.compile(r"\S+")
_PAUSE_PREFIX = "_"  # eSpeak's pause phonemes: _ _: _! ...


@dataclass(frozen=True)
class Voice:
    """An eSpeak NG speaker.

    Attributes:
        name: language voice, ``"es"`` (Castilian) or ``"es-419"`` (Latin American); any other
            voice the library knows is accepted too.
        variant: a variant file under ``espeak-ng-data/voices/!v`` (``m1``..``m8``, ``f1``..``f5``,
            ``klatt``..``klatt6``, named ones such as ``miguel``); see :func:`list_variants`.
            ``None`` is the voice's own default.
        rate: speaking rate in words per minute, 80-450 (175 is eSpeak's normal rate).
        pitch: base pitch, 0-100 (50 is normal).
    """

    name: str = "es"
    variant: str | None = None
    rate: int = 175
    pitch: int = 50

    def __post_init__(self) -> None:
        if not RATE_RANGE[0] <= self.rate <= RATE_RANGE[1]:
            raise UsageError(f"voice rate {self.rate} is outside {RATE_RANGE[0]}-{RATE_RANGE[1]}")
        if not PITCH_RANGE[0] <= self.pitch <= PITCH_RANGE[1]:
            raise UsageError(f"pitch {self.pitch} is outside {PITCH_RANGE[0]}-{PITCH_RANGE[1]}")
        if not self.name or "+" in self.name:
            raise UsageError(f"voice name {self.name!r} is not a language voice such as 'es'")

    @property
    def espeak_name(self) -> str:
        """The name given to ``espeak_SetVoiceByName`` (``"es+m3"``)."""
        return self.name if self.variant is None else f"{self.name}+{self.variant}"


@dataclass(frozen=True, eq=False)
class Utterance:
    """A synthesised sentence.

    Attributes:
        audio: float32 mono samples in [-1, 1] at ``sample_rate`` (read-only array).
        sample_rate: always :data:`SAMPLE_RATE` (16 kHz).
        words: the spoken words in order, with times in seconds (words that produced no sound,
            if any, are left out).
        text: the text given to the synthesiser.
        voice: the voice that spoke it.
    """

    audio: np.ndarray
    sample_rate: int
    words: tuple[TimedWord, ...]
    text: str
    voice: Voice

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return len(self.audio) / self.sample_rate


def data_dir() -> Path:
    """The ``espeak-ng-data`` folder (``$ESPEAK_DATA_PATH`` first, then the usual places)."""
    env = os.environ.get("ESPEAK_DATA_PATH")
    candidates = ([env, os.path.join(env, "espeak-ng-data")] if env else []) + list(_DATA_DIRS)
    for candidate in candidates:
        if candidate and (Path(candidate) / "phontab").is_file():
            return Path(candidate)
    raise UsageError(f"espeak-ng-data not found in {candidates}; install espeak-ng-data")


def list_variants() -> list[str]:
    """Names of the voice variants installed (files under ``espeak-ng-data/voices/!v``), sorted."""
    folder = data_dir() / "voices" / "!v"
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def list_languages() -> list[str]:
    """Language voice names installed (files under ``espeak-ng-data/lang``), e.g. ``es-419``."""
    return sorted(p.name for p in (data_dir() / "lang").rglob("*") if p.is_file())


def check_voice(voice: Voice) -> None:
    """Raise :class:`UsageError` if the voice's language or variant is not installed."""
    if voice.name not in list_languages():
        raise UsageError(f"voice {voice.name!r} is not an installed espeak-ng language voice")
    if voice.variant is not None and voice.variant not in list_variants():
        raise UsageError(f"voice variant {voice.variant!r} is not installed; see list_variants()")


# ----------------------------------------------------------------------------- the library


class _Event(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h (API revision 12)."""

    class _Id(ctypes.Union):
        _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p),
                    ("string", ctypes.c_char * 8)]

    _fields_ = ([("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint)]
                + [(n, ctypes.c_int) for n in ("text_position", "length", "audio_position",
                                               "sample")]
                + [("user_data", ctypes.c_void_p), ("id", _Id)])


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


class _Engine:
    """libespeak-ng initialised once in this process; every synthesis runs in a forked child."""

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(ctypes.util.find_library(_LIBRARY_NAMES[0]) or _LIBRARY_NAMES[1])
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                           _INITIALIZE_PHONEME_EVENTS)
        if rate != ESPEAK_SAMPLE_RATE:
            raise RuntimeError(f"espeak_Initialize returned {rate}, expected {ESPEAK_SAMPLE_RATE}")
        self._chunks: list[bytes] = []
        self._events: list[tuple[int, int, int, int, str]] = []
        self._callback = _Callback(self._on_audio)  # kept alive as long as the engine
        self._lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, count, events) -> int:
        if wav and count > 0:
            self._chunks.append(ctypes.string_at(wav, count * 2))
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            name = e.id.string.decode("utf-8", "replace") if e.type == _EVENT_PHONEME else ""
            self._events.append((e.type, e.text_position, e.length, e.sample, name))
            i += 1
        return 0

    def _synthesize_here(self, text: str, voice: Voice) -> tuple[bytes, list]:
        """Synthesise in this very process (only ever called in a forked child)."""
        if self._lib.espeak_SetVoiceByName(voice.espeak_name.encode()) != 0:
            raise UsageError(f"espeak-ng rejected voice {voice.espeak_name!r}")
        self._lib.espeak_SetParameter(_PARAM_RATE, voice.rate, 0)
        self._lib.espeak_SetParameter(_PARAM_PITCH, voice.pitch, 0)
        data = text.encode("utf-8")
        status = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                        None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth returned {status} for {text!r}")
        return b"".join(self._chunks), self._events

    def synthesize_raw(self, text: str, voice: Voice) -> tuple[np.ndarray, list]:
        """int16 audio at 22,050 Hz and the event list, from a child forked for this text."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: synthesise, send the result, leave without any cleanup
            try:
                os.close(read_fd)
                try:
                    payload = pickle.dumps(("ok", self._synthesize_here(text, voice)))
                except Exception as error:  # sent back to the parent, raised there
                    payload = pickle.dumps(("error", error))
                with os.fdopen(write_fd, "wb") as pipe:
                    pipe.write(payload)
            finally:
                os._exit(0)
        os.close(write_fd)
        payload = _read_all(read_fd, pid)
        os.waitpid(pid, 0)
        status, result = pickle.loads(payload)
        if status == "error":
            raise result
        audio, events = result
        return np.frombuffer(audio, dtype=np.int16), events


def _read_all(fd: int, pid: int) -> bytes:
    """Everything the child writes to ``fd``; kills the child if it exceeds the timeout."""
    parts = []
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], CHILD_TIMEOUT_S)
            if not ready:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise RuntimeError(f"espeak-ng child {pid} timed out after {CHILD_TIMEOUT_S} s")
            parts.append(pipe.read(1 << 20))
            if not parts[-1]:
                break
    if len(parts) == 1:
        raise RuntimeError(f"espeak-ng child {pid} died without a result")
    return b"".join(parts)


# ----------------------------------------------------------------------------- timings


def word_spans(events: Sequence[tuple], audio: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The one rule that turns eSpeak events into word boundaries.

    ``events`` are ``(type, text_position, length, sample, phoneme_name)`` in emission order;
    ``audio`` is the call's int16 audio. A word starts at its first phoneme (a WORD event without
    phonemes or of length 0 is no word) and ends where the next later event begins (the next
    phoneme or pause, a clause end, or the end of the audio), moved back over trailing silence.
    Returns ``(text_position, length, start_sample, end_sample)`` per word, at 22,050 Hz.
    """
    spans = []
    for i, (kind, position, length, _, _) in enumerate(events):
        if kind != _EVENT_WORD:
            continue
        start = last = None
        j = i + 1
        while j < len(events) and events[j][0] != _EVENT_WORD:
            e_kind, _, _, e_sample, name = events[j]
            if e_kind == _EVENT_PHONEME and not name.startswith(_PAUSE_PREFIX):
                start = e_sample if start is None else start
                last = j
            elif e_kind in (_EVENT_END, _EVENT_MSG_TERMINATED) or (
                    e_kind == _EVENT_PHONEME and last is not None):
                break
            j += 1
        if start is None or length == 0:  # eSpeak adds empty WORD events near a clause end
            continue
        boundary = _next_boundary(events, last, len(audio))
        end = _trim_trailing_silence(audio, start, boundary)
        if end > start:
            spans.append((position, length, start, end))
    return spans


def _next_boundary(events: Sequence[tuple], last: int, total: int) -> int:
    """Sample of the first event after ``events[last]`` that lies later (or ``total``): the next
    phoneme, pause, clause end or word."""
    later = (e[3] for e in events[last + 1:] if e[3] > events[last][3])
    return min(next(later, total), total)


def _trim_trailing_silence(audio: np.ndarray, start: int, end: int) -> int:
    """Move ``end`` back over frames whose peak is at most :data:`SILENCE_LEVEL`."""
    while end - SILENCE_FRAME > start:
        frame = audio[end - SILENCE_FRAME:end]
        if np.abs(frame.astype(np.int32)).max() > SILENCE_LEVEL:
            break
        end -= SILENCE_FRAME
    return end


def _to_utterance(text: str, voice: Voice, audio: np.ndarray, events: list) -> Utterance:
    """Resample to 16 kHz and convert the word spans to seconds."""
    words = []
    for position, length, start, end in word_spans(events, audio):
        token = text[position - 1:position - 1 + length]
        if not any(c.isalnum() for c in token):  # eSpeak's position after ". " + lower case
            found = _TOKEN.search(text, position - 1)
            token = found.group() if found else token
        words.append(TimedWord(token, start / ESPEAK_SAMPLE_RATE, end / ESPEAK_SAMPLE_RATE))
    samples = audio.astype(np.float32) / 32768.0
    resampled = soxr.resample(samples, ESPEAK_SAMPLE_RATE, SAMPLE_RATE, quality="HQ")
    resampled = np.clip(resampled, -1.0, 1.0).astype(np.float32)
    resampled.flags.writeable = False
    return Utterance(resampled, SAMPLE_RATE, tuple(words), text, voice)


# ----------------------------------------------------------------------------- workers

_ENGINE: _Engine | None = None
"""This worker process's engine (set by :func:`init_worker`; never set in the caller's process)."""


def init_worker() -> None:
    """Pool initializer: load and initialise libespeak-ng once in this (spawned) worker."""
    global _ENGINE
    _ENGINE = _Engine()


def synthesize_in_worker(text: str, voice: Voice) -> Utterance:
    """Synthesise inside a worker started with :func:`init_worker` (for other eval pools that add
    their own work per utterance, e.g. noise and MP3 encoding)."""
    if _ENGINE is None:
        raise RuntimeError("synthesize_in_worker needs a process started by make_pool()")
    audio, events = _ENGINE.synthesize_raw(text, voice)
    return _to_utterance(text, voice, audio, events)


def _task(item: tuple[str, Voice]) -> Utterance:
    """Pool task: one ``(text, voice)``."""
    return synthesize_in_worker(*item)


def make_pool(workers: int):
    """A spawn-context pool whose workers hold an initialised libespeak-ng (use as a context
    manager; submit functions that call :func:`synthesize_in_worker`)."""
    if workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    context = multiprocessing.get_context("spawn")
    return context.Pool(workers, initializer=init_worker)


def _validate(items: Sequence[tuple[str, Voice]]) -> None:
    """Refuse empty texts and voices that are not installed, before any process starts."""
    checked: set[Voice] = set()
    for text, voice in items:
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"cannot synthesise empty or non-text input {text!r}")
        if voice not in checked:
            check_voice(voice)
            checked.add(voice)


def iter_synthesize(items: Sequence[tuple[str, Voice]], workers: int = 2) -> Iterator[Utterance]:
    """Yield an :class:`Utterance` per ``(text, voice)`` in input order, synthesised by
    ``workers`` processes (wrap it in tqdm for a progress bar)."""
    items = list(items)
    _validate(items)
    if not items:
        return
    with make_pool(min(workers, len(items))) as pool:
        yield from pool.imap(_task, items)


def synthesize_many(items: Iterable[tuple[str, Voice]], workers: int = 2) -> list[Utterance]:
    """Synthesise every ``(text, voice)``; results in input order, identical for any ``workers``."""
    return list(iter_synthesize(list(items), workers))


def synthesize(text: str, voice: Voice = Voice()) -> Utterance:
    """Synthesise one text (in a worker process; ~0.3 s of process start-up)."""
    return synthesize_many([(text, voice)], workers=1)[0]
