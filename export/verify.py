"""Parity of an exported model with PyTorch, on fixed audio.

The reference is the layer definition itself, taken from the untouched ``Wav2Vec2Model`` with
hooks: layer 0 is the *input* of transformer block 1, layer L the *output* of block L (before
the encoder's final LayerNorm, which runs after the last block). It does not use
``hidden_states``, whose last entry changed meaning between transformers 4.x and 5.x.

Reported per layer: maximum absolute difference, the same relative to the reference's largest
magnitude, and the per-frame cosine (mean, min). fp32 must match to :data:`FP32_MAX_RELATIVE`;
int8 reports its cosine to the fp32 reference and must stay above :data:`INT8_MIN_COSINE`.

A stateful streaming export (``stateful.py``) is checked twice: its whole-utterance encoding (one
call, empty state) against the hooks as above, and its stream - the runtime's own driver with the
geometry the file recommends, fed in :data:`STREAM_BLOCK` blocks - against the PyTorch reference
of the same chunked computation (``streamref.py``), to the same bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .metadata import SAMPLE_RATE

FP32_MAX_RELATIVE = 1e-4
"""fp32 parity: max |onnx - torch| / max |torch| per layer."""
INT8_MIN_COSINE = 0.95
"""int8: lowest acceptable per-frame cosine to the PyTorch reference - a sanity bound that catches
a broken graph, not a quality target (measured: mean 0.9988, min 0.9986 at L12 on random
XLSR-53-size weights; trained weights with outlier channels may quantise worse: read the report)."""
VERIFY_SECONDS = 3.0
"""Length of the fixed verification audio."""
VERIFY_SEED = 1234
STREAM_BLOCK = 1600
"""Samples per pushed block when a stateful export's stream is verified (0.1 s)."""


class ParityError(Exception):
    """An exported graph that does not reproduce the PyTorch model (an internal failure: exit 1)."""


@dataclass(frozen=True)
class LayerParity:
    """Parity of one layer's output."""

    layer: int
    max_abs: float
    max_relative: float
    mean_cosine: float
    min_cosine: float

    def line(self) -> str:
        return (f"layer {self.layer:>2}: max |diff| {self.max_abs:.2e} (relative {self.max_relative:.2e}), "
                f"cosine mean {self.mean_cosine:.6f} min {self.min_cosine:.6f}")


