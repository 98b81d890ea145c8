"""Google's speech_embedding vs MFCC-13 on the project's hard streaming case, side by side.

    python -m export speech-embedding                    # once: models/speech-embedding.onnx
    python -m eval.bench.speech_embedding_vs_mfcc [--snr 10 5 clean] [--rooms dry 0.5] [--seeds 11 21 31]
                                                  [--model models/speech-embedding.onnx]

The hard case is :mod:`eval.hardcase` (also what ``tests/test_speech_embedding.py`` runs), at
``--snr`` dB of babble and, with ``--rooms``, heard in a reverberant room of that RT60; this
script only prints its figures.

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
from pathlib import Path

import numpy as np

from eval.bench import machine
from eval.hardcase import (BLOCK_SECONDS, DEFAULT_SEED, DEFAULT_SNR_DB, HardCase, Scaled, detect, enroll_all,
                           make_hard_case, separation)
from kwsstream.encoders import Encoder, load_encoder
from kwsstream.encoders.base import SAMPLE_RATE
from kwsstream.enroll import set_sensitivity
from kwsstream.matcher import limit_blas_threads
from kwsstream.spotter import Spotter

DEFAULT_MODEL = Path("models") / "speech-embedding.onnx"


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

    print(f"\nspeech_embedding alone, {len(audio) / SAMPLE_RATE:.0f} s fed in {BLOCK_SECONDS} s blocks, one thread "
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
    print(f"  {'whole clip':>14} {float(np.median(times)) / (len(audio) / SAMPLE_RATE):>8.4f} {'(offline)':>14}")


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
