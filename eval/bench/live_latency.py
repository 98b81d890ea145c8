"""Live detection latency and a soak run through the real microphone path (PulseAudio).

    python -m eval.bench.live_latency [--encoder mfcc models/speech-embedding.onnx] [--minutes 3]

For each encoder: enroll three Spanish keywords from three eSpeak NG voices, build a scene of four
*other* voices saying them inside sentences (20 dB noise), start a private PulseAudio server whose
null sink's monitor is the default input (the tests' virtual microphone, ``eval/pulse.py``),
start ``kwsstream listen --json --seconds 60*MINUTES`` on it as a child process and play the scene
into the sink over and over (``paplay``) until the time is up.

* Latency of a detected occurrence: the time its JSON line reaches this process minus the time the
  end of the spoken keyword was played (paplay's start + the keyword's end in the file; paplay's own
  start-up, a few tens of ms, is counted in, so the figures are upper bounds). It includes
  PortAudio's block, PulseAudio's buffering, the resampler, the encoder's look-ahead, the matcher's
  block and the detector's look-ahead, and the pipe.
* The same for *every* event, from its detected end in stream time (zero: when the "listening"
  line arrived, a little after the true zero): this needs no true keyword, so it also times models
  whose detections are not keywords (random-weight wav2vec2 with ``--threshold``).
* Soak: the child's resident memory (``VmRSS``) right after it starts listening and at the end,
  sampled every few seconds in between (the peak is ``VmHWM``), its CPU seconds per audio second,
  and what it detected against the truth.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from eval.bench import machine
from eval.espeak import Voice
from eval.scenes import build_scene, enrollment_clips, write_audio

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = ["biblioteca", "mariposa", "computadora"]
ENROLL_VOICES = [Voice("es", "m1", 160, 45), Voice("es-419", "f2", 190, 60), Voice("es", "klatt", 175, 50)]
OTHER_VOICES = [Voice("es-419", "m3", 150, 40), Voice("es", "f4", 200, 65), Voice("es-419", "m7", 170, 55),
                Voice("es", "f1", 140, 50)]
SEED = 77
SNR_DB = 20
TOLERANCE = 0.3  # seconds between an event and a true occurrence (after the play offset)
RSS_EVERY = 5.0  # seconds between memory samples
STARTUP_TIMEOUT = 120.0
FALSE_SHOWN = 8  # false detections listed in the report


@dataclass
class Run:
    """What one listening run gave."""

    latencies: list = field(default_factory=list)  # end of the spoken keyword -> event line
    after_end: list = field(default_factory=list)  # every event: its detected end (stream time) -> its line
    expected: int = 0
    false: list = field(default_factory=list)  # (keyword, seconds into the scene play, cost)
    rss_kib: list = field(default_factory=list)  # (seconds since listening, VmRSS)
    peak_kib: int = 0
    cpu_seconds: float = 0.0
    audio_seconds: float = 0.0
    summary: str = ""


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) and CPU seconds of a live process."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    out["cpu"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def make_keyset(folder: Path, encoder_spec: str) -> Path:
    from kwsstream.encoders import load_encoder
    from kwsstream.enroll import enroll
    from kwsstream.keyset import save_keyset

    encoder, keyset = load_encoder(encoder_spec), None
    for word in KEYWORDS:
        clips = enrollment_clips(word, ENROLL_VOICES)
        files = [write_audio(folder / f"{word}_{i}.wav", c.audio) for i, c in enumerate(clips)]
        keyset = enroll(keyset, encoder, word, files)
    path = folder / f"live-{Path(encoder_spec).stem}.kws"
    save_keyset(keyset, path)
    return path


def listen_run(pulse, keyset: Path, scene_path: Path, truth, minutes: float, threshold: float | None = None) -> Run:
    """One ``kwsstream listen`` child for ``minutes`` while the scene plays in a loop."""
    seconds = minutes * 60
    extra = [] if threshold is None else ["--threshold", str(threshold)]
    command = [sys.executable, "-m", "kwsstream", "listen", "-k", str(keyset), "--json", "--seconds", str(seconds), *extra]
    proc = subprocess.Popen(command, env=pulse.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    events, errors, listening = [], [], threading.Event()

    def read_stdout():
        for line in proc.stdout:
            events.append((time.monotonic(), json.loads(line)))

    def read_stderr():
        for line in proc.stderr:
            errors.append(line.rstrip())
            if line.startswith("listening"):
                listening.set()

    readers = [threading.Thread(target=read_stdout, daemon=True), threading.Thread(target=read_stderr, daemon=True)]
    for reader in readers:
        reader.start()
    if not listening.wait(STARTUP_TIMEOUT):
        proc.kill()
        raise SystemExit(f"listen did not start: {errors}")
    t_listen = time.monotonic()
    run = Run()
    start = proc_status(proc.pid)
    run.rss_kib.append((0.0, start["VmRSS"]))
    plays, last_sample, status = [], t_listen, start
    duration = max(o.end for o in truth) + 1.0
    while proc.poll() is None:
        now = time.monotonic()
        if now - t_listen + duration < seconds and (not plays or plays[-1][1].poll() is not None):
            plays.append((time.monotonic(), pulse.play(scene_path)))
        if now - last_sample >= RSS_EVERY and now - t_listen < seconds - RSS_EVERY / 2:  # not while exiting
            try:
                status = proc_status(proc.pid)
            except (FileNotFoundError, ProcessLookupError, IndexError):
                break
            run.rss_kib.append((now - t_listen, status["VmRSS"]))
            last_sample = now
        time.sleep(0.05)
    proc.wait()
    for reader in readers:
        reader.join(5)
    for _, player in plays:
        player.wait()
    run.peak_kib, run.cpu_seconds, run.audio_seconds = status.get("VmHWM", 0), status["cpu"] - start["cpu"], seconds
    run.summary = next((line for line in errors if line.startswith("stopped")), "\n".join(errors[-3:]))
    matched = set()
    for t_play, _player in plays:
        for occ in truth:
            run.expected += 1
            offset = t_play - t_listen
            hits = [(arrival, e) for arrival, e in events if e["keyword"] == occ.keyword
                    and abs(e["start"] - offset - occ.start) <= TOLERANCE
                    and abs(e["end"] - offset - occ.end) <= TOLERANCE]
            if hits:
                arrival, e = hits[0]
                matched.add(id(e))
                run.latencies.append(arrival - (t_play + occ.end))
    run.after_end = [arrival - (t_listen + e["end"]) for arrival, e in events]
    starts = [t_play - t_listen for t_play, _ in plays]
    for _, e in events:
        if id(e) not in matched:
            offset = max((o for o in starts if o <= e["start"]), default=0.0)
            run.false.append((e["keyword"], round(e["start"] - offset, 2), e["cost"]))
    return run


def report(name: str, run: Run) -> None:
    lat = sorted(run.latencies)
    print(f"\n## {name}")
    if lat:
        print(f"latency (end of spoken keyword -> JSON line): median {statistics.median(lat):.3f} s, "
              f"max {lat[-1]:.3f} s, min {lat[0]:.3f} s over {len(lat)} detections")
    if run.after_end:
        print(f"every event, its detected end (stream time, zero = the 'listening' line) -> its line: median "
              f"{statistics.median(run.after_end):.3f} s, max {max(run.after_end):.3f} s over {len(run.after_end)} events")
    print(f"found {len(lat)} of {run.expected} spoken keywords, {len(run.false)} false detection(s)"
          + (f"; the first (keyword, s into the scene, cost): {run.false[:FALSE_SHOWN]}" if run.false else ""))
    start, end = run.rss_kib[0][1] / 1024, run.rss_kib[-1][1] / 1024
    print(f"RSS: {start:.1f} MiB after start, {end:.1f} MiB at {run.rss_kib[-1][0]:.0f} s "
          f"(peak VmHWM {run.peak_kib / 1024:.1f} MiB); "
          f"samples: " + " ".join(f"{kib / 1024:.1f}" for _, kib in run.rss_kib[:: max(1, len(run.rss_kib) // 12)]))
    print(f"CPU: {run.cpu_seconds:.1f} s for {run.audio_seconds:.0f} s of audio (RTF {run.cpu_seconds / run.audio_seconds:.3f})")
    print(f"listen: {run.summary}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", nargs="+", default=["mfcc"], help="'mfcc' and/or exported .onnx models")
    parser.add_argument("--minutes", type=float, default=3.0, help="listening time per encoder")
    parser.add_argument("--threshold", type=float, help="passed to listen (e.g. for random-weight models, whose "
                        "detections are not keywords but still time the pipeline)")
    args = parser.parse_args(argv)
    from eval.pulse import PulseServer, missing

    if missing():
        raise SystemExit(missing())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scene = build_scene(KEYWORDS, None, OTHER_VOICES, occurrences_per_keyword=2, noise_snr_db=SNR_DB, seed=SEED)
        scene_path = write_audio(tmp / "scene.wav", scene.audio)
        print(f"machine: {machine()}")
        print(f"scene: {scene.duration:.1f} s, {len(scene.truth)} keywords by {len(OTHER_VOICES)} other voices, "
              f"{SNR_DB} dB noise, played in a loop into a PulseAudio null sink (16 kHz mono) for {args.minutes:g} min")
        pulse = PulseServer(tmp / "pulse")
        try:
            for spec in args.encoder:
                keyset = make_keyset(tmp, spec)
                report(spec, listen_run(pulse, keyset, scene_path, scene.truth, args.minutes, args.threshold))
        finally:
            pulse.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
