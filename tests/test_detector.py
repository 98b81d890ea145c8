"""The detector's state machine on short hand-written score sequences (one frame per entry).

Each case is small enough to follow by hand: the per-keyword score (best template) at each
frame, the start frame of that frame's match, and the events expected as
(keyword, start frame, end frame, cost).
"""

from __future__ import annotations

import numpy as np
import pytest

from kwsstream.detector import DetectorOptions, DetectorState, detect_offline

INF = np.inf
RATE = 1.0  # one frame per "second": lookahead and refractory below are in frames


def run(scores, starts, threshold, lookahead=2, refractory=3, chunks=None):
    """Feed one keyword's scores (chunked as given) and return (keyword, start, end, cost) rows."""
    score = np.array(scores, np.float32)[:, None]
    start = np.array(starts, np.int64)[:, None]
    template = np.zeros_like(start)
    state = DetectorState(np.array([threshold]), RATE, DetectorOptions(lookahead=lookahead, refractory=refractory))
    cuts = chunks or [len(scores)]
    rows, at = [], 0
    for n in cuts:
        rows.append(state.push(score[at:at + n], start[at:at + n], template[at:at + n], at))
        at += n
    rows.append(state.flush())
    out = np.concatenate(rows)
    return [(int(k), int(s), int(e), round(float(c), 3)) for k, _, s, e, c in out]


def test_a_dip_fires_once_at_its_minimum_after_the_lookahead():
    # frame:       0    1    2    3    4    5    6    7
    scores = [0.9, 0.5, 0.3, 0.4, 0.6, 0.9, 0.9, 0.9]
    starts = [0, 0, 0, 0, 0, 5, 6, 7]
    # below 0.45 from frame 2; the minimum 0.3 at frame 2 survives frames 3 and 4 (lookahead 2)
    assert run(scores, starts, 0.45) == [(0, 0, 2, 0.3)]


def test_nothing_below_the_threshold_gives_nothing():
    assert run([0.9, 0.5, 0.46, 0.5], [0, 0, 0, 0], 0.45) == []
    assert run([INF, INF, INF], [0, 1, 2], 0.45) == []


def test_a_lower_score_within_the_lookahead_replaces_the_candidate():
    scores = [0.4, 0.35, 0.2, 0.6, 0.6, 0.6]
    starts = [0, 0, 1, 1, 1, 5]
    assert run(scores, starts, 0.45) == [(0, 1, 2, 0.2)]


def test_the_same_word_matched_on_gives_one_event():
    """A path that runs on past a detected word (same start frame, later ends, still under the
    threshold) is the same spoken word: no second event, even after the refractory period."""
    scores = [0.3, 0.5, 0.5, 0.5, 0.5, 0.35, 0.5, 0.5, 0.5, 0.5, 0.34, 0.5, 0.5]
    starts = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert run(scores, starts, 0.45, lookahead=2, refractory=3) == [(0, 0, 0, 0.3)]


def test_a_new_word_after_the_refractory_period_fires_again():
    scores = [0.3, 0.5, 0.5, 0.5, 0.5, 0.35, 0.5, 0.5, 0.5]
    starts = [0, 0, 0, 0, 0, 2, 2, 2, 2]  # frame 5's match starts at frame 2, after the first end
    assert run(scores, starts, 0.45, lookahead=2, refractory=3) == [(0, 0, 0, 0.3), (0, 2, 5, 0.35)]


def test_refractory_keeps_the_keyword_quiet_after_a_detection():
    # a second, separate match ending at frame 3 falls inside the refractory period (end 0 + 3)
    scores = [0.3, 0.5, 0.5, 0.2, 0.5, 0.5, 0.5]
    starts = [0, 0, 0, 2, 2, 2, 2]
    assert run(scores, starts, 0.45, lookahead=2, refractory=3) == [(0, 0, 0, 0.3)]
    assert run(scores, starts, 0.45, lookahead=2, refractory=1) == [(0, 0, 0, 0.3), (0, 2, 3, 0.2)]


def test_flush_emits_an_open_candidate():
    assert run([0.9, 0.9, 0.3], [0, 1, 1], 0.45, lookahead=5) == [(0, 1, 2, 0.3)]


@pytest.mark.parametrize("chunks", [[1] * 13, [4, 9], [13], [2, 2, 2, 7]])
def test_events_do_not_depend_on_how_scores_are_chunked(chunks):
    scores = [0.9, 0.3, 0.5, 0.5, 0.5, 0.9, 0.2, 0.25, 0.9, 0.9, 0.9, 0.1, 0.9]
    starts = [0, 1, 1, 1, 1, 5, 5, 6, 8, 9, 10, 9, 12]
    assert run(scores, starts, 0.45, chunks=chunks) == run(scores, starts, 0.45)


def test_keywords_are_independent_and_each_has_its_own_threshold():
    score = np.array([[0.3, 0.4], [0.5, 0.2], [0.9, 0.9], [0.9, 0.9], [0.9, 0.9]], np.float32)
    start = np.zeros((5, 2), np.int64)
    template = np.array([[0, 1], [0, 1], [0, 1], [0, 1], [0, 1]], np.int64)
    rows = detect_offline(score, start, template, np.array([0.35, 0.25]), RATE, DetectorOptions(2, 3))
    assert [(int(k), int(t), int(e), round(float(c), 2)) for k, t, _, e, c in rows] == [(0, 0, 0, 0.3), (1, 1, 1, 0.2)]


def test_bad_options_are_refused():
    from kwsstream.errors import UsageError

    with pytest.raises(UsageError):
        DetectorOptions(lookahead=-1)
    with pytest.raises(UsageError):
        DetectorState(np.array([[0.3]]), RATE, DetectorOptions())
