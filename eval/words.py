"""The one timed word of the eval: a word (or keyword occurrence) and its span in a recording.

eSpeak's word times (:class:`eval.espeak.Utterance`), a corpus's alignments
(:class:`eval.corpus.Clip`) and a scene's true keyword occurrences (:class:`eval.scenes.Scene`)
are all :class:`TimedWord`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TimedWord:
    """``text`` (as written, or in matching form where the reader says so) from ``start`` to
    ``end`` seconds from the start of its recording."""

    text: str
    start: float
    end: float

    @property
    def keyword(self) -> str:
        """The text, read as the keyword of a true occurrence (a scene's truth)."""
        return self.text
