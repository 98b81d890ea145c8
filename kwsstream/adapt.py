"""Thresholds that learn the speaker: self-calibration from the stream's own impostor evidence.

A keyword's enrollment threshold is set against someone else's speech (the built-in background,
through the encoder's own-speech rate map, :mod:`kwsstream.ratemap`). Another voice, room or
microphone moves every match cost, so that threshold is too strict for some and too loose for
others. While a stream plays, each keyword gathers **impostor evidence** from the stream itself
and its threshold moves toward the one that gives the target rate on *this* audio.

**Evidence** (:class:`Evidence`), per keyword: a histogram of *candidate* costs (bins of
:data:`BIN_WIDTH` on ``[0, MAX_COST)``) and the hours of speech heard. A candidate is a local
minimum of the keyword's score that the detector with its threshold wide open would fire on
(the rule calibration counts impostor events by, :mod:`kwsstream.calibrate`); only frames the
voice-activity gate passed are scored, so only speech counts as hours and as evidence; a
candidate within ``margin`` seconds of one of the keyword's own detections is not evidence (it is
the detection, or the same spoken word). Evidence is a histogram so that it is bounded (memory
and the size saved with a keyword set do not grow with hours) and adds up across sessions.

**The stream's threshold** (:func:`stream_threshold`): the false alarms per hour at threshold
``t`` are read off the evidence as ``r(t) = candidates below t / hours``; the lowest candidates
may be the keyword itself said and missed, so the rate is not read there but modelled: the costs
at two rates well above the target (:data:`ANCHOR_RATES`, where a few missed keywords cannot move
the count) fix a log-linear tail, ``ln r(t) = ln r_a + (t - t_a) / scale``, extrapolated down to
the target. It is the tail model of :class:`kwsstream.calibrate.FaCurve`, anchored on this
stream's own speech instead of the background's.

**The threshold used** (:meth:`Evidence.thresholds`): a shrinkage of the enrollment threshold
``t0`` toward the stream's, weighted by the hours behind each: ``t = t0 + w (ts - t0)`` with
``w = h / (h + prior_hours)``; so the enrollment threshold counts as ``prior_hours`` of evidence,
and a few seconds of speech barely move it. It never leaves ``[t0 - max_down, t0 + max_up]``: a
stream full of keywords, a long silence (no evidence: no move) or a burst of one impostor cannot
run it away. Nothing is learned before :data:`MIN_CANDIDATES` candidates are in.

Detection stays causal: a stream applies a new threshold from the block after it was learned
(:class:`Adapter`), every ``update_seconds`` of speech.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import KeysetError, UsageError

if TYPE_CHECKING:  # the detector loads numba: imported when a stream adapts
    from .detector import DetectorOptions
# Keyword sets are passed in, never imported here: the keyword set's record validates the saved
# evidence with this module (kwsstream.calibration_record), and the CLI saves it (cliutil).

BIN_WIDTH = 0.0025
"""Width of a cost bin (costs are cosine distances normalised by path length, ~0-1)."""
MAX_COST = 2.0
N_BINS = int(round(MAX_COST / BIN_WIDTH))
ANCHOR_RATES = (100.0, 1000.0)
"""Candidates per hour of speech at the two anchors of the tail model: far above any target,
so that the detections (never evidence) and the keyword's own missed occurrences are a small
share of the candidates counted there."""
MIN_CANDIDATES = 20
"""Candidates below the upper anchor needed before the stream's threshold is estimated."""
MAX_HOURS = 1e6


@dataclass(frozen=True)
class AdaptOptions:
    """Attributes:
    prior_hours: hours of speech the enrollment threshold is worth (shrinkage weight).
    max_down, max_up: how far below / above its enrollment value a threshold may move.
    margin: seconds around a keyword's detection whose candidates are not evidence.
    update_seconds: seconds of audio between threshold updates.
    anchors: candidates per hour at the two anchors of the tail model (:data:`ANCHOR_RATES`).
    """

    prior_hours: float = 0.1
    max_down: float = 0.05
    max_up: float = 0.10
    margin: float = 1.0
    update_seconds: float = 5.0
    anchors: tuple[float, float] = ANCHOR_RATES

    def __post_init__(self) -> None:
        values = (self.prior_hours, self.max_down, self.max_up, self.margin, self.update_seconds)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values) \
                or self.update_seconds <= 0:
            raise UsageError(f"adaptation options must be finite and >= 0 (update_seconds > 0): {self}")
        if not 0 < self.anchors[0] < self.anchors[1] < math.inf:
            raise UsageError(f"adaptation anchors must be two rates, low < high: {self.anchors}")