def verification_audio(seconds: float = VERIFY_SECONDS, seed: int = VERIFY_SEED) -> np.ndarray:
    """Fixed, speech-like test audio: a gliding harmonic tone with syllable-rate amplitude
    modulation, plus a little noise (16 kHz float32, deterministic)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2
    audio = 0.1 * voice * envelope + 0.01 * rng.standard_normal(t.size)
    return audio.astype(np.float32)


def reference_layers(model, audio: np.ndarray, layers: Sequence[int]) -> dict[int, np.ndarray]:
    """Layer outputs of the PyTorch model by the explicit definition (hooks on the blocks)."""
    import torch

    captured: dict[int, np.ndarray] = {}
    blocks = model.encoder.layers

    def keep(layer: int, value) -> None:
        value = value[0] if isinstance(value, tuple) else value
        captured[layer] = value[0].detach().float().numpy().copy()

    handles = []
    for layer in layers:
        if layer == 0:
            handles.append(blocks[0].register_forward_pre_hook(lambda _m, args, layer=layer: keep(layer, args[0])))
        else:
            handles.append(blocks[layer - 1].register_forward_hook(lambda _m, _a, out, layer=layer: keep(layer, out)))
    try:
        with torch.no_grad():
            model(torch.from_numpy(audio[None, :]))
    finally:
        for handle in handles:
            handle.remove()
    return captured


def compare(layer: int, got: np.ndarray, want: np.ndarray) -> LayerParity:
    """Parity numbers of one layer."""
    if got.shape != want.shape:
        raise ParityError(f"layer {layer}: ONNX gave shape {got.shape}, PyTorch {want.shape}")
    diff = np.abs(got.astype(np.float64) - want)
    dots = (got * want).sum(axis=1)
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    cosine = dots / np.maximum(norms, 1e-30)
    return LayerParity(layer, float(diff.max()), float(diff.max() / max(np.abs(want).max(), 1e-30)),
                       float(cosine.mean()), float(cosine.min()))


def verify_export(model, path: Path, *, audio: np.ndarray | None = None, reference: Path | None = None,
                  label: Path | None = None) -> list[str]:
    """Check the model at ``path`` against PyTorch (and an int8 one also against the fp32 file
    ``reference`` when given); return report lines, which name ``label`` (the model's final path,
    when ``path`` is a temporary one) or else ``path``.

    Raises:
        ParityError: fp32 off by more than :data:`FP32_MAX_RELATIVE`, or int8 cosine below
            :data:`INT8_MIN_COSINE`.
    """
    from kwsstream.encoders.onnx import OnnxEncoder

    name = path if label is None else label
    audio = verification_audio() if audio is None else audio
    encoder = OnnxEncoder(path)
    precision = encoder.info.precision
    got = encoder.encode_layers(audio)
    want = reference_layers(model, audio, list(got))
    lines = [f"{name} ({precision}, {audio.size / SAMPLE_RATE:.1f} s of fixed audio) vs PyTorch:"]
    failures = []
    for layer in sorted(got):
        parity = compare(layer, got[layer], want[layer])
        lines.append("  " + parity.line())
        if precision == "fp32" and parity.max_relative > FP32_MAX_RELATIVE:
            failures.append(f"layer {layer} differs by {parity.max_relative:.1e} relative (limit {FP32_MAX_RELATIVE:g})")
        if precision == "int8" and parity.min_cosine < INT8_MIN_COSINE:
            failures.append(f"layer {layer} int8 cosine {parity.min_cosine:.4f} < {INT8_MIN_COSINE}")
    if encoder.info.stateful:
        lines.append(f"  stream ({_geometry(encoder)}) vs the PyTorch chunked reference:")
        parity = compare(encoder.layer, stream(encoder, audio), stream_reference(model, encoder, audio))
        lines.append("  " + parity.line())
        if precision == "fp32" and parity.max_relative > FP32_MAX_RELATIVE:
            failures.append(f"stream differs by {parity.max_relative:.1e} relative (limit {FP32_MAX_RELATIVE:g})")
        if precision == "int8" and parity.min_cosine < INT8_MIN_COSINE:
            failures.append(f"stream int8 cosine {parity.min_cosine:.4f} < {INT8_MIN_COSINE}")
    if reference is not None:
        base = OnnxEncoder(reference).encode_layers(audio)
        lines.append(f"  vs fp32 ONNX {reference.name}:")
        for layer in sorted(got):
            lines.append("  " + compare(layer, got[layer], base[layer]).line())
    if failures:
        raise ParityError(f"{name}: parity check failed: " + "; ".join(failures))
    return lines


def _geometry(encoder) -> str:
    plan = encoder.plan
    return f"chunk {plan.chunk}, lookahead {plan.lookahead}, left {plan.left} frames"


def stream(encoder, audio: np.ndarray, block: int = STREAM_BLOCK) -> np.ndarray:
    """The encoder's stream of ``audio`` pushed in blocks, then flushed."""
    state = encoder.create_state()
    parts = [state.push(audio[pos:pos + block]) for pos in range(0, len(audio), block)]
    return np.concatenate(parts + [state.flush()])


def stream_reference(model, encoder, audio: np.ndarray) -> np.ndarray:
    """The PyTorch chunked computation with the stateful ``encoder``'s geometry and layer."""
    from .stateful import build_stateful_module, pos_cache_frames
    from .streamref import chunked_reference

    plan, grid = encoder.plan, encoder.grid
    module = build_stateful_module(model, [encoder.layer], encoder.info.two_stage)
    frames = chunked_reference(module, audio, chunk=plan.chunk, lookahead=plan.lookahead, left=plan.left,
                               pos_frames=pos_cache_frames(model.config), hop=grid.hop, field=grid.length)
    return frames[encoder.layer]
