"""The microphone, end to end and for real: no mocks of sounddevice; and the one pipeline's
live behaviour (gaps, drops, rates) through test sources.

A private PulseAudio server (``eval.pulse``) gives a null sink whose monitor is the default
input: ``paplay`` into the sink is what ``kwsstream listen`` hears, through PortAudio, ALSA's pulse
plugin and PulseAudio, resampled by PulseAudio to the device's 44.1 kHz and by kwsstream back to
16 kHz.

How the timing is established: ``listen`` prints its "listening" line on stderr as soon as its
input stream has started (stream time zero). The test starts ``listen``, reads that line (time
``t_listen`` on the system-wide monotonic clock), then starts ``paplay`` (time ``t_play``) on a
file whose keyword lies at a known place after a lead-in of silence. The keyword's expected stream
time is its place in the file plus ``t_play - t_listen``; stream zero comes a little before
``t_listen`` and paplay's audio reaches the sink a little after ``t_play`` (both a few tens of ms,
measured), well inside the 0.3 s tolerance. ``listen`` opens the device before it loads the
spotter: a keyword played 0.3 s after launch, while it still loads, is heard at its true time.

Faults are injected through test sources, not production options: a paced file whose consumer
stalls for 2 s (a processing hiccup) must drop the oldest audio and keep event times true (a
listener that did not resynchronise would be seconds early).
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from cli_helpers import one_line_error

from eval.pulse import PulseServer, client_env, missing
from kwsstream import Spotter
from kwsstream.audio import load_audio
from kwsstream.pipeline import BlockQueue, FileSource, Pipeline

TOLERANCE = 0.3  # seconds
SR = 16_000
BEFORE, AFTER = 3.0, 1.0  # seconds of the stream kept around the keyword
LEAD = 0.5  # seconds of silence before the excerpt in the played file
STALL_AT, STALL_SECONDS = 0.3, 2.0  # the consumer stalls at 0.3 s for 2 s: with a 0.5 s queue, ~1.5 s are dropped
STALL_LEAD = 2.5  # lead-in then (the excerpt starts after the stall and the catch-up)
PLAY_AFTER_LAUNCH = 0.3  # seconds between starting listen and playing the keyword
TAIL = 0.5  # seconds listened after the file ends (the excerpt ends 1 s after its keyword)
STARTUP_TIMEOUT = 60.0

MISSING = missing()
needs_pulse = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def kwsstream(*args) -> list[str]:
    return [sys.executable, "-m", "kwsstream", *map(str, args)]


@pytest.fixture(scope="module")
def pulse(tmp_path_factory):
    server = PulseServer(tmp_path_factory.mktemp("pulse"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keyset(speech, tmp_path_factory) -> Path:
    from kwsstream.encoders import load_encoder
    from kwsstream.enroll import enroll_examples
    from kwsstream.keyset import save_keyset

    keywords = enroll_examples(load_encoder("mfcc"), speech.examples)
    path = tmp_path_factory.mktemp("live") / "live.kws"
    save_keyset(keywords, path)
    return path


@pytest.fixture(scope="module")
def excerpts(speech, keyset):
    """(positive excerpt, where its keyword lies in it, negative excerpt). The positive one is the
    stream around the occurrence that ``detect``-style streaming of the excerpt itself finds with
    the widest margin (the causal CMN needs a few seconds of speech before a keyword), so a failure
    below is the live path's, not the excerpt's."""
    audio, negative = load_audio(speech.stream), load_audio(speech.negative)
    spotter = Spotter.load(keyset)

    def spotted(clip):
        stream = spotter.create_stream()
        return stream.feed(np.concatenate([np.zeros(int(LEAD * SR), np.float32), clip])) + stream.flush()

    candidates = []
    for t in speech.truth:
        if any(o is not t and o.start < t.end + AFTER and o.end > t.start - BEFORE for o in speech.truth):
            continue
        first = int((t.start - BEFORE) * SR)
        clip = audio[first: int((t.end + AFTER) * SR)]
        events = spotted(clip)
        if [e.keyword for e in events] == [t.keyword]:
            where = (t.keyword, t.start - first / SR, t.end - first / SR)
            candidates.append((events[0].cost - events[0].threshold, clip, where))
    assert candidates, "no keyword excerpt is found by streaming the excerpt itself"
    _, positive, where = min(candidates, key=lambda c: c[0])
    middle = len(negative) // 2
    negative = negative[middle - 2 * SR: middle + 2 * SR]
    assert spotted(negative) == [], "the negative excerpt itself gives detections"
    return positive, where, negative


def played_file(folder: Path, clip: np.ndarray, lead: float, name: str) -> Path:
    path = folder / name
    sf.write(path, np.concatenate([np.zeros(int(lead * SR), np.float32), clip]), SR, subtype="PCM_16")
    return path


def listen_to(pulse: PulseServer, keyset: Path, path: Path, *args):
    """Start ``listen --json``, wait for "listening", play ``path``; returns (process output,
    stderr, play offset in stream time)."""
    seconds = sf.info(str(path)).duration + TAIL
    proc = subprocess.Popen(kwsstream("listen", "-k", keyset, "--json", "--seconds", f"{seconds:.2f}", *args),
                            env=pulse.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = wait_for_line(proc, "listening")
    t_listen = time.monotonic()  # a little after stream time zero
    t_play = time.monotonic()  # a little before the file's first sample reaches the sink
    player = pulse.play(path)
    out, err = proc.communicate(timeout=seconds + 60)
    assert player.wait(timeout=30) == 0, player.stderr.read()
    assert proc.returncode == 0, first + err
    return out, first + err, t_play - t_listen


def wait_for_line(proc: subprocess.Popen, needle: str) -> str:
    """Read stderr until a line containing ``needle`` (in a thread, so a child that hangs fails
    the test after :data:`STARTUP_TIMEOUT` instead of blocking it); returns what was read."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in proc.stderr:
            lines.put(line)
            if needle in line:
                return
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen, deadline = "", time.monotonic() + STARTUP_TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen += line
        if needle in line:
            return seen
    proc.kill()
    raise AssertionError(f"no {needle!r} line in {STARTUP_TIMEOUT} s; exit {proc.wait()}; stderr: {seen}")


