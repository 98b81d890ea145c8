"""A stateful streaming graph of a wav2vec2 checkpoint cut at layer L: each frame computed once.

Emformer-like (Shi et al. 2021): a stream is encoded in calls of ``chunk`` new frames plus
``lookahead`` frames of right context. In every transformer block the queries of the call's
frames attend to the cached keys/values of up to ``left`` committed earlier frames and to the
call's own frames; only the ``chunk`` committed frames' keys/values enter the cache (the
lookahead frames are provisional: the next call computes them again as its own frames). The
positional convolution (wav2vec2: kernel 128, groups 16, one output removed by ``SamePad``) takes
its left side from cached projected features of real earlier frames (``pos_cache``, up to
``kernel // 2`` frames) and sees zeros past the call's last frame, as a window's edge does; it
computes outputs for the call's frames only (:meth:`StatefulGraph.positional`), not for the
cached ones.

The graph is geometry-free: the runtime (``kwsstream/encoders/onnxstate.py``) decides the
chunk, lookahead and left context and keeps the caches; the graph says what it needs in its
metadata and the export writes a recommended geometry. With empty caches and the whole utterance
as one call it computes exactly the one-shot encoding (which ``verify.py`` checks against hooks
on the original model).

Graph (names in ``metadata.py``), batch 1:

* inputs ``audio`` ``[1, samples]`` (the audio of the call's frames whose front-end features are
  not known yet), for a local (layer-norm) front end ``context`` ``[1, frames, hidden]`` (the
  call's frames whose features are known, from earlier calls), ``pos_cache`` ``[1, past, hidden]``
  (projected features of up to ``pos_cache_frames`` committed frames before the call) and
  ``kv_cache`` ``[blocks, 2, cached, hidden]`` (keys and values, after their projections, of
  the cached frames at the input of each block);
* outputs ``layer_<L>`` ``[1, frames, hidden]`` for every frame of the call, ``kv``
  ``[blocks, 2, frames, hidden]`` of every frame of the call (the runtime caches the committed
  ones) and ``features`` (the projected features the audio input gave; with a group-norm front
  end, which normalises over its whole input, the audio covers all the call's frames).

The block arithmetic is written out here from the checkpoint's own modules (projections, layer
norms, feed-forward, adapter), for both block types: stable (pre) LayerNorm (XLSR-53, large) and
post-LayerNorm (base).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from . import ExportError
from .frontend import build_front_end
from .metadata import (AUDIO_INPUT, CONTEXT_INPUT, FEATURES_OUTPUT, KV_INPUT, KV_OUTPUT, POS_INPUT,
                       layer_output, set_metadata, stateful_metadata, wav2vec2_metadata)

TRACE_SAMPLES = 16_000
TRACE_CONTEXT, TRACE_PAST, TRACE_CACHED = 7, 5, 6
"""Frames of dummy context, positional cache and key/value cache used to trace (axes stay dynamic)."""


class StatefulGraph(nn.Module):
    """audio (+ context) + caches -> the call's frames at each layer, their keys/values, features."""

    def __init__(self, model, layers: Sequence[int], two_stage: bool):
        super().__init__()
        config = model.config
        encoder = model.encoder
        self.front_end = build_front_end(model.feature_extractor)
        self.feature_projection = model.feature_projection
        self.pos_conv = encoder.pos_conv_embed
        self.stable = bool(config.do_stable_layer_norm)
        # post-LayerNorm models normalise the input of block 1 (layer 0 included)
        self.input_norm = None if self.stable else encoder.layer_norm
        self.blocks = nn.ModuleList(list(encoder.layers)[: max(layers)])
        expected = "Wav2Vec2EncoderLayerStableLayerNorm" if self.stable else "Wav2Vec2EncoderLayer"
        for block in self.blocks:
            if type(block).__name__ != expected:
                raise ExportError(f"block type {type(block).__name__} is not supported by --stateful "
                                  f"(expected {expected})")
        self.layers = tuple(layers)
        self.two_stage = two_stage
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads

    def features(self, audio):
        """Projected front-end features of ``audio``: ``[1, frames, hidden]``."""
        features, _ = self.feature_projection(self.front_end(audio))
        return features

    def _attend(self, attention, hidden, cached_k, cached_v):
        """Multi-head attention of ``hidden``'s frames over cached + own keys/values."""
        query = attention.q_proj(hidden)
        key, value = attention.k_proj(hidden), attention.v_proj(hidden)
        keys = torch.cat([cached_k[None], key], dim=1)
        values = torch.cat([cached_v[None], value], dim=1)

        def heads(x):
            return x.view(1, -1, self.heads, self.head_dim).transpose(1, 2)

        scores = torch.matmul(heads(query), heads(keys).transpose(2, 3)) * attention.scaling
        mixed = torch.matmul(torch.softmax(scores, dim=-1), heads(values))
        mixed = mixed.transpose(1, 2).reshape(1, -1, self.heads * self.head_dim)
        return attention.out_proj(mixed), key[0], value[0]

    def _block(self, block, hidden, cached_k, cached_v):
        if self.stable:
            mixed, key, value = self._attend(block.attention, block.layer_norm(hidden), cached_k, cached_v)
            hidden = hidden + mixed
            hidden = hidden + block.feed_forward(block.final_layer_norm(hidden))
            if getattr(block, "adapter_layer", None) is not None:
                hidden = hidden + block.adapter_layer(hidden)
            return hidden, key, value
        mixed, key, value = self._attend(block.attention, hidden, cached_k, cached_v)
        hidden = block.layer_norm(hidden + mixed)
        hidden = block.final_layer_norm(hidden + block.feed_forward(hidden))
        return hidden, key, value

    def positional(self, pos_cache, hidden):
        """The positional convolution's output for ``hidden``'s frames only.

        The original pads its input with ``kernel // 2`` zeros on the left and ``kernel - 1 -
        kernel // 2`` on the right (``padding = kernel // 2`` both sides, then ``SamePad`` drops
        the last output when the kernel is even), so output ``t`` reads inputs ``t - kernel // 2``
        to ``t + kernel - 1 - kernel // 2``. Here the same window is built explicitly - the left
        zeros, then the cached frames (they replace zeros, the last ``kernel // 2`` at most),
        the call's frames, the right zeros - and an unpadded convolution gives exactly one output
        per call frame: no work for the cached frames' outputs, which are not needed.
        """
        conv = self.pos_conv.conv
        kernel = conv.kernel_size[0]
        left = kernel // 2
        window = nn.functional.pad(torch.cat([pos_cache, hidden], dim=1), (0, 0, left, kernel - 1 - left))
        window = window[:, pos_cache.shape[1]:]  # exactly `left` frames before the call's first
        mixed = nn.functional.conv1d(window.transpose(1, 2), conv.weight, conv.bias, groups=conv.groups)
        return self.pos_conv.activation(mixed).transpose(1, 2)

    def transform(self, hidden, pos_cache, kv_cache, positional=None):
        """The transformer part on projected features ``hidden`` ``[1, frames, hidden]``.

        ``positional(pos_cache, hidden)``: the positional embedding of ``hidden``'s frames
        (default :meth:`positional`; the reference passes the original module's formulation)."""
        hidden = hidden + (positional or self.positional)(pos_cache, hidden)
        if self.input_norm is not None:
            hidden = self.input_norm(hidden)
        outputs = [hidden] if 0 in self.layers else []
        kvs = []
        for index, block in enumerate(self.blocks):
            hidden, key, value = self._block(block, hidden, kv_cache[index, 0], kv_cache[index, 1])
            kvs.append(torch.stack([key, value]))
            if index + 1 in self.layers:
                outputs.append(hidden)
        return outputs, torch.stack(kvs)

    def forward(self, audio, *state):
        if self.two_stage:
            context, pos_cache, kv_cache = state
            features = self.features(audio)
            hidden = torch.cat([context, features], dim=1)
        else:
            pos_cache, kv_cache = state
            hidden = features = self.features(audio)
        outputs, kv = self.transform(hidden, pos_cache, kv_cache)
        return (*outputs, kv, features)


