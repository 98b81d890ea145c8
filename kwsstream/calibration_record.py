"""A keyword's calibration record, as the keyword set stores it, checked field by field.

A keyword's ``calibration`` (``Keyword.calibration``: a plain JSON object, which enrollment
writes and ``keywords``, ``calibrate`` and the threshold commands read) says how its threshold was
set. Other tools may add keys of their own, so the object stays free-form, but every key
kwsstream reads has one type and range, checked once when the set is loaded (and before it is
saved) by :meth:`Calibration.from_json`; nothing later meets a string where a number belongs.
:class:`Calibration` is that check's typed result (``to_json`` gives the stored object back).

===========================  ==========================================================
``method``                   how it was set, e.g. ``"fa-rate"`` (a false-alarm rate)
``fa_per_hour``              the target rate (a calibrated ``fa-rate`` keyword has one)
``expected_fa_per_hour``     the rate expected at the threshold (>= 0)
``rates``                    ``"background"`` or ``"own speech"`` (through ``rate_map``)
``rate_map``                 :class:`kwsstream.ratemap.RateMap` as JSON
``background``               the calibration background's name
``background_hours``         hours of it heard
``curve``                    the false-alarm curve: ``costs`` (ascending), ``hours``,
                             ``anchor``, ``scale`` (see ``kwsstream.calibrate.FaCurve``)
``positives``                each example's score against the others
``warning``                  one line for the user
===========================  ==========================================================

Every one may be absent or ``null``; strings are single lines without control characters (they
are printed to a terminal).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from .errors import KeysetError

ThresholdSource = Literal["calibrated", "user"]
"""Who set a keyword's threshold."""
THRESHOLD_SOURCES: tuple[str, ...] = get_args(ThresholdSource)
RatesKind = Literal["background", "own speech"]
"""What a calibrated rate counts: false alarms on the background, or in the speaker's own speech."""
RATES_KINDS: tuple[str, ...] = get_args(RatesKind)

MAX_RATE = 1e9
"""Largest false-alarm rate (per hour) a record may hold (as :mod:`kwsstream.ratemap`)."""
MIN_CURVE_HOURS, MAX_HOURS = 1e-6, 1e7
MIN_CURVE_SCALE, MAX_CURVE_SCALE = 1e-3, 10.0
"""The false-alarm curve's tail scale (``kwsstream.calibrate.MIN_SCALE`` is the smallest a fit gives)."""
MAX_COST = 10.0
"""Largest absolute cost in a curve or among the positives (costs are in [0, 2])."""
MAX_CURVE_COSTS = 10_000
MAX_POSITIVES = 1000
MAX_TEXT = 4096


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"is {type(value).__name__}, not text"
    if len(value) > MAX_TEXT:
        return f"is longer than {MAX_TEXT} characters"
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in value):
        return "holds control characters"
    return None


@dataclass(frozen=True)
class Curve:
    """A stored false-alarm curve (see ``kwsstream.calibrate.FaCurve``), checked."""

    costs: tuple[float, ...]
    hours: float
    anchor: float
    scale: float

    @classmethod
    def from_json(cls, data: Any, where: str) -> Curve:
        def bad(why: str) -> KeysetError:
            return KeysetError(f"{where}: false-alarm curve {why}")

        if not isinstance(data, dict) or not {"costs", "hours", "anchor", "scale"} <= data.keys():
            raise bad("is not an object with costs, hours, anchor and scale")
        costs, hours, anchor, scale = data["costs"], data["hours"], data["anchor"], data["scale"]
        if not isinstance(costs, list) or len(costs) > MAX_CURVE_COSTS:
            raise bad(f"costs must be a list of at most {MAX_CURVE_COSTS} numbers")
        if not all(_number(c) and abs(c) <= MAX_COST for c in costs):
            raise bad(f"costs hold a value that is not a number from {-MAX_COST:g} to {MAX_COST:g}")
        if any(b < a for a, b in zip(costs, costs[1:])):
            raise bad("costs are not ascending")
        if not _number(hours) or not MIN_CURVE_HOURS <= hours <= MAX_HOURS:
            raise bad(f"hours {hours!r} is not a number from {MIN_CURVE_HOURS:g} to {MAX_HOURS:g}")
        if not _number(anchor) or abs(anchor) > MAX_COST:
            raise bad(f"anchor {anchor!r} is not a number from {-MAX_COST:g} to {MAX_COST:g}")
        if not _number(scale) or not MIN_CURVE_SCALE <= scale <= MAX_CURVE_SCALE:
            raise bad(f"scale {scale!r} is not a number from {MIN_CURVE_SCALE:g} to {MAX_CURVE_SCALE:g}")
        return cls(tuple(float(c) for c in costs), float(hours), float(anchor), float(scale))

    def to_json(self) -> dict[str, Any]:
        return {"costs": list(self.costs), "hours": self.hours, "anchor": self.anchor, "scale": self.scale}


