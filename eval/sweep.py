"""The layer sweep: for each layer, from the encoding cache to scores, anisotropy and metrics.

One layer is in memory at a time: the searched sentences' frames (float32), the word-level query
segments' frames, and the contextual queries cut from the sentences' frames
(:func:`eval.representations.segment_frames`). Scores (``(queries, sentences)`` float32 per
representation and normalisation) and the layer's anisotropy are cached under
``CACHE/scores/<protocol key>/<encoder key>/<representation>_L<layer>_<normalisation>.npy``
(and ``anisotropy_L<layer>.json``), so a rerun, or a new metric, reads them back
instead of recomputing; a layer is recomputed only when one of its files is missing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval.anisotropy import anisotropy, sample_pairs
from eval.metrics import precision_recall
from eval.protocol import Protocol
from eval.rank import StageClock, corpus_stats, rank_queries
from eval.report import AnisotropyRow, ResultRow
from eval.representations import (
    CONTEXTUAL,
    MFCC,
    MFCC_CONTEXTUAL,
    WORD,
    EncoderInfo,
    FeatureCache,
    protocol_items,
    segment_frames,
)
from kwsstream.errors import UsageError

SCORES_DIR = "scores"


@dataclass
class Scored:
    """Rows for ``results.csv`` and ``anisotropy.csv`` from one encoder's layers."""

    rows: list[ResultRow] = field(default_factory=list)
    anisotropy: list[AnisotropyRow] = field(default_factory=list)


def representations(info: EncoderInfo, primary: bool) -> tuple[str, ...]:
    """Names of the representations scored for an encoder (see :mod:`eval.representations`):
    the encoder under test gives ``word`` and ``contextual``; the baseline (MFCC-13) as the
    encoder under test gives ``mfcc`` and ``mfcc-contextual``; as another run's baseline ``mfcc``."""
    if not info.baseline:
        return (WORD, CONTEXTUAL)
    return (MFCC, MFCC_CONTEXTUAL) if primary else (MFCC,)


def _contextual(sentences: np.ndarray, s_off: np.ndarray, protocol: Protocol, info: EncoderInfo
                ) -> tuple[np.ndarray, np.ndarray]:
    """Contextual queries: the segment's frames of each query's own sentence encoding."""
    parts = []
    for q in protocol.queries:
        a, b = s_off[q.sentence], s_off[q.sentence + 1]
        first, stop = segment_frames(info.grid, int(b - a), q.start, q.end)
        parts.append(sentences[a + first:a + stop])
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    return np.concatenate(parts), offsets


def score_layers(protocol: Protocol, info: EncoderInfo, layers: Sequence[int], cache_root: Path, options,
                 timings: dict[str, float], primary: bool = True) -> Scored:
    """Score ``layers`` of one encoder from the cache under ``cache_root`` (``options``:
    :class:`eval.run.RunOptions`); adds the seconds spent to ``timings`` (``load``,
    ``distances``, ``dtw``, ``anisotropy``, ``metrics``).

    Raises:
        UsageError: a requested layer the encoder does not have.
        CacheError: a missing or unreadable encoding.
    """
    from tqdm import tqdm

    missing = [layer for layer in layers if layer not in info.layers]
    if missing:
        raise UsageError(f"layers {missing} are not in {info.spec} (it has {list(info.layers)})")
    reps = representations(info, primary)
    norms = tuple(options.rank.normalizations)
    folder = cache_root / SCORES_DIR / protocol.key / info.key
    folder.mkdir(parents=True, exist_ok=True)
    cache = FeatureCache(cache_root, info)
    sentence_items, segment_items = protocol_items(protocol)
    sentence_keys = [item.key for item in sentence_items]
    segment_keys = [item.key for item in segment_items]
    relevant, keyword_of, own = protocol.relevance(), protocol.keyword_of(), protocol.own_sentence()
    label = info.label or info.name
    out = Scored()
    for layer in tqdm(layers, desc=f"layers {label}", unit="layer", disable=not options.progress or None):
        files = {(rep, norm): folder / f"{rep}_L{layer:02d}_{norm}.npy" for rep in reps for norm in norms}
        aniso_file = folder / f"anisotropy_L{layer:02d}.json"
        need_scores = not all(p.is_file() for p in files.values())
        if need_scores or not aniso_file.is_file():
            _compute_layer(protocol, info, layer, cache, sentence_keys, segment_keys, reps,
                           files if need_scores else {}, aniso_file, options, timings)
        t = time.perf_counter()
        for (rep, norm), path in files.items():
            scores = np.load(path)
            for include_own in (False, True):  # both conventions: the scores are the same
                retrieval = precision_recall(scores, relevant, keyword_of, excluded=None if include_own else own)
                out.rows += [ResultRow(rep, layer, norm, k, float(p), float(r), label, include_own)
                             for k, p, r in zip(retrieval.ks, retrieval.precision, retrieval.recall)]
        for item in json.loads(aniso_file.read_text()):
            out.anisotropy.append(AnisotropyRow(label, layer, item["normalization"], item["mean_cosine"],
                                                item["pairs"], tuple(tuple(x) for x in item["top"])))
        timings["metrics"] = timings.get("metrics", 0.0) + time.perf_counter() - t
    return out


def _compute_layer(protocol: Protocol, info: EncoderInfo, layer: int, cache: FeatureCache,
                   sentence_keys: list[str], segment_keys: list[str], reps: tuple[str, ...],
                   files: dict, aniso_file: Path, options, timings: dict[str, float]) -> None:
    """Load one layer; rank every representation's queries and write ``files`` (when given);
    measure anisotropy and write ``aniso_file``."""
    t = time.perf_counter()
    label = f"{info.label or info.name} L{layer}"
    bar = (lambda what: f"{what} {label}") if options.progress else (lambda what: None)
    sentences, s_off = cache.load(layer, sentence_keys, bar("load sentences"))
    stats = corpus_stats(sentences)
    query_sets = []
    for rep in reps if files else ():
        if rep in (WORD, MFCC):
            query_sets.append(cache.load(layer, segment_keys, bar("load queries")))
        else:
            query_sets.append(_contextual(sentences, s_off, protocol, info))
    timings["load"] = timings.get("load", 0.0) + time.perf_counter() - t
    if files:
        clock = StageClock()
        ranked = rank_queries(query_sets, sentences, s_off, stats, options.rank, clock, bar("S-DTW"))
        for key, seconds in clock.seconds.items():
            timings[key] = timings.get(key, 0.0) + seconds
        for rep, scores in zip(reps, ranked):
            for norm, values in scores.items():
                path = files[(rep, norm)]
                tmp = path.with_name(path.stem + ".tmp.npy")
                np.save(tmp, values)
                tmp.replace(path)
    t = time.perf_counter()
    first, second = sample_pairs(s_off, options.pairs, np.random.default_rng(protocol.options.seed))
    measured = []
    for norm in options.rank.normalizations:
        a = anisotropy(sentences, first, second, stats, norm)
        measured.append({"normalization": norm, "mean_cosine": a.mean_cosine, "pairs": a.pairs,
                         "top": [list(x) for x in a.top]})
    tmp = aniso_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(measured))
    tmp.replace(aniso_file)
    timings["anisotropy"] = timings.get("anisotropy", 0.0) + time.perf_counter() - t
