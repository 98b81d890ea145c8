"""The README's Python API example runs as written: on the bundled stream (as ``meeting.flac``)
with a keyword set enrolled from the bundled examples (as ``my.kws``), in a fresh process."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_python() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "the README has one Python example"
    return blocks[0]


def test_the_readme_python_example_runs_and_keeps_the_flush_events(tmp_path):
    from kwsstream.demo import data_dir, example_files
    from kwsstream.encoders import load_encoder
    from kwsstream.enroll import enroll_examples
    from kwsstream.keyset import save_keyset

    snippet = readme_python()
    assert "events += stream.flush()" in snippet
    save_keyset(enroll_examples(load_encoder("mfcc"), example_files()), tmp_path / "my.kws")
    shutil.copy(data_dir() / "stream.flac", tmp_path / "meeting.flac")
    (tmp_path / "example.py").write_text(snippet, encoding="utf-8")
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    found = [line.split()[0] for line in lines[:-1]]
    assert found and set(found) <= set(example_files()), proc.stdout
    assert lines[-1] == f"{len(found)} detections", proc.stdout  # the chunked stream, its flush() included
