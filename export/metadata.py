"""The model facts written into an exported file's ``metadata_props`` (writing side).

The contract itself - every key, its meaning and default - is documented once, in
``kwsstream/encoders/onnxmeta.py`` (the runtime's parser) and in models/README.md. This module
builds the values for a wav2vec2 export (and the format and frame-grid keys every exporter
shares) and writes/reads them with the ``onnx`` package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from kwsstream.encoders.base import SAMPLE_RATE  # every exported model takes the pipeline's 16 kHz audio
from kwsstream.encoders.onnxmeta import FORMAT_KEY, FORMAT_VERSION, WAV2VEC2_CONVENTION

from . import EXPORTER_VERSION

AUDIO_INPUT = "audio"
CONTEXT_INPUT = "context"
FEATURES_OUTPUT = "features"
POS_INPUT = "pos_cache"
KV_INPUT = "kv_cache"
KV_OUTPUT = "kv"


def layer_output(layer: int) -> str:
    """Output tensor name of a layer (``layer_12``)."""
    return f"layer_{layer}"


def conv_geometry(kernels: Sequence[int], strides: Sequence[int]) -> tuple[int, int]:
    """(hop, receptive field) in samples of a stack of 1-D convolutions (no padding)."""
    hop, field = 1, 1
    for kernel, stride in zip(kernels, strides):
        field += (kernel - 1) * hop
        hop *= stride
    return hop, field


def exporter_version() -> str:
    """:data:`EXPORTER_VERSION` with the versions of the libraries that made the graph."""
    import onnx
    import torch
    import transformers

    return f"{EXPORTER_VERSION} (torch {torch.__version__}, transformers {transformers.__version__}, onnx {onnx.__version__})"


def grid_metadata(hop: int, receptive_field: int, pad: int, hidden_size: int) -> dict[str, str]:
    """The contract's format key and frame-grid keys, shared by every exporter.

    Args:
        hop: samples between output frames.
        receptive_field: samples one output frame is computed from.
        pad: zero samples the runtime adds on each side of an input.
        hidden_size: width of one output frame.
    """
    return {
        FORMAT_KEY: str(FORMAT_VERSION),
        "sample_rate": str(SAMPLE_RATE),
        "frame_hop": str(hop),
        "frame_rate": f"{SAMPLE_RATE / hop:g}",
        "receptive_field": str(receptive_field),
        "pad": str(pad),
        "hidden_size": str(hidden_size),
    }


def wav2vec2_metadata(config, source_model: str, layers: Sequence[int], *, two_stage: bool,
                      precision: str = "fp32") -> dict[str, str]:
    """The metadata of a wav2vec2 export.

    Args:
        config: the checkpoint's ``Wav2Vec2Config``.
        source_model: hub id or local folder, as given by the user.
        layers: the layer of each output, in output order (one for a layer-L export).
        two_stage: the graph has the ``context`` input and ``features`` output (local conv front
            end computed once per stream).
        precision: ``fp32`` or ``int8``.
    """
    grid = grid_metadata(*conv_geometry(config.conv_kernel, config.conv_stride), 0, config.hidden_size)
    meta = {
        FORMAT_KEY: grid.pop(FORMAT_KEY),  # key order as written since the first exports
        "source_model": source_model,
        "source_family": "wav2vec2",
        "layer": str(max(layers)),
        "layers": ",".join(str(layer) for layer in layers),
        "outputs": ",".join(layer_output(layer) for layer in layers),
        "layer_convention": WAV2VEC2_CONVENTION,
        **grid,
        "precision": precision,
        "exporter_version": exporter_version(),
        "context": "global",
        "input_audio": AUDIO_INPUT,
        "input_normalization": "none",
    }
    if two_stage:
        meta.update(input_context=CONTEXT_INPUT, output_features=FEATURES_OUTPUT,
                    feature_size=str(config.hidden_size))
    return meta


def stateful_metadata(blocks: int, kv_size: int, pos_frames: int, *, chunk: float, lookahead: float,
                      left: float, two_stage: bool) -> dict[str, str]:
    """The keys a stateful streaming export adds (``stateful.py``; meanings in ``onnxmeta.py``).

    Args:
        blocks: transformer blocks in the graph (the key/value cache's first axis).
        kv_size: width of a cached key or value (the model's hidden size).
        pos_frames: earlier frames the positional convolution reads.
        chunk, lookahead, left: the recommended streaming geometry, seconds.
        two_stage: the graph also has the ``context`` input (local front end).
    """
    meta = {
        "stream_mode": "stateful",
        "input_pos_cache": POS_INPUT,
        "pos_cache_frames": str(pos_frames),
        "input_kv_cache": KV_INPUT,
        "output_kv": KV_OUTPUT,
        "kv_layers": str(blocks),
        "kv_size": str(kv_size),
        "output_features": FEATURES_OUTPUT,
        "feature_size": str(kv_size),
        "stream_chunk": f"{chunk:g}",
        "stream_lookahead": f"{lookahead:g}",
        "stream_left": f"{left:g}",
    }
    if two_stage:
        meta["input_context"] = CONTEXT_INPUT
    return meta


def set_metadata(model, meta: Mapping[str, str]) -> None:
    """Replace an ``onnx.ModelProto``'s metadata_props with ``meta`` (in place)."""
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)


def get_metadata(model) -> dict[str, str]:
    """An ``onnx.ModelProto``'s metadata_props as a dict."""
    return {entry.key: entry.value for entry in model.metadata_props}


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of an ONNX file, without loading its weights."""
    import onnx

    return get_metadata(onnx.load(str(path), load_external_data=False))

