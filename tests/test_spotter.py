"""The streaming API: chunk-size invariance of frames and events, the stream life cycle (flush
finishes, reset(start_time) restarts) for every encoder, shared spotters, input checks, and the one
pipeline (detect_file, detect_chunks) giving what a hand-fed stream gives."""

from __future__ import annotations

import numpy as np
import pytest

from kwsstream import AudioError, Spotter, UsageError
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
    stream.reset()
    with pytest.raises(AudioError, match="NaN"):
        stream.feed(np.array([0.1, np.nan], np.float32))
    with pytest.raises(AudioError, match="1-D float"):
        stream.feed(np.zeros((10, 2), np.float32))


def test_a_flushed_stream_is_finished_until_reset(spotter, excerpt):
    """One life cycle for every stream: after flush() feeding or flushing raises a clear error;
    reset(start_time=T) starts a new stream whose events are the first run's shifted by T."""
    audio = excerpt[0]
    stream = spotter.create_stream("s")
    first = run(stream, audio, 4000)
    assert first and stream.finished
    for call in (lambda: stream.feed(audio[:100]), stream.flush, lambda: stream.encode(audio[:100]),
                 stream.encode_end, stream.flush_encoded):
        with pytest.raises(UsageError, match=r"flushed.*reset\(start_time"):
            call()
    stream.reset(start_time=12.5)
    assert not stream.finished and stream.start_time == 12.5
    again = run(stream, audio, 4000)
    assert [(e.keyword, round(e.start - 12.5, 6), round(e.end - 12.5, 6)) for e in again] == \
        [(e.keyword, round(e.start, 6), round(e.end, 6)) for e in first]
    with pytest.raises(UsageError, match="start_time"):
        stream.reset(start_time=-1)


def test_encoder_states_share_the_life_cycle(spotter, excerpt):
    state = spotter.encoder.create_state()
    whole = np.concatenate([state.push(excerpt[0]), state.flush()])
    with pytest.raises(UsageError, match="flushed"):
        state.push(excerpt[0][:100])
    with pytest.raises(UsageError, match="flushed"):
        state.flush()
    state.reset()
    np.testing.assert_array_equal(np.concatenate([state.push(excerpt[0]), state.flush()]), whole)


def test_detect_file_and_chunks_are_the_hand_fed_stream(spotter, speech, tmp_path):
    """The one pipeline: a file (any rate and channel count), and an iterator of chunks at
    another rate, give what feeding the stream by hand gives."""
    import soundfile as sf
    import soxr

    audio = load_audio(speech.stream)
    by_hand = [e.to_dict() for e in run(spotter.create_stream(str(speech.stream)), audio, 16000)]
    assert by_hand
    pipeline = spotter.detect_file(speech.stream)
    assert [e.to_dict() for e in pipeline] == by_hand
    assert pipeline.summary.stopped == "end" and pipeline.summary.detections == len(by_hand)
    native = soxr.resample(audio, 16000, 22050).astype(np.float32)
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([native, native], axis=1), 22050, subtype="FLOAT")
    chunks = (native[i:i + 777] for i in range(0, len(native), 777))
    for events in (list(spotter.detect_file(stereo)), list(spotter.detect_chunks(chunks, rate=22050))):
        assert [e.keyword for e in events] == [e["keyword"] for e in by_hand]
        assert max(abs(e.start - d["start"]) + abs(e.end - d["end"]) for e, d in zip(events, by_hand)) <= 0.05
    with pytest.raises(AudioError, match="no such file"):
        list(spotter.detect_file(tmp_path / "missing.wav"))
    with pytest.raises(AudioError, match="float samples"):
        list(spotter.detect_chunks([np.zeros(100, np.int16)]))
