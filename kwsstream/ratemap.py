"""From false alarms in a speaker's own speech to false alarms on the built-in background.

The bundled background (``kwsstream/data/background``: Russian prompts by one speaker, music,
noise) is what every enrollment can calibrate on, but a keyword meets far more near-misses in
the enrolling speaker's own speech, in the keyword's own language, than in it: on the streaming
benchmark, a threshold set for 0.1 false alarms per hour on the background gave 3-5 per hour of
the speaker's own speech (``python -m eval stream``, README "Streaming benchmark").

A :class:`RateMap` is that relation, measured once per encoder on one speaker's long recording
with the words marked (the benchmark's asked-vs-got curve on the built-in calibration) and
checked on other speakers: knots ``(own, background)``, both ascending, interpolated linearly in
log-log space and extended beyond the ends with the end segments' slopes. Enrollment on the
built-in background asks the background for ``to_background(target)``, so a target means false
alarms per hour *of the speaker's own speech*; a user's own background (``--background``) is
used as it is (no map). The maps ship in ``kwsstream/data/rate_maps.json``, written by
``python -m eval ratemap`` (see its docstring for the commands); an encoder without a map (an
exported wav2vec2 model) is calibrated on the background's rates and says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from .errors import KeysetError

MAPS_FILE = "rate_maps.json"
MAX_KNOTS = 64
MIN_RATE, MAX_RATE = 1e-9, 1e9


@dataclass(frozen=True)
class RateMap:
    """A monotone map between false alarms per hour of a speaker's own speech (``own``) and on
    the built-in background (``background``); see the module docstring.

    Attributes:
        own, background: the knots, each strictly ascending and positive.
        fitted_on: where the knots were measured (corpus, condition, command), for the record.
    """

    own: tuple[float, ...]
    background: tuple[float, ...]
    fitted_on: str = ""

    def to_background(self, own_rate: float) -> float:
        """The background rate whose threshold gives ``own_rate`` in the speaker's speech."""
        return _interp(own_rate, self.own, self.background)

    def to_own(self, background_rate: float) -> float:
        """The rate in the speaker's speech of the threshold that gives ``background_rate``."""
        return _interp(background_rate, self.background, self.own)

    def to_json(self) -> dict[str, Any]:
        return {"own": list(self.own), "background": list(self.background), "fitted_on": self.fitted_on}

    @classmethod
    def from_json(cls, data: Any, where: str) -> RateMap:
        """A checked map (``where`` names the file or keyword in the error)."""
        if not isinstance(data, dict):
            raise KeysetError(f"{where}: the rate map is {type(data).__name__}, not an object")
        own, background, fitted = data.get("own"), data.get("background"), data.get("fitted_on", "")
        for label, knots in (("own", own), ("background", background)):
            if not isinstance(knots, list) or not 2 <= len(knots) <= MAX_KNOTS:
                raise KeysetError(f"{where}: the rate map's {label!r} must be a list of 2 to {MAX_KNOTS} rates")
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and MIN_RATE <= x <= MAX_RATE
                       for x in knots):
                raise KeysetError(f"{where}: the rate map's {label!r} holds a value that is not a rate "
                                  f"({MIN_RATE:g} to {MAX_RATE:g} per hour)")
            if any(b <= a for a, b in zip(knots, knots[1:])):
                raise KeysetError(f"{where}: the rate map's {label!r} is not strictly ascending")
        if len(own) != len(background):
            raise KeysetError(f"{where}: the rate map has {len(own)} 'own' and {len(background)} 'background' knots")
        if not isinstance(fitted, str):
            raise KeysetError(f"{where}: the rate map's 'fitted_on' is not text")
        return cls(tuple(float(x) for x in own), tuple(float(x) for x in background), fitted)


def _interp(x: float, xs: tuple[float, ...], ys: tuple[float, ...]) -> float:
    """Piecewise-linear in log-log space through the knots, the end segments extended."""
    lx = math.log(x if x > 0 else MIN_RATE)  # a valid curve may give 0 per hour far below its anchor
    i = 1
    while i < len(xs) - 1 and lx > math.log(xs[i]):
        i += 1
    x0, x1, y0, y1 = (math.log(v) for v in (xs[i - 1], xs[i], ys[i - 1], ys[i]))
    return math.exp(y0 + (lx - x0) * (y1 - y0) / (x1 - x0))


def rate_map_for(encoder_name: str) -> RateMap | None:
    """The shipped map of an encoder (by :attr:`Encoder.name`, e.g. ``speech-embedding-fp32``,
    ``mfcc``), or ``None`` when none was measured for it."""
    return _shipped().get(encoder_name)


@lru_cache(maxsize=1)
def _shipped() -> dict[str, RateMap]:
    path = resources.files("kwsstream") / "data" / MAPS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise KeysetError(f"{path}: the shipped rate maps are unreadable ({err}): reinstall kwsstream") from None
    maps = data.get("maps") if isinstance(data, dict) else None
    if not isinstance(maps, dict):
        raise KeysetError(f"{path}: no 'maps' object: reinstall kwsstream")
    return {name: RateMap.from_json(entry, f"{path} [{name}]") for name, entry in maps.items()}
