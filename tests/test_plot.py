"""``kwsstream detect --plot`` and :mod:`kwsstream.plot`: the picture has each keyword's score
curve (gaps where the gate held frames back), its threshold line and the detections in it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from cli_helpers import one_line_error
from cli_helpers import run_main as cli

from kwsstream.demo import data_dir

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def keyset(tmp_path_factory):
    path = tmp_path_factory.mktemp("plot") / "k.kws"
    for word in ("mariposa", "biblioteca"):
        files = sorted(data_dir().glob(f"{word}_*.flac"))
        proc = cli("enroll", "-k", path, word, *files, "--encoder", "mfcc")
        assert proc.returncode == 0, proc.stderr
    return path


@pytest.fixture(scope="module")
def trace(keyset):
    from kwsstream import Spotter
    from kwsstream.plot import trace_scores

    return trace_scores(Spotter.load(keyset), data_dir() / "stream.flac")


def test_the_trace_holds_the_detectors_scores_and_the_same_events_as_detect(keyset, trace):
    from kwsstream import Spotter

    spotter = Spotter.load(keyset)
    assert trace.names == ["mariposa", "biblioteca"]
    assert trace.scores.shape == (len(trace.times), 2) and np.all(np.diff(trace.times) > 0)
    assert np.isinf(trace.scores).any() and np.isfinite(trace.scores).any()  # gated frames and scored ones
    assert trace.events == list(spotter.detect_file(data_dir() / "stream.flac"))
    assert {e.keyword for e in trace.events} == {"mariposa", "biblioteca"}
    for e in trace.events:  # each detection is where its keyword's curve is under its threshold
        k = trace.names.index(e.keyword)
        near = (trace.times >= e.start) & (trace.times <= e.end + 0.02)
        assert np.min(trace.scores[near, k]) == pytest.approx(e.cost, abs=1e-5) and e.cost < trace.thresholds[k]
    assert trace.seconds == pytest.approx(30.45, abs=0.02) and trace.level_db.max() > -30


def test_the_figure_has_a_curve_a_threshold_line_and_markers_per_keyword(trace):
    from kwsstream.plot import figure_scores

    fig = figure_scores(trace)
    top, bottom = fig.axes
    lines = {line.get_label(): line for line in top.get_lines()}
    for k, name in enumerate(trace.names):
        y = np.asarray(lines[name].get_ydata(), float)
        assert len(y) == len(trace.times)
        assert np.isfinite(y).sum() == np.isfinite(trace.scores[:, k]).sum() > 0  # gaps where the gate held
        assert np.allclose(lines[f"{name} threshold"].get_ydata(), trace.thresholds[k])
        mine = [e for e in trace.events if e.keyword == name]
        markers = lines[f"{name} detections"]
        assert markers.get_marker() not in (None, "None", "")
        assert np.allclose(markers.get_xdata(), [e.end for e in mine]) and len(mine) >= 1
        assert np.allclose(markers.get_ydata(), [e.cost for e in mine])
    assert len(bottom.get_lines()) == 1 and len(bottom.get_lines()[0].get_xdata()) == len(trace.level_db)


def test_samples_give_the_same_trace_as_the_file(keyset, trace):
    import soundfile as sf

    from kwsstream import Spotter
    from kwsstream.plot import trace_scores

    audio, rate = sf.read(data_dir() / "stream.flac", dtype="float32")
    again = trace_scores(Spotter.load(keyset), audio, rate=rate)
    assert [(e.keyword, e.start, e.end) for e in again.events] == [(e.keyword, e.start, e.end) for e in trace.events]
    assert np.array_equal(again.scores, trace.scores)


def test_detect_plot_writes_one_png_per_file(keyset, tmp_path):
    one = cli("detect", "-k", keyset, data_dir() / "stream.flac", "--plot", tmp_path / "s.png", "--json")
    assert one.returncode == 0, one.stderr
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(one.stdout.splitlines()) >= 3  # the detections still come out
    two = cli("detect", "-k", keyset, data_dir() / "stream.flac", data_dir() / "mariposa_1.flac",
              "--plot", tmp_path / "scores.png")
    assert two.returncode == 0, two.stderr
    for stem in ("stream", "mariposa_1"):
        assert (tmp_path / f"scores-{stem}.png").stat().st_size > 10_000
    assert not (tmp_path / "scores.png").exists()


def test_plot_without_matplotlib_is_one_line_naming_the_extra(keyset, tmp_path, monkeypatch):
    one_line_error(cli("detect", "-k", keyset, data_dir() / "stream.flac", "--plot", tmp_path / "s.svg"),
                   ".png", prefix="kwsstream: error: ")
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = cli("detect", "-k", keyset, data_dir() / "stream.flac", "--plot", tmp_path / "s.png")
    one_line_error(result, "matplotlib", "pip install -e '.[plot]'", prefix="kwsstream: error: ", no_stdout=True)
