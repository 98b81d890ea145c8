"""Hard test streams with known keyword times, for tests, the demo and the benchmarks.

A scene is a stream of Spanish sentences spoken by several eSpeak voices (each sentence with its
own speed and pitch), separated by pauses, with additive noise at a chosen SNR, optionally heard
in a reverberant room (:func:`room_response`). Keywords are put
*inside* carrier sentences — a filler sentence with the keyword inserted between two of its words,
so it is coarticulated with its neighbours, or a short carrier phrase — and some sentences carry no
keyword at all. The truth lists every time a keyword is spoken (also where a filler happens to
contain it), from eSpeak's own word timings (:mod:`eval.espeak`). Everything is a function of the
arguments and ``seed``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from eval.espeak import Utterance, Voice, synthesize_many
from eval.textnorm import fortune_sentences, normalize_text
from eval.words import TimedWord
from kwsstream.encoders.base import SAMPLE_RATE
from kwsstream.errors import UsageError

CARRIER_PHRASES = (
    "Mira la {} que tengo aquí.",
    "Ayer vi {} en la calle.",
    "Dime si {} te parece bien.",
    "Nunca pensé que {} fuera tan caro.",
    "Por favor, trae {} mañana temprano.",
)
"""Short phrases a keyword is dropped into (one in :data:`PHRASE_SHARE` of the occurrences)."""
PHRASE_SHARE = 0.3
DISTRACTOR_SHARE = 0.5
"""Sentences without a keyword, per keyword sentence."""
FILLER_WORDS = (4, 14)
"""Length range (words) of the filler sentences used as carriers and distractors."""
RATE_SPREAD = 0.2
"""Each sentence's rate is its voice's rate times a factor in 1 ± this."""
PITCH_SPREAD = 12
"""Each sentence's pitch is its voice's pitch ± up to this much."""
PAUSE_S = (0.3, 1.2)
"""Silence between sentences (seconds)."""
EDGE_S = 0.5
"""Silence at the start and at the end of the stream (seconds)."""
BABBLE_SHARE = 0.7
"""Share of the noise power taken by babble when babble voices are given (the rest is pink)."""
BABBLE_TALKERS = 3
"""Overlapping babble talkers."""
PEAK = 0.95
"""The mix is scaled down if its peak exceeds this (the SNR is unchanged)."""
ROOM_DRR_DB = 0.0
"""Direct-to-reverberant energy ratio of :func:`room_response`: 0 dB is a talker about a metre
from the microphone in a living room (its critical distance, where both are equal, is ~0.5-1 m)."""
ROOM_PREDELAY_S = 0.002
"""Gap between the direct sound and the diffuse tail."""


@dataclass(frozen=True)
class Segment:
    """One sentence of a scene: its text, the voice that spoke it, its start and end (s)."""

    text: str
    voice: Voice
    start: float
    end: float


@dataclass(frozen=True, eq=False)
class Scene:
    """A test stream.

    Attributes:
        audio: float32 mono samples at ``sample_rate`` (16 kHz), read-only.
        sample_rate: 16,000.
        truth: every keyword occurrence, in time order.
        segments: the sentences spoken, in time order, with their voices.
        noise_snr_db: the speech-to-noise ratio of the mix (``None``: clean).
        seed: the seed it was built with.
        room_rt60: reverberation time of the room the mix was heard in (``None``: dry).
    """

    audio: np.ndarray
    sample_rate: int
    truth: tuple[TimedWord, ...]
    segments: tuple[Segment, ...]
    noise_snr_db: float | None
    seed: int
    room_rt60: float | None = None

    @property
    def duration(self) -> float:
        """Length of the stream in seconds."""
        return len(self.audio) / self.sample_rate


def build_scene(keywords: list[str], fillers: list[str] | None, voices: list[Voice], *,
                occurrences_per_keyword: int = 2, noise_snr_db: float | None = 15,
                babble_voices: list[Voice] | None = None, room_rt60: float | None = None, seed: int,
                workers: int = 2) -> Scene:
    """Build a scene (see the module docstring).

    Args:
        keywords: words (or short phrases) to hide in the stream.
        fillers: carrier and distractor sentences; ``None`` or empty: fortune sentences of
            :data:`FILLER_WORDS` words from :func:`eval.textnorm.fortune_sentences`.
        voices: the speakers, used in turn (each sentence gets a speed and pitch spread).
        occurrences_per_keyword: sentences made per keyword.
        noise_snr_db: speech-to-noise ratio in dB (speech power measured over the sentences);
            ``None`` for a clean stream.
        babble_voices: if given, most of the noise is babble: other sentences spoken by these
            voices, :data:`BABBLE_TALKERS` at a time; the rest is pink noise.
        room_rt60: if given, the whole mix (speech and noise) is heard in a room with this
            reverberation time in seconds (:func:`room_response`); keyword times are those of the
            direct sound. ``None``: dry, as before.
        seed: makes the scene reproducible.
        workers: synthesis processes.
    """
    _check(keywords, voices, occurrences_per_keyword)
    rng = np.random.default_rng(seed)
    pool = list(fillers) if fillers else [
        s for s in fortune_sentences()
        if FILLER_WORDS[0] <= len(normalize_text(s).split()) <= FILLER_WORDS[1]]
    texts = [_carrier(keyword, pool, rng) for keyword in keywords
             for _ in range(occurrences_per_keyword)]
    n_distractors = int(round(DISTRACTOR_SHARE * len(texts)))
    picks = rng.choice(len(pool), n_distractors, replace=n_distractors > len(pool))
    texts += [pool[i] for i in picks]
    texts = [texts[i] for i in rng.permutation(len(texts))]
    return _render(texts, keywords, voices, pool, noise_snr_db, babble_voices, room_rt60, rng, seed, workers)


def script_scene(sentences: list[str], keywords: list[str], voices: list[Voice], *,
                 noise_snr_db: float | None = 15, babble_voices: list[Voice] | None = None,
                 room_rt60: float | None = None, seed: int, workers: int = 2) -> Scene:
    """A scene of the given sentences, spoken in this order (voices in turn, with the same speed
    and pitch spread, pauses, noise and room as :func:`build_scene`); the truth lists every keyword
    the sentences contain. Babble, if asked, is made of these same sentences."""
    _check(keywords, voices, 1)
    if not sentences:
        raise UsageError("a scripted scene needs at least one sentence")
    rng = np.random.default_rng(seed)
    return _render(list(sentences), keywords, voices, list(sentences), noise_snr_db,
                   babble_voices, room_rt60, rng, seed, workers)


def _render(texts: list[str], keywords: list[str], voices: list[Voice], pool: list[str],
            noise_snr_db: float | None, babble_voices: list[Voice] | None, room_rt60: float | None,
            rng: np.random.Generator, seed: int, workers: int) -> Scene:
    """Speak ``texts`` in order, lay them out with pauses, add the noise, reverberate, find the
    keywords."""
    targets = [tuple(normalize_text(k).split()) for k in keywords]
    spoken = [(text, _spread(voices[i % len(voices)], rng)) for i, text in enumerate(texts)]
    babble = []
    if noise_snr_db is not None and babble_voices:
        babble = [(pool[int(rng.integers(len(pool)))],
                   _spread(babble_voices[i % len(babble_voices)], rng))
                  for i in range(max(2 * len(texts), BABBLE_TALKERS * 2))]
    utterances = synthesize_many(spoken + babble, workers=workers)
    speech, segments, truth = _lay_out(utterances[:len(spoken)], targets, rng)
    audio = speech
    if noise_snr_db is not None:
        noise = _noise(len(speech), utterances[len(spoken):], rng)
        active = np.concatenate([speech[_span(s.start, s.end)] for s in segments])
        gain = np.sqrt(np.mean(active ** 2) / np.mean(noise ** 2) / 10 ** (noise_snr_db / 10))
        audio = speech + gain * noise
    if room_rt60 is not None:  # its own generator: dry scenes stay what they were
        audio = reverberate(audio, room_response(room_rt60, np.random.default_rng([seed, 1])))
    peak = float(np.abs(audio).max())
    audio = (audio * (PEAK / peak if peak > PEAK else 1.0)).astype(np.float32)
    audio.flags.writeable = False
    return Scene(audio, SAMPLE_RATE, truth, segments, noise_snr_db, seed, room_rt60)


def room_response(rt60: float, rng: np.random.Generator, *, drr_db: float = ROOM_DRR_DB,
                  sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic room impulse response (Polack's statistical model): the direct sound at lag 0,
    then, after :data:`ROOM_PREDELAY_S`, a diffuse tail of Gaussian noise whose energy decays by
    60 dB in ``rt60`` seconds, ``drr_db`` below the direct sound in energy. float64, ``rt60``
    seconds long."""
    if not 0.05 <= rt60 <= 3.0:
        raise UsageError(f"room reverberation time {rt60} s is outside 0.05-3 s")
    n = int(round(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * 10 ** (-3 * t / rt60)  # amplitude: -60 dB of energy at rt60
    tail[: int(round(ROOM_PREDELAY_S * sample_rate))] = 0.0
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail ** 2))
    tail[0] = 1.0
    return tail


