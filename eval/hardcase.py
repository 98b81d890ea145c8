"""The project's hard streaming case, as a library: what ``eval/bench/speech_embedding_vs_mfcc.py``
prints and ``tests/test_speech_embedding.py`` asserts.

The hard case (:func:`make_hard_case`): six Spanish keywords enrolled from three eSpeak voices
(each word spoken alone); a stream of sentences by four *other* voices with every keyword inside
two of them, under babble of three more voices (plus some pink noise) at ``snr_db``; and a
negative stream, same voices and noise, of sentences full of words that share syllables with
the keywords (discoteca/hipoteca for biblioteca, posada/esposa for mariposa,
contadora/computación for computadora, ...). With ``room_rt60``, both streams are also heard in a
reverberant room (the enrollment recordings stay dry: a user enrolls close to the microphone,
the spotter hears the room).

For an encoder, through the runtime's own enrollment, calibration, streaming encoder, matcher and
detector: :func:`detect` (a ``Spotter`` fed 0.1 s blocks, as a microphone: hits, false alarms,
latencies; a hit is an event of the right keyword by :func:`kwsstream.truth.matches`) and
:func:`separation` (the offline kernel on the same templates: per keyword the worst true
occurrence's score vs the best score elsewhere, the 0.5 s windows elsewhere scoring below it, and
``AUC`` = P(occurrence score < window score): figures that do not depend on the threshold).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.espeak import Voice
from eval.scenes import Scene, build_scene, enrollment_clips, script_scene, write_audio
from eval.words import TimedWord
from kwsstream.encoders import Encoder, EncoderBase
from kwsstream.enroll import enroll_examples
from kwsstream.keyset import KeywordSet
from kwsstream.matcher import cosine_distances
from kwsstream.sdtw import accumulate_offline, band
from kwsstream.spotter import Event, Spotter
from kwsstream.truth import TOLERANCE, matches

KEYWORDS = ("biblioteca", "mariposa", "computadora", "chocolate", "bicicleta", "elefante")
CONFUSABLE_SENTENCES = (
    "La discoteca del barrio cerró por culpa de la hipoteca.",
    "El marinero pidió mariscos en la posada del puerto.",
    "Mi esposa compró un biberón en la farmacia.",
    "La contadora estudió computación en la universidad.",
    "El comprador quería chorizo y un daño colateral.",
    "El atleta tiene una cicatriz en la rodilla.",
    "Un estudiante elegante habló con el infante.",
    "La bibliografía del bicentenario es muy larga.",
    "El mariachi cantó una canción en la cocina.",
    "La camioneta trae la receta del cocinero.",
)
"""Negative stream: words sharing syllables with the keywords, none of the keywords."""
ENROLL_VOICES = (Voice("es", "m1", 160, 45), Voice("es-419", "f2", 190, 60), Voice("es", "klatt", 175, 50))
SEARCH_VOICES = (Voice("es-419", "m3", 150, 40), Voice("es", "f4", 200, 65), Voice("es-419", "m7", 170, 55),
                 Voice("es", "f1", 140, 50))
BABBLE_VOICES = (Voice("es", "m2", 170, 50), Voice("es-419", "f3", 180, 55), Voice("es", "m5", 160, 45))
OCCURRENCES_PER_KEYWORD = 2
DEFAULT_SNR_DB = 10.0
DEFAULT_SEED = 11
BLOCK_SECONDS = 0.1
"""Audio fed per ``Stream.feed`` call (a microphone's block)."""
NEGATIVE_WINDOW_S = 0.5
"""Length of the windows whose best score is one negative in the separation figures."""
NEAR_S = (0.5, 0.8)
"""Around a true occurrence, this much before its start and after its end is not a negative."""


@dataclass(frozen=True)
class HardCase:
    """Enrollment recordings and the two test streams (see the module docstring)."""

    examples: dict[str, list[Path]]  # keyword -> one recording per enrollment voice
    stream: Scene  # keywords inside sentences by other voices, noise
    negative: Scene  # confusable words, same voices and noise, no keyword


def make_hard_case(folder: Path, *, snr_db: float | None = DEFAULT_SNR_DB, room_rt60: float | None = None,
                   seed: int = DEFAULT_SEED, workers: int = 2) -> HardCase:
    """Synthesise the hard case into ``folder`` (enrollment WAVs; the scenes stay in memory).

    ``snr_db`` None: no noise at all (cross-voice and confusable words only). ``room_rt60``: both
    streams heard in a reverberant room (:func:`eval.scenes.room_response`); the enrollment
    recordings stay dry (a user enrolls close to the microphone).
    """
    folder.mkdir(parents=True, exist_ok=True)
    examples = {}
    for word in KEYWORDS:
        clips = enrollment_clips(word, list(ENROLL_VOICES), workers=workers)
        examples[word] = [write_audio(folder / f"{word}_{i}.wav", clip.audio) for i, clip in enumerate(clips)]
    babble = list(BABBLE_VOICES) if snr_db is not None else None
    stream = build_scene(list(KEYWORDS), None, list(SEARCH_VOICES), occurrences_per_keyword=OCCURRENCES_PER_KEYWORD,
                         noise_snr_db=snr_db, babble_voices=babble, room_rt60=room_rt60, seed=seed, workers=workers)
    negative = script_scene(list(CONFUSABLE_SENTENCES), list(KEYWORDS), list(SEARCH_VOICES), noise_snr_db=snr_db,
                            babble_voices=babble, room_rt60=room_rt60, seed=seed + 1, workers=workers)
    if negative.truth:
        raise RuntimeError(f"the confusable sentences contain keywords: {negative.truth}")
    return HardCase(examples, stream, negative)


def enroll_all(encoder: Encoder, case: HardCase) -> KeywordSet:
    """Every keyword of the case enrolled with ``encoder`` (thresholds calibrated as the CLI does)."""
    return enroll_examples(encoder, case.examples)


def is_hit(keyword: str, start: float, end: float, occurrence: TimedWord) -> bool:
    """Whether an event of ``keyword`` from ``start`` to ``end`` s finds ``occurrence``."""
    return matches(keyword, start, end, occurrence.keyword, occurrence.start, occurrence.end)


@dataclass(frozen=True)
class Detections:
    """One encoder's streaming result on the hard case.

    Attributes:
        found: occurrences of the stream found (indices into ``stream.truth``).
        occurrences: occurrences in the stream.
        false_alarms: events that match no occurrence, in either stream.
        latencies: for each hit, seconds of audio fed when its event came out minus the word's end.
        rtf: wall seconds per audio second of the whole pipeline (both streams).
    """

    found: frozenset[int]
    occurrences: int
    false_alarms: tuple[Event, ...]
    latencies: tuple[float, ...]
    rtf: float


def stream_events(spotter: Spotter, audio: np.ndarray) -> list[tuple[Event, float]]:
    """Feed ``audio`` in :data:`BLOCK_SECONDS` blocks; each event with the audio time it came out."""
    stream = spotter.create_stream()
    block = int(round(BLOCK_SECONDS * spotter.encoder.grid.sample_rate))
    out = []
    for start in range(0, len(audio), block):
        out += [(event, stream.seconds) for event in stream.feed(audio[start:start + block])]
    out += [(event, stream.seconds) for event in stream.flush()]
    return out


def detect(spotter: Spotter, case: HardCase) -> Detections:
    """Stream both scenes through ``spotter`` and score the events."""
    started = time.perf_counter()
    positive = stream_events(spotter, case.stream.audio)
    negative = stream_events(spotter, case.negative.audio)
    rtf = (time.perf_counter() - started) / (case.stream.duration + case.negative.duration)
    found, latencies, false_alarms = set(), [], [event for event, _ in negative]
    for event, emitted in positive:
        matched = [k for k, occ in enumerate(case.stream.truth) if is_hit(event.keyword, event.start, event.end, occ)]
        if not matched:
            false_alarms.append(event)
            continue
        latencies += [emitted - case.stream.truth[k].end for k in matched if k not in found]
        found.update(matched)
    return Detections(frozenset(found), len(case.stream.truth), tuple(false_alarms), tuple(latencies), rtf)


@dataclass(frozen=True)
class Separation:
    """Offline separation of one keyword's occurrences from everything else.

    Attributes:
        keyword: the keyword.
        worst_hit: the highest (worst) best-score over its occurrences.
        best_negative: the lowest score anywhere else (other sentences, the confusable stream).
        below: negative windows scoring below ``worst_hit``.
        auc: P(occurrence score < negative window score).
    """

    keyword: str
    worst_hit: float
    best_negative: float
    below: int
    auc: float


def score_curve(templates: Sequence[np.ndarray], frames: np.ndarray) -> np.ndarray:
    """Per frame, the best normalised S-DTW score of any template ending there (the runtime's
    kernel and normalisation, ``kwsstream/sdtw.py``)."""
    best = np.full(len(frames), np.inf)
    ends = np.arange(len(frames))
    for template in templates:
        cost, start = accumulate_offline(cosine_distances(template, frames), *band(len(template)))
        best = np.minimum(best, np.where(np.isfinite(cost), 2.0 * cost / (len(template) + ends - start + 1), np.inf))
    return best


def _window_minima(curve: np.ndarray, centres: np.ndarray, keep: np.ndarray, duration: float) -> list[float]:
    out = []
    for t0 in np.arange(0.0, duration, NEGATIVE_WINDOW_S):
        inside = keep & (centres >= t0) & (centres < t0 + NEGATIVE_WINDOW_S)
        if inside.any():
            out.append(float(curve[inside].min()))
    return out


def separation(encoder: Encoder, keyset: KeywordSet, case: HardCase) -> list[Separation]:
    """Per keyword :class:`Separation`."""
    frames = encoder.encode(case.stream.audio)
    negative = encoder.encode(case.negative.audio)
    centres = encoder.grid.centre(np.arange(len(frames)))
    neg_centres = encoder.grid.centre(np.arange(len(negative)))
    out = []
    for kw in keyset.keywords:
        templates = [t.frames for t in kw.templates]
        curve, neg_curve = score_curve(templates, frames), score_curve(templates, negative)
        near = np.zeros(len(frames), bool)
        hits = []
        for occ in case.stream.truth:
            if occ.keyword == kw.name:
                hits.append(float(curve[(centres >= occ.start - 0.1) & (centres <= occ.end + TOLERANCE)].min()))
                near |= (centres >= occ.start - NEAR_S[0]) & (centres <= occ.end + NEAR_S[1])
        everywhere = np.ones(len(negative), bool)
        negatives = np.array(_window_minima(curve, centres, ~near, case.stream.duration)
                             + _window_minima(neg_curve, neg_centres, everywhere, case.negative.duration))
        worst = max(hits)
        out.append(Separation(kw.name, worst, float(negatives.min()), int((negatives < worst).sum()),
                              float(np.mean(np.array(hits)[:, None] < negatives[None, :]))))
    return out


class _ScaledState:
    def __init__(self, state, gain: float):
        self.state, self.gain = state, gain

    def push(self, samples: np.ndarray) -> np.ndarray:
        return self.state.push(np.asarray(samples, np.float32) * self.gain)

    def flush(self) -> np.ndarray:
        return self.state.flush()

    def reset(self) -> None:
        self.state.reset()


class Scaled(EncoderBase):
    """``encoder`` fed all its audio multiplied by ``gain``: a deliberate degradation (int16-range
    input) to show what the figures catch. An encoder like any other (its identity records the
    gain), so it enrolls, calibrates and streams through the runtime unchanged."""

    kind = "scaled-for-eval"

    def __init__(self, encoder: Encoder, gain: float):
        self.encoder, self.gain = encoder, gain
        self.dim, self.grid = encoder.dim, encoder.grid

    @property
    def identity(self) -> dict:
        return {"kind": self.kind, "gain": self.gain, "of": self.encoder.identity}

    @property
    def name(self) -> str:
        return f"{self.encoder.name}-x{self.gain:g}"

    def create_state(self) -> _ScaledState:
        return _ScaledState(self.encoder.create_state(), self.gain)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        return self.encoder.encode(np.asarray(audio, np.float32) * self.gain)
