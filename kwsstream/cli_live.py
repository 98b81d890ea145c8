"""``kwsstream listen`` and ``kwsstream devices``: the microphone commands (see ``cli.py``)."""

from __future__ import annotations

import argparse

from .cliterm import EXIT_OK, _say
from .cliutil import (
    KEYSET_HELP, JSON_HELP, MOVED_MODEL_HELP, DETECT_THRESHOLD_HELP, LISTEN_EXAMPLES, NO_MICROPHONE_HINT, _spotter,
    add_adapt_option, add_command, add_threads_option, emit, parse_threshold_option, save_adaptation,
)
from .errors import AudioError


def cmd_listen(args: argparse.Namespace) -> int:
    from .keyset import load_keyset
    from .live import ListenOptions, listen_microphone
    from .sources import native_stderr_silenced

    options = ListenOptions(device=args.device, rate=args.rate, seconds=args.seconds, queue_seconds=args.queue_seconds)
    names = [kw.name for kw in load_keyset(args.keyset).keywords]  # a bad set is refused before the device opens

    made = []

    def spotter():  # called once the device captures: the encoder and kernels load while it buffers
        from .matcher import limit_blas_threads

        limit_blas_threads()
        made.append(_spotter(args))
        return made[-1]

    try:  # Ctrl-C: the first stops cleanly (a summary line); one while loading, or a second: main says "stopped"
        with native_stderr_silenced():
            listen_microphone(spotter, options, names=names,
                              on_event=lambda e: emit(e, args.json, prefix="heard "), say=_say)
    except AudioError as err:
        if str(err).startswith("no input device:"):  # no microphone at all: say what to do instead
            raise AudioError(f"{err}; {NO_MICROPHONE_HINT}") from None
        raise
    finally:  # also after Ctrl-C: what was heard until then is kept
        if made:
            save_adaptation(args, made[-1])
    return EXIT_OK


def cmd_devices(args: argparse.Namespace) -> int:
    from .sources import format_devices, list_devices, native_stderr_silenced

    with native_stderr_silenced():
        devices = list_devices()
    if not devices:
        _say("no input devices: PortAudio sees no microphone (with PulseAudio or PipeWire, is the server running?); "
             + NO_MICROPHONE_HINT)
    else:
        print(format_devices(devices), flush=True)
        _say("* = default input; kwsstream listen --device ID|NAME chooses another")
    return EXIT_OK


def add_live_parsers(sub) -> None:
    """The ``listen`` and ``devices`` subcommands."""
    from .pipeline import QUEUE_SECONDS

    p = add_command(sub, "listen", "spot keywords live in a microphone",
                    "Spot the keywords of a set live in a microphone until Ctrl-C (or --seconds). Each detection "
                    "is a line on stderr (or a JSON line on stdout with --json); a status line shows the level, "
                    "the lag and the detections so far. Ctrl-C stops: exit 0 with a 'stopped' line.",
                    LISTEN_EXAMPLES)
    p.add_argument("-k", "--keyset", required=True, metavar="KWS", help=KEYSET_HELP)
    p.add_argument("--device", metavar="ID|NAME",
                   help="input device id or (part of) its name (see 'kwsstream devices'); default: the default input")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.add_argument("--seconds", type=float, metavar="S", help="stop after this many seconds (default: Ctrl-C stops)")
    p.add_argument("--threshold", type=parse_threshold_option, action="append", metavar="[NAME=]T", help=DETECT_THRESHOLD_HELP)
    p.add_argument("--encoder", metavar="MODEL.onnx", help=MOVED_MODEL_HELP)
    p.add_argument("--rate", type=int, metavar="HZ", help="open the device at this sample rate (default: the device's own)")
    p.add_argument("--queue-seconds", type=float, default=QUEUE_SECONDS, metavar="S",
                   help=f"audio held while processing catches up; beyond it the oldest is dropped with a warning "
                        f"(default {QUEUE_SECONDS:g})")
    add_threads_option(p)
    add_adapt_option(p)
    p.set_defaults(func=cmd_listen, limit_blas=False)  # limited once the device captures (cmd_listen)

    p = add_command(sub, "devices", "list the audio input devices",
                    "List the audio input devices PortAudio sees (id, name, channels, default rate); * marks the "
                    "default input. Give 'listen --device' an id or part of a name.",
                    "example:\n  kwsstream devices\n  kwsstream listen -k my.kws --device 3")
    p.set_defaults(func=cmd_devices, limit_blas=False)  # no matcher: numba is never imported


