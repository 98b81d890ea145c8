"""Which MFCC normalisation lets templates from some voices match other voices — and where the
detection threshold must sit.

    python -m eval.bench.mfcc_normalisation [--snr 15] [--seed 7]

Enrolls 8 Spanish words from 3 eSpeak voices, builds a stream of sentences by 4 *other* voices
(speed and pitch spread, pink noise at ``--snr`` dB) with each word inside two sentences, and for
each normalisation computes, per keyword, the worst score of a true occurrence ("hit": the best
score ending within the word's span + 0.3 s) and the best score anywhere else in the stream
("negative", other keywords included). A keyword is separable when hit < negative; the margin is
negative - hit. Also prints, for the default encoder, each keyword's leave-one-out enrollment
scores (what calibration sees). Uses the runtime's own encoder, kernel and enrollment.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from eval.hardcase import NEAR_S, score_curve
from eval.espeak import Voice
from eval.scenes import build_scene, enrollment_clips, write_audio
from kwsstream.encoders.mfcc import MfccEncoder, MfccOptions
from kwsstream.enroll import enroll_examples
from kwsstream.truth import TOLERANCE

WORDS = ("biblioteca", "mariposa", "chocolate", "helicóptero", "computadora", "bicicleta", "murciélago", "elefante")
ENROLL_VOICES = (Voice("es", "m1", 160, 45), Voice("es-419", "f2", 190, 60), Voice("es", "klatt", 175, 50))
OTHER_VOICES = (Voice("es-419", "m3", 150, 40), Voice("es", "f4", 200, 65), Voice("es-419", "m7", 170, 55),
                Voice("es", "f1", 140, 50))
OPTIONS = {
    "raw (no CMN, c0 full)": MfccOptions(cmn_seconds=None, c0_weight=1.0),
    "raw, c0 dropped": MfccOptions(cmn_seconds=None, c0_weight=0.0),
    "CMN 1 s, c0 full": MfccOptions(cmn_seconds=1.0, c0_weight=1.0),
    "CMN 1 s, c0 half (default)": MfccOptions(cmn_seconds=1.0, c0_weight=0.5),
    "CMN 1 s, c0 dropped": MfccOptions(cmn_seconds=1.0, c0_weight=0.0),
    "CMN 3 s, c0 half": MfccOptions(cmn_seconds=3.0, c0_weight=0.5),
    "CMN 10 s, c0 half": MfccOptions(cmn_seconds=10.0, c0_weight=0.5),
}


def separation(encoder: MfccEncoder, keyset, stream_audio: np.ndarray, truth) -> np.ndarray:
    """(keywords, 2): worst hit score and best negative score."""
    frames = encoder.encode(stream_audio)
    centre = encoder.grid.centre(np.arange(len(frames)))
    rows = []
    for kw in keyset.keywords:
        curve = score_curve([t.frames for t in kw.templates], frames)
        near = np.zeros(len(frames), bool)
        hits = []
        for occ in truth:
            if occ.keyword == kw.name:
                hits.append(curve[(centre >= occ.start - 0.1) & (centre <= occ.end + TOLERANCE)].min())
                near |= (centre >= occ.start - NEAR_S[0]) & (centre <= occ.end + NEAR_S[1])
        rows.append((max(hits), curve[~near].min()))
    return np.array(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snr", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    scene = build_scene(list(WORDS), None, list(OTHER_VOICES), occurrences_per_keyword=2, noise_snr_db=args.snr,
                        seed=args.seed)
    print(f"stream: {scene.duration:.0f} s, {len(scene.truth)} occurrences of {len(WORDS)} words by "
          f"{len(OTHER_VOICES)} other voices, pink noise {args.snr:g} dB")
    with tempfile.TemporaryDirectory() as tmp:
        examples = {w: [write_audio(Path(tmp) / f"{w}_{i}.wav", c.audio) for i, c in
                        enumerate(enrollment_clips(w, list(ENROLL_VOICES)))] for w in WORDS}
        print(f"{'normalisation':<28} {'separable':>9} {'min margin':>10} {'mean margin':>11} {'hits max':>8} {'negatives min':>13}")
        for label, options in OPTIONS.items():
            encoder = MfccEncoder(options)
            keyset = enroll_examples(encoder, examples)
            res = separation(encoder, keyset, scene.audio, scene.truth)
            margin = res[:, 1] - res[:, 0]
            print(f"{label:<28} {f'{(margin > 0).sum()}/{len(WORDS)}':>9} {margin.min():>10.3f} {margin.mean():>11.3f} "
                  f"{res[:, 0].max():>8.3f} {res[:, 1].min():>13.3f}")
            if "default" in label:
                default = (keyset, res)
        keyset, res = default
        print("\ndefault encoder, per keyword: leave-one-out enrollment scores vs the stream")
        print(f"{'keyword':<12} {'LOO max':>8} {'threshold':>9} {'hit':>6} {'negative':>8}")
        for kw, (hit, neg) in zip(keyset.keywords, res):
            print(f"{kw.name:<12} {max(kw.calibration['positives']):>8.3f} {kw.threshold:>9.3f} {hit:>6.3f} {neg:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
