"""What the ``kwsstream`` commands share: option parsers, help texts, how an event or a
threshold is told to a person, and the exit statuses (see ``cli.py``)."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from .errors import UsageError
from .keyset import parse_threshold

def parse_threshold_option(text: str) -> tuple[str | None, float]:
    """``--threshold T`` (every keyword) or ``--threshold NAME=T`` (one keyword), repeatable."""
    name, sep, value = text.rpartition("=")
    return (name.strip() if sep else None), parse_threshold(value)


def parse_rate(text: str) -> float:
    """``--fa-per-hour R``: a target number of false alarms per hour per keyword."""
    from .calibrate import check_fa_per_hour

    try:
        return check_fa_per_hour(float(text))
    except ValueError:
        raise UsageError(f"--fa-per-hour {text!r} is not a number") from None


def _spotter(args: argparse.Namespace):
    """The spotter of ``args.keyset`` with ``--encoder`` and the ``--threshold`` overrides."""
    from .encoders import load_encoder
    from .keyset import load_keyset
    from .spotter import Spotter

    keyset = load_keyset(args.keyset)
    thresholds: dict[str, float] = {}
    for name, value in args.threshold or []:
        names = [kw.name for kw in keyset.keywords] if name is None else [name]
        thresholds.update({n: value for n in names})
    encoder = load_encoder(args.encoder) if args.encoder else None
    return Spotter(keyset, encoder, thresholds=thresholds or None)


def describe_threshold(kw) -> str:
    """How a keyword's threshold was set, in words."""
    cal = kw.calibration
    expected = cal.get("expected_fa_per_hour")
    where = f"{cal.get('background')} background, {60 * cal.get('background_hours', 0):.0f} min"
    if cal.get("rates") == "own speech":  # through the encoder's own-speech rate map (kwsstream/ratemap.py)
        where = f"in the speaker's own speech ({where}, through the encoder's measured own-speech rate map)"
    else:
        where = f"on the {where}"
    rate = f"~{max(expected, 0.01):.2g} false alarms/hour expected {where}" if expected is not None else ""
    if kw.threshold_source == "calibrated" and cal.get("method") == "fa-rate":
        return f"calibrated to {cal['fa_per_hour']:g} false alarms/hour: {rate}"
    if kw.threshold_source == "user":
        return "set by you" + (f"; {rate}" if rate else "")
    return f"{kw.threshold_source} (set by an older kwsstream: 'kwsstream calibrate' sets it to a false-alarm rate)"

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



STOPPED = "stopped (Ctrl-C)"
"""The one line a live run (listen, demo, detect --realtime) stopped by the user ends with (exit 0)."""



def parse_threads(text: str) -> int:
    """``--threads N``: a whole number >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise UsageError(f"--threads {text!r} must be a whole number >= 1")
    return int(text)


def add_threads_option(p: argparse.ArgumentParser) -> None:
    """``--threads N``: onnxruntime threads of an ONNX encoder (default: by model size, see
    kwsstream/onnxsession.py); applied by :func:`main` before the command runs."""
    p.add_argument("--threads", type=parse_threads, metavar="N",
                   help="threads for an ONNX encoder (default: 1 for small models such as speech_embedding, "
                        "the physical cores for large ones; OMP_NUM_THREADS also sets it)")




THRESHOLD_DIRECTION = ("A keyword fires where its score (lower: more alike) falls under its threshold: higher: more "
                       "detections and more false alarms; lower: fewer of both")
DETECT_THRESHOLD_HELP = ("detection threshold for this run: T for every keyword or NAME=T for one (repeatable; "
                         "overrides the set's, which 'kwsstream keywords' shows). " + THRESHOLD_DIRECTION)
KEYSET_HELP = "keyword set file (.kws), made by 'kwsstream enroll'"
JSON_HELP = "one JSON object per detection on stdout (keyword, start, end, cost, threshold, source, template)"
MOVED_MODEL_HELP = "path of the ONNX model, if it moved since enrollment (checked by sha256)"

MAIN_EPILOG = """\
first steps:
  kwsstream demo                                        # the bundled examples, spotted live
  kwsstream enroll -k my.kws hola hola1.wav hola2.wav hola3.wav
  kwsstream detect -k my.kws talk.wav --plot scores.png

'kwsstream COMMAND --help' explains a command, with examples.
exit status: 0 success (also a live run - listen, demo, detect --realtime - stopped with Ctrl-C),
2 bad usage or bad input (one line naming the file and the problem), 1 internal error,
130 another command interrupted with Ctrl-C."""

ENROLL_EXAMPLES = """\
examples:
  kwsstream enroll -k my.kws hola hola1.wav hola2.wav hola3.wav     # a new set, or one more keyword
  kwsstream enroll -k my.kws casa talk.wav --segment 3.20 3.71      # cut out of a longer recording
  kwsstream enroll -k my.kws hola hola4.wav --background me.wav     # calibrated on your own background
  kwsstream enroll -k my.kws hola h1.wav h2.wav --encoder mfcc      # no model needed, lowest CPU"""

CALIBRATE_EXAMPLES = """\
examples:
  kwsstream calibrate -k my.kws --background me.wav tv.wav          # your own keyword-free audio
  kwsstream calibrate -k my.kws --keyword hola --fa-per-hour 0.5    # one keyword, a looser target"""

DETECT_EXAMPLES = """\
examples:
  kwsstream detect -k my.kws meeting.mp3                            # lines on stderr
  kwsstream detect -k my.kws meeting.mp3 --json > hits.jsonl        # JSON lines on stdout
  kwsstream detect -k my.kws a.wav b.wav --plot scores.png          # scores-a.png, scores-b.png
  kwsstream detect -k my.kws talk.wav --threshold hola=0.35         # one keyword looser, this run only
  kwsstream detect -k my.kws talk.wav --realtime                    # paced like a microphone"""

KEYWORDS_EXAMPLES = """\
examples:
  kwsstream keywords -k my.kws                                      # list
  kwsstream keywords -k my.kws --set hola --fa-per-hour 0.2         # stricter (fewer false alarms)
  kwsstream keywords -k my.kws --set hola --threshold 0.30          # a threshold of your own
  kwsstream keywords -k my.kws --remove casa"""

DEMO_EXAMPLES = """\
examples:
  kwsstream demo                                                    # microphone, else the recording
  kwsstream demo --fast --encoder mfcc                              # the recording, as fast as it goes"""

LISTEN_EXAMPLES = """\
examples:
  kwsstream listen -k my.kws                                        # the default input, until Ctrl-C
  kwsstream listen -k my.kws --device USB --seconds 60 --json       # a device by name, one minute"""


def add_command(sub, name: str, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A subcommand whose --help shows ``description`` and the examples of ``epilog`` as written."""
    return sub.add_parser(name, help=help, description=textwrap.fill(description, 79), epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def add_calibration_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fa-per-hour", type=parse_rate, metavar="R",
                   help="target false alarms per hour per keyword on the background (default: the keyword's earlier "
                        "target, else 0.1). Higher: more detections and more false alarms; lower: fewer of both")
    p.add_argument("--background", nargs="+", metavar="AUDIO",
                   help="keyword-free recordings to count false alarms on (default: the bundled 26 min of "
                        "Russian speech, music and noise); best: ~10 minutes of the speaker or room you will spot in")


