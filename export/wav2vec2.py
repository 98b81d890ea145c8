"""Load a wav2vec2 checkpoint and write it to ONNX, cut after transformer block L.

Layer convention (``kwsstream.encoders.onnxmeta.WAV2VEC2_CONVENTION``): layer L is the output of
transformer block L *before* the encoder's final LayerNorm, for every L including the last; layer
0 is the input of block 1 (feature projection + positional convolution, and for post-LayerNorm
models such as wav2vec2-base the encoder LayerNorm that precedes block 1). transformers 4.x
returns ``hidden_states[-1]`` after the final LayerNorm and 5.x before it, so the graph is built
here from the modules themselves and verified against hooks on the blocks (``verify.py``), never
against ``hidden_states``.

Why ``torch.onnx.export(dynamo=False, opset 17)`` and not optimum: optimum's exporter
(``optimum-onnx``) pins transformers < 4.58 and exports whole models - its output is
LayerNorm(block L), not block L - while a truncated wrapper module through the TorchScript
exporter gives ~2e-5 parity at every layer with dynamic batch and sample axes.

Graph (names in ``metadata.py``): input ``audio`` ``[batch, samples]`` float32; for models whose
conv front end is local (layer-norm front end, e.g. XLSR-53) an optional input ``context``
``[batch, frames, hidden]`` (default: empty) of earlier front-end features, joined before the
audio's own features, and an output ``features`` with the audio's own features - so a stream runs
the front end once. Outputs ``layer_<L>`` ``[batch, context + frames, hidden]``, one per layer.
"""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from . import ExportError
from .frontend import build_front_end
from .metadata import AUDIO_INPUT, CONTEXT_INPUT, FEATURES_OUTPUT, layer_output, set_metadata, wav2vec2_metadata

OPSET = 17
"""ONNX opset of the TorchScript exporter that gives parity here."""
WAV2VEC2_TYPES = ("wav2vec2",)
"""``model_type`` values of the configs this exporter understands."""
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
"""What a Hugging Face hub id looks like (``facebook/wav2vec2-large-xlsr-53``)."""
TRACE_SAMPLES = 16_000
"""Length of the dummy audio used to trace the graph (the axes stay dynamic)."""
TRACE_CONTEXT = 7
"""Frames of dummy context used to trace the two-stage graph."""


def _is_local(spec: str) -> bool:
    return Path(spec).expanduser().exists() or not HUB_ID.match(spec) or spec.startswith((".", "~"))


def load_config(spec: str):
    """The ``Wav2Vec2Config`` of a hub id or local folder, checked to be a wav2vec2 model.

    Raises:
        ExportError: unknown folder, no/invalid config.json, not a wav2vec2 config, not on the hub.
    """
    from transformers import Wav2Vec2Config

    if _is_local(spec):
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            raise ExportError(f"{spec}: no such model folder (give a local folder with config.json "
                              f"and weights, or a hub id such as facebook/wav2vec2-large-xlsr-53)")
        config_file = folder / "config.json"
        try:
            raw = json.loads(config_file.read_text())
        except FileNotFoundError:
            raise ExportError(f"{spec}: no config.json in this folder") from None
        except (OSError, ValueError) as err:
            raise ExportError(f"{config_file}: unreadable config ({err})") from None
        kind = raw.get("model_type") if isinstance(raw, dict) else None
        if kind not in WAV2VEC2_TYPES:
            raise ExportError(f"{config_file}: model_type {kind!r} is not a wav2vec2 model (expected one of {WAV2VEC2_TYPES})")
        return Wav2Vec2Config.from_pretrained(str(folder))
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(spec)
    except Exception as err:  # hub errors: network, unknown repo, gated repo
        reason = " ".join(str(err).split())[:200]
        raise ExportError(f"{spec}: cannot fetch this model's config from the hub ({reason})") from None
    if getattr(config, "model_type", None) not in WAV2VEC2_TYPES:
        raise ExportError(f"{spec}: model_type {config.model_type!r} is not a wav2vec2 model")
    return config


def check_layers(config, spec: str, layer: int) -> None:
    """Raise :class:`ExportError` unless ``0 <= layer <= num_hidden_layers``."""
    top = config.num_hidden_layers
    if not 0 <= layer <= top:
        raise ExportError(f"{spec}: layer {layer} is out of range 0..{top} for this model")


def load_model(spec: str, config=None):
    """Load the PyTorch ``Wav2Vec2Model`` (eval mode, eager attention) of a checked spec; ``config``
    is its :func:`load_config` when the caller has it (else loaded here)."""
    import torch
    from transformers import Wav2Vec2Model

    if config is None:
        config = load_config(spec)
    source = str(Path(spec).expanduser()) if _is_local(spec) else spec
    try:
        model = Wav2Vec2Model.from_pretrained(source, config=config, attn_implementation="eager")
    except Exception as err:
        reason = " ".join(str(err).split())[:200]
        raise ExportError(f"{spec}: cannot load the weights ({reason})") from None
    model.eval()
    torch.set_grad_enabled(False)
    return model


