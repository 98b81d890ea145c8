"""What the full protocol costs on this machine, stage by stage, without running all of it; and the
ranking stage's matrix products one per normalisation (``old``) against shared (``new``).

    python -m eval.bench.eval_timing --corpus corpora/synth1000 --sentences 200 --repeats 4
                                     [--dim 1024 --fps 50 --layers 25]
                                     [--encoder PATH.onnx --clips 12 --workers 2]

1. Draws the study's default protocol on ``--corpus`` (1000 sentences: 30 x 10 queries, 700
   negatives) and takes its real frame counts (sentence and query segment durations at ``--fps``);
   ``--sentences N`` keeps the first N searched sentences (a slice: the ranking's cost is linear
   in the searched frames) and every query.
2. Ranks random anisotropic frames of width ``--dim`` with those counts through
   :func:`eval.rank.rank_queries` (word-level and contextual queries together, the three
   normalisations), ``--repeats`` times per variant, interleaved (old, new, new, old, ...):
   ``old`` = one matrix product per normalisation (``RankOptions(share_products=False)``),
   ``new`` = ``none`` read from ``center``'s products. Medians of ``distances`` and ``dtw`` per
   layer, the ratio, the largest score difference between the two, and the estimate for the whole
   protocol (per layer x frames of the protocol / frames of the slice x ``--layers``).
3. The accuracy of ``none``'s local distances in both variants against float64, and a float16
   matrix product against float32 (numpy; AVX2 has no float16 arithmetic).
4. With ``--encoder``, encodes ``--clips`` of the protocol's sentences through the encode stage
   (a temporary cache, ``--workers`` processes): the real-time factor, and encode's estimate.

Prints the machine's load average before and after, since other work changes every number.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

VARIANTS = {"old": False, "new": True}
"""Variant name -> ``RankOptions.share_products``."""


def frame_counts(corpus_dir: Path, fps: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Sentence frame counts, query frame counts, and the protocol's audio seconds (sentences and
    query segments) for the default protocol on ``corpus_dir``."""
    from eval.corpus import read_corpus
    from eval.protocol import make_protocol

    protocol = make_protocol(read_corpus(corpus_dir))
    seconds = np.array([sf.info(s.path).duration for s in protocol.sentences])
    segments = np.array([q.end - q.start for q in protocol.queries])
    return (np.maximum(1, (seconds * fps).astype(np.int64)), np.maximum(1, (segments * fps).astype(np.int64)),
            float(seconds.sum() + segments.sum()))


def time_ranking(sentence_frames: np.ndarray, query_frames: np.ndarray, dim: int,
                 repeats: int) -> tuple[dict[str, dict[str, float]], float]:
    """Median seconds per layer of ``distances`` and ``dtw`` per variant on random frames, and the
    largest score difference between the variants."""
    from eval.rank import RankOptions, StageClock, corpus_stats, rank_queries

    rng = np.random.default_rng(0)
    s_off = np.concatenate([[0], np.cumsum(sentence_frames)]).astype(np.int64)
    q_off = np.concatenate([[0], np.cumsum(query_frames)]).astype(np.int64)
    common = rng.standard_normal(dim).astype(np.float32) * 2  # anisotropic, like late wav2vec2 layers
    sentences = (rng.standard_normal((int(s_off[-1]), dim), np.float32) + common)
    queries = (rng.standard_normal((int(q_off[-1]), dim), np.float32) + common)
    stats = corpus_stats(sentences)
    small = np.array([0, *s_off[1:3]])
    rank_queries([(queries[:q_off[2]], q_off[:3])], sentences[:small[-1]], small, stats)  # compile
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    scores = {}
    for i in range(repeats):
        order = list(VARIANTS) if i % 2 == 0 else list(VARIANTS)[::-1]
        for name in order:
            clock = StageClock()
            got = rank_queries([(queries, q_off), (queries, q_off)], sentences, s_off, stats,
                               RankOptions(share_products=VARIANTS[name]), clock=clock)
            runs[name].append(clock.seconds)
            scores[name] = got[0]
    diff = max(float(np.abs(scores["new"][n] - scores["old"][n]).max()) for n in scores["new"])
    medians = {name: {k: float(np.median([r[k] for r in rs])) for k in rs[0]} for name, rs in runs.items()}
    return medians, diff


