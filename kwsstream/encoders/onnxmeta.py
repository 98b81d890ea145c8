"""The metadata contract of exported encoder models, read by the runtime.

An encoder model is an ONNX file whose ``metadata_props`` (string key -> string value) say
everything the runtime needs; :class:`ModelInfo` is that, parsed and checked. The runtime never
looks at the graph's internals, so any speech encoder (wav2vec2 at layer L, Google's
speech_embedding, ...) is added by an export script that writes these keys.

Required keys:

====================  =====================================================================
``kwsstream.format``  ``"1"`` (this contract's version)
``sample_rate``       input sample rate, ``16000``
``frame_hop``         samples between consecutive output frames (wav2vec2: 320)
``receptive_field``   samples one output frame is computed from, before any context (400)
``hidden_size``       width of an output frame (wav2vec2-large: 1024)
====================  =====================================================================

Optional keys (default in brackets):

=======================  ==================================================================
``source_model``         where the weights came from: hub id or folder [``unknown``]
``layer``                the layer the runtime uses [the last of ``layers``, else 0]
``layers``               comma list, the layer of each output in ``outputs`` [``layer``]
``outputs``              comma list of output tensor names [the graph's outputs, in order,
                         less ``output_features``]
``layer_convention``     what "layer L" means [``none``]; wav2vec2 exports write
                         :data:`WAV2VEC2_CONVENTION`
``pad``                  zero samples the runtime adds before the first and after the last
                         sample of a stream or utterance [0]
``frame_rate``           informative: ``sample_rate / frame_hop``
``precision``            ``fp32`` | ``int8`` [``fp32``]
``exporter_version``     free text [``unknown``]
``context``              ``global``: frames depend on audio beyond their receptive field
                         (attention), so streaming needs context windows; ``local``: they
                         do not, streaming is exact [``global``]
``input_audio``          name of the ``[batch, samples]`` float32 input [the first input]
``input_context``        two-stage models: name of the ``[batch, frames, feature_size]``
                         input that carries earlier front-end features (default value
                         empty, so feeding audio alone encodes it alone) [absent]
``output_features``      two-stage models: name of the output that returns the front-end
                         features of the audio input alone [absent]
``feature_size``         two-stage models: width of those features [``hidden_size``]
``stream_window``        recommended streaming window, seconds (contextual models)
``stream_hop``           recommended hop between windows, seconds
``stream_lookahead``     recommended right context, seconds
``encode``               ``whole``: a template clip is encoded in one run; ``stream``: as a
                         stream encodes it (windows), for models whose frames depend on the
                         window they were computed in (Whisper) [``whole``]
``stream_mode``          ``windowed``: the graph is stateless, a stream runs it on
                         overlapping windows; ``stateful``: the graph takes and returns its
                         streaming state (below), each frame is computed once [``windowed``]
``stream_chunk``         stateful: recommended frames committed per call, seconds
``stream_left``          stateful: recommended left context (cached keys/values), seconds
``input_pos_cache``      stateful: name of the ``[1, past, feature_size]`` input with the
                         projected features of up to ``pos_cache_frames`` committed frames
                         before the call (the positional convolution's left side)
``pos_cache_frames``     stateful: how many earlier frames that input may hold
``input_kv_cache``       stateful: name of the ``[kv_layers, 2, cached, kv_size]`` input with
                         the keys and values of the cached frames at each block's input
``output_kv``            stateful: name of the ``[kv_layers, 2, frames, kv_size]`` output with
                         the keys and values of every frame of the call
``kv_layers``,           stateful: transformer blocks in the graph, and width of a key or
``kv_size``              value
``default_threshold``    obsolete, ignored: written by older exports, when enrollment started
                         from a base threshold (thresholds are now calibrated on background
                         audio, ``kwsstream/calibrate.py``); files that have it still load
``source_family``,       informative only: ``wav2vec2``; ``none`` (raw audio in); how
``input_normalization``, the weights were quantised
``quantization``
=======================  ==================================================================

A stateful graph (batch 1) also needs ``output_features`` (the features its audio input gave;
``input_context`` only when its front end is local). Each call covers ``chunk + lookahead``
frames and its outputs give every frame of the call; the runtime keeps the first ``chunk``,
caches their keys/values (up to ``left`` frames) and features, and sends the lookahead frames
again as the next call's own frames. Empty caches and a whole utterance as one call give the
whole-utterance encoding.

Outputs are ``[batch, frames, hidden_size]`` float32; extra singleton axes (e.g.
``[batch, frames, 1, 96]``) are tolerated. A whole input of ``S`` samples gives
``1 + (S + 2*pad - receptive_field) // frame_hop`` frames (none if shorter than the receptive
field).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import EncoderError

FORMAT_KEY = "kwsstream.format"
FORMAT_VERSION = 1
WAV2VEC2_CONVENTION = "block-output-before-final-layernorm"
"""Layer L is the output of transformer block L before the encoder's final LayerNorm (for every
L, the last included); layer 0 is the input of block 1 (feature projection + positional
convolution, and for post-LayerNorm models the encoder's LayerNorm that sits before block 1)."""
PRECISIONS = ("fp32", "int8")
CONTEXTS = ("global", "local")
STREAM_MODES = ("windowed", "stateful")
ENCODE_MODES = ("whole", "stream")
STATEFUL_KEYS = ("input_pos_cache", "pos_cache_frames", "input_kv_cache", "output_kv", "kv_layers", "kv_size",
                 "output_features")
"""Keys a ``stream_mode = stateful`` model must have."""
REQUIRED_KEYS = (FORMAT_KEY, "sample_rate", "frame_hop", "receptive_field", "hidden_size")


@dataclass(frozen=True)
class ModelInfo:
    """What an exported model says about itself (see the module docstring for each key)."""

    source_model: str
    layers: tuple[int, ...]
    outputs: tuple[str, ...]
    layer: int
    layer_convention: str
    sample_rate: int
    frame_hop: int
    receptive_field: int
    pad: int
    hidden_size: int
    precision: str
    exporter_version: str
    contextual: bool
    input_audio: str
    input_context: str | None
    output_features: str | None
    feature_size: int
    stream_window: float | None
    stream_hop: float | None
    stream_lookahead: float | None
    stateful: bool = False
    encode_as_stream: bool = False
    stream_chunk: float | None = None
    stream_left: float | None = None
    input_pos_cache: str | None = None
    pos_cache_frames: int = 0
    input_kv_cache: str | None = None
    output_kv: str | None = None
    kv_layers: int = 0
    kv_size: int = 0

    @property
    def two_stage(self) -> bool:
        """Whether the front end's features can be computed once and fed back as context."""
        return self.input_context is not None and self.output_features is not None

    def output_for(self, layer: int) -> str:
        """Name of the output tensor that holds ``layer``."""
        return self.outputs[self.layers.index(layer)]


def _int(meta: Mapping[str, str], key: str, name: str, default: int | None = None) -> int:
    if key not in meta:
        if default is None:
            raise EncoderError(f"{name}: metadata key '{key}' missing (not a kwsstream encoder export?)")
        return default
    try:
        return int(meta[key])
    except ValueError:
        raise EncoderError(f"{name}: metadata '{key}' = {meta[key]!r} is not an integer") from None


def _number(meta: Mapping[str, str], key: str, name: str, zero_ok: bool = False) -> float | None:
    if key not in meta:
        return None
    try:
        value = float(meta[key])
    except ValueError:
        raise EncoderError(f"{name}: metadata '{key}' = {meta[key]!r} is not a number") from None
    if not (value >= 0 if zero_ok else value > 0):
        raise EncoderError(f"{name}: metadata '{key}' = {meta[key]!r} is out of range")
    return value


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_model_info(
    meta: Mapping[str, str],
    input_names: Sequence[str],
    output_names: Sequence[str],
    name: str,
) -> ModelInfo:
    """Check ``meta`` against the model's actual inputs and outputs and return its facts.

    Args:
        meta: the model's ``metadata_props``.
        input_names, output_names: the graph's inputs and outputs (from the session).
        name: the model file, for error messages.

    Raises:
        EncoderError: a missing or malformed key, or names that are not in the graph.
    """
    if FORMAT_KEY not in meta:
        raise EncoderError(f"{name}: no '{FORMAT_KEY}' metadata: not a model exported for kwsstream")
    version = _int(meta, FORMAT_KEY, name)
    if version != FORMAT_VERSION:
        raise EncoderError(f"{name}: metadata format {version} is not supported (expected {FORMAT_VERSION})")
    for key in REQUIRED_KEYS:
        _int(meta, key, name)
    sample_rate = _int(meta, "sample_rate", name)
    frame_hop = _int(meta, "frame_hop", name)
    receptive_field = _int(meta, "receptive_field", name)
    hidden_size = _int(meta, "hidden_size", name)
    pad = _int(meta, "pad", name, 0)
    if min(sample_rate, frame_hop, receptive_field, hidden_size) < 1 or pad < 0:
        raise EncoderError(f"{name}: metadata sizes must be positive (got sample_rate={sample_rate}, "
                           f"frame_hop={frame_hop}, receptive_field={receptive_field}, "
                           f"hidden_size={hidden_size}, pad={pad})")

    input_audio = meta.get("input_audio", input_names[0] if input_names else "")
    input_context = meta.get("input_context") or None
    output_features = meta.get("output_features") or None
    for kind, tensor, pool in (("input", input_audio, input_names), ("input", input_context, input_names),
                               ("output", output_features, output_names)):
        if tensor is not None and tensor not in pool:
            raise EncoderError(f"{name}: metadata names {kind} '{tensor}', the graph has {list(pool)}")
    encode_mode = meta.get("encode", "whole")
    if encode_mode not in ENCODE_MODES:
        raise EncoderError(f"{name}: metadata encode={encode_mode!r} (expected one of {ENCODE_MODES})")
    mode = meta.get("stream_mode", "windowed")
    if mode not in STREAM_MODES:
        raise EncoderError(f"{name}: metadata stream_mode={mode!r} (expected one of {STREAM_MODES})")
    state = _stateful(meta, input_names, output_names, name) if mode == "stateful" else {}
    if not state and (input_context is None) != (output_features is None):
        raise EncoderError(f"{name}: metadata must name both 'input_context' and 'output_features' or neither")

    outputs = _names(meta["outputs"]) if "outputs" in meta else tuple(
        out for out in output_names if out not in (output_features, state.get("output_kv")))
    missing = [out for out in outputs if out not in output_names]
    if missing or not outputs:
        raise EncoderError(f"{name}: metadata outputs {list(outputs)} do not match the graph's {list(output_names)}")
    try:
        if "layers" in meta:
            layers = tuple(int(x) for x in _names(meta["layers"]))
        else:
            layers = (int(meta.get("layer", 0)),) * len(outputs) if len(outputs) == 1 else tuple(range(len(outputs)))
    except ValueError:
        raise EncoderError(f"{name}: metadata 'layers' = {meta.get('layers')!r} is not a list of integers") from None
    if len(layers) != len(outputs) or len(set(layers)) != len(layers):
        raise EncoderError(f"{name}: metadata layers {list(layers)} do not match outputs {list(outputs)}")
    layer = _int(meta, "layer", name, layers[-1])
    if layer not in layers:
        raise EncoderError(f"{name}: metadata layer {layer} is not among the outputs' layers {list(layers)}")

    precision = meta.get("precision", "fp32")
    context = meta.get("context", "global")
    if precision not in PRECISIONS or context not in CONTEXTS:
        raise EncoderError(f"{name}: metadata precision={precision!r} context={context!r} "
                           f"(expected one of {PRECISIONS} and {CONTEXTS})")
    return ModelInfo(
        source_model=meta.get("source_model", "unknown"),
        layers=layers,
        outputs=outputs,
        layer=layer,
        layer_convention=meta.get("layer_convention", "none"),
        sample_rate=sample_rate,
        frame_hop=frame_hop,
        receptive_field=receptive_field,
        pad=pad,
        hidden_size=hidden_size,
        precision=precision,
        exporter_version=meta.get("exporter_version", "unknown"),
        contextual=context == "global",
        input_audio=input_audio,
        input_context=input_context,
        output_features=output_features,
        feature_size=_int(meta, "feature_size", name, hidden_size),
        stream_window=_number(meta, "stream_window", name),
        stream_hop=_number(meta, "stream_hop", name),
        stream_lookahead=_number(meta, "stream_lookahead", name, zero_ok=True),
        encode_as_stream=encode_mode == "stream" and context == "global",
        **state,
    )


def _stateful(meta: Mapping[str, str], input_names: Sequence[str], output_names: Sequence[str],
              name: str) -> dict:
    """The checked stateful keys, as :class:`ModelInfo` fields."""
    missing = [key for key in STATEFUL_KEYS if not meta.get(key)]
    if missing:
        raise EncoderError(f"{name}: stream_mode 'stateful' needs metadata {missing}")
    for kind, key, pool in (("input", "input_pos_cache", input_names), ("input", "input_kv_cache", input_names),
                            ("output", "output_kv", output_names)):
        if meta[key] not in pool:
            raise EncoderError(f"{name}: metadata {key} names {kind} '{meta[key]}', the graph has {list(pool)}")
    sizes = {key: _int(meta, key, name) for key in ("pos_cache_frames", "kv_layers", "kv_size")}
    if sizes["pos_cache_frames"] < 0 or min(sizes["kv_layers"], sizes["kv_size"]) < 1:
        raise EncoderError(f"{name}: metadata stateful sizes out of range ({sizes})")
    return dict(stateful=True, stream_chunk=_number(meta, "stream_chunk", name),
                stream_left=_number(meta, "stream_left", name, zero_ok=True), input_pos_cache=meta["input_pos_cache"],
                input_kv_cache=meta["input_kv_cache"], output_kv=meta["output_kv"], **sizes)
