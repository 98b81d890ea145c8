"""Enrollment: example recordings → templates → a keyword set with calibrated thresholds.

Each example recording is encoded whole (contextual encoders see all of it), then the keyword's
frames are kept: those of ``segment`` when given, else those between the first and last frame
with speech energy (leading/trailing silence trimmed, see :func:`speech_span`).

Thresholds are set to a false-alarm rate on background audio (:mod:`kwsstream.calibrate`): the
keyword's templates are run through the detection pipeline over the background, and the
threshold is put where the expected false alarms per hour meet the target (``fa_per_hour``,
default :data:`kwsstream.calibrate.DEFAULT_FA_PER_HOUR`). The examples scored against each other
are a check that warns when they disagree. Thresholds set by the user (``threshold``) are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .audio import load_example
from .calibrate import (DEFAULT_FA_PER_HOUR, OPEN_THRESHOLD, Background, FaCurve, check_fa_per_hour,
                        example_scores, example_warning, impostor_costs)
from .encoders import Encoder, describe_identity, same_identity
from .encoders.base import SAMPLE_RATE, FrameGrid
from .errors import AudioError, KeysetError, UsageError
from .keyset import Keyword, KeywordSet, Template, check_threshold
from .ratemap import RateMap, rate_map_for

MIN_TEMPLATE_SECONDS = 0.2
"""The shortest keyword enrolled (at least 2 frames): 20 MFCC frames, 3 of speech_embedding's."""
MIN_THRESHOLD = 1e-3
"""Calibrated thresholds are kept in ``[MIN_THRESHOLD, OPEN_THRESHOLD)``."""
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
    audio = load_example(path)
    duration = len(audio) / SAMPLE_RATE
    if segment is not None:
        start, end = segment
        if not 0 <= start < end <= duration + 1e-6:
            raise UsageError(f"{path}: segment {start}-{end} s is not inside the recording (0-{duration:.2f} s)")
    else:
        start, end = speech_span(audio)
    # context for a running normalisation (MFCC's CMN): the recording's own start, mirrored
    lead = audio[: int(round(encoder.context_seconds * SAMPLE_RATE))][::-1]
    frames = encoder.encode(np.concatenate([lead, audio]))
    shift = len(lead) / SAMPLE_RATE
    keep = keyword_frames(encoder.grid, len(frames), start + shift, end + shift)
    need = max(2, int(np.ceil(MIN_TEMPLATE_SECONDS * encoder.grid.frame_rate - 1e-9)))
    if len(keep) < need:
        raise AudioError(
            f"{path}: the keyword ({start:.2f}-{end:.2f} s) is only {len(keep)} frames long; "
            f"at least {need} ({MIN_TEMPLATE_SECONDS:g} s) are needed"
        )
    if np.abs(frames[keep]).max() == 0:
        raise AudioError(f"{path}: the keyword is digital silence")
    return Template(np.ascontiguousarray(frames[keep[0] : keep[-1] + 1]), str(path), (round(start, 3), round(end, 3)))


