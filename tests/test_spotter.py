"""The streaming API: chunk-size invariance of frames and events, reset, shared spotters, input checks."""

from __future__ import annotations

import numpy as np
import pytest

from kwsstream import AudioError, Spotter
from kwsstream.audio import load_audio
from kwsstream.encoders.mfcc import MfccEncoder
from kwsstream.enroll import enroll_examples


@pytest.fixture(scope="module")
def spotter(speech):
    return Spotter(enroll_examples(MfccEncoder(), speech.examples))


@pytest.fixture(scope="module")
def excerpt(speech):
    """Six seconds of the noisy stream around its first keyword."""
    first = speech.truth[0]
    audio = load_audio(speech.stream)
    a = max(0, int((first.start - 3.0) * 16000))
    return audio[a : a + 6 * 16000], first.keyword, first.start - a / 16000


def run(stream, audio, chunk):
    events = []
    for i in range(0, len(audio), chunk):
        events += stream.feed(audio[i : i + chunk])
    return events + stream.flush()


def test_events_do_not_depend_on_chunk_size(spotter, excerpt):
    audio, keyword, when = excerpt
    results = {chunk: run(spotter.create_stream("x"), audio, chunk) for chunk in [1, 160, 1000, 16000]}
    reference = results[16000]
    assert any(e.keyword == keyword and abs(e.start - when) < 0.3 for e in reference)
    for chunk, events in results.items():
        assert events == reference, f"chunk {chunk} gave other events"


def test_frames_do_not_depend_on_chunk_size(spotter, excerpt):
    audio = excerpt[0]
    whole = spotter.encoder.encode(audio)
    for chunk in [1, 160, 1000, 16000]:
        state = spotter.encoder.create_state()
        frames = np.concatenate([state.push(audio[i : i + chunk]) for i in range(0, len(audio), chunk)] + [state.flush()])
        np.testing.assert_array_equal(frames, whole)


def test_reset_and_many_streams_share_one_spotter(spotter, excerpt):
    audio = excerpt[0]
    first = run(spotter.create_stream("a"), audio, 4000)
    assert first
    b, c = spotter.create_stream("b"), spotter.create_stream("c")
    got_b, got_c = [], []
    for i in range(0, len(audio), 3000):  # two streams of one spotter, fed in turn
        got_b += b.feed(audio[i : i + 3000])
        got_c += c.feed(audio[::-1][i : i + 3000])  # the other stream hears something else
    got_b += b.flush()
    strip = lambda events: [(e.keyword, e.start, e.end, e.cost) for e in events]  # noqa: E731
    assert strip(got_b) == strip(first)
    b.reset()
    assert strip(run(b, audio, 4000)) == strip(first)


def test_event_times_are_monotonic_and_inside_the_stream(spotter, speech):
    audio = load_audio(speech.stream)
    events = run(spotter.create_stream(), audio, 16000)
    assert events
    ends = [e.end for e in events]
    assert all(e.start < e.end for e in events)
    assert ends == sorted(ends) and ends[-1] <= len(audio) / 16000 + 0.05


def test_empty_and_bad_input(spotter):
    stream = spotter.create_stream("s")
    assert stream.feed(np.zeros(0, np.float32)) == []
    assert stream.flush() == []
    with pytest.raises(AudioError, match="NaN"):
        stream.feed(np.array([0.1, np.nan], np.float32))
    with pytest.raises(AudioError, match="1-D float"):
        stream.feed(np.zeros((10, 2), np.float32))
