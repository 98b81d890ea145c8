"""Word times inside a real recording from its transcript: eSpeak NG + DTW, cross-checked.

Method (:func:`align`):

1. eSpeak NG speaks the transcript (:mod:`eval.espeak`, exact word times in the synthetic audio).
2. Both recordings become MFCC-13 + deltas at 10 ms (``fmax`` 4 kHz: the band shared by 8 kHz GSM
   and 16 kHz G.722 recordings), mean and variance normalised per utterance.
3. Leading and trailing silence is cut from both with an energy rule (frames more than
   :data:`TRIM_DB` below the loudest), and DTW (cosine distance) aligns what remains, whole to
   whole. Each word's first and last synthetic frame are mapped through the warping path to the
   first and last real frame they meet.
4. Cross-check: the same is done with a second voice (another variant, slower rate,
   :data:`VOICE_VARIANTS`). A word's times are trusted when both estimates agree within
   :data:`TOLERANCE_S` at each boundary; its times are the mean of the two.

The mean DTW cost per path step tells how well the transcript fits the audio at all
(:attr:`Alignment.cost`), used to check borrowed transcripts.

Words are tied to eSpeak's words by character position: an eSpeak word covers the whole
whitespace-separated token it starts (``d'identification``, ``PIN-code``); a transcript word
sharing its eSpeak word with others is timed with the token's span, which is accepted only when
the others are elided clitics of at most :data:`CLITIC_LETTERS` letters (``d'``, ``l'``, ``qu'``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import librosa
import numpy as np

from eval.debian_audio import speech_text, word_matches
from eval.espeak import Utterance, Voice, iter_synthesize

SAMPLE_RATE = 16_000
HOP = 160
"""Feature hop (10 ms)."""
N_FFT = 400
FMAX = 4000.0
"""Top of the mel bands (Hz): telephone band, common to every source."""
N_MFCC = 13
TRIM_DB = 35.0
"""Frames this far below the loudest frame count as silence at the ends."""
TRIM_PAD_FRAMES = 3
"""Frames kept on each side of the energy trim (30 ms)."""
TOLERANCE_S = 0.08
"""Largest boundary disagreement between the two voices for a trusted word (seconds)."""
CLITIC_LETTERS = 2
"""Longest transcript word that may share an eSpeak word with the timed one (elisions)."""
VOICE_VARIANTS = ((None, 175), ("m3", 140))
"""(variant, rate) of the two voices of the cross-check: the default voice at the normal rate,
then a lower male variant, slower."""


@dataclass(frozen=True)
class WordTime:
    """A transcript word (normalised), its index among the transcript's words, its start and end
    in seconds in the real recording (``nan`` when it could not be timed), the largest boundary
    disagreement between the two voices (``inf`` when unknown) and whether it is trusted."""

    word: str
    index: int
    start: float
    end: float
    disagreement: float
    trusted: bool


@dataclass(frozen=True)
class Alignment:
    """Word times of one recording and the mean DTW cost of the two voices' alignments."""

    words: tuple[WordTime, ...]
    cost: float


def voices(language_voice: str) -> tuple[Voice, Voice]:
    """The two eSpeak voices of the cross-check for a language voice such as ``"en-US"``."""
    return tuple(Voice(name=language_voice, variant=v, rate=r) for v, r in VOICE_VARIANTS)


def features(audio: np.ndarray) -> np.ndarray:
    """MFCC-13 + deltas, one row per 10 ms frame (frame ``j`` centred on ``j * HOP``), mean and
    variance normalised over the utterance."""
    mfcc = librosa.feature.mfcc(y=np.asarray(audio, dtype=np.float32), sr=SAMPLE_RATE,
                                n_mfcc=N_MFCC, n_fft=N_FFT, hop_length=HOP, n_mels=40, fmin=20.0,
                                fmax=FMAX)
    width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2))
    delta = librosa.feature.delta(mfcc, width=width) if width >= 3 else np.zeros_like(mfcc)
    stacked = np.vstack([mfcc, delta]).T
    return (stacked - stacked.mean(0)) / (stacked.std(0) + 1e-8)


def speech_frames(audio: np.ndarray) -> tuple[int, int]:
    """``[first, last)`` frames between leading and trailing silence (energy rule, padded)."""
    rms = librosa.feature.rms(y=np.asarray(audio, dtype=np.float32), frame_length=N_FFT,
                              hop_length=HOP)[0]
    level = 20 * np.log10(np.maximum(rms, 1e-10))
    loud = np.flatnonzero(level > level.max() - TRIM_DB)
    if loud.size == 0:
        return 0, len(level)
    return max(0, loud[0] - TRIM_PAD_FRAMES), min(len(level), loud[-1] + 1 + TRIM_PAD_FRAMES)


