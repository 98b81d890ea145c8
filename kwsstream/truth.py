"""The hit rule: when a detection finds a true keyword occurrence. One rule for the demo (which
says how it did on the bundled recording) and for every eval (benchmarks, tests): the runtime
cannot import the eval, so the rule lives here, beside nothing else.

A detection of ``keyword`` from ``start`` to ``end`` seconds finds a true occurrence when the
keyword is the same and the two spans overlap once the occurrence is widened by
:data:`TOLERANCE` on each side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

TOLERANCE = 0.3
"""Seconds the true occurrence is widened by on each side."""


def matches(keyword: str, start: float, end: float, true_keyword: str, true_start: float, true_end: float) -> bool:
    """Whether a detection of ``keyword`` from ``start`` to ``end`` s finds the true occurrence
    (same keyword, overlapping it widened by :data:`TOLERANCE` on each side)."""
    return keyword == true_keyword and start < true_end + TOLERANCE and end > true_start - TOLERANCE


def score(events: Iterable[Any], truth: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """``(true occurrences found, detections matching no true occurrence)`` for events with
    ``keyword``, ``start``, ``end`` attributes and truth rows with those keys."""
    events, truth = list(events), list(truth)

    def hit(e, t) -> bool:
        return matches(e.keyword, e.start, e.end, t["keyword"], t["start"], t["end"])

    found = sum(any(hit(e, t) for e in events) for t in truth)
    false = sum(not any(hit(e, t) for t in truth) for e in events)
    return found, false
