"""Anisotropy of a representation: how alike random frames look to the cosine.

Measure (Ethayarajh 2019; Timkey & van Schijndel 2021, "All bark and no bite: rogue dimensions"):

* **mean cosine** of ``pairs`` random frame pairs drawn from *different* recordings — near 0 for
  an isotropic space, near 1 when every frame points the same way;
* each dimension's **share** of that expected cosine: with ``u``, ``v`` the unit frames of a
  pair, ``cos = sum_d u_d v_d``, so dimension ``d`` contributes ``c_d = E[u_d v_d]``; its share
  is ``c_d / sum_d |c_d|``. In an anisotropic space the contributions are positive and this is
  Timkey & van Schijndel's ``c_d / E[cos]`` (shares sum to 1); near isotropy ``E[cos]`` is about 0
  and their ratio explodes, while this one stays in [-1, 1]. A few dimensions with large shares
  are the "rogue dimensions" that dominate the cosine; the top :data:`TOP_DIMENSIONS` are
  reported.

Measured on the searched sentences' frames, for each normalisation of :mod:`eval.rank`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eval.rank import CorpusStats
from kwsstream.errors import UsageError
from kwsstream.matcher import unit_rows

TOP_DIMENSIONS = 3
DEFAULT_PAIRS = 20_000
PAIR_CHUNK = 4096
"""Pairs multiplied at a time (bounded memory for wide frames)."""


@dataclass(frozen=True)
class Anisotropy:
    """Mean cosine of random cross-recording frame pairs and the dimensions that dominate it.

    Attributes:
        mean_cosine: the expected cosine.
        top: ``(dimension, share)`` of the :data:`TOP_DIMENSIONS` largest shares, largest first.
        pairs: pairs measured.
    """

    mean_cosine: float
    top: tuple[tuple[int, float], ...]
    pairs: int


def normalized(frames: np.ndarray, stats: CorpusStats | None, normalization: str) -> np.ndarray:
    """``frames`` under one of :data:`eval.rank.NORMALIZATIONS`."""
    if normalization == "none":
        return frames
    if normalization == "center":
        return frames - stats.mean
    if normalization == "zscore":
        return (frames - stats.mean) / stats.std
    raise UsageError(f"unknown normalisation {normalization!r}")


def sample_pairs(offsets: np.ndarray, pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``pairs`` random frame index pairs from different recordings (``offsets``: each
    recording's first frame, plus the total).

    Raises:
        UsageError: fewer than two recordings.
    """
    if len(offsets) < 3:
        raise UsageError(f"anisotropy needs frames of at least two recordings (got {len(offsets) - 1})")
    total = int(offsets[-1])
    first = rng.integers(0, total, pairs)
    second = rng.integers(0, total, pairs)
    recording = np.searchsorted(offsets, np.arange(total), side="right") - 1
    same = recording[first] == recording[second]
    while same.any():  # redraw the partners that fell in the same recording
        second[same] = rng.integers(0, total, int(same.sum()))
        same = recording[first] == recording[second]
    return first, second


def anisotropy(frames: np.ndarray, first: np.ndarray, second: np.ndarray, stats: CorpusStats | None = None,
               normalization: str = "none") -> Anisotropy:
    """Mean cosine and rogue dimensions of ``frames`` (under ``normalization`` with ``stats``)
    over the given pairs of frame indices."""
    if normalization != "none" and stats is None:
        raise UsageError(f"normalisation {normalization!r} needs corpus statistics")
    dims = np.zeros(frames.shape[1], np.float64)
    for lo in range(0, len(first), PAIR_CHUNK):
        a = unit_rows(normalized(frames[first[lo:lo + PAIR_CHUNK]], stats, normalization))
        b = unit_rows(normalized(frames[second[lo:lo + PAIR_CHUNK]], stats, normalization))
        dims += (a.astype(np.float64) * b).sum(axis=0)
    dims /= max(len(first), 1)
    mean = float(dims.sum())
    total = float(np.abs(dims).sum())
    shares = dims / total if total > 0 else np.zeros_like(dims)
    top = np.argsort(-shares, kind="stable")[:TOP_DIMENSIONS]
    return Anisotropy(mean, tuple((int(d), float(shares[d])) for d in top), len(first))
