"""kwsstream: streaming, on-device, query-by-example keyword spotting.

A user says a word a few times (enrollment); from then on the spotter hears it in a microphone or
in files. See :class:`Spotter` for the Python API and ``kwsstream --help`` for the command line.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import AudioError, EncoderError, KeysetError, KwsError, UsageError
from .spotter import Event, Spotter, SpotterOptions, Stream

__all__ = [
    "AudioError", "EncoderError", "Event", "KeysetError", "KwsError", "Spotter", "SpotterOptions",
    "Stream", "UsageError", "__version__",
]
