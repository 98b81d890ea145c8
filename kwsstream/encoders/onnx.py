"""Encoders exported to ONNX (wav2vec2 at layer L, or any model that follows the metadata contract).

:class:`OnnxEncoder` reads everything it needs from the model's metadata (``onnxmeta.py``):
frame grid, width, layer, whether frames need context, and - for two-stage models - the names
that let the local front end run once per stream. It never looks at wav2vec2 internals.

Streaming, as the model's metadata says (``stream_mode``):

* ``windowed`` (``onnxstream.py``): a stateless contextual model runs on overlapping windows of
  ``window`` seconds every ``hop`` seconds, keeping the frames that have ``lookahead`` seconds of
  right context; a two-stage model's conv front end runs once per stream; a local model
  (``context = local``) runs on back-to-back blocks: exact.
* ``stateful`` (``onnxstate.py``): the graph takes and returns its state (cached keys/values of
  ``left`` seconds of committed frames, cached features for the positional convolution); each
  call commits ``chunk`` seconds of frames computed with ``lookahead`` seconds of right context,
  so every frame's transformer work is done about once.

:meth:`OnnxEncoder.encode` (whole utterances: templates, the eval) runs the model once over the
whole utterance for both modes (a stateful graph with empty state computes exactly that); it does
not depend on the streaming geometry, so keyword sets stay valid when the geometry changes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AudioError, EncoderError, UsageError
from ..onnxsession import make_session
from ..stitch import StitchPlan
from .base import SAMPLE_RATE, EncoderBase, FrameGrid, safe_name
from .onnxmeta import ModelInfo, parse_model_info
from .onnxstate import DEFAULT_CHUNK_S, DEFAULT_LEFT_S, DEFAULT_STATE_LOOKAHEAD_S, OnnxStateStream, StatePlan
from .onnxstream import OnnxStream, as_frames

DEFAULT_WINDOW_S = 1.5
"""Streaming window of a contextual model when neither the caller nor the model's metadata choose
one (seconds): 0.5 s left context + hop + lookahead. Chosen from measurements on XLSR-53-size
models (fidelity, real-time factor and latency: see models/README.md)."""
DEFAULT_HOP_S = 0.7
"""Hop between windows (seconds): frames emitted per encoder run. The transformer's cost is
``window / hop`` times that of encoding the audio once."""
DEFAULT_LOOKAHEAD_S = 0.3
"""Right context of emitted frames (seconds). A frame comes out at most hop + lookahead (1.0 s)
after its audio, plus the audio block's length and the compute time."""
LOCAL_HOP_S = 0.5
"""Block length for local (context-free) models, whose streaming is exact at any block length."""
HASH_BLOCK = 1 << 22
"""Bytes read per update when hashing a model file."""


@dataclass(frozen=True)
class StreamOptions:
    """How a contextual model is streamed (``None``: the model's recommendation, else the default).

    Attributes:
        window: windowed models: seconds of audio the model sees per run (left context + hop +
            lookahead).
        hop: windowed models: seconds between runs: frames emitted per run.
        lookahead: seconds of right context each emitted frame gets (both modes); with ``hop``
            (or ``chunk``) it bounds the latency from audio in to frame out.
        chunk: stateful models: seconds of frames committed per call.
        left: stateful models: seconds of committed frames whose keys/values stay cached.
    """

    window: float | None = None
    hop: float | None = None
    lookahead: float | None = None
    chunk: float | None = None
    left: float | None = None


MAX_PATH_CHARS = 4096
MAX_DIM = 8192


def check_onnx_identity(identity: dict[str, Any]) -> int:
    """Type- and range-check a stored ONNX identity (what :meth:`OnnxEncoder.identity` writes)
    before anything is built from it; returns its frame width. Raises :class:`EncoderError` (no
    file named: the caller adds it)."""
    path, sha, layer, dim = (identity.get(k) for k in ("path", "sha256", "layer", "dim"))
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS or "\0" in path:
        raise EncoderError(f"ONNX model path {path!r} is not a file path")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise EncoderError(f"ONNX model sha256 {sha!r} is not 64 hex digits")
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer <= 10_000:
        raise EncoderError(f"ONNX layer {layer!r} is not a whole number >= 0")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= MAX_DIM:
        raise EncoderError(f"ONNX frame width {dim!r} is not a whole number from 1 to {MAX_DIM}")
    for key in ("layer_convention", "precision", "source_model"):
        if key in identity and not isinstance(identity[key], str):
            raise EncoderError(f"ONNX {key} {identity[key]!r} is not a string")
    return dim


