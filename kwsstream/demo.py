"""``kwsstream demo``: enroll the bundled example keywords, then spot them live: in the microphone
when there is one, else in the bundled stream played at real time through the same live pipeline.

The example audio in ``kwsstream/data/`` is made by ``scripts/make_examples.py`` with espeak-ng
(Spanish voices): three recordings of each keyword by three voices, and a stream of sentences by
*other* voices with the keywords inside, in light noise. ``stream.json`` holds the true times,
so the demo can say how it did: how many it found, and for each word it missed, where it was
said and how close the keyword's best score there came to its threshold.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
from collections import defaultdict
from importlib import resources
from pathlib import Path

import numpy as np

from .encoders import Encoder, load_encoder
from .enroll import enroll_examples
from .errors import AudioError, KwsError
from .keyset import save_keyset
from .models import default_encoder_spec
from .spotter import Spotter
from .truth import TOLERANCE, matches, score

EXAMPLE = re.compile(r"^(?P<word>.+)_(?P<n>\d+)\.flac$")


def data_dir() -> Path:
    return Path(str(resources.files("kwsstream") / "data"))


def example_files() -> dict[str, list[Path]]:
    """Bundled enrollment recordings by keyword."""
    found = defaultdict(list)
    for path in sorted(data_dir().glob("*.flac")):
        m = EXAMPLE.match(path.name)
        if m:
            found[m["word"]].append(path)
    if not found:
        raise KwsError(f"{data_dir()}: no example recordings (remake them with scripts/make_examples.py)")
    return dict(found)


def build_demo_keyset(folder: Path, encoder: Encoder) -> Path:
    """Enroll every bundled keyword into ``folder/demo.kws`` with ``encoder``."""
    keyset = enroll_examples(encoder, example_files())
    path = folder / "demo.kws"
    save_keyset(keyset, path)
    return path


def find_microphone():
    """The default input device, or ``(None, why not)`` when there is none (or no PortAudio)."""
    from .sources import find_device

    try:
        return find_device(None), ""
    except AudioError as err:
        return None, str(err)


def run_demo(fast: bool = False, recording: bool = False, encoder: str | None = None, threads: int | None = None, *,
             report) -> int:
    """Enroll the bundled keywords with ``encoder`` (default: :func:`kwsstream.models.default_encoder_spec`;
    ``threads``: its onnxruntime threads), then
    spot them in the microphone when there is one (until Ctrl-C), else in the bundled recording
    played through the one pipeline (:meth:`Spotter.detect_file`) at real time (``fast``: as
    fast as possible; ``recording``: even when there is a microphone). ``report(event)`` shows
    each detection (the CLI prints it)."""
    from .live import ListenOptions, listen_microphone, play_recording
    from .sources import native_stderr_silenced

    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    stream_path = data_dir() / "stream.flac"
    truth = json.loads((data_dir() / "stream.json").read_text(encoding="utf-8"))["truth"]
    if encoder is None:
        encoder, note = default_encoder_spec()
        if note:
            say(f"note: {note}")
    with tempfile.TemporaryDirectory() as tmp:
        encoding = load_encoder(encoder, threads=threads)
        spotter = Spotter.load(build_demo_keyset(Path(tmp), encoding), encoder=encoding)
        for kw in spotter.keyset.keywords:
            say(f"enrolled {kw.name!r} from {len(kw.templates)} recordings, threshold "
                f"{round(kw.threshold, 4):.3f} [{spotter.encoder.name}]")
    events = []
    best = BestScores(spotter)

    def on_event(event) -> None:
        report(event)
        events.append(event)

    try:
        with native_stderr_silenced():
            device, why = (None, "") if fast or recording else find_microphone()
            if device is not None:
                say(f"microphone found: say {', '.join(repr(n) for n in spotter.names)} (examples in {data_dir()})")
                listen_microphone(spotter, ListenOptions(device=device.index), on_event=on_event, say=say)
                return 0
            if why:
                say(f"no microphone: {why}")
            summary = play_recording(
                spotter, stream_path, ListenOptions(), realtime=not fast, on_event=on_event, say=say,
                on_scores=best.add, on_start=lambda: say(f"playing the bundled recording {stream_path.name} "
                                     f"{'as fast as possible' if fast else 'at real time'} through the live pipeline "
                                     "(Ctrl-C stops)"))
    except KeyboardInterrupt:  # before listening started (a started run stops cleanly by itself)
        say("stopped (Ctrl-C)")
        return 0
    heard = [t for t in truth if t["end"] <= summary.seconds]
    found, false = score(events, heard)
    say(f"found {found} of {len(heard)} spoken keywords, {false} false detection(s)")
    for t in heard:
        if not any(matches(e.keyword, e.start, e.end, t["keyword"], t["start"], t["end"]) for e in events):
            say(missed_line(t, best, spotter))
    return 0


def missed_line(true: dict, best: BestScores, spotter: Spotter) -> str:
    """One line for a keyword said in the recording but not found: where, and how close its best
    score there (the true span widened by the hit rule's tolerance) came to its threshold."""
    name = true["keyword"]
    k = spotter.names.index(name)
    threshold = round(float(spotter.thresholds[k]), 4)
    cost = best.near(k, true["start"] - TOLERANCE, true["end"] + TOLERANCE)
    where = f"missed {name!r} at {true['start']:.2f}-{true['end']:.2f} s: "
    if not math.isfinite(cost):
        return where + "no score there (the voice-activity gate heard no speech, or no match fits)"
    return where + (f"its best cost there was {cost:.3f}, {cost - threshold:.3f} above its threshold {threshold:.3f} "
                    "(a higher threshold or --fa-per-hour finds it, with more false alarms)")


class BestScores:
    """Every frame's score of each keyword in a stream (``play_recording``'s ``on_scores``), to
    find the best score near a time afterwards (the demo's recording is 30 s: a few thousand frames)."""

    def __init__(self, spotter: Spotter):
        self.times: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []

    def add(self, times: np.ndarray, scores: np.ndarray) -> None:
        self.times.append(times)
        self.scores.append(scores)

    def near(self, k: int, start: float, end: float) -> float:
        """The lowest score of keyword ``k`` at frames centred in ``[start, end]`` s (inf: none)."""
        if not self.times:
            return math.inf
        times, scores = np.concatenate(self.times), np.concatenate(self.scores)[:, k]
        inside = scores[(times >= start) & (times <= end)]
        return float(inside.min()) if len(inside) else math.inf