def two_stage_possible(config) -> bool:
    """Whether the conv front end is local (per-frame layer norms): a group-norm front end
    normalises each channel over the whole input, so it cannot run once per stream."""
    return config.feat_extract_norm == "layer"


def build_module(model, layers: Sequence[int], two_stage: bool):
    """The truncated module: blocks above ``max(layers)`` are not part of it."""
    import torch
    from torch import nn
    from torch.nn.utils import parametrize

    class LayerGraph(nn.Module):
        """audio (+ context features) -> one output per layer (+ the audio's own features)."""

        def __init__(self):
            super().__init__()
            encoder = model.encoder
            self.front_end = build_front_end(model.feature_extractor)
            self.feature_projection = model.feature_projection
            self.pos_conv = encoder.pos_conv_embed
            # post-LayerNorm models normalise the input of block 1; stable-LayerNorm ones
            # normalise the output of the last block (which no layer includes)
            self.input_norm = None if model.config.do_stable_layer_norm else encoder.layer_norm
            self.blocks = nn.ModuleList(list(encoder.layers)[: max(layers)])
            self.layers = tuple(layers)
            self.two_stage = two_stage

        def forward(self, audio, context=None):
            features = self.front_end(audio)
            features, _ = self.feature_projection(features)
            hidden = features
            if context is not None:
                batch = torch.ones(audio.shape[0], 1, 1, dtype=context.dtype)
                hidden = torch.cat([context * batch, features], dim=1)  # broadcast a batch-1 default
            hidden = hidden + self.pos_conv(hidden)
            if self.input_norm is not None:
                hidden = self.input_norm(hidden)
            outputs = [hidden] if 0 in self.layers else []
            for index, block in enumerate(self.blocks, start=1):
                hidden = block(hidden)
                hidden = hidden[0] if isinstance(hidden, tuple) else hidden
                if index in self.layers:
                    outputs.append(hidden)
            return (*outputs, features) if self.two_stage else tuple(outputs)

    conv = model.encoder.pos_conv_embed.conv
    if parametrize.is_parametrized(conv, "weight"):  # bake the weight norm into a plain weight
        parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
    return LayerGraph().eval()


def export_graph(model, out: Path, layers: Sequence[int], source_model: str, *, two_stage: bool | None = None) -> dict[str, str]:
    """Trace ``model`` cut at ``max(layers)`` and write it to ``out`` (fp32) with its metadata.

    Returns:
        The metadata written.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    layers = tuple(sorted(set(int(layer) for layer in layers)))
    if two_stage is None:
        two_stage = two_stage_possible(model.config)
    module = build_module(model, layers, two_stage)
    hidden = model.config.hidden_size
    audio = torch.randn(1, TRACE_SAMPLES, generator=torch.Generator().manual_seed(0))
    outputs = [layer_output(layer) for layer in layers]
    axes = {AUDIO_INPUT: {0: "batch", 1: "samples"}}
    axes.update({name: {0: "batch", 1: "frames"} for name in outputs})
    args: tuple = (audio,)
    inputs = [AUDIO_INPUT]
    if two_stage:
        args = (audio, torch.zeros(1, TRACE_CONTEXT, hidden))
        inputs.append(CONTEXT_INPUT)
        outputs.append(FEATURES_OUTPUT)
        axes[CONTEXT_INPUT] = {0: "context_batch", 1: "context_frames"}
        axes[FEATURES_OUTPUT] = {0: "batch", 1: "new_frames"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, warnings.catch_warnings():
        # the TorchScript exporter warns that it is legacy and that shape checks were traced as
        # constants (GroupNorm); parity is verified on other lengths, so the warnings are noise
        warnings.simplefilter("ignore")
        traced = Path(tmp) / "traced.onnx"
        torch.onnx.export(module, args, str(traced), dynamo=False, opset_version=OPSET,
                          input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          do_constant_folding=True, external_data=False)
        proto = onnx.load(str(traced))
    if two_stage:  # make `context` optional: an empty default lets callers feed audio alone
        import numpy as np

        proto.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 0, hidden), np.float32), CONTEXT_INPUT))
    meta = wav2vec2_metadata(model.config, source_model, layers, two_stage=two_stage)
    set_metadata(proto, meta)
    onnx.checker.check_model(proto)
    save_model(proto, out)
    return meta


def save_model(proto, out: Path) -> None:
    """Write an ONNX model atomically (a crash never leaves a half-written file at ``out``)."""
    import onnx

    tmp = out.with_name(out.name + ".part")
    try:
        onnx.save_model(proto, str(tmp))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