def distance_accuracy(dim: int, frames: int = 3000, queries: int = 40) -> dict[str, float]:
    """Largest error of ``none``'s local distances against float64, per variant, on random
    anisotropic frames (a rogue dimension): old = the runtime's unit rows, new = from the centred
    products."""
    from eval.rank import corpus_stats, local_distances
    from kwsstream.matcher import TemplateLayout

    rng = np.random.default_rng(2)
    common = rng.standard_normal(dim).astype(np.float32) * 2
    common[0] += 30
    sentences = rng.standard_normal((frames, dim), np.float32) + common
    parts = [rng.standard_normal((25, dim), np.float32) + common for _ in range(queries)]
    cells = np.concatenate(parts).astype(np.float64)[TemplateLayout.from_lengths([25] * queries).cell_rows()]
    unit = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in (sentences.astype(np.float64), cells)]
    truth = 1 - unit[0] @ unit[1].T
    stats = corpus_stats(sentences)
    return {name: float(np.abs(local_distances("none", parts, sentences, stats, share=share) - truth).max())
            for name, share in VARIANTS.items()}


def time_float16(n: int = 256, cells: int = 2048, dim: int = 1024) -> float:
    """Seconds of a float16 matrix product over those of the same float32 one (numpy)."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((n, dim), np.float32), rng.standard_normal((cells, dim), np.float32)
    seconds = {}
    for dtype in (np.float32, np.float16):
        x, y = a.astype(dtype), b.astype(dtype)
        t = time.perf_counter()
        np.matmul(x, y.T)
        seconds[dtype] = time.perf_counter() - t
    return seconds[np.float16] / seconds[np.float32]


def time_encoding(corpus_dir: Path, encoder: str, clips: int, workers: int) -> float:
    """Real-time factor of the encode stage on ``clips`` sentences (fresh temporary cache)."""
    from eval.corpus import read_corpus
    from eval.representations import EncodeOptions, describe_encoder, encode_items, sentence_item

    info = describe_encoder(encoder)
    chosen = read_corpus(corpus_dir).clips[:clips]
    items = [sentence_item(c.utt_id, str(c.path)) for c in chosen]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        stats = encode_items(items, info, Path(tmp), EncodeOptions(workers=workers), progress=False)
        elapsed = time.perf_counter() - start
    return elapsed / stats["audio_seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.eval_timing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--sentences", type=int, help="rank only the first N searched sentences (default all)")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--fps", type=float, default=50.0)
    parser.add_argument("--layers", type=int, default=25, help="layers of the full sweep (XLSR-53: 25)")
    parser.add_argument("--repeats", type=int, default=1, help="layers actually ranked per variant")
    parser.add_argument("--encoder", help="an exported model to time the encode stage with")
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    sentences, queries, audio = frame_counts(args.corpus, args.fps)
    chosen = sentences[:args.sentences] if args.sentences else sentences
    scale = sentences.sum() / chosen.sum()
    print(f"protocol: {len(sentences)} sentences ({sentences.sum()} frames), {len(queries)} queries "
          f"({queries.sum()} frames per representation), {audio:.0f} s of audio to encode; ranked: "
          f"{len(chosen)} sentences ({chosen.sum()} frames, x{scale:.2f} for the protocol), {args.repeats} "
          f"layer(s) per variant, width {args.dim}")
    per_layer, diff = time_ranking(chosen, queries, args.dim, args.repeats)
    for name, seconds in per_layer.items():
        print(f"{name}: per layer (word + contextual, 3 normalisations): "
              + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()))
    old, new = per_layer["old"], per_layer["new"]
    print("new / old: " + ", ".join(f"{k} {new[k] / old[k]:.2f}" for k in old)
          + f", both {sum(new.values()) / sum(old.values()):.2f}; largest score difference {diff:.2e}")
    errors = distance_accuracy(args.dim)
    print("none's local distances, largest error against float64: "
          + ", ".join(f"{name} {e:.1e}" for name, e in errors.items()))
    print(f"float16 matrix product / float32 (numpy): {time_float16():.0f}x the time")
    estimates = {name: {k: v * scale * args.layers for k, v in s.items()} for name, s in per_layer.items()}
    encode = {}
    if args.encoder:
        rtf = time_encoding(args.corpus, args.encoder, args.clips, args.workers)
        print(f"encode: real-time factor {rtf:.3f} ({args.clips} clips)")
        encode = {"encode": rtf * audio}
    for name, total in estimates.items():
        total = {**encode, **total}
        print(f"estimate ({name}) for {args.layers} layers, {len(sentences)} sentences: "
              + ", ".join(f"{k} {v / 60:.1f} min" for k, v in total.items())
              + f"; total {sum(total.values()) / 60:.1f} min")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
