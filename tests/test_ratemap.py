"""Own-speech rate maps: a target means false alarms per hour of the speaker's own speech when
enrollment calibrates on the built-in background (kwsstream/ratemap.py)."""

from __future__ import annotations

import math

import pytest

from kwsstream.errors import KeysetError
from kwsstream.ratemap import RateMap, rate_map_for

MAP = RateMap(own=(1.0, 2.0, 5.0, 13.0), background=(0.003, 0.01, 0.1, 1.0))


def test_the_map_goes_through_its_knots_both_ways():
    for own, background in zip(MAP.own, MAP.background):
        assert MAP.to_background(own) == pytest.approx(background)
        assert MAP.to_own(background) == pytest.approx(own)


def test_between_and_beyond_the_knots_it_is_log_log_linear_and_invertible():
    # halfway between two knots in log-log space
    mid = math.sqrt(2.0 * 5.0)
    assert MAP.to_background(mid) == pytest.approx(math.sqrt(0.01 * 0.1))
    # beyond the ends: the end segments' slopes
    slope = math.log(2.0 / 1.0) / math.log(0.01 / 0.003)
    assert MAP.to_own(0.0003) == pytest.approx(1.0 * (0.0003 / 0.003) ** slope)
    previous = 0.0
    for rate in (1e-4, 0.02, 0.3, 1.0, 3.0, 40.0, 1e3):
        background = MAP.to_background(rate)
        assert background > previous  # monotone: a stricter target never gives a looser threshold
        assert MAP.to_own(background) == pytest.approx(rate)
        previous = background


@pytest.mark.parametrize("data, problem", [
    ({"own": [1, 2], "background": [0.1]}, "list of 2"),
    ({"own": [1, 2, 3], "background": [0.1, 0.2]}, "knots"),
    ({"own": [2, 1], "background": [0.1, 0.2]}, "ascending"),
    ({"own": [1, 2], "background": [0.1, float("nan")]}, "not a rate"),
    ({"own": [1, True], "background": [0.1, 0.2]}, "not a rate"),
    ({"own": [0, 2], "background": [0.1, 0.2]}, "not a rate"),
    ({"own": "1,2", "background": [0.1, 0.2]}, "list"),
    ([1, 2], "not an object"),
])
def test_a_malformed_map_is_refused_with_one_line(data, problem):
    with pytest.raises(KeysetError, match=problem):
        RateMap.from_json(data, "keyword 'hola'")


def test_the_shipped_maps_load_and_mean_more_false_alarms_in_own_speech_than_on_the_background():
    """The built-in encoder has a shipped map, measured on a speaker's own speech: it gives more
    false alarms there than on the other-language background at every rate a user asks."""
    mapped = rate_map_for("mfcc")
    assert mapped is not None and mapped.fitted_on
    for rate in (0.3, 1.0, 3.0, 10.0):
        assert mapped.to_background(rate) < rate
    assert rate_map_for("no-such-encoder") is None


def test_the_map_is_fitted_from_counted_rates_only_and_a_plateau_keeps_its_loosest_threshold():
    """``python -m eval ratemap`` turns the benchmark's asked-vs-got rows into knots: rates from
    fewer than 3 false alarms are too noisy to keep; where a looser threshold gets no more false
    alarms, the loosest one stands for that rate."""
    from eval.ratemap import knots

    rows = [{"asked_fa_per_hour": a, "fa_per_hour": g, "false_alarms": n} for a, g, n in
            [("0.001", "0.3", "2"), ("0.005", "1.7", "11"), ("0.01", "2.0", "13"), ("0.02", "2.0", "13"),
             ("0.1", "4.9", "32"), ("1", "13.4", "88")]]
    own, background = knots(rows, min_events=3)
    assert own == [1.7, 2.0, 4.9, 13.4]
    assert background == [0.005, 0.02, 0.1, 1.0]
    fitted = RateMap.from_json({"own": own, "background": background}, "fit")
    assert fitted.to_background(2.0) == pytest.approx(0.02)
