"""``python -m eval run --corpus DIR --encoder mfcc|PATH.onnx --out RESULTS_DIR [--targets auto] [--quick]``.

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

``--workers N`` (N >= 2) runs the encode and per-layer stages on N local worker processes (no
network port), ``--scheduler ADDRESS`` on an existing Dask cluster (:mod:`eval.distributed`: the
same code on the workers, the same files in the shared cache, the same ``results.csv``); default:
in this process. A rerun finds the encodings and scores in the cache (``RESULTS_DIR/cache`` or ``--cache``) and
only redoes what is missing; the stage wall times go to ``timings.json`` and stderr. ``--quick``
draws a small protocol (:data:`QUICK_PROTOCOL`) for CI. Sizes: ``--targets N|auto``,
``--queries-per-target N``, ``--negatives N|auto`` (``auto``: as many as the corpus allows, at
most the default; ``--targets auto`` implies ``--negatives auto`` unless a number is given); a
corpus too small for the sizes asked is an error naming the option and the largest value that
works. Relevance is by transcript; the query's own sentence is left out of its ranking unless
``--include-own`` (the study's convention); the summary shows both. ``--mfcc-cmn`` chooses the
eval MFCC's normalisation (:mod:`eval.representations`; default per utterance).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from eval.distributed import ClusterOptions, open_engine
from eval.protocol import ProtocolOptions
from eval.rank import NORMALIZATIONS, RankOptions
from eval.representations import MFCC_CMN, EncodeOptions
from kwsstream.errors import UsageError

log = logging.getLogger(__name__)

QUICK_PROTOCOL = ProtocolOptions(targets=3, queries_per_target=5, negatives=20, fit_targets=True, fit_negatives=True)
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
        include_own: rank the query's own sentence and count it relevant (the study's convention)
            in ``results.csv``, the plots and the summary's tables (the summary shows both).
        mfcc_cmn: the eval MFCC's normalisation (:data:`eval.representations.MFCC_CMN`).
        cluster: run the encode and per-layer stages on local worker processes or a Dask cluster
            (:mod:`eval.distributed`); default: in this process.
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
    include_own: bool = False
    mfcc_cmn: str = MFCC_CMN[0]
    cluster: ClusterOptions = field(default_factory=ClusterOptions)


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
    with open_engine(options.cluster) as engine:
        return _run(options, engine)


def _run(options: RunOptions, engine) -> RunResult:
    from eval import report, reportplots
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
    print(f"protocol: {protocol.sizes()}{_fit_note(options.protocol, protocol)}", file=sys.stderr)
    timings["protocol"] = time.perf_counter() - t

    t = time.perf_counter()
    encoders = [describe_encoder(options.encoder, options.mfcc_cmn)]
    if not encoders[0].baseline and options.mfcc_baseline:
        encoders.append(describe_encoder(BASELINE_SPEC, options.mfcc_cmn))
    unknown = sorted(set(options.layers or ()) - set(encoders[0].layers))
    if unknown:
        raise UsageError(f"--layers {unknown} are not in {options.encoder} (it has {list(encoders[0].layers)})")
    sentences, segments = protocol_items(protocol)
    if engine is not None:
        model = [options.encoder] if Path(options.encoder).is_file() else []
        engine.check_shared(cache, [protocol.sentences[0].path, *model])
    for info in encoders:
        stats = (encode_items(sentences + segments, info, cache, options.encode, options.progress) if engine is None
                 else engine.encode(sentences + segments, info, cache, options.progress))
        log.info("%s: %d recordings, %d encoded now (%.0f s of audio)", info.name, stats["items"],
                 stats["encoded"], stats["audio_seconds"])
    timings["encode"] = time.perf_counter() - t

    rows, aniso = [], []
    for info in encoders:
        layers = info.layers if options.layers is None or info is not encoders[0] else options.layers
        if engine is None:
            scored = score_layers(protocol, info, layers, cache, options, timings, primary=info is encoders[0])
        else:
            t = time.perf_counter()
            scored = engine.score(protocol, info, layers, cache, options, timings, primary=info is encoders[0])
            wall = "layers (wall, on workers)"
            timings[wall] = timings.get(wall, 0.0) + time.perf_counter() - t
        rows += scored.rows
        aniso += scored.anisotropy

    t = time.perf_counter()
    chosen = [r for r in rows if r.include_own == options.include_own]
    own = ("included in its ranking and relevant (the study's convention, --include-own)" if options.include_own
           else "left out of its ranking (default)")
    sizes = protocol.sizes()
    result.files["results"] = report.write_results(out, chosen)
    result.files["anisotropy"] = report.write_anisotropy(out, aniso)
    result.files["retrieval_plot"] = reportplots.plot_retrieval(
        out, chosen, f"Keyword retrieval on {corpus.root.name}: {sizes}; the query's own sentence "
                     f"{'included' if options.include_own else 'excluded'}")
    result.files["anisotropy_plot"] = reportplots.plot_anisotropy(
        out, aniso, f"Anisotropy on {corpus.root.name} ({len(protocol.sentences)} sentences): mean cosine of "
                    "random frame pairs from different recordings\n(0 = directions spread evenly, "
                    "1 = every frame points the same way)")
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    facts = {"corpus": f"{corpus.root} ({corpus.tsv.name}, alignments: {corpus.alignment_source})",
             "encoder": f"{options.encoder} ({encoders[0].label}, layers {list(encoders[0].layers)})"
                        + (f"; baseline {encoders[1].label}" if len(encoders) > 1 else ""),
             "protocol": f"{sizes}, seed {protocol.options.seed} (protocol.json, key {protocol.key})"
                         + _fit_note(options.protocol, protocol),
             "query's own sentence": own,
             "normalisations": ", ".join(options.rank.normalizations)}
    n_queries = len(protocol.queries)
    context = {"encoder": encoders[0].label, "facts": facts, "targets": protocol.targets, "timings": timings,
               "include_own": options.include_own,
               "protocol": {"targets": len(protocol.targets), "queries_per_target": protocol.options.queries_per_target,
                            "queries": n_queries, "negatives": len(protocol.sentences) - n_queries,
                            "sentences": len(protocol.sentences), "note": _fit_note(options.protocol, protocol).strip("; ")}}
    if any(info.baseline for info in encoders):
        context["mfcc_cmn"] = (
            "per utterance (the runtime's MFCC-13 without its causal 1 s mean normalisation, each "
            "recording's mean removed: the study's offline setting; `--mfcc-cmn causal` for the runtime's)"
            if options.mfcc_cmn == "utterance" else
            "causal over about 1 s (the runtime's live setting; `--mfcc-cmn utterance` for the study's)")
    summary = report.summary_markdown(rows, aniso, context)
    result.files["summary"] = out / "summary.md"
    result.files["summary"].write_text(summary + "\n", encoding="utf-8")
    result.files["timings"] = out / TIMINGS_FILE
    result.files["timings"].write_text(json.dumps({k: round(v, 3) for k, v in timings.items()}, indent=1) + "\n")
    result.timings = timings
    return result


def _fit_note(asked: ProtocolOptions, protocol) -> str:
    """What ``auto`` sizes came to, e.g. ``; --targets auto: 6 of at most 30 targets``."""
    parts = []
    if asked.fit_targets:
        parts.append(f"{len(protocol.targets)} of at most {asked.targets} targets")
    if asked.fit_negatives:
        parts.append(f"{len(protocol.sentences) - len(protocol.queries)} of at most {asked.negatives} negatives")
    return f"; auto sizes, as many as the corpus allows: {', '.join(parts)}" if parts else ""


def _size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'auto', got {text!r}")
    return value


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


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
    parser.add_argument("--targets", type=_size,
                        help="target words, or auto: as many as the corpus allows, at most 30 (default 30; "
                             "auto also sets --negatives auto unless it is given)")
    parser.add_argument("--queries-per-target", type=int, help="queries per target word (default 10)")
    parser.add_argument("--negatives", type=_size,
                        help="negative sentences, or auto: as many as the corpus allows, at most 700 (default 700)")
    parser.add_argument("--include-own", action="store_true",
                        help="rank the query's own sentence and count it relevant (the study's convention; "
                             "contextual P@1 is then 100%% by construction); default: left out")
    parser.add_argument("--mfcc-cmn", choices=MFCC_CMN, default=MFCC_CMN[0],
                        help="the eval MFCC's mean normalisation: utterance (default, offline, as the study) or "
                             "causal (the runtime's live 1 s running mean)")
    parser.add_argument("--seed", type=int, default=0, help="protocol seed (default 0)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive, metavar="N",
                       help="run the encode and per-layer stages on N local worker processes (no network port; "
                            "1: all in this process; default: encoding in one process per core, the rest here)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run them on an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (the cache, corpus and "
                            "model must be at the same paths on every worker: a shared file system)")
    parser.add_argument("--threads", type=int, help="threads per encoding process or worker task (onnxruntime, BLAS)")
    parser.add_argument("--pairs", type=int, help=f"frame pairs per anisotropy measure (default {DEFAULT_PAIRS})")
    parser.add_argument("--no-mfcc", action="store_true", help="with an ONNX model, skip the MFCC baseline")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def options_from_args(args: argparse.Namespace) -> RunOptions:
    """:class:`RunOptions` from parsed arguments."""
    protocol = QUICK_PROTOCOL if args.quick else ProtocolOptions()
    overrides = {name: value for name, value in (("targets", args.targets), ("negatives", args.negatives),
                                                 ("queries_per_target", args.queries_per_target))
                 if value is not None and value != "auto"}
    if args.targets == "auto":
        overrides["fit_targets"] = True
        if args.negatives is None:
            overrides["fit_negatives"] = True
    if args.negatives == "auto":
        overrides["fit_negatives"] = True
    protocol = replace(protocol, seed=args.seed, **overrides)
    return RunOptions(
        corpus=args.corpus, encoder=args.encoder, out=args.out, cache=args.cache, split=args.split,
        alignments=args.alignments, protocol=protocol,
        encode=EncodeOptions(workers=1 if args.workers == 1 else 0, threads=args.threads),
        rank=RankOptions(normalizations=args.normalizations), layers=args.layers,
        mfcc_baseline=not args.no_mfcc, pairs=args.pairs or (QUICK_PAIRS if args.quick else DEFAULT_PAIRS),
        progress=not args.no_progress, include_own=args.include_own, mfcc_cmn=args.mfcc_cmn,
        cluster=ClusterOptions(workers=args.workers or 0, scheduler=args.scheduler, threads=args.threads))


def main(args: argparse.Namespace) -> int:
    """Run and report: the results folder's files and stage times on stderr, the path of
    ``results.csv`` on stdout."""
    result = run(options_from_args(args))
    for name, path in result.files.items():
        print(f"{name:>16}: {path}", file=sys.stderr)
    print("stage wall times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items()), file=sys.stderr)
    print(result.files["results"])
    return 0
