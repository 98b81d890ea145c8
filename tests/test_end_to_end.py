"""End to end on real synthetic speech through the CLI and the Python API: enroll keywords from
three voices, find them in sentences by four other voices in noise."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kwsstream import Spotter
from kwsstream.audio import iter_audio_blocks

TOLERANCE = 0.3  # seconds


def run_cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "kwsstream", *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"kwsstream {' '.join(map(str, args))} exited {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def keyset(speech, tmp_path_factory):
    path = tmp_path_factory.mktemp("kws") / "words.kws"
    for word, files in speech.examples.items():
        run_cli("enroll", "-k", path, word, *files)
    return path


def matches(event_keyword, start, end, truth):
    return [t for t in truth if t.keyword == event_keyword and start < t.end + TOLERANCE and end > t.start - TOLERANCE
            and abs(start - t.start) <= TOLERANCE and abs(end - t.end) <= TOLERANCE]


def check_detections(events, truth):
    """Every occurrence found with start and end within TOLERANCE; no detection elsewhere."""
    for t in truth:
        assert any(matches(e["keyword"], e["start"], e["end"], [t]) for e in events), f"missed {t}; got {events}"
    for e in events:
        assert matches(e["keyword"], e["start"], e["end"], truth), f"false detection {e}; truth {truth}"


def test_detect_cli_finds_every_keyword_from_other_voices(speech, keyset):
    proc = run_cli("detect", "-k", keyset, speech.stream, "--json")
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
