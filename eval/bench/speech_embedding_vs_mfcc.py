"""Google's speech_embedding vs MFCC-13 on the project's hard streaming case, side by side.

    python -m export speech-embedding                    # once: models/speech-embedding.onnx
    python -m eval.bench.speech_embedding_vs_mfcc [--snr 10 5 clean] [--rooms dry 0.5] [--seeds 11 21 31]
                                                  [--model models/speech-embedding.onnx]

The hard case (:func:`make_hard_case`, also what ``tests/test_speech_embedding.py`` runs): six
Spanish keywords enrolled from three eSpeak voices (each word spoken alone); a stream of
sentences by four *other* voices with every keyword inside two of them, under babble of three
more voices (plus some pink noise) at ``--snr`` dB; and a negative stream, same voices and noise,
of sentences full of words that share syllables with the keywords (discoteca/hipoteca for
biblioteca, posada/esposa for mariposa, contadora/computación for computadora, ...). With
``--rooms``, both streams are also heard in a reverberant room of that RT60 (the enrollment
recordings stay dry: a user enrolls close to the microphone, the spotter hears the room).

For each encoder, through the runtime's own enrollment, calibration, streaming encoder, matcher
and detector (``Spotter`` fed 0.1 s blocks, as a microphone):

* hits and false alarms at the enrollment-calibrated thresholds (a hit: an event of the right
  keyword within 0.3 s of the spoken word; anything else is a false alarm);
* separation, with the offline kernel on the same templates: per keyword the worst true
  occurrence's score vs the best score elsewhere (both streams); ``below`` counts the 0.5 s
  windows elsewhere that score below the worst occurrence (a per-keyword oracle threshold that
  finds every occurrence would fire there); ``AUC`` = P(occurrence score < window score);
* with ``--fa-per-hour``, the same detection with every threshold moved to each target
  false-alarm rate on its calibration curve;
* streaming real-time factor on one thread (median of ``--reps``; whole pipeline, and the
  encoder alone) and detection latency: audio time when the event came out minus the end of the
  spoken word (median and max over hits).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.bench import machine
from eval.espeak import Voice
from eval.scenes import Occurrence, Scene, build_scene, enrollment_clips, script_scene, write_audio
from kwsstream import demo
from kwsstream.encoders import Encoder, load_encoder
from kwsstream.enroll import enroll_examples, set_sensitivity
from kwsstream.keyset import KeywordSet
from kwsstream.matcher import cosine_distances, limit_blas_threads
from kwsstream.sdtw import accumulate_offline, band
from kwsstream.spotter import Event, Spotter

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
TOLERANCE_S = demo.TOLERANCE
"""An event is a hit when it overlaps the spoken keyword widened by this much on each side."""
BLOCK_SECONDS = 0.1
"""Audio fed per ``Stream.feed`` call (a microphone's block)."""
NEGATIVE_WINDOW_S = 0.5
"""Length of the windows whose best score is one negative in the separation figures."""
NEAR_S = (0.5, 0.8)
"""Around a true occurrence, this much before its start and after its end is not a negative."""
DEFAULT_MODEL = Path("models") / "speech-embedding.onnx"


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


def is_hit(keyword: str, start: float, end: float, occurrence: Occurrence) -> bool:
    """Whether an event of ``keyword`` from ``start`` to ``end`` s finds ``occurrence``."""
    return demo.matches(keyword, start, end, occurrence.keyword, occurrence.start, occurrence.end)


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
                hits.append(float(curve[(centres >= occ.start - 0.1) & (centres <= occ.end + TOLERANCE_S)].min()))
                near |= (centres >= occ.start - NEAR_S[0]) & (centres <= occ.end + NEAR_S[1])
        everywhere = np.ones(len(negative), bool)
        negatives = np.array(_window_minima(curve, centres, ~near, case.stream.duration)
                             + _window_minima(neg_curve, neg_centres, everywhere, case.negative.duration))
        worst = max(hits)
        out.append(Separation(kw.name, worst, float(negatives.min()), int((negatives < worst).sum()),
                              float(np.mean(np.array(hits)[:, None] < negatives[None, :]))))
    return out


class Scaled:
    """``encoder`` fed all its audio multiplied by ``gain``: a deliberate degradation (int16-range
    input) to show what the figures catch."""

    def __init__(self, encoder: Encoder, gain: float):
        self.encoder, self.gain = encoder, gain
        self.grid, self.identity, self.name = encoder.grid, encoder.identity, encoder.name

    def encode(self, audio: np.ndarray) -> np.ndarray:
        return self.encoder.encode(audio * self.gain)


def encoder_rtf(encoder: Encoder, audio: np.ndarray, reps: int) -> float:
    """Median wall seconds per audio second of the encoder alone, streaming 0.1 s blocks."""
    block = int(round(BLOCK_SECONDS * encoder.grid.sample_rate))
    times = []
    for _ in range(reps):
        state = encoder.create_state()
        started = time.perf_counter()
        for start in range(0, len(audio), block):
            state.push(audio[start:start + block])
        state.flush()
        times.append(time.perf_counter() - started)
    return float(np.median(times)) / (len(audio) / encoder.grid.sample_rate)


def hop_table(model: Path, audio: np.ndarray, reps: int) -> None:
    """speech_embedding alone: streaming cost and frame latency per choice of frames per run."""
    from kwsstream.encoders.onnx import OnnxEncoder, StreamOptions

    print(f"\nspeech_embedding alone, {len(audio) / 16000:.0f} s fed in {BLOCK_SECONDS} s blocks, one thread "
          f"(median of {reps}); frame latency = audio past the frame's centre before it comes out")
    print(f"  {'frames per run':>14} {'RTF':>8} {'frame latency':>14}")
    for hop in (0.08, 0.16, 0.32, 0.48):
        encoder = OnnxEncoder(model, threads=1, stream=StreamOptions(hop=hop))
        grid, per_run = encoder.grid, encoder.plan.hop
        right = (grid.length - grid.length // 2) / grid.sample_rate
        latency = f"{right:.2f}-{right + (per_run - 1) * grid.hop / grid.sample_rate:.2f} s"
        print(f"  {per_run:>14} {encoder_rtf(encoder, audio, reps):>8.4f} {latency:>14}")
    encoder = OnnxEncoder(model, threads=1)
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        encoder.encode(audio)
        times.append(time.perf_counter() - started)
    print(f"  {'whole clip':>14} {float(np.median(times)) / (len(audio) / 16000):>8.4f} {'(offline)':>14}")


def report(name: str, encoder: Encoder, case: HardCase, reps: int, int16_check: bool,
           rates: Sequence[float] = ()) -> None:
    """Print one encoder's figures on one hard case (``rates``: also hits / false alarms with
    every keyword's threshold moved to each target false-alarm rate on its calibration curve)."""
    keyset = enroll_all(encoder, case)
    spotter = Spotter(keyset, encoder)
    runs = [detect(spotter, case) for _ in range(reps)]
    result = runs[0]
    rtf = float(np.median([r.rtf for r in runs]))
    seps = separation(encoder, keyset, case)
    lat = np.array(result.latencies)
    latency = f"median {np.median(lat):.2f} s max {lat.max():.2f} s" if len(lat) else "- (no hits)"
    thresholds = sorted({round(kw.threshold, 3) for kw in keyset.keywords})
    print(f"  {name:<17} hits {len(result.found):>2}/{result.occurrences}  false alarms {len(result.false_alarms)}"
          f"  thresholds {thresholds}  latency {latency}"
          f"  RTF pipeline {rtf:.4f} encoder {encoder_rtf(encoder, case.stream.audio, reps):.4f}")
    print(f"  {'':<17} separable {sum(s.best_negative > s.worst_hit for s in seps)}/{len(seps)}"
          f"  windows below worst hit {sum(s.below for s in seps)}  AUC mean {np.mean([s.auc for s in seps]):.4f}"
          f" min {min(s.auc for s in seps):.4f}")
    for s in seps:
        print(f"  {'':<19}{s.keyword:<12} worst hit {s.worst_hit:.3f}  best negative {s.best_negative:.3f}"
              f"  below {s.below:>3}  AUC {s.auc:.4f}")
    for event in result.false_alarms:
        print(f"  {'':<19}false alarm: {event.keyword} {event.start:.2f}-{event.end:.2f} s cost {event.cost:.3f}")
    if rates:
        sweep = []
        for rate in rates:
            moved = keyset
            for kw in keyset.keywords:
                moved = set_sensitivity(moved, kw.name, fa_per_hour=rate)
            found = detect(Spotter(moved, encoder), case)
            sweep.append(f"{rate:g}/h: {len(found.found)}/{len(found.false_alarms)}")
        print(f"  {'':<17} target false alarms per hour -> hits/false alarms: {'  '.join(sweep)}")
    if int16_check:
        scaled = Scaled(encoder, 32768.0)
        bad = separation(scaled, enroll_all(scaled, case), case)
        print(f"  {'':<17} (int16-range input instead of [-1, 1]: separable "
              f"{sum(s.best_negative > s.worst_hit for s in bad)}/{len(bad)}, windows below worst hit "
              f"{sum(s.below for s in bad)}, AUC mean {np.mean([s.auc for s in bad]):.4f})")


def main(argv: list[str] | None = None) -> int:
    limit_blas_threads()  # as the CLI does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"the export (default {DEFAULT_MODEL})")
    parser.add_argument("--snr", nargs="+", default=[str(DEFAULT_SNR_DB)], help="dB of babble, or 'clean' (several)")
    parser.add_argument("--rooms", nargs="+", default=["dry"],
                        help="reverberation times (s) of the room both streams are heard in, or 'dry' (several)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[DEFAULT_SEED])
    parser.add_argument("--reps", type=int, default=3, help="timing repetitions (median)")
    parser.add_argument("--no-int16-check", action="store_true", help="skip the deliberately mis-scaled run")
    parser.add_argument("--fa-per-hour", type=float, nargs="+", default=[],
                        help="also detect with thresholds calibrated to these false-alarm rates")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        parser.error(f"{args.model}: no such model (make it with: python -m export speech-embedding)")
    encoders = {"mfcc": load_encoder("mfcc"), "speech_embedding": load_encoder(args.model, threads=1)}
    grid = encoders["speech_embedding"].grid
    print(f"machine: {machine()}")
    print(f"speech_embedding: frame every {grid.hop / grid.sample_rate * 1000:g} ms, each needs "
          f"{(grid.length - grid.length // 2) / grid.sample_rate:.4f} s of audio past its centre; streamed "
          f"{encoders['speech_embedding'].plan.hop} frame(s) per run; one thread; blocks of {BLOCK_SECONDS} s")
    with tempfile.TemporaryDirectory() as tmp:
        for snr, room, seed in itertools.product(args.snr, args.rooms, args.seeds):
            snr_db = None if snr == "clean" else float(snr)
            rt60 = None if room == "dry" else float(room)
            case = make_hard_case(Path(tmp) / f"{snr}-{room}-{seed}", snr_db=snr_db, room_rt60=rt60, seed=seed)
            noise = "no noise" if snr_db is None else f"babble {snr_db:g} dB"
            where = "dry" if rt60 is None else f"room RT60 {rt60:g} s"
            print(f"\nhard case, {noise}, {where}, seed {seed}: stream {case.stream.duration:.0f} s with "
                  f"{len(case.stream.truth)} occurrences, confusable stream {case.negative.duration:.0f} s")
            for name, encoder in encoders.items():
                report(name, encoder, case, args.reps, int16_check=name != "mfcc" and not args.no_int16_check,
                       rates=args.fa_per_hour)
        hop_table(args.model, case.stream.audio, args.reps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