def reverberate(audio: np.ndarray, response: np.ndarray) -> np.ndarray:
    """``audio`` convolved with ``response`` (cut to the input's length), at the input's power."""
    from scipy.signal import fftconvolve

    x = np.asarray(audio, np.float64)
    wet = fftconvolve(x, np.asarray(response, np.float64))[: len(x)]
    return wet * np.sqrt(np.mean(x ** 2) / (np.mean(wet ** 2) + 1e-30))


def enrollment_clips(word: str, voices: list[Voice], *, workers: int = 2) -> list[Utterance]:
    """The word spoken alone by each voice (one :class:`Utterance` per voice, same order)."""
    if not normalize_text(word):
        raise UsageError(f"keyword {word!r} has no letters")
    return synthesize_many([(word, voice) for voice in voices], workers=workers)


def write_audio(path: Path | str, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float audio as 16-bit WAV or FLAC, or MP3, chosen by the suffix."""
    path = Path(path)
    formats = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"),
               ".mp3": ("MP3", "MPEG_LAYER_III")}
    if path.suffix.lower() not in formats:
        raise UsageError(f"cannot write {path}: use .wav, .flac or .mp3")
    fmt, subtype = formats[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(audio, -1.0, 1.0), sample_rate, format=fmt, subtype=subtype)
    return path


def scene_record(scene: Scene) -> dict:
    """A JSON-ready description: truth (``keyword``, ``start``, ``end``) and the sentences."""
    return {
        "sample_rate": scene.sample_rate, "duration": round(scene.duration, 4),
        "noise_snr_db": scene.noise_snr_db, "room_rt60": scene.room_rt60, "seed": scene.seed,
        "truth": [{"keyword": o.keyword, "start": round(o.start, 4), "end": round(o.end, 4)}
                  for o in scene.truth],
        "sentences": [{"text": s.text, "start": round(s.start, 4), "end": round(s.end, 4),
                       "voice": s.voice.espeak_name, "rate": s.voice.rate, "pitch": s.voice.pitch}
                      for s in scene.segments],
    }


def write_scene(scene: Scene, audio_path: Path | str, json_path: Path | str | None = None) -> None:
    """Write the stream's audio (suffix picks the format) and, if asked, its JSON record."""
    write_audio(audio_path, scene.audio, scene.sample_rate)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(scene_record(scene), ensure_ascii=False, indent=1),
                                   encoding="utf-8")


