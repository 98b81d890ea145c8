"""``kwsstream`` command line: a thin layer over the Python API.

Exit status: 0 success, 2 bad usage or bad input (one line on stderr), 1 internal error.
Machine output (``--json``: one object per detection per line) goes to stdout, flushed at once;
everything for people goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


from . import __version__
from .errors import KwsError, UsageError
from .keyset import parse_threshold

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def describe_event(event, prefix: str = "") -> str:
    """One human line for a detection."""
    under = event.threshold - event.cost
    return (
        f"{prefix}{event.start:8.2f}-{event.end:.2f} s  {event.keyword:<16} cost {event.cost:.3f} "
        f"(threshold {event.threshold:.3f}, {under:.3f} under)"
    )


def emit(event, as_json: bool, prefix: str = "") -> None:
    """Print a detection: a JSON line on stdout, or a human line on stderr."""
    if as_json:
        print(json.dumps(event.to_dict(), ensure_ascii=False), flush=True)
    else:
        _say(describe_event(event, prefix))


def cmd_enroll(args: argparse.Namespace) -> int:
    from .encoders import encoder_from_identity, load_encoder
    from .enroll import enroll
    from .keyset import check_keyword_name, locked_keyset

    path = Path(args.keyset)
    segment = tuple(args.segment) if args.segment else None
    if segment is not None and len(args.audio) != 1:
        raise UsageError("--segment cuts one recording: give exactly one AUDIO with it")
    name = check_keyword_name(args.name)
    with locked_keyset(path) as (keyset, save):  # a concurrent enroll into this set waits here
        if args.encoder is not None:
            encoder = load_encoder(args.encoder)
        elif keyset is not None:
            encoder = encoder_from_identity(keyset.encoder)
        else:
            encoder = load_encoder("mfcc")
        updated = enroll(keyset, encoder, name, args.audio, segment=segment, threshold=args.threshold)
        save(updated)
    kw = updated.get(name)
    cal = kw.calibration
    if kw.threshold_source == "calibrated":
        how = f"calibrated: the examples score {min(cal['positives']):.3f}-{max(cal['positives']):.3f} against each other"
    else:
        how = {"user": "set by you", "default": f"{encoder.name}'s base: one example gives nothing to calibrate on"}[
            kw.threshold_source
        ]
    _say(
        f"enrolled {kw.name!r} with {len(args.audio)} new example(s) ({len(kw.templates)} in all) into {path} "
        f"[{encoder.name}]; threshold {kw.threshold:.3f} ({how})"
    )
    return EXIT_OK


def cmd_detect(args: argparse.Namespace) -> int:
    from .audio import iter_audio_blocks
    from .encoders import load_encoder
    from .spotter import Spotter

    encoder = load_encoder(args.encoder) if args.encoder else None
    spotter = Spotter.load(args.keyset, encoder=encoder, thresholds=args.threshold)
    total = 0
    for audio in args.audio:
        stream = spotter.create_stream(source=str(audio))
        started = time.monotonic()
        for block in iter_audio_blocks(audio, block_seconds=0.1 if args.realtime else 10.0):
            for event in stream.feed(block):
                emit(event, args.json)
                total += 1
            if args.realtime:
                lag = stream.seconds - (time.monotonic() - started)
                if lag > 0:
                    time.sleep(lag)
        for event in stream.flush():
            emit(event, args.json)
            total += 1
    if not args.json:
        _say(f"{total} detection(s) in {len(args.audio)} file(s)")
    return EXIT_OK


def cmd_keywords(args: argparse.Namespace) -> int:
    from .keyset import load_keyset, update_keyset

    if args.remove is not None:
        name = args.remove.strip()

        def remove(keyset):
            if keyset is None:
                load_keyset(args.keyset)  # raises: no such keyword set
            return keyset.without(name)

        keyset = update_keyset(args.keyset, remove)
        _say(f"removed {name!r} from {args.keyset}")
    else:
        keyset = load_keyset(args.keyset)
    enc = keyset.encoder
    print(f"# {args.keyset}: encoder {enc.get('kind')}" + (f" {enc.get('path')} layer {enc.get('layer')}" if enc.get("kind") == "onnx" else ""))
    for kw in keyset.keywords:
        seconds = [len(t.frames) for t in kw.templates]
        print(f"{kw.name}\tthreshold={kw.threshold:.3f} ({kw.threshold_source})\ttemplates={len(kw.templates)}\tframes={seconds}")
    return EXIT_OK


# --- live audio: listen, devices (kwsstream/live.py, kwsstream/sources.py) ---------------------

def cmd_listen(args: argparse.Namespace) -> int:
    from .encoders import load_encoder
    from .live import ListenOptions, listen_microphone
    from .sources import native_stderr_silenced
    from .spotter import Spotter

    options = ListenOptions(device=args.device, rate=args.rate, seconds=args.seconds, queue_seconds=args.queue_seconds,
                            stall=tuple(args.debug_stall) if args.debug_stall else None)
    try:
        encoder = load_encoder(args.encoder) if args.encoder else None
        spotter = Spotter.load(args.keyset, encoder=encoder, thresholds=args.threshold)
        with native_stderr_silenced():
            listen_microphone(spotter, options, on_event=lambda e: emit(e, args.json, prefix="heard "), say=_say)
    except KeyboardInterrupt:  # before the stream started listening (a started one stops cleanly)
        _say("kwsstream: interrupted before listening started")
    return EXIT_OK


def cmd_devices(args: argparse.Namespace) -> int:
    from .sources import format_devices, list_devices, native_stderr_silenced

    with native_stderr_silenced():
        devices = list_devices()
    if not devices:
        _say("no input devices: PortAudio sees no microphone (with PulseAudio or PipeWire, is the server running?)")
    else:
        print(format_devices(devices), flush=True)
        _say("* = default input; kwsstream listen --device ID|NAME chooses another")
    return EXIT_OK


def add_live_parsers(sub) -> None:
    """The ``listen`` and ``devices`` subcommands."""
    from .live import QUEUE_SECONDS

    p = sub.add_parser("listen", help="spot keywords live in a microphone")
    p.add_argument("-k", "--keyset", required=True)
    p.add_argument("--device", help="input device id or (part of) its name (see 'kwsstream devices'); default: the default input")
    p.add_argument("--json", action="store_true", help="one JSON object per detection on stdout")
    p.add_argument("--seconds", type=float, help="stop after this many seconds (default: Ctrl-C stops)")
    p.add_argument("--threshold", type=parse_threshold, help="one threshold for every keyword (overrides the set's)")
    p.add_argument("--encoder", help="path of the ONNX model, if it moved since enrollment (checked by sha256)")
    p.add_argument("--rate", type=int, help="open the device at this sample rate (default: the device's own)")
    p.add_argument("--queue-seconds", type=float, default=QUEUE_SECONDS,
                   help=f"audio held while processing catches up; beyond it the oldest is dropped (default {QUEUE_SECONDS:g})")
    p.add_argument("--debug-stall", type=float, nargs=2, metavar=("AT", "SECONDS"), help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("devices", help="list the audio input devices")
    p.set_defaults(func=cmd_devices)


# --- end of live audio ---------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(fast=args.fast, as_json=args.json, recording=args.recording, encoder=args.encoder)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kwsstream", description="Streaming query-by-example keyword spotting.")
    parser.add_argument("--version", action="version", version=f"kwsstream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("enroll", help="add a keyword from example recordings")
    p.add_argument("-k", "--keyset", required=True, help="keyword set file (created if missing)")
    p.add_argument("name", help="the keyword's name")
    p.add_argument("audio", nargs="+", help="example recordings of the keyword")
    p.add_argument("--encoder", help="'mfcc' (default for a new set) or an exported .onnx model")
    p.add_argument("--segment", nargs=2, type=float, metavar=("START", "END"),
                   help="seconds of the keyword inside a longer recording")
    p.add_argument("--threshold", type=parse_threshold, help="set the threshold instead of calibrating it")
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("detect", help="find enrolled keywords in audio files")
    p.add_argument("-k", "--keyset", required=True)
    p.add_argument("audio", nargs="+")
    p.add_argument("--threshold", type=parse_threshold, help="one threshold for every keyword (overrides the set's)")
    p.add_argument("--json", action="store_true", help="one JSON object per detection on stdout")
    p.add_argument("--realtime", action="store_true", help="feed the audio at real time, as a microphone would")
    p.add_argument("--encoder", help="path of the ONNX model, if it moved since enrollment (checked by sha256)")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("keywords", help="list (or remove) the keywords of a set")
    p.add_argument("-k", "--keyset", required=True)
    p.add_argument("--remove", metavar="NAME")
    p.set_defaults(func=cmd_keywords)

    p = sub.add_parser("demo", help="enroll the bundled examples and spot them live (microphone, else the bundled recording)")
    p.add_argument("--fast", action="store_true", help="play the bundled recording as fast as possible (implies --recording)")
    p.add_argument("--recording", action="store_true", help="play the bundled recording even when there is a microphone")
    p.add_argument("--json", action="store_true")
    p.add_argument("--encoder", default="mfcc",
                   help="'mfcc' (default) or an exported .onnx model, e.g. models/speech-embedding.onnx")
    p.set_defaults(func=cmd_demo)

    add_live_parsers(sub)
    return parser


class _WarningLine(logging.Handler):
    """The library's warnings (``kwsstream.*`` loggers: e.g. a truncated audio file) as one
    ``kwsstream: warning: ...`` line each on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        _say(f"kwsstream: warning: {record.getMessage()}")


def _log_warnings_to_stderr() -> None:
    logger = logging.getLogger("kwsstream")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        logger.addHandler(_WarningLine(logging.WARNING))
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # option types that raise KwsError (--threshold) give one line
    except KwsError as err:
        _say(f"kwsstream: error: {err}")
        return EXIT_USAGE
    _log_warnings_to_stderr()
    from .matcher import limit_blas_threads

    limit_blas_threads()
    try:
        return args.func(args)
    except KwsError as err:
        _say(f"kwsstream: error: {err}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("kwsstream: interrupted")
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
