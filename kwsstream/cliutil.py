"""What the ``kwsstream`` commands share: the parser (with "did you mean" for a mistyped option),
option parsers that name their option, help texts, and how an event or a threshold is told to a
person (see ``cli.py``). The process's side - exit statuses, Ctrl-C, the progress line, ``_say``
- is ``cliterm.py``'s.

Importing this module imports nothing heavy (no numpy, no numba): ``main`` takes over Ctrl-C
before anything slow is loaded.
"""

from __future__ import annotations

import argparse
import difflib
import json
import textwrap

from .cliterm import _say
from .errors import KeysetError, UsageError


# --- talking to people -------------------------------------------------------------------------

def fixed(value: float, decimals: int = 3) -> str:
    """``value`` with ``decimals`` decimals, never ``-0.000``."""
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def threshold_text(threshold: float) -> str:
    """A threshold as every command shows it: the stored value (4 decimals) at 3 decimals, so a
    float32 copy of it (a spotter's) reads the same as the keyword set's float64."""
    return fixed(round(float(threshold), 4))


def rate_text(rate: float) -> str:
    """False alarms per hour in words people read: ``0.12``, ``3``, ``5.3``, ``530``."""
    rate = max(float(rate), 0.01)
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.2g}"


def describe_event(event, prefix: str = "", file: str | None = None) -> str:
    """One human line for a detection; times in fixed-width columns; ``file``: the audio file's
    name, first (when several files are searched)."""
    under = event.threshold - event.cost
    where = f"{file}  " if file is not None else ""
    return (
        f"{prefix}{where}{event.start:7.2f}-{event.end:7.2f} s  {event.keyword:<16} cost {fixed(event.cost)} "
        f"(threshold {threshold_text(event.threshold)}, {fixed(under)} under)"
    )


def emit(event, as_json: bool, prefix: str = "", file: str | None = None) -> None:
    """Print a detection: a JSON line on stdout, or a human line on stderr (``file``: named first)."""
    if as_json:
        text = json.dumps(event.to_dict(), ensure_ascii=False)
        try:
            print(text, flush=True)
        except UnicodeEncodeError:  # a terminal or pipe that cannot take every character
            print(json.dumps(event.to_dict()), flush=True)
    else:
        _say(describe_event(event, prefix, file))


def describe_threshold(kw) -> str:
    """How a keyword's threshold was set, in words."""
    cal = kw.calibration
    expected = cal.get("expected_fa_per_hour")
    where = f"{cal.get('background')} background, {60 * (cal.get('background_hours') or 0):.0f} min"
    if cal.get("rates") == "own speech":  # through the encoder's own-speech rate map (kwsstream/ratemap.py)
        where = f"in the speaker's own speech ({where}, through the encoder's measured own-speech rate map)"
    else:
        where = f"on the {where}"
    rate = f"~{rate_text(expected)} false alarms/hour expected {where}" if expected is not None else ""
    if kw.threshold_source == "calibrated" and cal.get("method") == "fa-rate":
        return f"calibrated to {cal['fa_per_hour']:g} false alarms/hour: {rate}"
    if kw.threshold_source == "user":
        return "set by you" + (f"; {rate}" if rate else "")
    return f"{kw.threshold_source} (no false-alarm rate recorded: 'kwsstream calibrate' sets it to one)"


# --- options -----------------------------------------------------------------------------------

def parse_threshold_option(text: str) -> tuple[str | None, float]:
    """``--threshold T`` (every keyword) or ``--threshold NAME=T`` (one keyword), repeatable."""
    from .keysetformat import parse_threshold

    name, sep, value = text.rpartition("=")
    return (name.strip() if sep else None), parse_threshold(value)


def parse_threshold_value(text: str) -> float:
    """``--threshold T`` of enroll and keywords."""
    from .keysetformat import parse_threshold

    return parse_threshold(text)


def parse_rate(text: str) -> float:
    """``--fa-per-hour R``: a target number of false alarms per hour per keyword."""
    from .calibrate import check_fa_per_hour

    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--fa-per-hour {text!r} is not a number") from None
    try:
        return check_fa_per_hour(value)
    except UsageError as err:
        raise UsageError(f"--fa-per-hour: {err}") from None


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


