"""Running the kwsstream CLI in tests and checking one-line errors (imported explicitly by the
test files that need it, like export_helpers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_kwsstream(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m kwsstream ARGS`` as a child process, output captured as text."""
    return subprocess.run([sys.executable, "-m", "kwsstream", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


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
