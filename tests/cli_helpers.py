"""Running the kwsstream CLI in tests and checking one-line errors (imported explicitly by the
test files that need it, like export_helpers).

:func:`run_main` calls ``kwsstream.cli.main(argv)`` in this process - what every command test
needs, without a new interpreter and fresh imports per call (seconds each); :func:`run_kwsstream`
starts the real entry point as a child process, for the few tests about the process itself
(exit status, nothing but JSON on stdout)."""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys
from pathlib import Path


def run_kwsstream(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m kwsstream ARGS`` as a child process, output captured as text."""
    return subprocess.run([sys.executable, "-m", "kwsstream", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def run_main(*args) -> subprocess.CompletedProcess:
    """``kwsstream.cli.main(ARGS)`` in this process, stdout and stderr captured as text (the
    result looks like :func:`run_kwsstream`'s; argparse's exits give their status). The
    ``kwsstream`` logger is left as it was (main routes its warnings to stderr)."""
    from kwsstream.cli import main

    out, err = io.StringIO(), io.StringIO()
    logger = logging.getLogger("kwsstream")
    saved = logger.propagate, list(logger.handlers)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        logger.propagate, logger.handlers[:] = saved
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def one_line_error(result, *needles: str, prefix: str = "", no_stdout: bool = False) -> str:
    """Assert ``result`` (anything with ``returncode``, ``stdout``, ``stderr``) is a bad-input exit:
    status 2, exactly one line on stderr starting with ``prefix`` and holding every needle (and,
    with ``no_stdout``, nothing on stdout). Returns the line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    if no_stdout:
        assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