def json_events(out: str) -> list[dict]:
    events = [json.loads(line) for line in out.splitlines()]
    assert out.count("\n") == len(events)  # nothing but JSON lines on stdout
    return events


def check_time(events: list[dict], where: tuple, offset: float, source: str = "mic:", note: str = "") -> None:
    keyword, start, end = where
    assert [e["keyword"] for e in events] == [keyword], f"{events} {note}"
    e = events[0]
    late = (e["start"] - start - offset, e["end"] - end - offset)
    assert max(map(abs, late)) <= TOLERANCE, \
        f"event {e} is {late} s off the keyword at {start + offset:.3f}-{end + offset:.3f} s {note}"
    assert e["source"].startswith(source) and e["cost"] < e["threshold"]


@needs_pulse
def test_listen_hears_the_keyword_at_the_right_time(pulse, keyset, excerpts, tmp_path):
    positive, (keyword, start, end), _ = excerpts
    out, err, offset = listen_to(pulse, keyset, played_file(tmp_path, positive, LEAD, "pos.wav"))
    check_time(json_events(out), (keyword, start + LEAD, end + LEAD), offset)
    assert "44100 Hz -> 16 kHz" in err and "stopped after" in err and "dropped" not in err.split("stopped")[0]


@needs_pulse
def test_listen_reports_nothing_without_the_keyword(pulse, keyset, excerpts, tmp_path):
    out, err, _ = listen_to(pulse, keyset, played_file(tmp_path, excerpts[2], LEAD, "neg.wav"))
    assert out == "" and "0 detection(s)" in err


class StallingSource:
    """A test source: a file paced in real time into a small queue (like a microphone) whose
    consumer stalls once: the pipeline's ``get`` at ``at`` seconds of stream time sleeps
    ``seconds`` while the producer goes on, so the queue overflows and the oldest audio goes."""

    def __init__(self, path: Path, at: float, seconds: float, queue_seconds: float = 0.5):
        self.inner = FileSource(path, realtime=True, queue_seconds=queue_seconds)
        self.rate, self.name = self.inner.rate, "mic:stalling"
        self.at, self.seconds, self.stalled = at, seconds, False
        self.taken = 0

    def __getattr__(self, name):  # captured, overflows, finished, start, close, lost
        return getattr(self.inner, name)

    def get(self, timeout: float):
        if not self.stalled and self.taken >= self.at * self.rate:
            self.stalled = True
            time.sleep(self.seconds)
        item = self.inner.get(timeout)
        if item is not None:
            self.taken = item[0] + len(item[1])
        return item