def add_adapt_option(p: argparse.ArgumentParser) -> None:
    """``--no-adapt``: keep the thresholds as enrolled (see :func:`_spotter`, :mod:`kwsstream.adapt`)."""
    adapt = p.add_mutually_exclusive_group()
    adapt.add_argument("--adapt", dest="adapt", action="store_const", const=True, default=None,
                       help="each keyword calibrated to a false-alarm rate moves its threshold toward that rate on "
                            "the speech heard (its impostor matches outside detections), and what was heard is "
                            "saved with the set for the next run ('kwsstream keywords' shows it; "
                            "--reset-adaptation forgets it). Default: on for the encoders the streaming benchmark "
                            "measured it to help (Whisper base), off for the others")
    adapt.add_argument("--no-adapt", dest="adapt", action="store_const", const=False,
                       help="keep every threshold as enrolled")


def save_adaptation(args: argparse.Namespace, spotter) -> None:
    """After a run: the speech evidence its streams gathered (:meth:`Spotter.learned`) is added
    to the evidence saved in the set, under the set's lock (a concurrent enroll or run is never
    lost); quietly: ``keywords`` shows it."""
    if spotter is None or spotter.options.adapt is None:
        return
    from .adapt import MAX_HOURS, Evidence, saved_evidence, with_evidence
    from .keyset import update_keyset

    learned, names = spotter.learned(), spotter.names
    if not learned.hours.any() and not learned.counts.any():
        return

    def add(keyset):
        if keyset is None:
            return None
        saved = saved_evidence(keyset)
        current = [kw.name for kw in keyset.keywords]
        total = Evidence.empty(len(names))
        for k, name in enumerate(names):
            if name in current:
                i = current.index(name)
                total.counts[k] = saved.counts[i] + learned.counts[k]
                total.hours[k] = min(MAX_HOURS, saved.hours[i] + learned.hours[k])
        return with_evidence(keyset, names, total)

    update_keyset(args.keyset, add)


DEFAULT_RATE_MARK = "{DEFAULT_FA_PER_HOUR}"
"""Stands for :data:`kwsstream.calibrate.DEFAULT_FA_PER_HOUR` in a help text: filled in when the
help is shown (:class:`Formatter`), so that building the parser does not load numba."""


def add_calibration_options(p: argparse.ArgumentParser, *, sets_own_background: bool = False) -> None:
    """``--fa-per-hour`` and ``--background``; ``sets_own_background``: the command's default
    background is the one the set's keywords were calibrated on (enroll), else the bundled one."""
    p.add_argument("--fa-per-hour", type=parse_rate, metavar="R",
                   help="target false alarms per hour per keyword on the background (default: the keyword's earlier "
                        f"target, else {DEFAULT_RATE_MARK}). Higher: more detections and more false alarms; lower: "
                        "fewer of both")
    default = ("the recordings the set's other keywords were calibrated on, while they are there; else "
               if sets_own_background else "")
    p.add_argument("--background", nargs="+", metavar="AUDIO",
                   help=f"keyword-free recordings to count false alarms on (default: {default}the bundled 26 min of "
                        "Russian speech, music and noise); best: ~10 minutes of the speaker or room you will spot in")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; defaults named in help texts come from the code's
    constants (:data:`DEFAULT_RATE_MARK`)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = super()._get_help_string(action) or ""
        if DEFAULT_RATE_MARK in text:
            from .calibrate import DEFAULT_FA_PER_HOUR

            text = text.replace(DEFAULT_RATE_MARK, f"{DEFAULT_FA_PER_HOUR:g}")
        return text


class Parser(argparse.ArgumentParser):
    """An argument parser whose unknown options are reported by the subcommand they were given
    to (its usage, not the top level's), with the closest option it has (``--jsn``: did you
    mean ``--json``?)."""

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            sub = self._command_parser(getattr(parsed, "command", None))
            (sub or self).error(unrecognized_message(extras, sub or self))
        return parsed

    def _command_parser(self, command: str | None) -> argparse.ArgumentParser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                return action.choices[command]
        return None