def build_stateful_module(model, layers: Sequence[int], two_stage: bool) -> StatefulGraph:
    """The stateful module of ``model`` cut at ``max(layers)`` (weight norm baked in)."""
    from torch.nn.utils import parametrize

    if max(layers) < 1:
        raise ExportError("--stateful needs a layer >= 1 (layer 0 has no transformer block to cache)")
    conv = model.encoder.pos_conv_embed.conv
    if parametrize.is_parametrized(conv, "weight"):
        parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
    return StatefulGraph(model, layers, two_stage).eval()


def pos_cache_frames(config) -> int:
    """Frames of earlier features the positional convolution reads (kernel // 2)."""
    return int(config.num_conv_pos_embeddings) // 2


def export_stateful(model, out: Path, layers: Sequence[int], source_model: str, *, chunk: float,
                    lookahead: float, left: float, two_stage: bool) -> dict[str, str]:
    """Trace the stateful graph and write it to ``out`` (fp32) with its metadata.

    Args:
        chunk, lookahead, left: the recommended geometry (seconds) written to the metadata.

    Returns:
        The metadata written.
    """
    import onnx

    from .wav2vec2 import OPSET, save_model

    layers = tuple(sorted(set(int(layer) for layer in layers)))
    module = build_stateful_module(model, layers, two_stage)
    hidden, blocks = model.config.hidden_size, len(module.blocks)
    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(1, TRACE_SAMPLES, generator=generator)
    pos_cache = torch.randn(1, TRACE_PAST, hidden, generator=generator)
    kv_cache = torch.randn(blocks, 2, TRACE_CACHED, hidden, generator=generator)
    inputs = [AUDIO_INPUT, POS_INPUT, KV_INPUT]
    args: tuple = (audio, pos_cache, kv_cache)
    if two_stage:
        inputs.insert(1, CONTEXT_INPUT)
        args = (audio, torch.randn(1, TRACE_CONTEXT, hidden, generator=generator), pos_cache, kv_cache)
    outputs = [layer_output(layer) for layer in layers] + [KV_OUTPUT, FEATURES_OUTPUT]
    axes = {AUDIO_INPUT: {1: "samples"}, CONTEXT_INPUT: {1: "context_frames"}, POS_INPUT: {1: "past_frames"},
            KV_INPUT: {2: "cached_frames"}, KV_OUTPUT: {2: "frames"}, FEATURES_OUTPUT: {1: "new_frames"}}
    axes.update({layer_output(layer): {1: "frames"} for layer in layers})
    axes = {name: axis for name, axis in axes.items() if name in inputs + outputs}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter and traced-shape warnings: parity is verified
        traced = Path(tmp) / "traced.onnx"
        torch.onnx.export(module, args, str(traced), dynamo=False, opset_version=OPSET,
                          input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          do_constant_folding=True, external_data=False)
        proto = onnx.load(str(traced))
    meta = wav2vec2_metadata(model.config, source_model, layers, two_stage=two_stage)
    meta.update(stateful_metadata(blocks, hidden, pos_cache_frames(model.config), chunk=chunk,
                                  lookahead=lookahead, left=left, two_stage=two_stage))
    set_metadata(proto, meta)
    onnx.checker.check_model(proto)
    save_model(proto, out)
    return meta
