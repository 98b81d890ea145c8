"""``kwsstream`` command line: a thin layer over the Python API.

Exit status: 0 success, 2 bad usage or bad input (one line on stderr), 1 internal error, 130 a
command interrupted by Ctrl-C - except a live run (listen, demo, detect --realtime): a user stopping
it is not an error, so it ends with one "stopped (Ctrl-C)" line and exit 0. That holds from the
first line of :func:`main` on, at any instant: ``main`` takes over Ctrl-C before it imports
anything slow (this module, ``cliutil`` and ``cliterm`` import only the standard library at load
time), and a second Ctrl-C while the process ends changes neither the line nor the status
(:class:`~kwsstream.cliterm.CtrlC`).
Machine output (``--json``: one object per detection per line) goes to stdout, flushed at once;
everything for people goes to stderr.

This module holds the keyword-set and file commands (enroll, calibrate, detect, keywords, demo),
the parser and ``main``; the microphone commands are in ``cli_live.py``, archive search in
``cli_search.py``, what they all share (option parsers, help texts, event lines) in ``cliutil.py``,
and the process's side (exit statuses, Ctrl-C, the progress line) in ``cliterm.py``.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import signal
import sys
import textwrap
from pathlib import Path

from . import __version__
from .errors import KwsError, UsageError
from .cliterm import EXIT_OK, EXIT_USAGE, STOPPED, CtrlC, _say, is_live_argv, pause_point, progress_on_terminal
from .cliutil import (
    KEYSET_HELP, JSON_HELP, MOVED_MODEL_HELP, DETECT_THRESHOLD_HELP, THRESHOLD_DIRECTION, MAIN_EPILOG,
    ENROLL_EXAMPLES, CALIBRATE_EXAMPLES, DETECT_EXAMPLES, KEYWORDS_EXAMPLES, DEMO_EXAMPLES, MAKE_MODEL_HINT, Parser,
    _spotter, add_adapt_option, add_calibration_options, add_command, add_threads_option, describe_threshold, emit,
    parse_rate, save_adaptation,
    parse_threshold_option, parse_threshold_value, rate_text, threshold_text,
)
from .cli_live import add_live_parsers
from .cli_search import add_search_parser


def cmd_enroll(args: argparse.Namespace) -> int:
    from .calibrate import Background
    from .encoders import encoder_from_identity, load_encoder
    from .enroll import enroll, set_background, threshold_warning
    from .keyset import locked_keyset
    from .keysetformat import check_keyword_name
    from .models import default_encoder_spec

    path = Path(args.keyset)
    segment = tuple(args.segment) if args.segment else None
    if segment is not None and len(args.audio) != 1:
        raise UsageError("--segment cuts one recording: give exactly one AUDIO with it")
    name = check_keyword_name(args.name)
    missing = None
    with locked_keyset(path) as (keyset, save):  # a concurrent enroll into this set waits here
        if args.encoder is not None:
            encoder = load_encoder(args.encoder)
        elif keyset is not None:
            encoder = encoder_from_identity(keyset.encoder)
        else:
            spec, note = default_encoder_spec()
            if note:
                _say(f"note: {note}")
            encoder = load_encoder(spec)
        background = Background.files(args.background) if args.background else None
        if background is None and keyset is not None:
            background, missing = set_background(keyset)  # the set's own background, when its files are there
            if background is not None:
                _say(f"calibrating on the background the set's keywords were calibrated on: {background.label}")
        updated = enroll(keyset, encoder, name, args.audio, segment=segment, threshold=args.threshold,
                         background=background, fa_per_hour=args.fa_per_hour)
        save(updated)
    kw = updated.get(name)
    _say(
        f"enrolled {kw.name!r} with {len(args.audio)} new example(s) ({len(kw.templates)} in all) into {path} "
        f"[{encoder.name}]; threshold {threshold_text(kw.threshold)} ({describe_threshold(kw)})"
    )
    if kw.calibration.get("warning"):
        _say(f"kwsstream: warning: {kw.calibration['warning']}")
    if kw.threshold_source == "user" and (warning := threshold_warning(kw, kw.threshold)):
        _say(f"kwsstream: warning: {warning}")
    if missing is not None:
        _say(f"note: {name!r} was calibrated on the built-in background, not on {missing} (the set's other "
             f"keywords' background), whose recordings are not there any more; to calibrate it on yours: "
             f"kwsstream calibrate -k {path} --keyword {name} --background FILE...")
    elif kw.calibration.get("background") == "built-in" and kw.threshold_source == "calibrated":
        hint = MAPPED_HINT if kw.calibration.get("rates") == "own speech" else BUILTIN_HINT
        _say(hint.format(keyset=path))
    return EXIT_OK


BUILTIN_HINT = (
    "note: the built-in background is another language and speaker, and this encoder has no measured own-speech "
    "rate map: a speaker's own speech fires more often than the rate above (10-30x for the encoders measured, "
    "README 'Streaming benchmark'). For a rate that holds, calibrate on ~10 minutes of the speaker or room: "
    "kwsstream calibrate -k {keyset} --background ME.wav")
MAPPED_HINT = (
    "note: the rate is one speaker's own speech as measured for this encoder (README 'Streaming benchmark'); "
    "voices, rooms and noise differ. For a rate that holds for you, calibrate on ~10 minutes of your own speech "
    "or room: kwsstream calibrate -k {keyset} --background ME.wav")


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import Background
    from .encoders import encoder_from_identity, load_encoder
    from .enroll import calibrate_keywords
    from .keyset import load_keyset, locked_keyset

    with locked_keyset(args.keyset) as (keyset, save):
        if keyset is None:
            load_keyset(args.keyset)  # raises: no such keyword set
        encoder = load_encoder(args.encoder) if args.encoder else encoder_from_identity(keyset.encoder)
        background = Background.files(args.background) if args.background else None
        updated = calibrate_keywords(keyset, encoder, args.keyword or None, background=background,
                                     fa_per_hour=args.fa_per_hour, keep_user=False)
        save(updated)
    for kw in updated.keywords:
        if not args.keyword or kw.name in args.keyword:
            _say(f"{kw.name}: threshold {threshold_text(kw.threshold)} ({describe_threshold(kw)})")
            if kw.calibration.get("warning"):
                _say(f"kwsstream: warning: {kw.calibration['warning']}")
    return EXIT_OK


def cmd_detect(args: argparse.Namespace) -> int:
    if args.plot is not None and args.realtime:
        raise UsageError("--plot reads the audio as fast as it can: leave out --realtime")
    if args.clips is not None:
        from .clips import check_folder

        if args.realtime:
            raise UsageError("--clips cuts the clips from the file after detecting: leave out --realtime")
        args.clips = check_folder(args.clips)
    if args.realtime:  # a live run: Ctrl-C is the user's stop, not an error (exit 0; main says so)
        return _detect_realtime(args)
    if args.plot is not None:
        from .plot import _matplotlib, plot_paths

        _matplotlib()  # a missing matplotlib is one line before any audio is read
        pictures = plot_paths(args.plot, args.audio)
    spotter = _spotter(args)
    total = 0
    for i, audio in enumerate(args.audio):  # the one pipeline: Spotter.detect_file (or the plot's trace)
        if args.plot is not None:
            from .plot import plot_scores

            events = plot_scores(spotter, audio, pictures[i]).events
        else:
            events = spotter.detect_file(audio)
        found = []
        for event in events:
            emit(event, args.json, file=_file_label(args, audio))
            found.append(event)
            total += 1
        if args.clips is not None and found:
            from .clips import write_clips

            _say(f"{len(write_clips(args.clips, audio, found))} clip(s) of {_shown(audio)} written in {args.clips}")
        if args.plot is not None:
            _say(f"scores of {_shown(audio)} drawn in {_shown(pictures[i])}")
    if not args.json:
        _say(f"{total} detection(s) in {len(args.audio)} file(s)")
    save_adaptation(args, spotter)
    return EXIT_OK


def _shown(path) -> str:
    from .audio import display_name

    return display_name(path)


def _file_label(args: argparse.Namespace, audio: str) -> str | None:
    """The file name each detection line starts with when several files are searched."""
    return _shown(audio) if len(args.audio) > 1 else None


def _detect_realtime(args: argparse.Namespace) -> int:
    """``detect --realtime``: each file paced like a microphone; the first Ctrl-C stops cleanly
    (pending detections are still reported) with one ``stopped`` line, exit 0."""
    from .live import Run

    spotter = _spotter(args)
    pause_point("loaded")
    total = 0
    for audio in args.audio:
        label = _file_label(args, audio)
        with Run(on_event=lambda event: emit(event, args.json, file=label), say=_say) as run:
            summary = run.run(spotter.detect_file(audio, realtime=True))
        total += summary.detections
        if summary.stopped == "interrupt":
            _say(f"{STOPPED} at {summary.seconds:.1f} s of {_shown(audio)}: {total} detection(s)")
            save_adaptation(args, spotter)
            return EXIT_OK
    if not args.json:
        _say(f"{total} detection(s) in {len(args.audio)} file(s)")
    save_adaptation(args, spotter)
    return EXIT_OK


def cmd_keywords(args: argparse.Namespace) -> int:
    from .enroll import set_sensitivity, threshold_warning
    from .keyset import load_keyset, update_keyset

    if (args.set is not None) != (args.threshold is not None or args.fa_per_hour is not None
                                  or args.reset_adaptation):
        raise UsageError("--set NAME takes --threshold T, --fa-per-hour R or --reset-adaptation (and they need "
                         "--set NAME)")
    if args.remove is not None or args.set is not None:
        warnings = []

        def change(keyset):
            if keyset is None:
                load_keyset(args.keyset)  # raises: no such keyword set
            if args.remove is not None:
                return keyset.without(args.remove)
            name = args.set.strip()
            if args.reset_adaptation:
                from .adapt import without_evidence

                keyset = without_evidence(keyset, name)
                if args.threshold is None and args.fa_per_hour is None:
                    return keyset
            if args.threshold is not None and (old := keyset.get(name)) is not None:
                warnings.append(threshold_warning(old, args.threshold))  # against the keyword's target so far
            return set_sensitivity(keyset, name, threshold=args.threshold, fa_per_hour=args.fa_per_hour)

        keyset = update_keyset(args.keyset, change)
        if args.remove is not None:
            _say(f"removed {args.remove.strip()!r} from {args.keyset}")
        else:
            kw = keyset.get(args.set.strip())
            _say(f"{kw.name}: threshold {threshold_text(kw.threshold)} ({describe_threshold(kw)})")
            for warning in filter(None, warnings):
                _say(f"kwsstream: warning: {warning}")
    else:
        keyset = load_keyset(args.keyset)
    from .encoders import describe_identity

    frame_rate = _frame_rate(keyset.encoder)
    adapted = _adapted(keyset)
    print(f"# {args.keyset}: encoder {describe_identity(keyset.encoder)}")
    for kw in keyset.keywords:
        if frame_rate is not None:  # template lengths in seconds: frames over the encoder's frame rate
            lengths = "seconds=" + ",".join(f"{len(t.frames) / frame_rate:.2f}" for t in kw.templates)
        else:
            lengths = "frames=" + ",".join(str(len(t.frames)) for t in kw.templates)
        expected = kw.calibration.get("expected_fa_per_hour")
        rate = f"\texpected_fa_per_hour={rate_text(expected)}" if expected is not None else ""
        print(f"{kw.name}\tthreshold={threshold_text(kw.threshold)} ({kw.threshold_source}){rate}"
              f"\ttemplates={len(kw.templates)}\t{lengths}{adapted.get(kw.name, '')}\t# {describe_threshold(kw)}")
    return EXIT_OK


def _adapted(keyset) -> dict[str, str]:
    """Per keyword with saved adaptation: ``\tadapted=T (M min of speech)``, T the threshold a run
    starts from (:mod:`kwsstream.adapt`)."""
    import numpy as np

    from .adapt import AdaptOptions, keyword_target, saved_evidence

    evidence = saved_evidence(keyset)
    base = np.array([kw.threshold for kw in keyset.keywords], np.float64)
    targets = np.array([keyword_target(kw) for kw in keyset.keywords], np.float64)
    now = evidence.thresholds(base, targets, AdaptOptions())
    return {kw.name: f"\tadapted={threshold_text(now[k])} ({60 * evidence.hours[k]:.1f} min of speech)"
            for k, kw in enumerate(keyset.keywords) if evidence.hours[k] > 0}


def _frame_rate(identity: dict) -> float | None:
    """Frames per second of the encoder a set was enrolled with (through the registry), or
    ``None`` when it cannot be made here (an ONNX model that is not there): lengths in frames."""
    from .encoders import identity_frame_rate

    try:  # from the identity alone: listing a set never opens its model
        return identity_frame_rate(identity)
    except KwsError:
        return None


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    # a Ctrl-C while it enrolls the examples, or a second one: the user's stop (main: exit 0)
    return run_demo(fast=args.fast, recording=args.recording, encoder=args.encoder, threads=args.threads,
                    report=lambda event: emit(event, args.json, prefix="heard "))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kwsstream", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill("Streaming query-by-example keyword spotting: enroll a word from a few "
                                  "recordings of it, then find it in files or hear it live.", 79),
        epilog=MAIN_EPILOG)
    parser.add_argument("--version", action="version", version=f"kwsstream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = add_command(sub, "enroll", "add a keyword from example recordings",
                    "Add a keyword (or more examples of one) to a keyword set: each recording is encoded, its "
                    "leading and trailing silence trimmed, and the keyword's threshold set to a false-alarm rate "
                    "on background audio (--fa-per-hour). Three or more examples, said the way it will be said, "
                    "work best; words of two or more syllables are found more reliably than short ones.",
                    ENROLL_EXAMPLES)
    p.add_argument("-k", "--keyset", required=True, metavar="KWS", help="keyword set file (created if missing)")
    p.add_argument("name", help="the keyword's name (what detections are labelled with)")
    p.add_argument("audio", nargs="+", metavar="AUDIO",
                   help="example recordings of the keyword (any format and rate; one word each, or use --segment)")
    p.add_argument("--encoder", help=f"encoder of a new set: whisper-base (the default, once its model is made "
                                     f"({MAKE_MODEL_HINT}); else speech-embedding, else mfcc), speech-embedding, mfcc, "
                                     "or an exported .onnx model; a set's later keywords use the set's encoder")
    p.add_argument("--segment", nargs=2, type=float, metavar=("START", "END"),
                   help="seconds of the keyword inside a longer recording (one AUDIO)")
    p.add_argument("--threshold", type=parse_threshold_value, metavar="T",
                   help="set the threshold instead of calibrating it. " + THRESHOLD_DIRECTION)
    add_calibration_options(p, sets_own_background=True)
    add_threads_option(p)
    p.set_defaults(func=cmd_enroll, progress=True)

    p = add_command(sub, "calibrate", "set thresholds to a false-alarm rate on background audio",
                    "Set each keyword's threshold so that it fires --fa-per-hour times per hour on background "
                    "audio with no keyword in it. The bundled background is another speaker and language: a "
                    "speaker's own speech fires more often, so calibrating on ~10 minutes of the speaker or room "
                    "you will spot in gives a rate that holds. Thresholds you set by hand are recalibrated too.",
                    CALIBRATE_EXAMPLES)
    p.add_argument("-k", "--keyset", required=True, metavar="KWS", help=KEYSET_HELP)
    p.add_argument("--keyword", action="append", metavar="NAME", help="calibrate only this keyword (repeatable; default: all)")
    p.add_argument("--encoder", metavar="MODEL.onnx", help=MOVED_MODEL_HELP)
    add_calibration_options(p)
    add_threads_option(p)
    p.set_defaults(func=cmd_calibrate, progress=True)

    p = add_command(sub, "detect", "find enrolled keywords in audio files",
                    "Find the keywords of a set in audio files. Each detection is a line on stderr (keyword, "
                    "start-end seconds, cost, threshold), or a JSON object on stdout with --json. --plot draws "
                    "each keyword's score over time with its threshold: where a missed word came close, where "
                    "false alarms dip under.",
                    DETECT_EXAMPLES)
    p.add_argument("-k", "--keyset", required=True, metavar="KWS", help=KEYSET_HELP)
    p.add_argument("audio", nargs="+", metavar="AUDIO",
                   help="audio files to search (WAV, FLAC, OGG, MP3; any rate and channel count)")
    p.add_argument("--threshold", type=parse_threshold_option, action="append", metavar="[NAME=]T", help=DETECT_THRESHOLD_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.add_argument("--realtime", action="store_true",
                   help="feed the audio at real time, as a microphone would (Ctrl-C stops: exit 0)")
    p.add_argument("--plot", metavar="OUT.png",
                   help="draw each keyword's score over time, its threshold and the detections, with the audio "
                        "level underneath (several AUDIO: OUT-<audio name>.png each; needs matplotlib: "
                        "pip install matplotlib)")
    p.add_argument("--clips", metavar="DIR",
                   help="write each detection, with 0.3 s of audio on each side, as a WAV in this folder "
                        "(named by file, keyword, time and cost): listen to what fired")
    p.add_argument("--encoder", metavar="MODEL.onnx", help=MOVED_MODEL_HELP)
    add_threads_option(p)
    add_adapt_option(p)
    p.set_defaults(func=cmd_detect, progress=True)

    p = add_command(sub, "keywords", "list the keywords of a set; remove one, or change its threshold without audio",
                    "List a keyword set on stdout: a header line with the encoder, then one tab-separated line per "
                    "keyword: its threshold and how it was set, the false alarms per hour expected on its "
                    "calibration background, its templates and their lengths in seconds (in frames when the "
                    "encoder's model is not there), and after '#' the threshold's story in words.",
                    KEYWORDS_EXAMPLES)
    p.add_argument("-k", "--keyset", required=True, metavar="KWS", help=KEYSET_HELP)
    change = p.add_mutually_exclusive_group()
    change.add_argument("--remove", metavar="NAME", help="remove this keyword (all its templates) from the set")
    change.add_argument("--set", metavar="NAME", help="change this keyword's --threshold or --fa-per-hour")
    p.add_argument("--threshold", type=parse_threshold_value, metavar="T",
                   help="with --set: the keyword's threshold (a step from the one 'kwsstream keywords' shows; "
                        "a warning says when it is expected to fire far more often than its target). "
                        + THRESHOLD_DIRECTION)
    p.add_argument("--fa-per-hour", type=parse_rate, metavar="R",
                   help="with --set: move the threshold to this many expected false alarms per hour on the "
                        "keyword's calibration background (no audio needed). Higher: more detections and more "
                        "false alarms; lower: fewer of both")
    p.add_argument("--reset-adaptation", action="store_true",
                   help="with --set: forget the speech this keyword's threshold adapted to (detect and listen "
                        "start again from the enrolled threshold)")
    p.set_defaults(func=cmd_keywords)

    p = add_command(sub, "demo", "enroll the bundled examples and spot them live (microphone, else the bundled recording)",
                    "Enroll three Spanish keywords from the bundled example recordings (in a temporary set), then "
                    "spot them live: in the microphone when there is one (say them; Ctrl-C stops), otherwise in "
                    "the bundled recording played at real time, with a score of how it did at the end. Ctrl-C "
                    "stops: exit 0 with a 'stopped' line.",
                    DEMO_EXAMPLES)
    p.add_argument("--fast", action="store_true", help="play the bundled recording as fast as possible (implies --recording)")
    p.add_argument("--recording", action="store_true", help="play the bundled recording even when there is a microphone")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.add_argument("--encoder", help=f"whisper-base (the default, once its model is made ({MAKE_MODEL_HINT}); "
                                     "else speech-embedding, else mfcc), speech-embedding, mfcc, or an exported .onnx "
                                     "model")
    add_threads_option(p)
    p.set_defaults(func=cmd_demo, progress=True)

    add_live_parsers(sub)
    add_search_parser(sub)
    return parser


class _WarningLine(logging.Handler):
    """The library's notes and warnings (``kwsstream.*`` loggers: e.g. a truncated audio file, a
    one-time background encoding) as one ``kwsstream: [warning: ]...`` line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        kind = "warning: " if record.levelno >= logging.WARNING else ""
        _say(f"kwsstream: {kind}{record.getMessage()}")


