"""Thresholds set to a false-alarm rate, measured on background audio.

A keyword's threshold decides how often it fires on everything that is *not* the keyword. So
calibration plays background audio — speech in other languages, music, noise: the project's
bundled set (``kwsstream/data/background/``), or the user's own (ten minutes of their television)
— through the very pipeline that detection runs (encoder, voice-activity gate, matcher, detector)
with every threshold wide open, and keeps each keyword's *impostor events*: the local minima the
detector would have fired on. ``n`` events with a cost below ``t`` in ``h`` hours of background
mean ``n / h`` false alarms per hour at threshold ``t``.

A target such as 0.5 false alarms per hour is rarer than the lowest impostor event of a short
background, so the low tail of the impostor costs is modelled (:class:`FaCurve`): below the
:data:`TAIL_EVENTS`-th lowest cost the rate falls exponentially, ``rate(t) = rate(a) * exp((t -
a) / scale)``, with ``scale`` the maximum-likelihood estimate from the costs below the anchor
``a`` (for an exponential tail, the mean distance of those costs to it). The curve is stored with
the keyword, so a user can move a keyword's sensitivity (its target rate) without new audio; it
maps one sensitivity to the same expected rate for every keyword.

The keyword's own examples scored against each other (:func:`example_scores`) are a check, not
the threshold: when they score above the threshold chosen for the target rate, the keyword will
be missed in voices or rooms like those examples, and enrollment says so and what to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .audio import iter_audio_blocks
from .detector import DetectorOptions
from .encoders import Encoder
from .encoders.base import SAMPLE_RATE
from .errors import KeysetError, UsageError
from .keyset import KeywordSet
from .matcher import cosine_distances
from .sdtw import band, best_match

DEFAULT_FA_PER_HOUR = 3.0
"""The target false alarms per hour per keyword when the user names none: on the built-in
background, a rate of the enrolling speaker's own speech through the encoder's own-speech rate
map (:mod:`kwsstream.ratemap`); on a user's background, a rate on it.