def stream_threshold(counts: np.ndarray, hours: float, target: float,
                     anchors: Sequence[float] = ANCHOR_RATES) -> float | None:
    """The threshold expected to give ``target`` false alarms per hour on the audio whose
    candidate histogram is ``counts`` (``N_BINS``) over ``hours`` of speech; ``None`` when the
    evidence is too thin (fewer than :data:`MIN_CANDIDATES` below the upper anchor)."""
    if hours <= 0:
        return None
    cum = np.cumsum(counts)
    r_lo, r_hi = anchors
    n_lo, n_hi = r_lo * hours, r_hi * hours
    if cum[-1] < max(MIN_CANDIDATES, n_hi) or n_hi < MIN_CANDIDATES:
        return None
    t_lo, t_hi = _cost_at(cum, n_lo), _cost_at(cum, n_hi)
    if not t_hi > t_lo:
        return t_lo
    scale = (t_hi - t_lo) / math.log(r_hi / r_lo)
    return t_lo + scale * math.log(target / r_lo)


def _cost_at(cum: np.ndarray, n: float) -> float:
    """The cost below which ``n`` candidates lie (linear within a bin)."""
    i = int(np.searchsorted(cum, n))
    below = cum[i - 1] if i > 0 else 0
    inside = cum[i] - below
    frac = (n - below) / inside if inside > 0 else 0.0
    return (i + frac) * BIN_WIDTH


@dataclass
class Evidence:
    """Impostor evidence of ``K`` keywords: candidate histograms ``counts (K, N_BINS)`` and
    ``hours (K,)`` of speech heard."""

    counts: np.ndarray
    hours: np.ndarray

    @classmethod
    def empty(cls, n_keywords: int) -> Evidence:
        return cls(np.zeros((n_keywords, N_BINS), np.int64), np.zeros(n_keywords, np.float64))

    def copy(self) -> Evidence:
        return Evidence(self.counts.copy(), self.hours.copy())

    def add(self, keyword: int, cost: float) -> None:
        self.counts[keyword, min(N_BINS - 1, max(0, int(cost / BIN_WIDTH)))] += 1

    def thresholds(self, base: np.ndarray, targets: np.ndarray, options: AdaptOptions) -> np.ndarray:
        """The adapted thresholds (module docstring) of keywords with enrollment thresholds
        ``base`` and target rates ``targets`` (false alarms per hour; NaN: never moved)."""
        out = np.asarray(base, np.float64).copy()
        for k in range(len(out)):
            if not np.isfinite(targets[k]):
                continue
            ts = stream_threshold(self.counts[k], float(self.hours[k]), float(targets[k]), options.anchors)
            if ts is None:
                continue
            w = self.hours[k] / (self.hours[k] + options.prior_hours) if options.prior_hours > 0 else 1.0
            out[k] = min(base[k] + options.max_up, max(base[k] - options.max_down, base[k] + w * (ts - base[k])))
        return out

    def keyword_json(self, k: int) -> dict[str, Any]:
        """One keyword's evidence as a JSON value (sparse histogram)."""
        nz = np.flatnonzero(self.counts[k])
        return {"hours": round(float(self.hours[k]), 6), "bin_width": BIN_WIDTH,
                "bins": [[int(i), int(self.counts[k, i])] for i in nz]}

    @staticmethod
    def keyword_from_json(data: Any, where: str) -> tuple[np.ndarray, float]:
        """A keyword's (histogram, hours) from :meth:`keyword_json`'s value, validated."""
        bad = KeysetError(f"{where}: malformed adaptation state")
        if not isinstance(data, dict) or set(data) != {"hours", "bin_width", "bins"}:
            raise bad
        hours, width, bins = data["hours"], data["bin_width"], data["bins"]
        if (not isinstance(hours, (int, float)) or isinstance(hours, bool) or not math.isfinite(hours)
                or not 0 <= hours <= MAX_HOURS or width != BIN_WIDTH or not isinstance(bins, list)
                or len(bins) > N_BINS):
            raise bad
        counts = np.zeros(N_BINS, np.int64)
        for item in bins:
            if (not isinstance(item, list) or len(item) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)
                    or not 0 <= item[0] < N_BINS or not 0 < item[1] < 2 ** 53 or counts[item[0]]):
                raise bad
            counts[item[0]] = item[1]
        return counts, float(hours)


