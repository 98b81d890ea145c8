"""kwsstream: streaming, on-device, query-by-example keyword spotting.

A user says a word a few times (enrollment); from then on the spotter hears it in a microphone or
in files. See :class:`Spotter` for the Python API and ``kwsstream --help`` for the command line.

The API's classes are loaded on first use (PEP 562), so ``import kwsstream.cli`` stays cheap:
the command line handles Ctrl-C from its first line, before numpy or numba load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import AudioError, EncoderError, KeysetError, KwsError, UsageError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .spotter import Event, Spotter, SpotterOptions, Stream

_LAZY = ("Event", "Spotter", "SpotterOptions", "Stream")

__all__ = [
    "AudioError", "EncoderError", "Event", "KeysetError", "KwsError", "Spotter", "SpotterOptions",
    "Stream", "UsageError", "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import spotter

        return getattr(spotter, name)
    raise AttributeError(f"module 'kwsstream' has no attribute {name!r}")
