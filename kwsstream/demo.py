"""``kwsstream demo``: enroll the bundled example keywords, then spot them live: in the microphone
when there is one, else in the bundled stream played at real time through the same live pipeline.

The example audio in ``kwsstream/data/`` is made by ``scripts/make_examples.py`` with espeak-ng
(Spanish voices): three recordings of each keyword by three voices, and a stream of sentences by
*other* voices with the keywords inside, in light noise. ``stream.json`` holds the true times,
so the demo can say how it did.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections import defaultdict
from importlib import resources
from pathlib import Path

from .encoders import Encoder, load_encoder
from .enroll import enroll_examples
from .errors import AudioError, KwsError
from .keyset import save_keyset
from .models import default_encoder_spec
from .spotter import Spotter
from .truth import TOLERANCE, matches, score  # noqa: F401  (matches: kept importable here for older callers)

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
            say(f"enrolled {kw.name!r} from {len(kw.templates)} recordings, threshold {kw.threshold:.3f} "
                f"[{spotter.encoder.name}]")
    events = []

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
                on_start=lambda: say(f"playing the bundled recording {stream_path.name} "
                                     f"{'as fast as possible' if fast else 'at real time'} through the live pipeline "
                                     "(Ctrl-C stops)"))
    except KeyboardInterrupt:  # before listening started (a started run stops cleanly by itself)
        say("stopped (Ctrl-C)")
        return 0
    heard = [t for t in truth if t["end"] <= summary.seconds]
    found, false = score(events, heard)
    say(f"found {found} of {len(heard)} spoken keywords, {false} false detection(s)")
    return 0