def test_falling_behind_drops_oldest_audio_and_keeps_times_true(keyset, excerpts, tmp_path):
    positive, (keyword, start, end), _ = excerpts
    path = played_file(tmp_path, positive, STALL_LEAD, "late.wav")
    spotter, said = Spotter.load(keyset), []
    source = StallingSource(path, STALL_AT, STALL_SECONDS)
    pipeline = Pipeline(spotter.create_stream(source=source.name), source, warn=said.append)
    events = [e.to_dict() for e in pipeline]
    warnings = [line for line in said if line.startswith("processing fell behind: dropped")]
    assert len(warnings) == 1 and pipeline.summary.drops == 1, said
    assert 1.0 <= pipeline.summary.dropped_seconds <= 2.0, said
    check_time(events, (keyword, start + STALL_LEAD, end + STALL_LEAD), 0.0, source="mic:stalling")


@needs_pulse
def test_listen_opens_the_device_first_and_hears_a_keyword_said_while_it_loads(pulse, keyset, excerpts, tmp_path):
    """The keyword file starts playing 0.3 s after ``listen`` is launched, before its spotter
    has loaded: what was said is captured and buffered meanwhile, and found at its true time."""
    positive, (keyword, start, end), _ = excerpts
    path = played_file(tmp_path, positive, LEAD, "early.wav")
    seconds = sf.info(str(path)).duration + PLAY_AFTER_LAUNCH + TAIL
    launched = time.monotonic()
    proc = subprocess.Popen(kwsstream("listen", "-k", keyset, "--json", "--seconds", f"{seconds:.2f}"),
                            env=pulse.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(max(0.0, launched + PLAY_AFTER_LAUNCH - time.monotonic()))
    t_play = time.monotonic()
    player = pulse.play(path)
    first = wait_for_line(proc, "listening")
    t_listen = time.monotonic()  # a little after stream time zero
    out, err = proc.communicate(timeout=seconds + 60)
    assert player.wait(timeout=30) == 0, player.stderr.read()
    assert proc.returncode == 0, first + err
    late = f"(capture started {t_listen - launched:.2f} s after launch)"
    assert "dropped" not in err.split("stopped")[0], first + err + late
    check_time(json_events(out), (keyword, start + LEAD, end + LEAD), t_play - t_listen, note=late)


@needs_pulse
def test_ctrl_c_stops_listen_and_the_microphone_demo_cleanly(pulse, keyset):
    """Both at once (they only listen): the demo finds the microphone and says so; Ctrl-C ends
    each with exit 0, a summary and nothing on stdout."""
    procs = [subprocess.Popen(kwsstream(*args), env=pulse.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in (("listen", "-k", keyset), ("demo",))]
    seen = [wait_for_line(proc, "listening on input device") for proc in procs]
    assert "microphone found" in seen[1], seen[1]
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for proc, before in zip(procs, seen):
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and out == "", before + err
        # the summary is the last line (a loaded machine may add 'processing fell behind' warnings first)
        assert err.strip().splitlines()[-1].startswith("stopped (Ctrl-C) after") and "Traceback" not in err, before + err


def test_demo_falls_back_to_the_recording_without_a_microphone(tmp_path):
    proc = subprocess.Popen(kwsstream("demo"), env=no_server_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = wait_for_line(proc, "playing the bundled recording")
    assert "no microphone: no input device" in seen and "at real time" in seen, seen
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "found 0 of 0" in err, seen + err


@needs_pulse
def test_devices_lists_the_virtual_microphone(pulse):
    proc = subprocess.run(kwsstream("devices"), env=pulse.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()[1:]
    assert any(row.endswith(" pulse") for row in rows), proc.stdout
    assert any(row.startswith("*") and row.endswith(" default") for row in rows), proc.stdout


def no_server_env(folder: Path) -> dict:
    return client_env(folder / "nothing-here", folder / "client")


@needs_pulse
def test_device_errors_are_one_clear_line(pulse, keyset, tmp_path):
    nothing = no_server_env(tmp_path)
    runs = [  # (arguments, environment, what the one line must say); run side by side
        (("--device", "nosuchmic"), pulse.env, ("nosuchmic", "'pulse'", "'default'")),
        (("--device", "99"), pulse.env, ("no input device with id 99",)),
        (("--rate", "100"), pulse.env, ("does not support 100 Hz",)),
        ((), nothing, ("no input device",)),
    ]
    procs = [subprocess.Popen(kwsstream("listen", "-k", keyset, "--seconds", "1", *args), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args, env, _ in runs]
    devices = subprocess.run(kwsstream("devices"), env=nothing, capture_output=True, text=True, timeout=60)
    for proc, (_, _, needles) in zip(procs, runs):
        out, err = proc.communicate(timeout=60)
        one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), *needles,
                       prefix="kwsstream: error: ", no_stdout=True)
    assert devices.returncode == 0 and devices.stdout == "" and "no input devices" in devices.stderr


@needs_pulse
def test_a_device_that_goes_away_ends_with_one_line(keyset, tmp_path):
    server = PulseServer(tmp_path / "pulse")
    try:
        proc = subprocess.Popen(kwsstream("listen", "-k", keyset, "--json"), env=server.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        seen = wait_for_line(proc, "listening")
        time.sleep(0.5)
    finally:
        server.stop()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and out == "", seen + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kwsstream: error: input device 'default' stopped"), seen + err


class BlocksSource:
    """A source whose blocks are all queued already (the producer side of a test), some missing."""

    def __init__(self, items: list[tuple[int, np.ndarray]], rate: int):
        self.rate, self.name, self.overflows, self.finished = rate, "blocks", 0, True
        self.blocks = BlockQueue(len(items) + 1)
        for index, block in items:
            self.blocks.put_newest(index, block[:, None])
        self.captured = items[-1][0] + len(items[-1][1])

    def start(self) -> None:
        pass

    def get(self, timeout: float):
        return self.blocks.get(timeout)

    def close(self) -> None:
        pass

    def lost(self, seconds: float) -> None:
        return None


def run_listener(spotter, items, rate=SR, seconds=None):
    said = []
    pipeline = Pipeline(spotter.create_stream(source="blocks"), BlocksSource(items, rate), seconds=seconds,
                        warn=said.append)
    events = list(pipeline)
    return pipeline.summary, events, said


def test_a_gap_restarts_the_stream_at_the_true_time(speech, keyset):
    """Blocks lost between two keywords: what the listener reports equals a stream that ends at the
    gap plus a fresh stream that starts after it, with its times shifted by the gap's end."""
    spotter, audio = Spotter.load(keyset), load_audio(speech.stream)
    block = int(0.05 * SR)
    t = sorted(speech.truth, key=lambda o: o.start)
    gap_start = int((t[0].end + 0.5) * SR) // block * block
    gap_end = gap_start + 40 * block  # 2 s
    assert gap_end < t[1].start * SR, "the gap must fall between two keywords"
    items = [(i, audio[i: i + block]) for i in range(0, len(audio), block) if not gap_start <= i < gap_end]
    summary, events, said = run_listener(spotter, items)
    expected = []
    for first, last in ((0, gap_start), (gap_end, len(audio))):
        stream = spotter.create_stream(source="blocks")
        stream.reset(start_time=first / SR)
        expected += stream.feed(audio[first:last]) + stream.flush()
    assert [e.to_dict() for e in events] == [e.to_dict() for e in expected]
    assert summary.drops == 1 and summary.dropped_seconds == pytest.approx(2.0) and summary.stopped == "end"
    assert any("dropped 2.00 s" in line for line in said), said
    late = [e for e in events if e.start > gap_end / SR]
    assert late and all(any(o.keyword == e.keyword and abs(o.start - e.start) <= TOLERANCE for o in t) for e in late)


def test_any_native_rate_gives_the_same_detections_and_seconds_stops(speech, keyset):
    """44.1 kHz blocks (resampled in a streaming way) find what 16 kHz blocks find, at the same
    times; ``seconds`` stops the stream exactly there."""
    import soxr

    spotter, audio = Spotter.load(keyset), load_audio(speech.stream)
    native = soxr.resample(audio, SR, 44_100).astype(np.float32)
    runs = []
    for signal_, rate in ((audio, SR), (native, 44_100)):
        block = int(0.05 * rate)
        runs.append(run_listener(spotter, [(i, signal_[i: i + block]) for i in range(0, len(signal_), block)], rate))
    (_, at16, _), (_, at44, _) = runs
    assert [e.keyword for e in at16] == [e.keyword for e in at44] and len(at16) == len(speech.truth)
    assert max(abs(a.start - b.start) + abs(a.end - b.end) for a, b in zip(at16, at44)) <= 0.05
    cut = sorted(speech.truth, key=lambda o: o.start)[2].start - 0.2  # before the third keyword
    block = int(0.05 * SR)
    items = [(i, audio[i: i + block]) for i in range(0, len(audio), block)]
    summary, events, _ = run_listener(spotter, items, seconds=cut)
    assert summary.seconds == pytest.approx(cut, abs=1 / SR) and summary.stopped == "seconds"
    assert [e.to_dict() for e in events] == [e.to_dict() for e in at16[:2]]
