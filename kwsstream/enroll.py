"""Enrollment: example recordings → templates → a keyword set with calibrated thresholds.

Each example recording is encoded whole (contextual encoders see all of it), then the keyword's
frames are kept: those of ``segment`` when given, else those between the first and last frame
with speech energy (leading/trailing silence trimmed, see :func:`speech_span`).

Threshold calibration (:func:`calibrate`), from the keyword set alone:

* *positives*: for each example of a keyword, the best score of the keyword's *other* examples in
  it (leave-one-out: other recordings, often other voices);
* *impostors* (reported, not used for the threshold): the best score of the keyword's examples in
  the other keywords' examples, and in its own examples played backwards.

The threshold is ``max(base, max(positives) + POSITIVE_MARGIN)``: keywords whose examples agree
less get a looser threshold, never below the encoder's ``base`` (``encoder.default_threshold``).
Measured on synthetic Spanish (8 keywords, 3 enrollment voices, 4 other voices in 15 dB noise,
``python -m eval.bench.mfcc_normalisation``): for MFCC the true occurrences scored 0.32-0.41 and everything
else in the stream 0.41 and up, while leave-one-out positives were only 0.17-0.33 — an unseen
voice in noise costs more than the enrolled voices in silence — and the impostors among the
enrollment examples (same voice, other word: 0.33-0.45) were lower than the stream's negatives,
so neither alone predicts the stream; the encoder's base carries that knowledge. With one example
there are no positives and the base is used (marked ``default``). Thresholds set by the user
(``--threshold``) are kept across recalibration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .audio import load_audio
from .encoders import Encoder, same_identity
from .encoders.base import SAMPLE_RATE, FrameGrid
from .errors import AudioError, KeysetError, UsageError
from .keyset import Keyword, KeywordSet, Template
from .matcher import cosine_distances
from .sdtw import best_match

POSITIVE_MARGIN = 0.08
"""Added to the worst leave-one-out score (see the module docstring for the measurement)."""
FALLBACK_BASE = 0.3
"""Base threshold for an encoder that names none (a mean cosine distance along the path)."""
MIN_TEMPLATE_FRAMES = 4
TRIM_DB = 35.0  # frames more than this below the loudest frame are silence
TRIM_PAD = 0.02  # seconds kept on each side of the speech span


def speech_span(audio: np.ndarray) -> tuple[float, float]:
    """Seconds of the first and last 10 ms frame within :data:`TRIM_DB` of the loudest frame,
    widened by :data:`TRIM_PAD`."""
    hop, win = SAMPLE_RATE // 100, SAMPLE_RATE // 40
    n = max(1, 1 + (len(audio) - win) // hop)
    frames = np.lib.stride_tricks.sliding_window_view(audio, win)[::hop][:n] if len(audio) >= win else audio[None, :]
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(db > db.max() - TRIM_DB)
    start = max(0.0, loud[0] * hop / SAMPLE_RATE - TRIM_PAD)
    end = min(len(audio) / SAMPLE_RATE, (loud[-1] * hop + win) / SAMPLE_RATE + TRIM_PAD)
    return start, end


def keyword_frames(grid: FrameGrid, n_frames: int, start: float, end: float) -> np.ndarray:
    """Indices of the frames among the first ``n_frames`` on ``grid`` whose centres lie in
    ``[start, end]`` seconds: the keyword's frames of an encoded example (possibly none)."""
    centres = grid.centre(np.arange(n_frames))
    return np.flatnonzero((centres >= start) & (centres <= end))


def make_template(encoder: Encoder, path: str | Path, segment: tuple[float, float] | None = None) -> Template:
    """Encode one example recording and keep the keyword's frames."""
    audio = load_audio(path)
    duration = len(audio) / SAMPLE_RATE
    if segment is not None:
        start, end = segment
        if not 0 <= start < end <= duration + 1e-6:
            raise UsageError(f"{path}: segment {start}-{end} s is not inside the recording (0-{duration:.2f} s)")
    else:
        start, end = speech_span(audio)
    frames = encoder.encode(audio)
    keep = keyword_frames(encoder.grid, len(frames), start, end)
    if len(keep) < MIN_TEMPLATE_FRAMES:
        raise AudioError(
            f"{path}: the keyword ({start:.2f}-{end:.2f} s) is only {len(keep)} frames long; "
            f"at least {MIN_TEMPLATE_FRAMES} are needed"
        )
    if np.abs(frames[keep]).max() == 0:
        raise AudioError(f"{path}: the keyword is digital silence")
    return Template(np.ascontiguousarray(frames[keep[0] : keep[-1] + 1]), str(path), (round(start, 3), round(end, 3)))


