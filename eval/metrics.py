"""Retrieval metrics: macro-averaged Precision@K and Recall@K.

For a query, the searched sentences are ranked by score, best (lowest S-DTW cost) first; ties
keep corpus order (a stable sort), so results do not depend on the sort's whims. With ``hits``
the relevant sentences among the first ``K``::

    P@K = hits / K            R@K = hits / (relevant sentences of the query)

Both are averaged over each keyword's queries, then over keywords (macro-average: every keyword
counts the same whatever its number of queries). ``K`` larger than the number of sentences a query
searches is not reported (P@K would count places that do not exist).

``excluded`` takes sentences out of a query's ranking altogether (the benchmark excludes the
query's own sentence by default: kept, and counted relevant, it is found first by construction
with contextual queries, so P@1 would be 100 % whatever the representation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kwsstream.errors import UsageError

KS = (1, 2, 3, 5, 10, 20, 50, 100)
"""The study's neighbourhood sizes."""


@dataclass(frozen=True)
class Retrieval:
    """Macro-averaged precision and recall at each ``k`` (arrays aligned with ``ks``)."""

    ks: tuple[int, ...]
    precision: np.ndarray
    recall: np.ndarray

    def at(self, k: int) -> tuple[float, float]:
        """``(P@k, R@k)``."""
        i = self.ks.index(k)
        return float(self.precision[i]), float(self.recall[i])


def rankings(scores: np.ndarray) -> np.ndarray:
    """Sentence indices per query, best (lowest score) first; ties in corpus order."""
    return np.argsort(scores, axis=1, kind="stable")


def precision_recall(scores: np.ndarray, relevant: np.ndarray, keyword_of: np.ndarray,
                     ks: tuple[int, ...] = KS, excluded: np.ndarray | None = None) -> Retrieval:
    """P@K and R@K, macro-averaged over keywords.

    Args:
        scores: ``(queries, sentences)``, lower is better (NaN ranks last).
        relevant: ``(queries, sentences)`` bool.
        keyword_of: ``(queries,)`` keyword index of each query.
        ks: neighbourhood sizes; those above the number of sentences a query searches are dropped.
        excluded: ``(queries, sentences)`` bool, sentences left out of that query's ranking (they
            are neither ranked nor relevant); ``None``: none.

    Raises:
        UsageError: shapes that do not agree, or a query without any relevant sentence.
    """
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    keyword_of = np.asarray(keyword_of)
    if scores.shape != relevant.shape or scores.ndim != 2 or keyword_of.shape != (scores.shape[0],):
        raise UsageError(f"scores {scores.shape}, relevance {relevant.shape} and keywords {keyword_of.shape} "
                         "do not agree")
    searched = scores.shape[1]
    if excluded is not None:
        excluded = np.asarray(excluded, dtype=bool)
        if excluded.shape != scores.shape:
            raise UsageError(f"excluded {excluded.shape} and scores {scores.shape} do not agree")
        relevant = relevant & ~excluded
        searched = int(scores.shape[1] - excluded.sum(axis=1).max(initial=0))
    totals = relevant.sum(axis=1)
    if np.any(totals == 0):
        raise UsageError(f"queries {np.flatnonzero(totals == 0).tolist()} have no relevant sentence")
    kept = tuple(k for k in ks if 1 <= k <= searched)
    ranked = np.where(np.isnan(scores), np.inf, scores)
    if excluded is None:
        order = rankings(ranked)
    else:  # excluded sentences after every searched one (lexsort is stable: ties in corpus order)
        order = np.lexsort((ranked, excluded), axis=1)
    hits = np.cumsum(np.take_along_axis(relevant, order, axis=1), axis=1)  # hits in the first j+1
    keywords = np.unique(keyword_of)
    precision = np.empty(len(kept))
    recall = np.empty(len(kept))
    for i, k in enumerate(kept):
        p_query = hits[:, k - 1] / k
        r_query = hits[:, k - 1] / totals
        precision[i] = np.mean([p_query[keyword_of == w].mean() for w in keywords])
        recall[i] = np.mean([r_query[keyword_of == w].mean() for w in keywords])
    return Retrieval(kept, precision, recall)
