"""The command line's side of the process and the terminal: exit statuses, Ctrl-C from the first
line of ``main`` (:class:`CtrlC`, with a test hook to hold the process at named points), the
progress line of long audio files, and ``_say`` (a line for people on stderr, which clears the
progress line first). Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

STOPPED = "stopped (Ctrl-C)"
"""The one line a live run (listen, demo, detect --realtime) stopped by the user ends with (exit 0)."""
INTERRUPTED = "kwsstream: interrupted"
"""The one line any other command interrupted by Ctrl-C ends with (exit 130)."""
LIVE_COMMANDS = ("listen", "demo")
"""Commands that are live runs whatever their options (``detect`` is one with ``--realtime``)."""

PAUSE_ENV = "KWSSTREAM_PAUSE_AT"
"""A test hook: ``KWSSTREAM_PAUSE_AT=NAME`` makes the process say ``kwsstream: paused at NAME``
and wait there (up to :data:`PAUSE_SECONDS`) when it reaches the point ``NAME`` (:func:`pause_point`;
``start``, ``parsed``, ``ready``, ``loaded``), so that a test can send Ctrl-C at exactly that point."""
PAUSE_SECONDS = 60.0


# --- talking to people -------------------------------------------------------------------------

_PROGRESS_LINE: ContextVar[ProgressLine | None] = ContextVar("kwsstream_progress_line", default=None)


def _say(text: str) -> None:
    line = _PROGRESS_LINE.get()
    if line is not None:
        line.clear()
    print(text, file=sys.stderr, flush=True)


class ProgressLine:
    """How far a long audio file has been read, as one line rewritten in place on a terminal
    (a :func:`kwsstream.audio.reading_progress` callback). Files shorter than
    :attr:`MIN_SECONDS` show nothing; the first block is shown at once, later ones at most every
    :attr:`INTERVAL` seconds; the line is cleared when the file is done or anything else is said."""

    MIN_SECONDS = 30.0
    INTERVAL = 0.25
    WIDTH = 20

    def __init__(self, file):
        self.file = file
        self.shown = False
        self._last = 0.0

    def __call__(self, name: str, seconds: float, total: float | None, finished: bool) -> None:
        if finished:
            self.clear()
            return
        if (total if total is not None else seconds) < self.MIN_SECONDS:
            return
        now = time.monotonic()
        if self.shown and now - self._last < self.INTERVAL:
            return
        self._last = now
        label = os.path.basename(name) or name
        if total:
            done = min(1.0, seconds / total)
            bar = "#" * round(self.WIDTH * done) + "." * (self.WIDTH - round(self.WIDTH * done))
            text = f"{label}: [{bar}] {seconds:.0f} of {total:.0f} s of audio read ({done:.0%})"
        else:
            text = f"{label}: {seconds:.0f} s of audio read"
        self.file.write("\r\x1b[K" + text)
        self.file.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.file.write("\r\x1b[K")
            self.file.flush()
            self.shown = False


@contextlib.contextmanager
def progress_on_terminal(enabled: bool = True) -> Iterator[None]:
    """Within the block, long audio files read in this thread show a :class:`ProgressLine` on
    stderr - only when stderr is a terminal (never in a log or a pipe)."""
    try:
        tty = enabled and sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        yield
        return
    from .audio import reading_progress

    line = ProgressLine(sys.stderr)
    token = _PROGRESS_LINE.set(line)
    try:
        with reading_progress(line):
            yield
    finally:
        line.clear()
        _PROGRESS_LINE.reset(token)


# --- Ctrl-C ------------------------------------------------------------------------------------

def is_live_argv(argv: list[str]) -> bool:
    """Whether a command line is a live run (listen, demo, detect --realtime), read before (or
    without) parsing it: the first word that is not an option is the command."""
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        return False
    if words[0] in LIVE_COMMANDS:
        return True
    return words[0] == "detect" and any(len(a) >= 3 and "--realtime".startswith(a) for a in argv)


class CtrlC:
    """SIGINT for one run of ``main``, from its first line: the first Ctrl-C raises
    ``KeyboardInterrupt`` (whatever is running - an import, loading a model, a file - stops
    there and ``main`` ends with :meth:`outcome`); a later one, while the process is already
    ending, ends it at once with the same line and status when ``hard_exit`` (the process's own
    ``main``), else raises again (``main`` called from Python). ``live``: a live run, whose
    stop is not an error (exit 0, :data:`STOPPED`); any other command exits 130 with
    :data:`INTERRUPTED`. ``finished``: the status ``main`` returned; a Ctrl-C after it
    changes nothing."""

    def __init__(self, live: bool, hard_exit: bool):
        self.live, self.hard_exit = live, hard_exit
        self.count, self.said = 0, False
        self.finished: int | None = None

    def __call__(self, signum, frame) -> None:
        self.count += 1
        if self.hard_exit and self.finished is not None:
            self._exit_now(self.finished)
        if self.count == 1 or not self.hard_exit:
            raise KeyboardInterrupt
        self._exit_now(self.outcome())

    def outcome(self) -> int:
        """Say the one closing line (once) and return the exit status."""
        if not self.said:
            self.said = True
            _say(STOPPED if self.live else INTERRUPTED)
        return EXIT_OK if self.live else EXIT_INTERRUPTED

    @staticmethod
    def _exit_now(status: int) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)

    def install(self):
        """Take over SIGINT (only the main thread can); returns the handler it replaced."""
        if threading.current_thread() is threading.main_thread():
            return signal.signal(signal.SIGINT, self)
        return None


def pause_point(name: str) -> None:
    """The test hook of :data:`PAUSE_ENV`: wait here when it names this point."""
    if os.environ.get(PAUSE_ENV) == name:
        _say(f"kwsstream: paused at {name} ({PAUSE_ENV})")
        time.sleep(PAUSE_SECONDS)