def match_score(template: np.ndarray, target: np.ndarray) -> float:
    """Best normalised S-DTW score of ``template`` anywhere in ``target``."""
    return float(best_match(cosine_distances(template, target))[0])


def calibrate(keyset: KeywordSet, name: str, base: float) -> tuple[float, dict]:
    """Threshold for keyword ``name`` and the figures it came from (see module docstring)."""
    kw = keyset.get(name)
    frames = [t.frames for t in kw.templates]
    positives = [
        min(match_score(a, b) for ia, a in enumerate(frames) if ia != ib) for ib, b in enumerate(frames)
    ] if len(frames) > 1 else []
    others = [t.frames for other in keyset.keywords if other.name != name for t in other.templates]
    others_ = [min(match_score(a, b) for a in frames) for b in others]
    reversed_ = [min(match_score(a, b[::-1]) for a in frames) for b in frames]
    info = {
        "positives": [round(p, 4) for p in positives],
        "others_min": round(min(others_), 4) if others_ else None,
        "reversed_min": round(min(reversed_), 4),
    }
    if not positives:
        return base, info
    return round(float(max(base, max(positives) + POSITIVE_MARGIN)), 4), info


def recalibrate(keyset: KeywordSet, base: float) -> KeywordSet:
    """Recompute every keyword's threshold, except those the user set."""
    for kw in keyset.keywords:
        if kw.threshold_source == "user":
            continue
        threshold, info = calibrate(keyset, kw.name, base)
        source = "calibrated" if len(kw.templates) > 1 else "default"
        keyset = keyset.with_keyword(replace(kw, threshold=threshold, threshold_source=source, calibration=info))
    return keyset


def enroll(
    keyset: KeywordSet | None,
    encoder: Encoder,
    name: str,
    paths: Sequence[str | Path],
    *,
    segment: tuple[float, float] | None = None,
    threshold: float | None = None,
) -> KeywordSet:
    """Add ``paths`` as examples of keyword ``name`` (new or existing) and recalibrate.

    ``keyset`` None starts a new set for ``encoder``; an existing set must have been enrolled with
    the same encoder. Returns the new set (the caller saves it).
    """
    name = name.strip()
    if not name:
        raise UsageError("the keyword name is empty")
    if not paths:
        raise UsageError(f"no example recordings given for {name!r}")
    if keyset is None:
        keyset = KeywordSet(encoder=encoder.identity)
    elif not same_identity(keyset.encoder, encoder.identity):
        raise KeysetError(
            f"the keyword set was enrolled with encoder {keyset.encoder.get('kind')} "
            f"({keyset.encoder.get('path', 'built in')}); cannot add examples encoded by {encoder.name}"
        )
    new = tuple(make_template(encoder, p, segment) for p in paths)
    old = keyset.get(name)
    kw = (
        replace(old, templates=old.templates + new)
        if old
        else Keyword(name=name, threshold=0.0, templates=new)
    )
    if threshold is not None:
        if not np.isfinite(threshold) or threshold <= 0:
            raise UsageError(f"threshold {threshold} must be a positive number")
        kw = replace(kw, threshold=float(threshold), threshold_source="user", calibration={})
    base = getattr(encoder, "default_threshold", None) or FALLBACK_BASE
    return recalibrate(keyset.with_keyword(kw), base)


def enroll_examples(
    encoder: Encoder, examples: Mapping[str, Sequence[str | Path]], keyset: KeywordSet | None = None
) -> KeywordSet:
    """:func:`enroll` every keyword of ``examples`` (name -> example recordings) in turn."""
    for name, paths in examples.items():
        keyset = enroll(keyset, encoder, name, paths)
    if keyset is None:
        raise UsageError("no keywords to enroll")
    return keyset
