"""The project's own exceptions.

Every error a user can cause (a bad file, a bad option, a keyword set made with another encoder)
is a :class:`KwsError` whose message is one line naming the file or value and the problem. The CLI
prints that line and exits with status 2; anything else is an internal error (status 1).
"""

from __future__ import annotations


class KwsError(Exception):
    """Base class of every error caused by the user's input."""


class AudioError(KwsError):
    """An audio file or buffer that cannot be used (missing, corrupt, empty, NaN, too short)."""


class KeysetError(KwsError):
    """A keyword set file that is missing, corrupt, of another format or of another encoder."""


class EncoderError(KwsError):
    """An encoder or model file that cannot be used."""


class UsageError(KwsError):
    """Options that do not fit together or are out of range."""
