"""wav2vec2's conv feature encoder rewritten time-major, its 512x512 convolutions as MatMuls.

Why: the conv front end costs about a third of a 12-layer XLSR-53 in fp32, and onnxruntime's
int8 ``ConvInteger`` is slower than fp32 ``Conv``; a convolution of kernel ``k`` and stride ``s``
is the same arithmetic as a ``MatMul`` of ``k`` stride-``s`` slices of its input, concatenated
along channels, with the kernel reshaped to ``[k * C_in, C_out]``. As a MatMul with a constant
weight it is quantised with the transformer's (``quantize.py``) and runs on the fast int8 path.
Working time-major (``[batch, time, channels]``) also removes the two transposes per layer
around the layer norms.

The first layer (1 input channel, kernel 10) stays a ``Conv``: it is cheap, and quantising raw
audio to 8 bits would lose its dynamic range. Parity with the original module is checked by
``verify.py`` like everything else.

torch is imported at the top: only the wav2vec2 export (``wav2vec2.py``, itself imported when a
wav2vec2 model is exported) imports this module; the speech_embedding export needs no torch.
"""

from __future__ import annotations

import torch
from torch import nn


class MatMulConvLayer(nn.Module):
    """One conv layer (conv -> optional norm -> activation) on time-major input."""

    def __init__(self, layer):
        super().__init__()
        conv = layer.conv
        self.kernel, self.stride = conv.kernel_size[0], conv.stride[0]
        out_dim, in_dim, kernel = conv.weight.shape
        # weight[o, i, k] -> rows ordered (k, i), matching the concatenated slices
        weight = conv.weight.detach().permute(2, 1, 0).reshape(kernel * in_dim, out_dim)
        self.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.norm = getattr(layer, "layer_norm", None)  # LayerNorm over channels, or absent
        self.activation = layer.activation

    def forward(self, hidden):
        frames = (hidden.shape[1] - self.kernel) // self.stride + 1
        if self.kernel == self.stride:
            stacked = hidden[:, : frames * self.stride].reshape(hidden.shape[0], frames, -1)
        else:
            span = (frames - 1) * self.stride + 1
            stacked = torch.cat([hidden[:, k: k + span: self.stride] for k in range(self.kernel)], dim=2)
        hidden = torch.matmul(stacked, self.weight)
        if self.bias is not None:
            hidden = hidden + self.bias
        if self.norm is not None:
            hidden = self.norm(hidden)
        return self.activation(hidden)

class FirstLayer(nn.Module):
    """The first conv layer as in the checkpoint, returning time-major output."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.layer_norm_over_channels = isinstance(getattr(layer, "layer_norm", None), nn.LayerNorm)

    def forward(self, audio):
        layer = self.layer
        hidden = layer.conv(audio[:, None])
        if self.layer_norm_over_channels:
            hidden = layer.layer_norm(hidden.transpose(1, 2))
            return layer.activation(hidden)
        if getattr(layer, "layer_norm", None) is not None:  # GroupNorm: per channel over time
            hidden = layer.layer_norm(hidden)
        return layer.activation(hidden).transpose(1, 2)

class TimeMajorFrontEnd(nn.Module):
    """The whole conv feature encoder, time-major: the first layer as it is, the rest as MatMuls."""

    def __init__(self, feature_extractor):
        super().__init__()
        layers = list(feature_extractor.conv_layers)
        for layer in layers[1:]:
            norm = getattr(layer, "layer_norm", None)
            if norm is not None and not isinstance(norm, nn.LayerNorm):
                raise ValueError(f"conv layer {type(layer).__name__}: only LayerNorm after the first layer")
        self.first = FirstLayer(layers[0])
        self.rest = nn.ModuleList(MatMulConvLayer(layer) for layer in layers[1:])

    def forward(self, audio):
        hidden = self.first(audio)
        for layer in self.rest:
            hidden = layer(hidden)
        return hidden


def build_front_end(feature_extractor) -> TimeMajorFrontEnd:
    """A module ``audio [batch, samples] -> features [batch, frames, conv_dim[-1]]`` computing
    exactly what ``feature_extractor(audio).transpose(1, 2)`` computes."""
    return TimeMajorFrontEnd(feature_extractor).eval()