def unrecognized_message(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """``unrecognized arguments: ...``, with the closest option of ``parser`` for each one
    that looks like a mistyped option."""
    options = [o for action in parser._actions for o in action.option_strings]
    hints = []
    for extra in extras:
        if extra.startswith("-"):
            close = difflib.get_close_matches(extra.split("=", 1)[0], options, n=1, cutoff=0.6)
            if close:
                hints.append((extra, f"did you mean {close[0]}?"))
    if len(extras) == 1 and hints:
        return f"unrecognized argument: {extras[0]} ({hints[0][1]})"
    said = "; ".join(f"{extra}: {hint}" for extra, hint in hints)
    return f"unrecognized arguments: {' '.join(extras)}" + (f" ({said})" if said else "")


def add_command(sub, name: str, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A subcommand whose --help shows ``description`` and the examples of ``epilog`` as written."""
    return sub.add_parser(name, help=help, description=textwrap.fill(description, 79), epilog=epilog,
                          formatter_class=Formatter)


# --- the spotter of a command ------------------------------------------------------------------

def _spotter(args: argparse.Namespace):
    """The spotter of ``args.keyset`` with ``--encoder`` and the ``--threshold`` overrides; an
    override far above its keyword's target rate gets one warning line."""
    from .encoders import load_encoder
    from .keyset import load_keyset
    from .spotter import Spotter

    keyset = load_keyset(args.keyset)
    if not keyset.keywords:
        raise KeysetError(f"{args.keyset}: the keyword set has no keywords: enroll one first")
    thresholds: dict[str, float] = {}
    for name, value in args.threshold or []:
        names = [kw.name for kw in keyset.keywords] if name is None else [name]
        thresholds.update({n: value for n in names})
    if thresholds:
        from .enroll import threshold_warning

        for name, value in thresholds.items():
            kw = keyset.get(name)
            warning = threshold_warning(kw, value) if kw is not None else None
            if warning:
                _say(f"kwsstream: warning: {warning}")
    from .adapt import AdaptOptions, helps
    from .encoders import encoder_from_identity
    from .spotter import SpotterOptions

    encoder = load_encoder(args.encoder) if args.encoder else encoder_from_identity(keyset.encoder)
    adapt = getattr(args, "adapt", None)
    if getattr(args, "plot", None) is not None:  # a plot draws the enrolled thresholds
        adapt = False
    elif adapt is None:
        adapt = helps(encoder.name)
    options = SpotterOptions(adapt=AdaptOptions() if adapt else None)
    return Spotter(keyset, encoder, thresholds=thresholds or None, options=options)


# --- help texts --------------------------------------------------------------------------------

THRESHOLD_DIRECTION = ("A keyword fires where its score (lower: more alike) falls under its threshold: higher: more "
                       "detections and more false alarms; lower: fewer of both")
DETECT_THRESHOLD_HELP = ("detection threshold for this run: T for every keyword or NAME=T for one (repeatable; "
                         "overrides the set's, which 'kwsstream keywords' shows). " + THRESHOLD_DIRECTION)
KEYSET_HELP = "keyword set file (.kws), made by 'kwsstream enroll'"
JSON_HELP = "one JSON object per detection on stdout (keyword, start, end, cost, threshold, source, template)"
MOVED_MODEL_HELP = "path of the ONNX model, if it moved since enrollment (checked by sha256)"
MAKE_MODEL_HINT = "from a kwsstream checkout: python -m export whisper-base --layer 5 --int8"
"""How the default encoder's model is made (only a source checkout has the ``export`` package)."""

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
  kwsstream calibrate -k my.kws --keyword hola --fa-per-hour 0.5    # one keyword, a stricter target"""

DETECT_EXAMPLES = """\
examples:
  kwsstream detect -k my.kws meeting.mp3                            # lines on stderr
  kwsstream detect -k my.kws meeting.mp3 --json > hits.jsonl        # JSON lines on stdout
  kwsstream detect -k my.kws a.wav b.wav --plot scores.png          # scores-a.png, scores-b.png
  kwsstream detect -k my.kws talk.wav --threshold hola=0.15         # one keyword, this run only
  kwsstream detect -k my.kws talk.wav --realtime                    # paced like a microphone"""

KEYWORDS_EXAMPLES = """\
examples:
  kwsstream keywords -k my.kws                                      # list
  kwsstream keywords -k my.kws --set hola --fa-per-hour 1           # stricter (fewer false alarms)
  kwsstream keywords -k my.kws --set hola --threshold 0.12          # a threshold of your own
  kwsstream keywords -k my.kws --remove casa"""

DEMO_EXAMPLES = """\
examples:
  kwsstream demo                                                    # microphone, else the recording
  kwsstream demo --fast --encoder mfcc                              # the recording, as fast as it goes"""

LISTEN_EXAMPLES = """\
examples:
  kwsstream listen -k my.kws                                        # the default input, until Ctrl-C
  kwsstream listen -k my.kws --device USB --seconds 60 --json       # a device by name, one minute"""

NO_MICROPHONE_HINT = ("without a microphone, spot in a recording paced like one: kwsstream detect -k KWS --realtime "
                      "FILE; or try the bundled example: kwsstream demo")
