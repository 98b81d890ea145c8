"""What start-up must not pay for (functional checks; the timings are a benchmark:
``python -m eval.bench.startup``): the CLI's help, ``devices`` and loading a keyword set never
import numba; onnxruntime threads are chosen by model size and can be overridden."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kwsstream import onnxsession
from kwsstream.errors import EncoderError

PROBE = """
import runpy, sys
sys.argv = ["kwsstream"] + sys.argv[1:]
try:
    runpy.run_module("kwsstream", run_name="__main__")
except SystemExit:
    pass
print("heavy:", ",".join(m for m in ("numba", "scipy", "onnxruntime") if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["devices"], ["detect", "--help"]])
def test_light_commands_do_not_import_numba(args):
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "heavy:", proc.stderr


def test_loading_a_keyword_set_and_the_api_do_not_import_numba(tmp_path):
    from kwsstream.demo import example_files
    from kwsstream.encoders import load_encoder
    from kwsstream.enroll import enroll_examples
    from kwsstream.keyset import save_keyset

    path = tmp_path / "k.kws"
    save_keyset(enroll_examples(load_encoder("mfcc"), {"mariposa": example_files()["mariposa"]}), path)
    code = ("import sys, kwsstream\nfrom kwsstream.keyset import load_keyset\nload_keyset(sys.argv[1])\n"
            "print('numba' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


def test_threads_by_model_size_env_and_override(monkeypatch):
    monkeypatch.delenv(onnxsession.THREADS_ENV, raising=False)
    onnxsession.set_default_threads(None)
    assert onnxsession.default_threads(2_400_000) == 1  # speech_embedding
    assert onnxsession.default_threads(300 << 20) == onnxsession.physical_cores()
    monkeypatch.setenv(onnxsession.THREADS_ENV, "3")
    assert onnxsession.default_threads(2_400_000) == 3
    try:
        onnxsession.set_default_threads(2)
        assert onnxsession.default_threads(2_400_000) == 2
    finally:
        onnxsession.set_default_threads(None)
    with pytest.raises(EncoderError, match="at least 1"):
        onnxsession.set_default_threads(0)