def _calibrated(kw: Keyword, curve: FaCurve, fa_per_hour: float, background: Background,
                keep_user: bool = True, rate_map: RateMap | None = None) -> Keyword:
    """``kw`` with its threshold at ``fa_per_hour`` on ``curve`` (unless the user set it and
    ``keep_user``) and the calibration record (what ``keywords`` shows and what moving the
    sensitivity reuses). With a ``rate_map`` the target is a rate in the speaker's own speech,
    asked of the background through the map (:mod:`kwsstream.ratemap`)."""
    if not keep_user:
        kw = replace(kw, threshold_source="calibrated")
    threshold = kw.threshold
    on_background = rate_map.to_background(fa_per_hour) if rate_map else fa_per_hour
    if kw.threshold_source != "user":
        threshold = round(min(max(curve.threshold_for(on_background), MIN_THRESHOLD), OPEN_THRESHOLD - MIN_THRESHOLD), 4)
    expected = curve.rate(threshold)
    positives = kw.calibration.get("positives")
    if positives is None:
        positives = [round(p, 4) for p in example_scores([t.frames for t in kw.templates])]
    calibration = {
        "method": "fa-rate",
        "fa_per_hour": fa_per_hour,
        "expected_fa_per_hour": round(rate_map.to_own(expected) if rate_map else expected, 4),
        "rates": "own speech" if rate_map else "background",
        "rate_map": rate_map.to_json() if rate_map else None,
        "background": background.label,
        "background_hours": round(curve.hours, 4),
        "curve": curve.to_json(),
        "positives": positives,
        "warning": example_warning(kw.name, positives, threshold, fa_per_hour, curve),
    }
    source = "user" if kw.threshold_source == "user" else "calibrated"
    return replace(kw, threshold=float(threshold), threshold_source=source, calibration=calibration)


def calibrate_keywords(keyset: KeywordSet, encoder: Encoder, names: Sequence[str] | None = None, *,
                       background: Background | None = None, fa_per_hour: float | None = None,
                       keep_user: bool = True, rate_map: RateMap | None | str = "shipped") -> KeywordSet:
    """Set the thresholds of keywords ``names`` (default: all) to a false-alarm rate on
    ``background`` (default: the bundled set): ``fa_per_hour``, else each keyword's own earlier
    target, else :data:`DEFAULT_FA_PER_HOUR`. User-set thresholds stay if ``keep_user`` (their
    expected rate is recorded). On the bundled set the target is a rate of the speaker's own
    speech, through ``rate_map`` (``"shipped"``: the encoder's map in
    :func:`kwsstream.ratemap.rate_map_for`; ``None``: the background's own rates); a user's
    background is taken as it is."""
    names = [kw.name for kw in keyset.keywords] if names is None else list(names)
    if fa_per_hour is not None:
        fa_per_hour = check_fa_per_hour(fa_per_hour)
    if background is not None:
        rate_map = None
    elif rate_map == "shipped":
        rate_map = rate_map_for(encoder.name)
    background = background or Background.builtin()
    chosen = KeywordSet(encoder=keyset.encoder, keywords=tuple(_get(keyset, n) for n in names))
    costs, hours = impostor_costs(chosen, encoder, background)
    for kw in chosen.keywords:
        earlier = kw.calibration.get("fa_per_hour")
        if earlier and rate_map and kw.calibration.get("rates", "background") == "background":
            earlier = rate_map.to_own(earlier)  # a set from before the maps: its target, in own-speech terms
        target = fa_per_hour or earlier or DEFAULT_FA_PER_HOUR
        curve = FaCurve.fit(costs[kw.name], hours)
        keyset = keyset.with_keyword(_calibrated(kw, curve, target, background, keep_user, rate_map))
    return keyset


def set_sensitivity(keyset: KeywordSet, name: str, *, threshold: float | None = None,
                    fa_per_hour: float | None = None) -> KeywordSet:
    """Change one keyword's threshold (``threshold``: set by the user) or its target rate
    (``fa_per_hour``: the threshold moves along its stored false-alarm curve), without audio."""
    kw = _get(keyset, name)
    if (threshold is None) == (fa_per_hour is None):
        raise UsageError("give either a threshold or a false-alarm rate")
    curve, rate_map = None, None
    if kw.calibration.get("method") == "fa-rate":
        curve = FaCurve.from_json(kw.calibration.get("curve"), f"keyword {name!r}")
        if kw.calibration.get("rate_map") is not None:
            rate_map = RateMap.from_json(kw.calibration["rate_map"], f"keyword {name!r}")
    if threshold is not None:
        kw = replace(kw, threshold=check_threshold(threshold), threshold_source="user")
        if curve is None:
            return keyset.with_keyword(kw)
        expected = curve.rate(kw.threshold)
        expected = rate_map.to_own(expected) if rate_map else expected
        return keyset.with_keyword(replace(kw, calibration={
            **kw.calibration, "expected_fa_per_hour": round(expected, 4), "fa_per_hour": None,
            "warning": example_warning(name, kw.calibration.get("positives", []), kw.threshold, expected,
                                       curve)}))
    if curve is None:
        raise UsageError(f"keyword {name!r} has no false-alarm curve: run 'kwsstream calibrate' first")
    kw = replace(kw, threshold_source="calibrated")
    background = Background((), str(kw.calibration.get("background", "?")))
    return keyset.with_keyword(_calibrated(kw, curve, check_fa_per_hour(fa_per_hour), background, rate_map=rate_map))


