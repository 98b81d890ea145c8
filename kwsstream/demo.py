"""``kwsstream demo``: enroll the bundled example keywords, then spot them in the bundled stream.

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
import time
from collections import defaultdict
from importlib import resources
from pathlib import Path

from .audio import iter_audio_blocks
from .encoders import load_encoder
from .enroll import enroll
from .errors import KwsError
from .keyset import save_keyset
from .spotter import Spotter

EXAMPLE = re.compile(r"^(?P<word>.+)_(?P<n>\d+)\.flac$")
TOLERANCE = 0.3  # seconds between a detection and the true keyword span to count as found


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


def build_demo_keyset(folder: Path) -> Path:
    """Enroll every bundled keyword into ``folder/demo.kws`` with the MFCC encoder."""
    encoder = load_encoder("mfcc")
    keyset = None
    for word, paths in example_files().items():
        keyset = enroll(keyset, encoder, word, paths)
    path = folder / "demo.kws"
    save_keyset(keyset, path)
    return path


def score(events, truth) -> tuple[int, int]:
    """(true occurrences found, detections matching no true occurrence)."""
    found = sum(
        any(e.keyword == t["keyword"] and e.start < t["end"] + TOLERANCE and e.end > t["start"] - TOLERANCE for e in events)
        for t in truth
    )
    false = sum(
        not any(e.keyword == t["keyword"] and e.start < t["end"] + TOLERANCE and e.end > t["start"] - TOLERANCE for t in truth)
        for e in events
    )
    return found, false


def run_demo(fast: bool = False, as_json: bool = False) -> int:
    from .cli import emit

    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    stream_path = data_dir() / "stream.flac"
    truth = json.loads((data_dir() / "stream.json").read_text(encoding="utf-8"))["truth"]
    with tempfile.TemporaryDirectory() as tmp:
        keyset_path = build_demo_keyset(Path(tmp))
        spotter = Spotter.load(keyset_path)
        for kw in spotter.keyset.keywords:
            say(f"enrolled {kw.name!r} from {len(kw.templates)} recordings, threshold {kw.threshold:.3f}")
    say(f"no microphone path yet: streaming the bundled recording {stream_path.name} "
        f"{'as fast as possible' if fast else 'at real time'} (Ctrl-C stops)")
    stream = spotter.create_stream(source=stream_path.name)
    events, started = [], time.monotonic()
    for block in iter_audio_blocks(stream_path, block_seconds=0.1):
        for event in stream.feed(block):
            emit(event, as_json, prefix="heard ")
            events.append(event)
        if not fast:
            ahead = stream.seconds - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    for event in stream.flush():
        emit(event, as_json, prefix="heard ")
        events.append(event)
    found, false = score(events, truth)
    say(f"found {found} of {len(truth)} spoken keywords, {false} false detection(s)")
    return 0