class Adapter:
    """One stream's self-calibration: feed it the per-keyword scores the detector sees and the
    detections it made; it keeps the evidence and, every ``update_seconds``, the thresholds.

    Args:
        base: enrollment thresholds (K,).
        targets: false alarms per hour each keyword is set to (K,).
        evidence: the keyword set's saved evidence (added to; a new one when ``None``).
        frame_rate: frames per second of the scores.
        options: see :class:`AdaptOptions`.
        detector: the stream detector's options (candidates are its local minima, found with the
            same look-ahead and refractory period).
    """

    def __init__(self, base: np.ndarray, targets: np.ndarray, evidence: Evidence | None, frame_rate: float,
                 options: AdaptOptions, detector: DetectorOptions):
        from .detector import DetectorState

        self.base = np.asarray(base, np.float64)
        self.targets = np.asarray(targets, np.float64)
        self.options = options
        self.evidence = evidence if evidence is not None else Evidence.empty(len(self.base))
        self.frame_rate = frame_rate
        self._margin = int(round(options.margin * frame_rate))
        self._settle_after = self._margin + int(round(detector.lookahead * frame_rate))
        self._every = max(1, int(round(options.update_seconds * frame_rate)))
        self._open = DetectorState(np.full(len(self.base), MAX_COST, np.float32), frame_rate, detector)
        self.thresholds = self.evidence.thresholds(self.base, self.targets, options)
        self.reset()

    def reset(self) -> None:
        """A new stream: no pending candidates (the evidence and thresholds are kept)."""
        self._open.reset()
        self._pending: list[tuple[int, int, float]] = []  # (keyword, end frame, cost)
        self._last_detection = np.full(len(self.base), -(10 ** 12), np.int64)
        self._frames_since_update = 0

    def push(self, score: np.ndarray, start: np.ndarray, template: np.ndarray, frame0: int,
             detections: np.ndarray) -> bool:
        """A block of per-keyword scores ``(n, K)`` (+inf: not speech / no match) from frame
        ``frame0``, and the detector rows it produced; returns whether the thresholds changed."""
        n = len(score)
        if n == 0:
            return False
        self.evidence.hours += np.isfinite(score).sum(axis=0) / self.frame_rate / 3600
        for row in detections:
            k, end = int(row[0]), int(row[3])
            self._last_detection[k] = max(self._last_detection[k], end)
        for row in self._open.push(score, start, template, frame0):
            self._pending.append((int(row[0]), int(row[3]), float(row[4])))
        self._settle(frame0 + n)
        self._frames_since_update += n
        if self._frames_since_update < self._every:
            return False
        self._frames_since_update = 0
        new = self.evidence.thresholds(self.base, self.targets, self.options)
        changed = not np.array_equal(new, self.thresholds)
        self.thresholds = new
        return changed

    def _settle(self, now: int, final: bool = False) -> None:
        """Candidates whose margin has passed become evidence unless a detection is near."""
        keep = []
        for k, end, cost in self._pending:
            if not final and now - end <= self._settle_after:
                keep.append((k, end, cost))
            elif abs(self._last_detection[k] - end) > self._margin:
                self.evidence.add(k, cost)
        self._pending = keep

    def flush(self, detections: np.ndarray) -> None:
        """End of stream: the open candidates and pending ones become evidence (or not)."""
        for row in detections:
            k, end = int(row[0]), int(row[3])
            self._last_detection[k] = max(self._last_detection[k], end)
        for row in self._open.flush():
            self._pending.append((int(row[0]), int(row[3]), float(row[4])))
        self._settle(0, final=True)


HELPS = ("whisper-base-L5-int8",)
"""Encoders (:attr:`Encoder.name`) whose streams adapt unless told not to: measured on the
streaming benchmark (docs/benchmarks.md) - with Whisper base L5 adaptation cut the misses or the
false alarms of the same-speaker streams (English dry 10.0 % -> 2.1 % at the same rate; French
6.5 -> 2.3 false alarms per hour at the same misses); with speech_embedding it missed more."""


def helps(encoder_name: str) -> bool:
    """Whether adaptation is on by default for this encoder (:data:`HELPS`)."""
    return encoder_name in HELPS


ADAPTATION_KEY = "adaptation"
"""Where a keyword's saved evidence lives in its calibration record."""


def keyword_target(kw: Any) -> float:
    """The false alarms per hour a keyword's threshold (a :class:`kwsstream.keyset.Keyword`) was
    calibrated to, which adaptation keeps
    it at; NaN for a threshold set by hand (never moved)."""
    cal = kw.calibration
    target = cal.get("fa_per_hour")
    if kw.threshold_source != "calibrated" or cal.get("method") != "fa-rate" or isinstance(target, bool) \
            or not isinstance(target, (int, float)) or not math.isfinite(target) or target <= 0:
        return math.nan
    return float(target)


def saved_evidence(keyset: Any) -> Evidence:
    """The evidence a keyword set has saved (nothing for keywords without any)."""
    evidence = Evidence.empty(len(keyset.keywords))
    for k, kw in enumerate(keyset.keywords):
        data = kw.calibration.get(ADAPTATION_KEY)
        if data is not None:
            evidence.counts[k], evidence.hours[k] = Evidence.keyword_from_json(data, f"keyword {kw.name!r}")
    return evidence


def with_evidence(keyset: Any, names: Sequence[str], evidence: Evidence) -> Any:
    """``keyset`` with the evidence of keywords ``names`` (row ``k`` of ``evidence`` is
    ``names[k]``'s) saved in their calibration records; keywords removed meanwhile, or whose
    threshold is now set by hand, are skipped."""
    for k, name in enumerate(names):
        kw = keyset.get(name)
        if kw is None or not np.isfinite(keyword_target(kw)):
            continue
        keyset = keyset.with_keyword(replace(kw, calibration={**kw.calibration,
                                                             ADAPTATION_KEY: evidence.keyword_json(k)}))
    return keyset


def without_evidence(keyset: Any, name: str) -> Any:
    """``keyset`` with keyword ``name``'s adaptation forgotten (``keywords --reset-adaptation``)."""
    kw = keyset.get(name)
    if kw is None:
        raise UsageError(f"no keyword {name!r} in the keyword set")
    calibration = {k: v for k, v in kw.calibration.items() if k != ADAPTATION_KEY}
    return keyset.with_keyword(replace(kw, calibration=calibration))