# ----------------------------------------------------------------------------- internals


def _check(keywords: list[str], voices: list[Voice], occurrences: int) -> None:
    if not keywords:
        raise UsageError("a scene needs at least one keyword")
    if not voices:
        raise UsageError("a scene needs at least one voice")
    if occurrences < 1:
        raise UsageError(f"occurrences_per_keyword must be >= 1, got {occurrences}")
    for keyword in keywords:
        if not normalize_text(keyword):
            raise UsageError(f"keyword {keyword!r} has no letters")


def _carrier(keyword: str, pool: list[str], rng: np.random.Generator) -> str:
    """A sentence with ``keyword`` inside: a carrier phrase, or a filler with the keyword
    inserted between two of its words (never first or last)."""
    if rng.random() < PHRASE_SHARE:
        return CARRIER_PHRASES[int(rng.integers(len(CARRIER_PHRASES)))].format(keyword)
    words = pool[int(rng.integers(len(pool)))].split()
    if len(words) < 2:
        return f"{words[0] if words else 'Dime'} {keyword} ya."
    at = int(rng.integers(1, len(words)))
    return " ".join(words[:at] + [keyword] + words[at:])


def _spread(voice: Voice, rng: np.random.Generator) -> Voice:
    """The voice at a random speed and pitch around its own."""
    rate = int(round(voice.rate * (1 + rng.uniform(-RATE_SPREAD, RATE_SPREAD))))
    pitch = int(round(voice.pitch + rng.uniform(-PITCH_SPREAD, PITCH_SPREAD)))
    return Voice(voice.name, voice.variant, min(max(rate, 80), 450), min(max(pitch, 0), 100))


