"""PyTorch reference of the stateful streaming computation (``stateful.py``), for parity checks.

Written apart from the runtime's driver (``kwsstream/encoders/onnxstate.py``) on purpose: the
same schedule from its definition, in frames of the model's grid.

Schedule: with ``chunk = C``, ``lookahead = R`` and ``left = K`` frames, call ``k`` covers frames
``[k*C, k*C + C + R)`` once all of them are complete, and commits the first ``C``; at the end of
the stream one last call covers every frame not yet committed and commits them all (none if
every frame is committed). Each call's
queries see the keys/values of up to ``K`` committed earlier frames (per block) and the call's
own frames; the positional convolution sees up to ``pos_cache_frames`` earlier projected
features and zeros past the call's last frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Call:
    """One call of the stateful graph: frames ``[start, end)``, the first ``commit`` committed;
    ``final``: the call made at the stream's end (with a group-norm front end it gets the audio up
    to the stream's last sample, as a whole-utterance encoding does)."""

    start: int
    end: int
    commit: int
    final: bool = False


def schedule(frames: int, chunk: int, lookahead: int) -> list[Call]:
    """The calls that stream ``frames`` frames (all complete: the stream has ended)."""
    calls, start = [], 0
    while start + chunk + lookahead <= frames:
        calls.append(Call(start, start + chunk + lookahead, chunk))
        start += chunk
    if start < frames:
        calls.append(Call(start, frames, frames - start, final=True))
    return calls


def padded_positional(module):
    """The positional embedding as the original module computes it: the convolution (its own zero
    padding) over the cached and the call's frames, the cached frames' outputs then dropped - the
    formulation that :meth:`export.stateful.StatefulGraph.positional` replaces by one output per
    call frame, kept here as the parity reference."""
    import torch

    def positional(pos_cache, hidden):
        return module.pos_conv(torch.cat([pos_cache, hidden], dim=1))[:, pos_cache.shape[1]:]

    return positional


def chunked_reference(module, audio: np.ndarray, *, chunk: int, lookahead: int, left: int, pos_frames: int,
                      hop: int = 320, field: int = 400) -> dict[int, np.ndarray]:
    """Frames at each layer of ``module`` (a :class:`export.stateful.StatefulGraph`) streaming
    ``audio`` with the given geometry (frames); layer -> ``(frames, hidden)``."""
    import torch

    frames = 0 if len(audio) < field else 1 + (len(audio) - field) // hop
    wave = torch.from_numpy(np.asarray(audio, np.float32)[None])
    blocks = len(module.blocks)
    hidden_size = module.feature_projection.projection.out_features
    cache = torch.zeros(blocks, 2, 0, hidden_size)
    committed = torch.zeros(1, 0, hidden_size)  # projected features of committed frames
    outputs: dict[int, list] = {layer: [] for layer in module.layers}
    with torch.no_grad():
        whole = module.features(wave) if module.two_stage and frames else None
        for call in schedule(frames, chunk, lookahead):
            if whole is not None:
                features = whole[:, call.start:call.end]
            else:  # group-norm front end: normalised over the call's own audio
                stop = wave.shape[1] if call.final else (call.end - 1) * hop + field
                features = module.features(wave[:, call.start * hop:stop])
            past = committed[:, max(0, call.start - pos_frames):call.start]
            layers, kv = module.transform(features, past, cache, positional=padded_positional(module))
            for layer, value in zip(module.layers, layers):
                outputs[layer].append(value[0, :call.commit].numpy())
            cache = torch.cat([cache, kv[:, :, :call.commit]], dim=2)
            cache = cache[:, :, max(0, cache.shape[2] - left):]
            committed = torch.cat([committed, features[:, :call.commit]], dim=1)
    return {layer: np.concatenate(parts) if parts else np.zeros((0, hidden_size), np.float32)
            for layer, parts in outputs.items()}


def frames_of(seconds: float, frame_rate: float) -> int:
    """Whole frames in ``seconds`` (rounded)."""
    return int(round(seconds * frame_rate))


def reference_for(model, audio: np.ndarray, layers: Sequence[int], *, chunk: float, lookahead: float, left: float,
                  two_stage: bool) -> dict[int, np.ndarray]:
    """:func:`chunked_reference` of a ``Wav2Vec2Model`` with a geometry in seconds."""
    from .metadata import conv_geometry
    from .stateful import build_stateful_module, pos_cache_frames

    config = model.config
    hop, field = conv_geometry(config.conv_kernel, config.conv_stride)
    rate = 16_000 / hop
    module = build_stateful_module(model, layers, two_stage)
    return chunked_reference(module, audio, chunk=max(1, frames_of(chunk, rate)), lookahead=frames_of(lookahead, rate),
                             left=frames_of(left, rate), pos_frames=pos_cache_frames(config), hop=hop, field=field)