@dataclass(frozen=True)
class Calibration:
    """A keyword's calibration record, checked (see the module docstring). ``None``: absent.
    ``extra``: other tools' keys, kept as they are (free-form JSON, bounded by the format)."""

    method: str | None = None
    fa_per_hour: float | None = None
    expected_fa_per_hour: float | None = None
    rates: RatesKind | None = None
    rate_map: dict[str, Any] | None = None
    background: str | None = None
    background_hours: float | None = None
    curve: Curve | None = None
    positives: tuple[float, ...] | None = None
    warning: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, where: str, threshold_source: str | None = None) -> Calibration:
        """Check a stored record (``where`` names the file and keyword in the one-line
        :class:`KeysetError`). With ``threshold_source`` ``"calibrated"`` and method ``fa-rate``,
        the target rate and the curve must be there."""
        def bad(key: str, why: str) -> KeysetError:
            return KeysetError(f"{where}: calibration {key!r} {why}")

        if not isinstance(data, dict):
            raise KeysetError(f"{where}: calibration is {type(data).__name__}, not an object")
        known = {f.name for f in fields(cls)} - {"extra"}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known and v is not None}
        for key in ("method", "background", "warning"):
            if key in values and (problem := _text_problem(values[key])):
                raise bad(key, problem)
        for key in ("fa_per_hour", "expected_fa_per_hour"):
            if key in values:
                value = values[key]
                low_ok = key == "expected_fa_per_hour"  # a rate rounded to 4 decimals may be 0
                if not _number(value) or not (0 <= value if low_ok else 0 < value) or value > MAX_RATE:
                    raise bad(key, f"is {value!r}, not a rate of false alarms per hour "
                                   f"({'0' if low_ok else 'above 0'} to {MAX_RATE:g})")
                values[key] = float(value)
        if "background_hours" in values:
            hours = values["background_hours"]
            if not _number(hours) or not 0 <= hours <= MAX_HOURS:
                raise bad("background_hours", f"is {hours!r}, not a number of hours (0 to {MAX_HOURS:g})")
            values["background_hours"] = float(hours)
        if "rates" in values and values["rates"] not in RATES_KINDS:
            raise bad("rates", f"is {values['rates']!r} (one of {', '.join(map(repr, RATES_KINDS))})")
        if "rate_map" in values:
            from .ratemap import RateMap

            RateMap.from_json(values["rate_map"], f"{where}: calibration")
        if "curve" in values:
            values["curve"] = Curve.from_json(values["curve"], f"{where}: calibration")
        if "positives" in values:
            positives = values["positives"]
            if (not isinstance(positives, list) or len(positives) > MAX_POSITIVES
                    or not all(_number(p) and abs(p) <= MAX_COST for p in positives)):
                raise bad("positives", f"must be a list of at most {MAX_POSITIVES} scores "
                                       f"(numbers from {-MAX_COST:g} to {MAX_COST:g})")
            values["positives"] = tuple(float(p) for p in positives)
        if threshold_source == "calibrated" and values.get("method") == "fa-rate":
            for key in ("fa_per_hour", "curve"):
                if key not in values:
                    raise bad(key, "is missing (a threshold calibrated to a false-alarm rate has one)")
        extra = {k: v for k, v in data.items() if k not in known}
        if extra.get("adaptation") is not None:  # self-calibration's evidence (kwsstream.adapt), checked here
            from .adapt import ADAPTATION_KEY, Evidence

            Evidence.keyword_from_json(extra[ADAPTATION_KEY], f"{where}: calibration")
        return cls(**values, extra=extra)

    def to_json(self) -> dict[str, Any]:
        """The record as stored (absent fields left out, other tools' keys kept)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None:
                continue
            out[f.name] = (value.to_json() if isinstance(value, Curve)
                           else list(value) if isinstance(value, tuple) else value)
        return out | self.extra