def _span(start: float, end: float) -> slice:
    return slice(int(round(start * SAMPLE_RATE)), int(round(end * SAMPLE_RATE)))


def _lay_out(utterances: list[Utterance], targets: list[tuple[str, ...]],
             rng: np.random.Generator,
             ) -> tuple[np.ndarray, tuple[Segment, ...], tuple[TimedWord, ...]]:
    """Concatenate the sentences with pauses; find every keyword occurrence."""
    pieces = [np.zeros(int(EDGE_S * SAMPLE_RATE), np.float32)]
    offset = EDGE_S
    segments, truth = [], []
    for i, utt in enumerate(utterances):
        segments.append(Segment(utt.text, utt.voice, offset, offset + utt.duration))
        words = [normalize_text(w.text) for w in utt.words]
        for target in targets:
            for k in range(len(words) - len(target) + 1):
                if tuple(words[k:k + len(target)]) == target:
                    truth.append(TimedWord(" ".join(target), offset + utt.words[k].start,
                                            offset + utt.words[k + len(target) - 1].end))
        pieces.append(np.asarray(utt.audio, np.float32))
        pause = EDGE_S if i == len(utterances) - 1 else rng.uniform(*PAUSE_S)
        pause_samples = int(round(pause * SAMPLE_RATE))
        pieces.append(np.zeros(pause_samples, np.float32))
        offset += len(utt.audio) / SAMPLE_RATE + pause_samples / SAMPLE_RATE
    truth.sort(key=lambda o: o.start)
    return np.concatenate(pieces), tuple(segments), tuple(truth)


def _noise(length: int, babble: list[Utterance], rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise: pink, or babble plus pink."""
    pink = _pink(length, rng)
    if not babble:
        return pink
    talkers = np.zeros(length, np.float64)
    for t in range(BABBLE_TALKERS):
        track = np.concatenate([u.audio for u in babble[t::BABBLE_TALKERS]]).astype(np.float64)
        track = np.tile(track, int(np.ceil(length / len(track))) + 1)
        start = int(rng.integers(len(track) - length + 1))
        talkers += track[start:start + length]
    talkers /= np.sqrt(np.mean(talkers ** 2)) + 1e-12
    return np.sqrt(BABBLE_SHARE) * talkers + np.sqrt(1 - BABBLE_SHARE) * pink


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator, *,
              color: str = "pink", speech: slice = slice(None)) -> np.ndarray:
    """``audio`` plus white or pink noise at ``snr_db`` below the power of ``audio[speech]``
    (the speech part, so leading and trailing silence do not lower the SNR); float32."""
    if color not in ("pink", "white"):
        raise UsageError(f"noise color must be pink or white, not {color!r}")
    noise = _pink(len(audio), rng) if color == "pink" else rng.standard_normal(len(audio))
    part = audio[speech].astype(np.float64)
    power = float(np.mean(part ** 2)) if len(part) else 0.0
    gain = np.sqrt(power / np.mean(noise ** 2) / 10 ** (snr_db / 10)) if power > 0 else 0.0
    return (audio + gain * noise).astype(np.float32)


def _pink(length: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power pink (1/f) noise, by shaping white noise's spectrum."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length)
    freqs[0] = freqs[1] if length > 1 else 1.0
    pink = np.fft.irfft(spectrum / np.sqrt(freqs), n=length)
    return pink / (np.sqrt(np.mean(pink ** 2)) + 1e-12)