MAX_MODEL_BYTES = 8 << 30
"""Largest model file hashed or opened (wav2vec2-large in fp32 is ~1.3 GB)."""


def file_sha256(path: Path, limit: int = MAX_MODEL_BYTES) -> str:
    """Hex sha256 of a file's bytes (the model's identity in keyword sets): a regular file of at
    most ``limit`` bytes, read through the opened descriptor that was checked (never a FIFO or a
    device). Raises :class:`EncoderError`."""
    from ..safefile import open_regular

    digest = hashlib.sha256()
    total = 0
    with open_regular(path, limit, EncoderError, "model file") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            total += len(block)
            if total > limit:
                raise EncoderError(f"{path}: more than a model file may hold ({limit} bytes)")
            digest.update(block)
    return digest.hexdigest()


def check_model_file(path: Path, sha256: str) -> None:
    """Before onnxruntime opens ``path``: it is a regular file of a plausible size whose sha256
    is ``sha256`` (a keyword set's model). Raises :class:`EncoderError` naming the file."""
    actual = file_sha256(path)
    if actual != sha256:
        raise EncoderError(f"{path}: not the model this keyword set was enrolled with (sha256 {actual[:12]}…, "
                           f"the set names {sha256[:12]}…): pass --encoder PATH of that model")


class OnnxEncoder(EncoderBase):
    """A shared, read-only encoder around one exported ONNX model (see the module docstring).

    Args:
        path: the ``.onnx`` file.
        threads: onnxruntime intra-op threads (default: by model size, see
            :func:`kwsstream.onnxsession.default_threads`).
        layer: for an all-layers model, the layer to stream and encode (default: the model's).
        stream: streaming geometry for contextual models.
        spin: let onnxruntime's threads busy-wait (default: by model size, see
            :func:`kwsstream.onnxsession.make_session`).

    Raises:
        EncoderError: missing or unusable file, metadata that breaks the contract, a layer the
            model does not have.
        UsageError: stream options that do not fit together.
    """

    kind = "onnx"
    spec_help = "the path of an exported .onnx model, or speech-embedding"

    def __init__(self, path: str | Path, threads: int | None = None, *, layer: int | None = None,
                 stream: StreamOptions = StreamOptions(), spin: bool | None = None, sha256: str | None = None):
        self.path = Path(path)
        name = str(self.path)
        if not self.path.is_file():
            raise EncoderError(f"{name}: no such model file")
        if sha256 is not None:  # a stored identity's model: its bytes are checked before the session parses them
            check_model_file(self.path, sha256)
        self.session = make_session(self.path, threads=threads, spin=spin)
        meta = self.session.get_modelmeta().custom_metadata_map
        # an optional input (one with a default value) is listed among the overridable initialisers
        inputs = [item.name for item in self.session.get_inputs()]
        inputs += [item.name for item in self.session.get_overridable_initializers()]
        outputs = [item.name for item in self.session.get_outputs()]
        self.info: ModelInfo = parse_model_info(meta, inputs, outputs, name)
        info = self.info
        if info.sample_rate != SAMPLE_RATE:
            raise EncoderError(f"{name}: model expects {info.sample_rate} Hz audio, the pipeline runs at {SAMPLE_RATE}")
        self._layer = info.layer if layer is None else int(layer)
        if self._layer not in info.layers:
            raise EncoderError(f"{name}: layer {self._layer} is not in this model (it has {list(info.layers)})")
        self.sha256 = sha256 if sha256 is not None else file_sha256(self.path)
        self.dim = info.hidden_size
        self.grid = FrameGrid(hop=info.frame_hop, length=info.receptive_field, pad=info.pad)
        self.plan: StitchPlan | StatePlan = self._state_plan(stream) if info.stateful else self._plan(stream)
        self._output = info.output_for(self._layer)
        self._empty_context = np.zeros((1, 0, info.feature_size), np.float32)

    def _state_plan(self, options: StreamOptions) -> StatePlan:
        info = self.info
        chunk = options.chunk if options.chunk is not None else info.stream_chunk or DEFAULT_CHUNK_S
        lookahead = next(v for v in (options.lookahead, info.stream_lookahead, DEFAULT_STATE_LOOKAHEAD_S) if v is not None)
        left = next(v for v in (options.left, info.stream_left, DEFAULT_LEFT_S) if v is not None)
        for label, value in (("chunk", chunk), ("lookahead", lookahead), ("left", left)):
            if not (np.isfinite(value) and value >= 0):
                raise UsageError(f"stream {label} must be a non-negative number of seconds (got {value})")
        rate = self.grid.frame_rate
        return StatePlan(chunk=max(1, int(round(chunk * rate))), lookahead=int(round(lookahead * rate)),
                         left=int(round(left * rate)))

    def _plan(self, options: StreamOptions) -> StitchPlan:
        info = self.info
        if not info.contextual:
            hop = options.hop or info.stream_hop or LOCAL_HOP_S
            window, lookahead = options.window or hop, 0.0
        else:
            window = options.window or info.stream_window or DEFAULT_WINDOW_S
            hop = options.hop or info.stream_hop or DEFAULT_HOP_S
            chosen = options.window is not None or options.hop is not None
            if options.lookahead is not None:
                lookahead = options.lookahead
            elif not chosen and info.stream_lookahead is not None:
                lookahead = info.stream_lookahead
            elif not chosen and info.stream_window is None and info.stream_hop is None:
                lookahead = DEFAULT_LOOKAHEAD_S
            else:  # the geometry was chosen without a lookahead: symmetric context
                lookahead = max(0.0, (window - hop) / 2)
        for label, value in (("window", window), ("hop", hop), ("lookahead", lookahead)):
            if not (np.isfinite(value) and value >= 0):
                raise UsageError(f"stream {label} must be a non-negative number of seconds (got {value})")
        rate = self.grid.frame_rate
        frames = [int(round(value * rate)) for value in (window, hop, lookahead)]
        return StitchPlan(window=max(frames[0], 1), hop=max(frames[1], 1), lookahead=frames[2])

    # -- the registry's side ----------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: str, *, threads: int | None = None) -> OnnxEncoder | None:
        """A path ending in ``.onnx``, or the name of a model kwsstream knows
        (:data:`kwsstream.models.NAMED_MODELS`, e.g. ``speech-embedding``)."""
        from ..models import MAKE_COMMANDS, NAMED_MODELS, find_model

        if spec in NAMED_MODELS:
            path = find_model(spec)
            if path is None:
                raise EncoderError(f"{spec}: the model has not been made (run '{MAKE_COMMANDS[spec]}' in the "
                                   "kwsstream checkout)")
            return cls(path, threads=threads)
        return cls(spec, threads=threads) if Path(spec).suffix.lower() == ".onnx" else None

    @classmethod
    def from_identity(cls, identity: dict[str, Any], *, threads: int | None = None) -> OnnxEncoder:
        """The model file the identity names, its size and sha256 checked *before* onnxruntime
        opens it (:func:`check_model_file`; the caller still compares identities with
        ``same_identity``)."""
        path = identity["path"]
        if not Path(path).is_file():
            raise EncoderError(
                f"{path}: the ONNX model this keyword set was enrolled with is not there (pass --encoder PATH)"
            )
        return cls(path, threads=threads, sha256=identity["sha256"])

    @classmethod
    def check_identity(cls, identity: dict[str, Any]) -> int:
        return check_onnx_identity(identity)

    @classmethod
    def describe(cls, identity: dict[str, Any]) -> str:
        """E.g. ``speech-embedding (fp32) /models/speech-embedding.onnx, sha256 0123456789ab…``, or
        ``wav2vec2-large-xlsr-53 layer 12 (int8) ...`` for a model with layers."""
        source = str(identity.get("source_model", "")).rstrip("/").split("/")[-1] or "onnx"
        layer = "" if identity.get("layer_convention", "none") == "none" else f" layer {identity.get('layer', '?')}"
        return (f"{source}{layer} ({identity.get('precision', 'fp32')}) {identity.get('path', '?')}, "
                f"sha256 {str(identity.get('sha256', '?'))[:12]}…")

    # -- identity ---------------------------------------------------------------------------------
    @property
    def identity(self) -> dict[str, Any]:
        """Kind, model file hash, layer, convention, precision and source (``path`` is ignored
        when identities are compared). Streaming options are not part of it: templates are made
        with :meth:`encode`, which does not depend on them."""
        info = self.info
        return {
            "kind": self.kind,
            "sha256": self.sha256,
            "layer": self.layer,
            "layer_convention": info.layer_convention,
            "precision": info.precision,
            "source_model": info.source_model,
            "dim": self.dim,
            "path": str(self.path.resolve()),  # absolute: a set may be used from another folder
        }

    @property
    def key(self) -> str:
        """The model (all layers): :attr:`model_name` and the file's sha256."""
        return f"{safe_name(self.model_name)}-{self.sha256[:12]}"

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.info.layers)

    @property
    def layer(self) -> int:
        return self._layer

    @property
    def model_name(self) -> str:
        """The model without a layer: last part of ``source_model`` (``onnx`` if empty) and the
        precision, e.g. ``wav2vec2-large-xlsr-53-int8``, ``speech-embedding-fp32``."""
        return f"{self._source}-{self.info.precision}"

    @property
    def name(self) -> str:
        """E.g. ``wav2vec2-large-xlsr-53-L12-int8``; no ``-L`` part for a model without layers
        (``layer_convention`` ``none``, e.g. ``speech-embedding-fp32``, its :attr:`model_name`)."""
        if self.info.layer_convention == "none":
            return self.model_name
        return f"{self._source}-L{self.layer}-{self.info.precision}"

    @property
    def _source(self) -> str:
        return self.info.source_model.rstrip("/").split("/")[-1] or "onnx"

    # -- whole utterances -------------------------------------------------------------------------
    def _check_audio(self, audio: np.ndarray) -> np.ndarray:
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise AudioError(f"{self.path}: encoder input must be mono samples, got shape {samples.shape}")
        return samples

    def _padded(self, audio: np.ndarray) -> np.ndarray:
        pad = np.zeros(self.grid.pad, np.float32)
        return np.concatenate([pad, audio, pad]) if self.grid.pad else audio

    def _feed(self, audio: np.ndarray, context: np.ndarray | None) -> dict[str, np.ndarray]:
        feed = {self.info.input_audio: np.ascontiguousarray(audio[None, :], dtype=np.float32)}
        if self.info.two_stage:
            feed[self.info.input_context] = self._empty_context if context is None else context[None]
        if self.info.stateful:  # a whole utterance: one call with empty state
            feed[self.info.input_pos_cache] = self._empty_context
            feed[self.info.input_kv_cache] = np.zeros((self.info.kv_layers, 2, 0, self.info.kv_size), np.float32)
        return feed

    def _check_count(self, frames: np.ndarray, expected: int, samples: int) -> np.ndarray:
        if frames.shape[0] != expected:
            raise EncoderError(f"{self.path}: model gave {frames.shape[0]} frames for {samples} samples, "
                               f"its metadata grid implies {expected}")
        return frames

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """Encode one whole utterance: ``(n_frames, dim)`` float32 (none if shorter than one
        receptive field). A model whose metadata says ``encode = stream`` (its frames depend on
        the window they are computed in) encodes it as a stream does, so that templates and
        the stream they are matched in are the same representation."""
        if self.info.encode_as_stream:
            self._check_audio(audio)
            state = self.create_state()
            frames = [state.push(np.asarray(audio, np.float32)), state.flush()]
            return np.concatenate(frames).astype(np.float32, copy=False)
        return self.encode_layers(audio, layers=(self.layer,))[self.layer]

    def encode_layers(self, audio: np.ndarray, layers: tuple[int, ...] | None = None) -> dict[int, np.ndarray]:
        """Encode one whole utterance at several layers in one pass (all-layers models).

        Args:
            audio: mono 16 kHz float32 samples.
            layers: which layers (default: every layer the model outputs).

        Returns:
            layer -> ``(n_frames, dim)`` float32 frames.
        """
        samples = self._check_audio(audio)
        wanted = self.info.layers if layers is None else tuple(layers)
        missing = [layer for layer in wanted if layer not in self.info.layers]
        if missing:
            raise EncoderError(f"{self.path}: layers {missing} are not in this model (it has {list(self.info.layers)})")
        n = self.grid.n_frames(len(samples))
        if n == 0:
            return {layer: np.zeros((0, self.dim), np.float32) for layer in wanted}
        names = [self.info.output_for(layer) for layer in wanted]
        values = self.session.run(names, self._feed(self._padded(samples), None))
        return {layer: self._check_count(as_frames(value, self.dim, str(self.path)), n, len(samples))
                for layer, value in zip(wanted, values)}

    def create_state(self) -> OnnxStream | OnnxStateStream:
        """A fresh per-stream state (cheap; the session is shared): stateful or windowed, as the
        model's metadata says."""
        return OnnxStateStream(self) if self.info.stateful else OnnxStream(self)
