"""End to end on real synthetic speech through the CLI and the Python API: enroll keywords from
three voices, find them in sentences by four other voices in noise. A detection is a hit by the
project's one rule (:func:`kwsstream.truth.matches`); the CLI runs in this process
(:func:`cli_helpers.run_main`) except for one real process (nothing but JSON lines on stdout)."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_kwsstream, run_main

from kwsstream import Spotter
from kwsstream.audio import iter_audio_blocks
from kwsstream.truth import TOLERANCE, matches


def run_cli(*args):
    proc = run_main(*args)
    assert proc.returncode == 0, f"kwsstream {' '.join(map(str, args))} exited {proc.returncode}: {proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def keyset(speech, tmp_path_factory):
    path = tmp_path_factory.mktemp("kws") / "words.kws"
    for word, files in speech.examples.items():
        run_cli("enroll", "-k", path, word, *files)
    return path


def check_detections(events, truth):
    """Every occurrence found, its start and end within TOLERANCE of the true ones; no detection
    elsewhere."""
    def hit(e, t) -> bool:
        return matches(e["keyword"], e["start"], e["end"], t.keyword, t.start, t.end)

    for t in truth:
        found = [e for e in events if hit(e, t)]
        assert found, f"missed {t}; got {events}"
        assert all(abs(e["start"] - t.start) <= TOLERANCE and abs(e["end"] - t.end) <= TOLERANCE for e in found), (t, found)
    for e in events:
        assert any(hit(e, t) for t in truth), f"false detection {e}; truth {truth}"


def test_detect_cli_finds_every_keyword_from_other_voices(speech, keyset):
    proc = run_kwsstream("detect", "-k", keyset, speech.stream, "--json")  # the real process
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(speech.truth) == 6
    for e in events:
        assert set(e) >= {"keyword", "start", "end", "cost", "source"}
        assert e["source"] == str(speech.stream) and e["start"] < e["end"] and e["cost"] < e["threshold"]
    check_detections(events, speech.truth)
    assert proc.stdout.count("\n") == len(events)  # nothing but JSON lines on stdout


def test_detect_is_silent_without_keywords(speech, keyset):
    proc = run_cli("detect", "-k", keyset, speech.negative, "--json")
    assert proc.stdout == ""
    proc = run_cli("detect", "-k", keyset, speech.negative)
    assert "0 detection(s)" in proc.stderr


def test_python_api_streams_the_same_detections(speech, keyset):
    spotter = Spotter.load(keyset)
    stream = spotter.create_stream(source="api")
    events = []
    for block in iter_audio_blocks(speech.stream, block_seconds=0.37):
        events += stream.feed(block)
    events += stream.flush()
    check_detections([e.to_dict() for e in events], speech.truth)
    assert [e.start for e in events] == sorted(e.start for e in events)
    cli = [json.loads(line) for line in run_cli("detect", "-k", keyset, speech.stream, "--json").stdout.splitlines()]
    assert [(e.keyword, round(e.start, 3), round(e.cost, 4)) for e in events] == [
        (e["keyword"], e["start"], e["cost"]) for e in cli
    ]
