"""Self-calibration settings measured on the streaming benchmark's recorded traces.

    python -m eval.bench.adapt_tuning --out results/stream --encoder models/speech-embedding.onnx \\
        --fit en fr --check fr-armelle --conditions dry room

Replays every (corpus, condition) stream of a finished ``python -m eval stream`` run (its cached
traces, keysets and audio under ``--out``) with the runtime's adapter (:mod:`eval.streamadapt`)
for each setting of a small grid, at the enrollment thresholds (what a user gets), and prints
FRR (micro / macro) and false alarms per hour per keyword, of all audio and of speech only (the
frames the gate passed), for the fitting corpora and the checking corpora apart: a setting is
chosen on ``--fit`` and judged on ``--check``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from eval import streamscore as scoring
from eval.stream import cached_trace, conditioned_audio, encoder_label
from eval.streamadapt import replay_adaptive, two_pass_thresholds
from eval.streamcorpus import load_corpus, read_truth
from eval.streamkeys import enrolled_keyset, thresholds_for
from kwsstream.adapt import AdaptOptions, keyword_target


def runs(out: Path, corpora: list[str], negatives: list[str], conditions: list[str], spec: str, root: Path,
         target: float | None = None):
    """(corpus, condition, spotter, targets, [(trace, truth)]) for each corpus and condition."""
    from kwsstream.encoders import load_encoder
    from kwsstream.spotter import Spotter

    encoder = load_encoder(spec)
    label = encoder_label(spec)
    negs = [load_corpus(root / n) for n in negatives]
    for name in corpora:
        corpus = load_corpus(root / name)
        names = list(corpus.keywords)
        keyset, path = enrolled_keyset(out, corpus, names, encoder, label)
        spotter = Spotter(keyset, encoder)
        if target is not None:  # every keyword moved to this rate along its curve (what --fa-per-hour does)
            spotter = Spotter(keyset, encoder, thresholds=dict(zip(names, thresholds_for(keyset, names, target))))
            targets = np.full(len(names), target)
        else:
            targets = np.array([keyword_target(kw) for kw in keyset.keywords], np.float64)
        for condition in conditions:
            items = []
            for owner in [corpus, *negs]:
                for stream in owner.streams:
                    audio = conditioned_audio(out, owner, stream, condition, 0, None)
                    trace, _, _ = cached_trace(out, path, corpus.name, owner.name, stream, condition, label, audio,
                                               spotter)
                    items.append((trace, read_truth(stream.truth, names, None)))
            yield corpus.name, condition, spotter, targets, items


def measure(spotter, targets, items, adapt: AdaptOptions | None, mode: str) -> dict:
    grid, options = spotter.encoder.grid, spotter.options.detector
    base = spotter.thresholds.astype(np.float64)
    n_k = len(base)
    hits, occ, fas = np.zeros(n_k), np.zeros(n_k), np.zeros(n_k)
    hours = speech = 0.0
    for trace, truth in items:
        if mode == "fixed":
            events = scoring.replay(trace, base.astype(np.float32), grid, options)
        elif mode == "two-pass":
            th = two_pass_thresholds(trace, base, targets, grid, spotter.block, options, adapt)
            events = scoring.replay(trace, th.astype(np.float32), grid, options)
        else:
            events, _ = replay_adaptive(trace, base, targets, grid, spotter.block, options, adapt)
        s = scoring.score_events(events, truth, n_k, options.lookahead)
        hits += s.hits
        occ += s.occurrences
        fas += s.false_alarms
        hours += trace.seconds / 3600
        speech += np.isfinite(trace.score).any(axis=1).sum() / grid.frame_rate / 3600
    has = occ > 0
    return {"frr": 1 - hits.sum() / occ.sum(), "macro": float(np.mean(1 - hits[has] / occ[has])),
            "fa_h": fas.sum() / (hours * n_k), "fa_h_speech": fas.sum() / (speech * n_k), "fas": int(fas.sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--corpora-root", type=Path, default=Path("corpora/prompts"))
    parser.add_argument("--encoder", default="models/speech-embedding.onnx")
    parser.add_argument("--fit", nargs="*", default=["en", "fr"])
    parser.add_argument("--check", nargs="*", default=["fr-armelle"])
    parser.add_argument("--negatives", nargs="*", default=["music-test"])
    parser.add_argument("--conditions", nargs="+", default=["dry", "room"])
    parser.add_argument("--target", type=float, help="false alarms per hour asked of every keyword (default: each "
                                                      "keyword's enrollment target)")
    parser.add_argument("--prior-hours", type=float, nargs="+", default=[0.02, 0.1])
    parser.add_argument("--max-up", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--max-down", type=float, nargs="+", default=[0.05])
    args = parser.parse_args(argv)
    from kwsstream.matcher import limit_blas_threads

    limit_blas_threads()
    settings = [("fixed", None), ("two-pass", AdaptOptions(prior_hours=0.0, max_up=1.0, max_down=1.0))]
    for p, up, down in itertools.product(args.prior_hours, args.max_up, args.max_down):
        settings.append((f"adaptive prior={p:g} up={up:g} down={down:g}",
                         AdaptOptions(prior_hours=p, max_up=up, max_down=down)))
    print("| set | corpus | condition | setting | FRR micro / macro | FA/h/kw all / speech (n) |")
    print("|---|---|---|---|---|---|")
    for corpus, condition, spotter, targets, items in runs(args.out, args.fit + args.check, args.negatives,
                                                           args.conditions, args.encoder, args.corpora_root,
                                                           args.target):
        role = "fit" if corpus in args.fit else "check"
        for label, adapt in settings:
            mode = label.split()[0]
            m = measure(spotter, targets, items, adapt, mode)
            print(f"| {role} | {corpus} | {condition} | {label} | {100 * m['frr']:.1f} % / {100 * m['macro']:.1f} % | "
                  f"{m['fa_h']:.2f} / {m['fa_h_speech']:.2f} ({m['fas']}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
