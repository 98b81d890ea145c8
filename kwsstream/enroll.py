"""Enrollment: example recordings → templates → a keyword set with calibrated thresholds.

Each example recording is encoded whole (contextual encoders see all of it), then the keyword's
frames are kept: those of ``segment`` when given, else those between the first and last frame
with speech energy (leading/trailing silence trimmed, see :func:`speech_span`).

Thresholds are set to a false-alarm rate on background audio (:mod:`kwsstream.calibrate`): the
keyword's templates are run through the detection pipeline over the background, and the
threshold is put where the expected false alarms per hour meet the target (``fa_per_hour``,
default :data:`kwsstream.calibrate.DEFAULT_FA_PER_HOUR`). The examples scored against each other
are a check that warns when they disagree, naming the examples that the others do not match.
Thresholds set by the user (``threshold``) are kept; one expected to fire far more often than the
keyword's target gets a warning (:func:`threshold_warning`).

A keyword calibrated on the user's own background records its files (``background_files``), so
that a keyword enrolled into the same set later is calibrated on the same audio
(:func:`set_background`) instead of, silently, the built-in background.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .audio import display_name, load_example
from .calibrate import (DEFAULT_FA_PER_HOUR, OPEN_THRESHOLD, Background, FaCurve, check_fa_per_hour,
                        example_scores, example_warning, impostor_costs)
from .encoders import Encoder, describe_identity, same_identity
from .encoders.base import SAMPLE_RATE, FrameGrid
from .errors import AudioError, KeysetError, UsageError
from .keyset import Keyword, KeywordSet, Template
from .keysetformat import check_threshold
from .ratemap import RateMap, rate_map_for

MIN_TEMPLATE_SECONDS = 0.2
"""The shortest keyword enrolled (at least 2 frames): 20 MFCC frames, 3 of speech_embedding's."""
MIN_THRESHOLD = 1e-3
"""Calibrated thresholds are kept in ``[MIN_THRESHOLD, OPEN_THRESHOLD)``."""
TRIM_DB = 35.0  # frames more than this below the loudest frame are silence
TRIM_PAD = 0.02  # seconds kept on each side of the speech span
MAX_EXAMPLE_SECONDS = 3.0
"""An example whose sound (silence trimmed) lasts longer than this is likely more than one word:
enrollment warns and suggests ``--segment``."""
FAR_ABOVE_TARGET = 3.0
"""A hand-set threshold expected to fire more than this many times the keyword's target rate
gets a warning."""
_LOG = logging.getLogger(__name__)


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
    """Encode one example recording and keep the keyword's frames. An example of more than
    :data:`MAX_EXAMPLE_SECONDS` of sound (no ``segment``) is kept with a warning."""
    name = display_name(path)
    audio = load_example(path)
    duration = len(audio) / SAMPLE_RATE
    if segment is not None:
        start, end = segment
        if not 0 <= start < end <= duration + 1e-6:
            raise UsageError(f"{name}: segment {start}-{end} s is not inside the recording (0-{duration:.2f} s)")
    else:
        start, end = speech_span(audio)
        if end - start > MAX_EXAMPLE_SECONDS:
            _LOG.warning("%s: the example is %.1f s of sound (%.2f-%.2f s), more than one word takes: the whole of "
                         "it became the template; if the recording holds more than the keyword, give the keyword's "
                         "place: kwsstream enroll ... %s --segment START END (seconds)", name, end - start, start,
                         end, name)
    # context for a running normalisation (MFCC's CMN): the recording's own start, mirrored
    lead = audio[: int(round(encoder.context_seconds * SAMPLE_RATE))][::-1]
    frames = encoder.encode(np.concatenate([lead, audio]))
    shift = len(lead) / SAMPLE_RATE
    keep = keyword_frames(encoder.grid, len(frames), start + shift, end + shift)
    need = max(2, int(np.ceil(MIN_TEMPLATE_SECONDS * encoder.grid.frame_rate - 1e-9)))
    if len(keep) < need:
        raise AudioError(
            f"{name}: the keyword ({start:.2f}-{end:.2f} s) is only {len(keep)} frame{'' if len(keep) == 1 else 's'} "
            f"long; at least {need} ({MIN_TEMPLATE_SECONDS:g} s) are needed"
        )
    if np.abs(frames[keep]).max() == 0:
        raise AudioError(f"{name}: the keyword is digital silence")
    return Template(np.ascontiguousarray(frames[keep[0] : keep[-1] + 1]), name, (round(start, 3), round(end, 3)))


