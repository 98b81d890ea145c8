"""Export of wav2vec2 checkpoints to ONNX, cut at a chosen transformer layer.

Run from the repository root: ``python -m export MODEL --layer L [--quantize int8]
[--stateful [--chunk S] [--lookahead S] [--left S]] [--out PATH]`` (see ``__main__.py``). The stages, one file each:

* ``wav2vec2.py``  — load a checkpoint (hub id or local folder), check its config, build the
  truncated module and write it with ``torch.onnx.export``.
* ``stateful.py``  — the ``--stateful`` streaming graph (key/value and positional-convolution
  caches: each frame computed once); ``streamref.py`` its PyTorch reference of the chunked
  computation (parity).
* ``quantize.py``  — dynamic int8 quantisation (MatMul weights only, per channel).
* ``verify.py``    — parity of the ONNX file with the PyTorch model (the explicit layer definition).
* ``metadata.py``  — the ``metadata_props`` contract the runtime reads (``kwsstream`` never looks
  at wav2vec2 internals; another encoder is added by an export script that writes the same keys).

Needs the ``export`` extra (torch, transformers, onnx); the runtime package ``kwsstream`` needs
none of them.
"""

from __future__ import annotations

import argparse

from kwsstream.errors import KwsError

EXPORTER_VERSION = "kwsstream-export 1"
"""Written into every exported model (with the torch/transformers/onnx versions used)."""


class ExportError(KwsError):
    """A model, option or file that the exporter cannot use (one line; the CLI exits with 2)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one :class:`ExportError` line (exit 2)."""

    def error(self, message: str) -> None:  # one line and exit 2, like every other bad input
        raise ExportError(f"usage: {message}")


__all__ = ["EXPORTER_VERSION", "ExportError"]
