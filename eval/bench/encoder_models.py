"""Random-weight wav2vec2 checkpoints with real architectures, for speed and fidelity benchmarks.

Model weights cannot be downloaded on the benchmark machines, so speed is measured on a
randomly initialised model with the exact architecture of ``facebook/wav2vec2-large-xlsr-53``
(cost does not depend on the weights' values). Streaming *fidelity* does depend on them: numbers
measured on random weights are a lower bound on the damage, to be re-measured with real weights
(the same scripts take any checkpoint folder or hub id).

Usage::

    python -m eval.bench.encoder_models --out /tmp/xlsr53-random      # writes config + weights
"""

from __future__ import annotations

import argparse
from pathlib import Path

XLSR53_CONFIG = {
    "model_type": "wav2vec2",
    "architectures": ["Wav2Vec2ForPreTraining"],
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "hidden_act": "gelu",
    "conv_dim": [512] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": True,
    "feat_extract_norm": "layer",
    "feat_extract_activation": "gelu",
    "do_stable_layer_norm": True,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "layer_norm_eps": 1e-5,
    "feat_proj_dropout": 0.1,
    "hidden_dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "layerdrop": 0.1,
    "mask_time_prob": 0.075,
    "vocab_size": 32,
    "codevector_dim": 768,
    "proj_codevector_dim": 768,
}
"""The architecture of facebook/wav2vec2-large-xlsr-53 (its config.json, training-only fields
that do not change the graph left at their defaults)."""

BASE_CONFIG = {
    "model_type": "wav2vec2",
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "conv_bias": False,
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
}
"""facebook/wav2vec2-base: group-norm conv front end, post-LayerNorm blocks."""


def save_random_model(config: dict, out: Path, seed: int = 0, **overrides) -> Path:
    """Initialise a ``Wav2Vec2Model`` from ``config`` (plus ``overrides``) with a fixed seed and
    save it (config.json + safetensors) to ``out``, as a local checkpoint folder."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(seed)
    model = Wav2Vec2Model(Wav2Vec2Config(**{**config, **overrides}))
    model.save_pretrained(str(out))
    return out


def checkpoint_or_random(checkpoint: str | None, workdir: Path) -> str:
    """``checkpoint`` if given, else a random-weight XLSR-53 checkpoint under ``workdir`` (made
    once, reused while it is there)."""
    if checkpoint is not None:
        return checkpoint
    folder = workdir / "xlsr53-random"
    if not (folder / "config.json").is_file():
        save_random_model(XLSR53_CONFIG, folder)
    return str(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.encoder_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--family", choices=["xlsr53", "base"], default="xlsr53")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    save_random_model(XLSR53_CONFIG if args.family == "xlsr53" else BASE_CONFIG, args.out, args.seed)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