Chosen on the English stream the maps were fitted on (``python -m eval ratemap``, README
"Streaming benchmark"): speech_embedding misses 32 % of the keywords at 3 false alarms per hour
per keyword of the speaker's continuous speech, 37 % at 2.0, 53 % at 1.7 and 27 % at 4.9 - below
3 every halving of the false alarms costs more than 10 points of misses. Checked on French and
on another speaker there (same tables)."""
TAIL_EVENTS = 20
"""Impostor events that anchor and fit the exponential tail."""
KEPT_EVENTS = 200
"""Lowest impostor costs stored with a keyword (the empirical part of its curve)."""
OPEN_THRESHOLD = 2.0
"""Calibration runs the detector with this threshold: every local minimum is an event."""
MIN_SCALE = 1e-3
NONSENSE_FA_PER_HOUR = 30.0
"""Examples agreeing only as well as this many false alarms an hour do not hold one word."""
MIN_FA_PER_HOUR, MAX_FA_PER_HOUR = 1e-4, 1e4
BACKGROUND_GLOB = "*.ogg"
CACHE_ENV = "KWSSTREAM_CACHE"
"""Folder for encoded background audio (default ``~/.cache/kwsstream``)."""
CACHE_VERSION = 1
_LOG = logging.getLogger(__name__)


def check_fa_per_hour(value: float) -> float:
    """A target rate a user may ask for (one line naming the problem otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not MIN_FA_PER_HOUR <= value <= MAX_FA_PER_HOUR:
        raise UsageError(f"false alarms per hour {value!r} must be a number between {MIN_FA_PER_HOUR:g} and {MAX_FA_PER_HOUR:g}")
    return float(value)


@dataclass(frozen=True)
class Background:
    """Audio with no keyword in it, to count false alarms on.

    Attributes:
        paths: the recordings.
        label: how enrollment names it (``built-in`` or the user's file names).
    """

    paths: tuple[Path, ...]
    label: str

    @classmethod
    def builtin(cls) -> Background:
        """The bundled background set (see ``kwsstream/data/background/README.md``)."""
        folder = Path(str(resources.files("kwsstream") / "data" / "background"))
        paths = tuple(sorted(folder.glob(BACKGROUND_GLOB)))
        if not paths:
            raise KeysetError(f"{folder}: the bundled background audio is missing (reinstall kwsstream)")
        return cls(paths, "built-in")

    @classmethod
    def files(cls, paths: Sequence[str | Path]) -> Background:
        if not paths:
            raise UsageError("no background recordings given")
        return cls(tuple(Path(p) for p in paths), ", ".join(Path(p).name for p in paths))


@dataclass(frozen=True)
class FaCurve:
    """Expected false alarms per hour of one keyword as a function of its threshold.

    Attributes:
        costs: the lowest impostor event costs, ascending (at most :data:`KEPT_EVENTS`).
        hours: hours of background they were found in.
        anchor: the cost of the :data:`TAIL_EVENTS`-th lowest event (or the highest there is).
        scale: the exponential tail's scale below the anchor.
    """

    costs: tuple[float, ...]
    hours: float
    anchor: float
    scale: float

    @classmethod
    def fit(cls, costs: np.ndarray, hours: float) -> FaCurve:
        if hours <= 0:
            raise UsageError("the background audio is empty")
        costs = np.sort(np.asarray(costs, np.float64))[:KEPT_EVENTS]
        if len(costs) < 2:
            # hardly anything resembles the keyword: a flat guess below the few events there are
            anchor = float(costs[0]) if len(costs) else OPEN_THRESHOLD
            return cls(tuple(float(c) for c in costs), float(hours), anchor, 0.05)
        tail = costs[:TAIL_EVENTS]
        anchor = float(tail[-1])
        scale = max(MIN_SCALE, float(np.mean(anchor - tail[:-1])))
        return cls(tuple(round(float(c), 5) for c in costs), float(hours), anchor, scale)

    @property
    def anchor_rate(self) -> float:
        """False alarms per hour at the anchor."""
        return max(1, min(TAIL_EVENTS, len(self.costs))) / self.hours

    def rate(self, threshold: float) -> float:
        """Expected false alarms per hour at ``threshold``."""
        if threshold <= self.anchor:
            return self.anchor_rate * math.exp((threshold - self.anchor) / self.scale)
        return float(np.searchsorted(self.costs, threshold)) / self.hours

    def threshold_for(self, fa_per_hour: float) -> float:
        """The threshold expected to give ``fa_per_hour`` false alarms per hour."""
        if fa_per_hour <= self.anchor_rate or len(self.costs) <= TAIL_EVENTS:
            return self.anchor + self.scale * math.log(fa_per_hour / self.anchor_rate)
        k = min(len(self.costs) - 1, int(fa_per_hour * self.hours))
        return float(self.costs[k])

    def to_json(self) -> dict[str, Any]:
        return {"costs": list(self.costs), "hours": round(self.hours, 6), "anchor": self.anchor, "scale": round(self.scale, 6)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> FaCurve:
        try:
            costs = tuple(float(c) for c in data["costs"])
            curve = cls(costs, float(data["hours"]), float(data["anchor"]), float(data["scale"]))
        except (KeyError, TypeError, ValueError):
            raise KeysetError(f"{where}: malformed false-alarm curve") from None
        values = (*curve.costs, curve.hours, curve.anchor, curve.scale)
        if not all(math.isfinite(v) for v in values) or curve.hours <= 0 or curve.scale <= 0:
            raise KeysetError(f"{where}: malformed false-alarm curve")
        return curve


def cache_dir() -> Path:
    """Where encoded background audio is kept (``$KWSSTREAM_CACHE``, else ``~/.cache/kwsstream``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "kwsstream")


def _cache_key(spotter, path: Path) -> str:
    identity = {k: v for k, v in spotter.encoder.identity.items() if k != "path"}
    gate = spotter.options.gate
    head = json.dumps([CACHE_VERSION, identity, None if gate is None else vars(gate)], sort_keys=True, default=str)
    digest = hashlib.sha256(head.encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_file(spotter, path: Path) -> Path:
    return cache_dir() / "background" / f"{_cache_key(spotter, path)}.npz"


def _load_cached(file: Path, dim: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    try:
        with np.load(file, allow_pickle=False) as npz:
            frames, gate, samples = npz["frames"], npz["gate"], npz["samples"]
    except (OSError, ValueError, KeyError, EOFError):
        return None
    ok = (frames.dtype == np.float32 and frames.ndim == 2 and frames.shape[1] == dim and gate.dtype == np.bool_
          and gate.shape == (len(frames),) and samples.shape == () and np.isfinite(frames).all())
    return (frames, gate, int(samples)) if ok else None


def encoded_background(spotter, path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Frames and gate flags of a background recording as a stream of ``spotter`` makes them
    (:meth:`kwsstream.spotter.Stream.encode`), and its length in samples; cached per encoder,
    gate settings and file content under :func:`cache_dir` (the bundled background is encoded
    once per encoder, not at every enrollment)."""
    file = _cache_file(spotter, path)
    cached = _load_cached(file, spotter.encoder.dim) if file.is_file() else None
    if cached is not None:
        return cached
    stream = spotter.create_stream(source=str(path))
    parts, flags, samples = [], [], 0
    for block in iter_audio_blocks(path):
        samples += len(block)
        f, g = stream.encode(block)
        parts.append(f)
        flags.append(g)
    f, g = stream.encode_end()
    frames = np.concatenate(parts + [f]).astype(np.float32)
    gate = np.concatenate(flags + [g]).astype(np.bool_)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".npz.tmp", dir=file.parent)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, frames=frames, gate=gate, samples=np.int64(samples))
        os.replace(tmp, file)
    except OSError as err:  # a read-only home: calibrate anyway, without the cache
        _LOG.warning("the encoded background was not cached (%s): the next enrollment encodes it again", err)
    return frames, gate, samples