def _log_warnings_to_stderr() -> None:
    logger = logging.getLogger("kwsstream")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        logger.addHandler(_WarningLine(logging.INFO))
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Run one command line (``argv``; ``None``: this process's own, and then a Ctrl-C after the
    command has finished ends the process quietly with its status) and return the exit status."""
    ctrl_c = previous = None
    try:  # first: a Ctrl-C from here on ends in one line and the right status, never a traceback
        words = sys.argv[1:] if argv is None else [str(a) for a in argv]
        ctrl_c = CtrlC(is_live_argv(words), hard_exit=argv is None)
        previous = ctrl_c.install()
        if argv is None:  # the interpreter's last steps restore the default (death by SIGINT): ignore it then
            atexit.register(signal.signal, signal.SIGINT, signal.SIG_IGN)
        pause_point("start")
        status = _run(words, ctrl_c)
        ctrl_c.finished = status
    except KeyboardInterrupt:
        if ctrl_c is None:  # before it was made: the command line decides
            ctrl_c = CtrlC(is_live_argv(sys.argv[1:] if argv is None else [str(a) for a in argv]), hard_exit=False)
        status = ctrl_c.outcome()
        ctrl_c.finished = status
    finally:
        if argv is not None and previous is not None:
            signal.signal(signal.SIGINT, previous)  # a caller in Python gets its own Ctrl-C back
    return status


def _run(words: list[str], ctrl_c: CtrlC) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(words)  # option types that raise KwsError (--threshold) give one line
    except KwsError as err:
        _say(f"kwsstream: error: {err}")
        return EXIT_USAGE
    ctrl_c.live = _is_live(args)
    pause_point("parsed")
    _log_warnings_to_stderr()
    if getattr(args, "threads", None) is not None:  # --threads (add_threads_option)
        from .onnxsession import set_default_threads

        set_default_threads(args.threads)
    if getattr(args, "limit_blas", True):  # importing the matcher loads numba: 'devices' never does, 'listen' later
        from .matcher import limit_blas_threads

        limit_blas_threads()
    pause_point("ready")
    try:
        with progress_on_terminal(getattr(args, "progress", False)):
            return args.func(args)
    except KwsError as err:
        _say(f"kwsstream: error: {err}")
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK


def _is_live(args: argparse.Namespace) -> bool:
    """A live run: a user stopping it with Ctrl-C is not an error (exit 0)."""
    return args.command in ("listen", "demo") or (args.command == "detect" and args.realtime)


if __name__ == "__main__":
    sys.exit(main())