def _odd_ones_out(kw: Keyword, positives: Sequence[float], threshold: float) -> str:
    """The examples that disagree, named with what to do ('' when no example can be blamed):
    those the others do not match (leave-one-out score above ``threshold``) when the rest match;
    when none is matched, the one example without which the others match each other."""
    scores = [float(p) for p in positives]
    n = len(scores)
    if n != len(kw.templates) or n < 2:
        return ""
    odd = [i for i, p in enumerate(scores) if not p <= threshold]  # nan/inf: not matched
    if len(odd) == n:
        frames = [t.frames for t in kw.templates]
        odd = [i for i in range(n) if n >= 3 and
               all(p <= threshold for p in example_scores(frames[:i] + frames[i + 1:]))]
    if not odd or len(odd) == n:
        return ""
    named = ", ".join(f"{kw.templates[i].source} ({kw.templates[i].segment[0]:.2f}-{kw.templates[i].segment[1]:.2f} s, "
                      f"score {scores[i]:.3f})" for i in odd)
    which = "this example" if len(odd) == 1 else "these examples"
    return (f" The other examples do not match {which}: {named}; listen to it and record it again, or enroll "
            f"{kw.name!r} again without it (kwsstream keywords --remove {kw.name}, then enroll the others).")


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
        "warning": _with_odd_ones_out(example_warning(kw.name, positives, threshold, fa_per_hour, curve), kw,
                                      positives, threshold),
    }
    files = _storable_paths(background)
    if files:
        calibration["background_files"] = files
    source = "user" if kw.threshold_source == "user" else "calibrated"
    return replace(kw, threshold=float(threshold), threshold_source=source, calibration=calibration)


def _with_odd_ones_out(warning: str | None, kw: Keyword, positives: Sequence[float], threshold: float) -> str | None:
    odd = _odd_ones_out(kw, positives, threshold) if warning else ""
    return warning.rstrip(".") + "." + odd if odd else warning


def _storable_paths(background: Background) -> list[str] | None:
    """The absolute paths of a user's background, to be found again (``None``: the built-in one,
    or a name that cannot be stored as UTF-8 text)."""
    if background.label == "built-in" or not background.paths:
        return None
    paths = [str(Path(p).resolve()) for p in background.paths]
    if any(display_name(p) != p for p in paths):
        return None
    return paths


def set_background(keyset: KeywordSet) -> tuple[Background | None, str | None]:
    """The background most of the set's keywords were calibrated on, when that is the user's own:
    ``(Background, None)`` when its files are all still there; ``(None, its name)`` when they are
    not (or were not recorded); ``(None, None)`` for the built-in background (or no calibration)."""
    labels = Counter(kw.calibration.get("background") for kw in keyset.keywords
                     if kw.calibration.get("method") == "fa-rate" and kw.calibration.get("background") is not None)
    if not labels:
        return None, None
    label, _ = labels.most_common(1)[0]
    if label == "built-in":
        return None, None
    for kw in keyset.keywords:
        files = kw.calibration.get("background_files")
        if kw.calibration.get("background") == label and isinstance(files, list) and files:
            if all(isinstance(f, str) and Path(f).is_file() for f in files):
                return Background.files(files), None
    return None, label


def threshold_warning(kw: Keyword, threshold: float) -> str | None:
    """One line when ``threshold``, set by hand for ``kw``, is expected (on the keyword's stored
    false-alarm curve) to fire more than :data:`FAR_ABOVE_TARGET` times its target rate (the
    keyword's calibration target, else :data:`DEFAULT_FA_PER_HOUR`); ``None`` otherwise, or
    when the keyword has no curve."""
    cal = kw.calibration
    if cal.get("method") != "fa-rate" or not isinstance(cal.get("curve"), dict):
        return None
    try:
        curve = FaCurve.from_json(cal["curve"], f"keyword {kw.name!r}")
        rate_map = RateMap.from_json(cal["rate_map"], f"keyword {kw.name!r}") if cal.get("rate_map") else None
    except KeysetError:
        return None
    expected = curve.rate(float(threshold))
    expected = rate_map.to_own(expected) if rate_map else expected
    target = cal.get("fa_per_hour") or DEFAULT_FA_PER_HOUR
    if expected <= FAR_ABOVE_TARGET * target:
        return None
    at_target = curve.threshold_for(rate_map.to_background(target) if rate_map else target)
    shown = f"{expected:.0f}" if expected >= 100 else f"{expected:.2g}"
    return (f"{kw.name!r}: threshold {round(float(threshold), 4):.3f} is expected to give ~{shown} false alarms/hour, "
            f"{expected / target:.0f}x its target of {target:g}/hour, which threshold {round(at_target, 4):.3f} "
            f"meets; a lower threshold gives fewer")


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