def impostor_costs(keyset: KeywordSet, encoder: Encoder, background: Background,
                   options: DetectorOptions = DetectorOptions()) -> tuple[dict[str, np.ndarray], float]:
    """Every keyword's impostor event costs on ``background`` and the hours of audio searched:
    the detection pipeline itself (the background's frames and gate flags, then the matcher and
    detector), with every threshold at :data:`OPEN_THRESHOLD`."""
    from .spotter import Spotter, SpotterOptions

    spotter = Spotter(keyset, encoder, thresholds=OPEN_THRESHOLD, options=SpotterOptions(detector=options))
    found: dict[str, list[float]] = {kw.name: [] for kw in keyset.keywords}
    samples = 0
    if not all(_cache_file(spotter, path).is_file() for path in background.paths):
        _LOG.info("encoding the background (%s) with %s, once: later calibrations reuse it", background.label,
                  spotter.encoder.name)
    for path in background.paths:
        frames, gate, n = encoded_background(spotter, path)
        samples += n
        stream = spotter.create_stream(source=str(path))
        for event in stream.feed_encoded(frames, gate) + stream.flush_encoded():
            found[event.keyword].append(event.cost)
    return {name: np.array(costs) for name, costs in found.items()}, samples / SAMPLE_RATE / 3600


def example_scores(frames: Sequence[np.ndarray]) -> list[float]:
    """For each example of a keyword, the best score of the keyword's *other* examples in it
    (leave one out): what the keyword scores in voices and rooms like its examples'."""
    if len(frames) < 2:
        return []

    def score(a: np.ndarray, b: np.ndarray) -> float:
        lo, hi = band(len(a))
        return float(best_match(cosine_distances(a, b), lo, hi)[0])

    return [min(score(a, b) for ia, a in enumerate(frames) if ia != ib) for ib, b in enumerate(frames)]


def example_warning(name: str, positives: Sequence[float], threshold: float, fa_per_hour: float,
                    curve: FaCurve | None = None) -> str | None:
    """What to tell the user when the examples do not support the threshold (``None``: fine).
    Examples that match each other no better than background speech matches them (their best
    agreement would fire :data:`NONSENSE_FA_PER_HOUR` times an hour on the background) are not
    the same word."""
    finite = [p for p in positives if math.isfinite(p)]
    unlike = curve is not None and finite and curve.rate(min(finite)) >= NONSENSE_FA_PER_HOUR
    if len(finite) < len(positives) or unlike:
        return (f"{name!r}: the examples do not sound alike (they score {_range(positives)} against each "
                f"other; threshold {threshold:.3f}): check that every recording holds the keyword "
                f"(and the --segment times), then enroll again")
    if finite and max(finite) > threshold:
        missed = sum(p > threshold for p in finite)
        return (f"{name!r}: {missed} of {len(finite)} examples score above the threshold for {fa_per_hour:g} false "
                f"alarms/hour ({_range(finite)} vs {threshold:.3f}): it will be missed in voices or rooms like "
                f"theirs; record more consistent examples, or allow more false alarms (--fa-per-hour)")
    return None


def _range(values: Sequence[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}"
