"""``detect --clips DIR``: each detection written as a short WAV, to listen to what fired.

A clip is the detection's span with :data:`MARGIN` seconds of audio on each side, as the
pipeline heard it (16 kHz mono, the audio boundary of :mod:`kwsstream.audio`), named
``<audio name>_<keyword>_<start>s_cost<cost>.wav`` so that a folder of clips sorts by file, then
keyword, then time. The audio is read a second time, block by block, so memory stays flat in the
file's length; each clip is written atomically (:func:`kwsstream.safefile.atomic_write`): a clip
of the same name is replaced, never written through a planted link's target folder.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .audio import display_name, iter_audio_blocks
from .encoders.base import SAMPLE_RATE
from .errors import UsageError
from .safefile import atomic_write

MARGIN = 0.3
"""Seconds of audio kept before a detection's start and after its end."""


def clip_name(audio: str | Path, keyword: str, start: float, cost: float) -> str:
    """The file name of a clip (safe characters only: a keyword or file name cannot make a path)."""
    safe = lambda text: re.sub(r"[^\w.-]+", "-", text, flags=re.UNICODE).strip("-.") or "x"  # noqa: E731
    return f"{safe(Path(display_name(audio)).stem)}_{safe(keyword)}_{start:09.2f}s_cost{max(cost, 0.0):.3f}.wav"


def check_folder(folder: str | Path) -> Path:
    """``--clips DIR``: an existing folder, checked before any audio is read."""
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"--clips {folder}: not a folder (create it first)")
    return path


def write_clips(folder: Path, audio: str | Path, events: Sequence) -> list[Path]:
    """Write one clip per event (``Event``: keyword, start, end, cost) of the file ``audio``;
    returns the clips' paths in the events' order."""
    if not events:
        return []
    spans = [(max(0, int((e.start - MARGIN) * SAMPLE_RATE)), int((e.end + MARGIN) * SAMPLE_RATE)) for e in events]
    parts: list[list[np.ndarray]] = [[] for _ in events]
    position = 0
    last = max(b for _, b in spans)
    for block in iter_audio_blocks(audio):
        end = position + len(block)
        for i, (a, b) in enumerate(spans):
            if a < end and b > position:
                parts[i].append(block[max(a - position, 0):min(b - position, len(block))])
        position = end
        if position >= last:
            break
    import soundfile as sf

    written = []
    for event, pieces in zip(events, parts):
        path = folder / clip_name(audio, event.keyword, event.start, event.cost)
        samples = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        buffer = io.BytesIO()
        sf.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        with atomic_write(path, UsageError) as handle:
            handle.write(buffer.getvalue())
        written.append(path)
    return written