def _get(keyset: KeywordSet, name: str) -> Keyword:
    kw = keyset.get(name)
    if kw is None:
        raise KeysetError(f"no keyword named {name!r} (have: {', '.join(k.name for k in keyset.keywords) or 'none'})")
    return kw


def add_examples(keyset: KeywordSet | None, encoder: Encoder, name: str, paths: Sequence[str | Path],
                  segment: tuple[float, float] | None = None, threshold: float | None = None) -> KeywordSet:
    """``keyset`` with ``paths`` added as templates of ``name`` (one template each, all cut at
    ``segment`` if given), not yet calibrated: call :func:`calibrate_keywords` once after adding
    every keyword (one pass over the background)."""
    name = name.strip()
    if not name:
        raise UsageError("the keyword name is empty")
    if not paths:
        raise UsageError(f"no example recordings given for {name!r}")
    if keyset is None:
        keyset = KeywordSet(encoder=encoder.identity)
    elif not same_identity(keyset.encoder, encoder.identity):
        raise KeysetError(
            f"the keyword set was enrolled with encoder {describe_identity(keyset.encoder)}; "
            f"cannot add examples encoded by {encoder.name}"
        )
    new = tuple(make_template(encoder, p, segment) for p in paths)
    old = keyset.get(name)
    kw = replace(old, templates=old.templates + new) if old else Keyword(name, OPEN_THRESHOLD / 2, new)
    positives = [round(p, 4) for p in example_scores([t.frames for t in kw.templates])]
    kw = replace(kw, calibration={**kw.calibration, "positives": positives})
    if threshold is not None:
        kw = replace(kw, threshold=check_threshold(threshold), threshold_source="user")
    return keyset.with_keyword(kw)


def enroll(
    keyset: KeywordSet | None,
    encoder: Encoder,
    name: str,
    paths: Sequence[str | Path],
    *,
    segment: tuple[float, float] | None = None,
    threshold: float | None = None,
    background: Background | None = None,
    fa_per_hour: float | None = None,
) -> KeywordSet:
    """Add ``paths`` as examples of keyword ``name`` (new or existing) and calibrate its
    threshold (see :func:`calibrate_keywords`; ``threshold`` sets it instead).

    ``keyset`` None starts a new set for ``encoder``; an existing set must have been enrolled with
    the same encoder. Returns the new set (the caller saves it).
    """
    keyset = add_examples(keyset, encoder, name, paths, segment, threshold)
    return calibrate_keywords(keyset, encoder, [name.strip()], background=background, fa_per_hour=fa_per_hour)


def enroll_examples(
    encoder: Encoder, examples: Mapping[str, Sequence[str | Path]], keyset: KeywordSet | None = None, *,
    background: Background | None = None, fa_per_hour: float | None = None,
) -> KeywordSet:
    """Enroll every keyword of ``examples`` (name -> example recordings), then calibrate them
    together (one pass over the background)."""
    if not examples:
        raise UsageError("no keywords to enroll")
    for name, paths in examples.items():
        keyset = add_examples(keyset, encoder, name, paths)
    return calibrate_keywords(keyset, encoder, list(examples), background=background, fa_per_hour=fa_per_hour)
