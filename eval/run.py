"""``python -m eval run --corpus DIR --encoder mfcc|PATH.onnx --out RESULTS_DIR [--quick]``.

The study's whole chain with the runtime's own components, stage by stage:

1. ``protocol`` — read the corpus, draw the protocol (:mod:`eval.protocol`), write
   ``protocol.json``;
2. ``encode`` — every searched sentence and every query segment through the encoder, all layers
   in one pass, cached per layer (:mod:`eval.representations`); with an ONNX model, MFCC-13 too
   (the study's baseline) unless ``--no-mfcc``;
3. per layer, from the cache, one layer in memory at a time: ``load``, ``distances`` (matrix
   products), ``dtw`` (the runtime's S-DTW kernel, :mod:`eval.rank`) for the three
   normalisations, and ``anisotropy`` (:mod:`eval.anisotropy`); scores are cached per layer;
4. ``metrics`` — P@K and R@K (:mod:`eval.metrics`);
5. ``report`` — ``results.csv``, ``anisotropy.csv``, ``summary.md``, plots (:mod:`eval.report`).

A rerun finds the encodings and scores in the cache (``RESULTS_DIR/cache`` or ``--cache``) and
only redoes what is missing; the stage wall times go to ``timings.json`` and stderr. ``--quick``
draws a small protocol (:data:`QUICK_PROTOCOL`) for CI.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from eval.protocol import ProtocolOptions
from eval.rank import NORMALIZATIONS, RankOptions
from eval.representations import EncodeOptions
from kwsstream.errors import UsageError

log = logging.getLogger(__name__)

QUICK_PROTOCOL = ProtocolOptions(targets=3, queries_per_target=5, negatives=20, allow_fewer=True)
"""``--quick``: at most 3 targets × 5 queries and 20 negatives, fewer if the corpus is small."""
DEFAULT_PAIRS = 20_000
QUICK_PAIRS = 2_000
TIMINGS_FILE = "timings.json"
STAGES = ("protocol", "encode", "load", "distances", "dtw", "anisotropy", "metrics", "report")


@dataclass(frozen=True)
class RunOptions:
    """Everything a run needs (the CLI fills it).

    Attributes:
        corpus: corpus folder (Common Voice layout); ``split``/``alignments``: see
            :func:`eval.corpus.read_corpus`.
        encoder: ``mfcc`` or the path of an exported ONNX model (all-layers for a layer sweep).
        out: results folder; ``cache``: cache folder (default ``out/cache``).
        protocol, encode, rank: the stages' options.
        layers: layers to score (default: all the model has).
        mfcc_baseline: with another encoder than MFCC-13, also score MFCC-13 (the baseline).
        pairs: random frame pairs per anisotropy measurement.
        progress: show progress bars (on a terminal).
    """

    corpus: Path
    encoder: str
    out: Path
    cache: Path | None = None
    split: str = "validated"
    alignments: str = "auto"
    protocol: ProtocolOptions = field(default_factory=ProtocolOptions)
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    rank: RankOptions = field(default_factory=RankOptions)
    layers: tuple[int, ...] | None = None
    mfcc_baseline: bool = True
    pairs: int = DEFAULT_PAIRS
    progress: bool = True


@dataclass
class RunResult:
    """What a run produced: output files and stage wall times (seconds)."""

    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def run(options: RunOptions) -> RunResult:
    """Run the whole chain (see the module docstring); returns the files and timings.

    Raises:
        KwsError: a corpus, protocol, encoder or cache problem (one line naming the culprit).
    """
    from eval import report
    from eval.corpus import read_corpus
    from eval.protocol import make_protocol, write_protocol
    from eval.representations import BASELINE_SPEC, describe_encoder, encode_items, protocol_items
    from eval.sweep import score_layers

    start = time.perf_counter()
    result = RunResult()
    timings = {stage: 0.0 for stage in STAGES}
    out = Path(options.out)
    cache = Path(options.cache) if options.cache else out / "cache"
    t = time.perf_counter()
    corpus = read_corpus(options.corpus, options.split, alignments=options.alignments)
    protocol = make_protocol(corpus, options.protocol)
    result.files["protocol"] = write_protocol(protocol, out)
    timings["protocol"] = time.perf_counter() - t

    t = time.perf_counter()
    encoders = [describe_encoder(options.encoder)]
    if not encoders[0].baseline and options.mfcc_baseline:
        encoders.append(describe_encoder(BASELINE_SPEC))
    unknown = sorted(set(options.layers or ()) - set(encoders[0].layers))
    if unknown:
        raise UsageError(f"--layers {unknown} are not in {options.encoder} (it has {list(encoders[0].layers)})")
    sentences, segments = protocol_items(protocol)
    for info in encoders:
        stats = encode_items(sentences + segments, info, cache, options.encode, options.progress)
        log.info("%s: %d recordings, %d encoded now (%.0f s of audio)", info.name, stats["items"],
                 stats["encoded"], stats["audio_seconds"])
    timings["encode"] = time.perf_counter() - t

    rows, aniso = [], []
    for info in encoders:
        layers = info.layers if options.layers is None or info is not encoders[0] else options.layers
        scored = score_layers(protocol, info, layers, cache, options, timings, primary=info is encoders[0])
        rows += scored.rows
        aniso += scored.anisotropy

    t = time.perf_counter()
    result.files["results"] = report.write_results(out, rows)
    result.files["anisotropy"] = report.write_anisotropy(out, aniso)
    result.files["retrieval_plot"] = report.plot_retrieval(out, rows)
    result.files["anisotropy_plot"] = report.plot_anisotropy(out, aniso)
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    facts = {"corpus": f"{corpus.root} ({corpus.tsv.name}, alignments: {corpus.alignment_source})",
             "encoder": f"{options.encoder} ({encoders[0].name}, layers {list(encoders[0].layers)})",
             "protocol": f"{len(protocol.targets)} targets, {len(protocol.queries)} queries, "
                         f"{len(protocol.sentences)} searched sentences, seed {protocol.options.seed} "
                         f"(protocol.json, key {protocol.key})",
             "normalisations": ", ".join(options.rank.normalizations)}
    summary = report.summary_markdown(rows, aniso, {"encoder": encoders[0].name, "facts": facts,
                                                     "targets": protocol.targets, "timings": timings})
    result.files["summary"] = out / "summary.md"
    result.files["summary"].write_text(summary + "\n", encoding="utf-8")
    result.files["timings"] = out / TIMINGS_FILE
    result.files["timings"].write_text(json.dumps({k: round(v, 3) for k, v in timings.items()}, indent=1) + "\n")
    result.timings = timings
    return result


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _norm_list(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in NORMALIZATIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"normalisations must be among {','.join(NORMALIZATIONS)}, got {text!r}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``run`` subcommand's options."""
    parser.add_argument("--corpus", type=Path, required=True, help="corpus folder (Common Voice layout)")
    parser.add_argument("--encoder", required=True, help="mfcc or PATH.onnx (an all-layers export for a layer sweep)")
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    parser.add_argument("--quick", action="store_true", help="small protocol for CI (3 targets x 5 queries, 20 negatives)")
    parser.add_argument("--cache", type=Path, help="cache folder (default OUT/cache)")
    parser.add_argument("--split", default="validated", help="split TSV name or path (default validated)")
    parser.add_argument("--alignments", default="auto", choices=["auto", "ctm", "textgrid", "none"])
    parser.add_argument("--layers", type=_int_list, help="layers to score, e.g. 0,12,24 (default all)")
    parser.add_argument("--normalizations", type=_norm_list, default=NORMALIZATIONS,
                        help=f"comma list among {','.join(NORMALIZATIONS)} (default all)")
    parser.add_argument("--targets", type=int, help="target words (default 30)")
    parser.add_argument("--queries-per-target", type=int, help="queries per target word (default 10)")
    parser.add_argument("--negatives", type=int, help="negative sentences (default 700)")
    parser.add_argument("--seed", type=int, default=0, help="protocol seed (default 0)")
    parser.add_argument("--workers", type=int, default=0, help="encoding processes (default: one per core for ONNX)")
    parser.add_argument("--threads", type=int, help="onnxruntime threads per encoding process")
    parser.add_argument("--pairs", type=int, help=f"frame pairs per anisotropy measure (default {DEFAULT_PAIRS})")
    parser.add_argument("--no-mfcc", action="store_true", help="with an ONNX model, skip the MFCC baseline")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def options_from_args(args: argparse.Namespace) -> RunOptions:
    """:class:`RunOptions` from parsed arguments."""
    protocol = QUICK_PROTOCOL if args.quick else ProtocolOptions()
    overrides = {name: value for name, value in (("targets", args.targets), ("negatives", args.negatives),
                                                 ("queries_per_target", args.queries_per_target)) if value is not None}
    protocol = replace(protocol, seed=args.seed, **overrides)
    return RunOptions(
        corpus=args.corpus, encoder=args.encoder, out=args.out, cache=args.cache, split=args.split,
        alignments=args.alignments, protocol=protocol,
        encode=EncodeOptions(workers=args.workers, threads=args.threads),
        rank=RankOptions(normalizations=args.normalizations), layers=args.layers,
        mfcc_baseline=not args.no_mfcc, pairs=args.pairs or (QUICK_PAIRS if args.quick else DEFAULT_PAIRS),
        progress=not args.no_progress)


def main(args: argparse.Namespace) -> int:
    """Run and report: the results folder's files and stage times on stderr, the path of
    ``results.csv`` on stdout."""
    result = run(options_from_args(args))
    for name, path in result.files.items():
        print(f"{name:>16}: {path}", file=sys.stderr)
    print("stage wall times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items()), file=sys.stderr)
    print(result.files["results"])
    return 0