def _trimmed_costs(real: np.ndarray, synthetic: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Cosine distances (0 = identical) between the energy-trimmed frames of ``synthetic`` (rows)
    and of ``real`` (columns), with the first frame of each trim: ``(cost, r0, s0)``."""
    r0, r1 = speech_frames(real)
    s0, s1 = speech_frames(synthetic)
    fr, fs = features(real)[r0:r1], features(synthetic)[s0:s1]
    fr = fr / (np.linalg.norm(fr, axis=1, keepdims=True) + 1e-8)
    fs = fs / (np.linalg.norm(fs, axis=1, keepdims=True) + 1e-8)
    return np.maximum(0.0, 1.0 - fs @ fr.T), r0, s0


def dtw_map(real: np.ndarray, synthetic: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """DTW of trimmed synthetic frames onto trimmed real frames.

    Returns, per frame of the full synthetic audio, the first and last full-real frame it is
    matched to (frames outside the trimmed part are clipped to its ends), and the mean cost per
    path step (cosine distance, 0 = identical).
    """
    cost, r0, s0 = _trimmed_costs(real, synthetic)
    accumulated, path = librosa.sequence.dtw(C=cost, backtrack=True)
    first = np.full(len(cost), np.iinfo(np.int64).max, dtype=np.int64)
    last = np.full(len(cost), -1, dtype=np.int64)
    np.minimum.at(first, path[:, 0], path[:, 1])
    np.maximum.at(last, path[:, 0], path[:, 1])
    n_synth = int(np.ceil(len(synthetic) / HOP)) + 1
    index = np.clip(np.arange(n_synth) - s0, 0, len(cost) - 1)
    return first[index] + r0, last[index] + r0, float(accumulated[-1, -1] / len(path))


def fit_cost(real: np.ndarray, synthetic: np.ndarray) -> float:
    """How badly a synthetic utterance fits a recording: DTW cost (cosine distance, diagonal
    steps weighted 2) divided by the two trimmed lengths together, so that paths that warp a lot
    gain nothing. Used to compare transcripts of one recording, not across recordings."""
    cost, _, _ = _trimmed_costs(real, synthetic)
    accumulated = librosa.sequence.dtw(C=cost, weights_mul=np.array([2.0, 1.0, 1.0]),
                                       backtrack=False)
    return float(accumulated[-1, -1] / sum(cost.shape))


def espeak_spans(utterance: Utterance, text: str) -> list[tuple[int, int, float, float]]:
    """``(char_start, char_end, start_s, end_s)`` of each eSpeak word in ``text``: the word's
    position found in order, extended to the end of its whitespace-separated token."""
    spans, cursor = [], 0
    for word in utterance.words:
        position = text.find(word.text, cursor)
        if position < 0:
            continue
        end = position + len(word.text)
        while end < len(text) and not text[end].isspace():
            end += 1
        spans.append((position, end, word.start, word.end))
        cursor = position + len(word.text)
    return spans


def synthetic_word_times(utterance: Utterance, transcript: str) -> list[tuple[float, float] | None]:
    """Per normalised transcript word, its ``(start, end)`` in the synthetic audio, or ``None``
    when eSpeak gave it no word of its own (merged with a longer word, or silent)."""
    text = speech_text(transcript)
    matches = word_matches(transcript)
    spans = espeak_spans(utterance, text)
    times: list[tuple[float, float] | None] = []
    for match in matches:
        owner = next((s for s in spans if s[0] <= match.start() < s[1]), None)
        if owner is None:
            times.append(None)
            continue
        others = [m for m in matches if m is not match and owner[0] <= m.start() < owner[1]]
        clitics_only = all(len(m.group()) <= CLITIC_LETTERS and m.start() < match.start()
                           for m in others)
        times.append((owner[2], owner[3]) if clitics_only else None)
    return times


def _real_times(utterance: Utterance, audio: np.ndarray,
                transcript: str) -> tuple[list[tuple[float, float] | None], float]:
    """Per transcript word, its span in the real audio through one voice's DTW, and the cost."""
    first, last, cost = dtw_map(audio, utterance.audio)
    frame_s = HOP / SAMPLE_RATE
    result = []
    for span in synthetic_word_times(utterance, transcript):
        if span is None:
            result.append(None)
            continue
        i0 = min(int(round(span[0] / frame_s)), len(first) - 1)
        i1 = min(max(i0, int(round(span[1] / frame_s)) - 1), len(last) - 1)
        result.append((first[i0] * frame_s, (last[i1] + 1) * frame_s))
    return result, cost


def combine(transcript: str, per_voice: Sequence[tuple[list, float]]) -> Alignment:
    """Cross-check the voices' word times (see the module docstring)."""
    words = []
    for index, match in enumerate(word_matches(transcript)):
        spans = [times[index] for times, _ in per_voice]
        if any(span is None for span in spans):
            words.append(WordTime(match.group(), index, float("nan"), float("nan"),
                                  float("inf"), False))
            continue
        starts, ends = np.array([s[0] for s in spans]), np.array([s[1] for s in spans])
        disagreement = float(max(np.ptp(starts), np.ptp(ends)))
        words.append(WordTime(match.group(), index, float(starts.mean()), float(ends.mean()),
                              disagreement, disagreement <= TOLERANCE_S))
    return Alignment(tuple(words), float(np.mean([cost for _, cost in per_voice])))


def align_many(items: Sequence[tuple[np.ndarray, str]], language_voice: str,
               workers: int = 1) -> Iterator[Alignment]:
    """Align ``(audio, transcript)`` pairs (16 kHz) in order; transcripts must hold words."""
    voice_pair = voices(language_voice)
    requests = [(speech_text(t), v) for _, t in items for v in voice_pair]
    utterances = iter_synthesize(requests, workers=workers)
    for audio, transcript in items:
        per_voice = [_real_times(next(utterances), audio, transcript) for _ in voice_pair]
        yield combine(transcript, per_voice)


def align(audio: np.ndarray, transcript: str, language_voice: str) -> Alignment:
    """Word times of one recording (see the module docstring)."""
    return next(align_many([(audio, transcript)], language_voice))
