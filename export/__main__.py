"""``python -m export``: export a wav2vec2 checkpoint to ONNX, cut at layer L, verified.

Usage::

    python -m export MODEL --layer L [--all-layers] [--quantize int8] [--out PATH.onnx]
    python -m export MODEL --layer L --stateful [--chunk S] [--lookahead S] [--left S] ...
    python -m export MODEL --layer L --out PATH.onnx --verify     # re-check an existing file
    python -m export speech-embedding [--out PATH.onnx]           # (export/speech_embedding.py)
    python -m export whisper-base [--layer L] [--int8] [--out PATH.onnx]   # (export/whisper.py)

MODEL is a hub id (default documented: ``facebook/wav2vec2-large-xlsr-53``) or a local folder
with ``config.json`` and weights. With ``--quantize int8`` the fp32 graph is made in a temporary
folder, quantised to ``--out``, and both are verified. Report lines go to stderr, the written
path to stdout. ``--stateful`` writes the streaming graph that computes each frame once
(``stateful.py``); ``--chunk/--lookahead/--left`` are the geometry it recommends to the runtime
(seconds; the runtime's defaults when not given). Exit status: 0 done, 2 bad input (one line on stderr), 1 internal error
(including a failed parity check, after which no unverified file is left at ``--out``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kwsstream.encoders.onnxstate import DEFAULT_CHUNK_S, DEFAULT_LEFT_S, DEFAULT_STATE_LOOKAHEAD_S
from kwsstream.errors import KwsError

from . import ExportError, _Parser

DEFAULT_MODEL = "facebook/wav2vec2-large-xlsr-53"
MODELS_DIR = Path("models")
EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2
SPEECH_EMBEDDING = "speech-embedding"
WHISPER_BASE = "whisper-base"
MAX_GEOMETRY_S = 3600.0
"""Upper bound of --chunk/--lookahead/--left (a typo guard; NaN is refused too)."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = _Parser(prog="python -m export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help=f"hub id (e.g. {DEFAULT_MODEL}) or local folder")
    parser.add_argument("--layer", type=int, required=True, help="last transformer block kept (0..num_hidden_layers)")
    parser.add_argument("--all-layers", action="store_true", help="one output per layer 0..L (for the eval)")
    parser.add_argument("--quantize", choices=["int8"], help="dynamic int8 (MatMul weights, per channel)")
    parser.add_argument("--reduce-range", action="store_true", help="7-bit int8 weights (CPUs without VNNI)")
    parser.add_argument("--stateful", action="store_true",
                        help="streaming graph with key/value and positional caches: each frame computed once")
    parser.add_argument("--chunk", type=float, help=f"--stateful: seconds committed per call (default {DEFAULT_CHUNK_S})")
    parser.add_argument("--lookahead", type=float,
                        help=f"--stateful: seconds of right context (default {DEFAULT_STATE_LOOKAHEAD_S})")
    parser.add_argument("--left", type=float, help=f"--stateful: seconds of cached left context (default {DEFAULT_LEFT_S})")
    parser.add_argument("--out", type=Path, help="output file (default models/NAME-L<L>[-all][-int8].onnx)")
    parser.add_argument("--verify", action="store_true", help="only re-check an existing --out file against MODEL")
    parser.add_argument("--no-verify", action="store_true", help="skip the parity check after exporting")
    args = parser.parse_args(list(argv))
    if args.verify and args.no_verify:
        raise ExportError("usage: --verify and --no-verify exclude each other")
    if args.verify and args.out is None:
        raise ExportError("usage: --verify needs --out PATH.onnx (the file to check)")
    geometry = {"chunk": args.chunk, "lookahead": args.lookahead, "left": args.left}
    if not args.stateful and any(value is not None for value in geometry.values()):
        raise ExportError("usage: --chunk, --lookahead and --left need --stateful")
    for name, value in geometry.items():
        lowest_ok = value is None or (value > 0 if name == "chunk" else value >= 0)
        if not lowest_ok or (value is not None and not value < MAX_GEOMETRY_S):
            kind = "positive" if name == "chunk" else "non-negative"
            raise ExportError(f"usage: --{name} must be a {kind} number of seconds below {MAX_GEOMETRY_S} (got {value})")
    args.chunk = DEFAULT_CHUNK_S if args.chunk is None else args.chunk
    args.lookahead = DEFAULT_STATE_LOOKAHEAD_S if args.lookahead is None else args.lookahead
    args.left = DEFAULT_LEFT_S if args.left is None else args.left
    if args.out is not None and args.out.suffix.lower() != ".onnx":
        raise ExportError(f"{args.out}: output must end in .onnx")
    return args


def default_out(model: str, layer: int, all_layers: bool, quantize: str | None, stateful: bool = False) -> Path:
    """``models/<name>-L<layer>[-all][-stream][-int8].onnx`` with name = the spec's last path part."""
    name = model.rstrip("/").split("/")[-1] or "model"
    return MODELS_DIR / (f"{name}-L{layer}{'-all' if all_layers else ''}{'-stream' if stateful else ''}"
                         f"{'-' + quantize if quantize else ''}.onnx")


def _quiet() -> None:
    """Keep library chatter (progress bars, advice) off the terminal; our report is on stderr."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization logs advice at WARNING


def run(args: argparse.Namespace) -> Path:
    """Export (or verify) as ``args`` say; returns the file written or checked."""
    from .quantize import quantize_int8
    from .verify import verify_export
    from .wav2vec2 import check_layers, export_graph, load_config, load_model, two_stage_possible

    config = load_config(args.model)
    check_layers(config, args.model, args.layer)  # cheap checks before loading weights
    out = args.out or default_out(args.model, args.layer, args.all_layers, args.quantize, args.stateful)
    if args.stateful and args.layer < 1:
        raise ExportError(f"{args.model}: --stateful needs --layer >= 1 (layer 0 has no transformer block)")
    layers = list(range(args.layer + 1)) if args.all_layers else [args.layer]
    if args.verify and not out.is_file():
        raise ExportError(f"{out}: no such file to verify")
    model = load_model(args.model, config)
    if args.verify:
        for line in verify_export(model, out):
            print(line, file=sys.stderr)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # everything is made and verified in a temporary folder beside --out, then moved there: a
    # failure never leaves an unverified file (nor removes one that was there before)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        if args.stateful:
            from .stateful import export_stateful

            meta = export_stateful(model, fp32, layers, args.model, chunk=args.chunk, lookahead=args.lookahead,
                                   left=args.left, two_stage=two_stage_possible(model.config))
        else:
            meta = export_graph(model, fp32, layers, args.model)
        made = fp32
        if args.quantize:
            made = Path(tmp) / "int8.onnx"
            quantize_int8(fp32, made, meta=meta, reduce_range=args.reduce_range)
        if not args.no_verify:
            for line in verify_export(model, made, reference=fp32 if args.quantize else None, label=out):
                print(line, file=sys.stderr)
        made.replace(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (also of ``python -m export speech-embedding`` and ``whisper-base``); returns the
    exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == [SPEECH_EMBEDDING]:
            from . import speech_embedding

            se_args = speech_embedding.parse_args(argv[1:])
            out = speech_embedding.export(se_args.out, se_args.wheel)
        elif argv[:1] == [WHISPER_BASE]:
            from . import whisper

            options = whisper.parse_args(argv[1:])
            logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization logs advice at WARNING
            out = whisper.export(options)
        else:
            args = parse_args(argv)
            _quiet()
            out = run(args)
    except KwsError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as err:  # internal failure, failed parity/verification included: one line, status 1
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_INTERNAL
    print(out)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
