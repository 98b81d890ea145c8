"""python -m eval SUBCOMMAND: the measuring side of kwsstream (a thin dispatcher).

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``main(args) -> int``; register it in :data:`SUBCOMMANDS`. Exit status: 0 success, 2 bad usage or
bad input (one line on stderr), 1 internal error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from kwsstream.errors import KwsError

SUBCOMMANDS = {
    "synth": ("eval.synth", "make a synthetic Spanish corpus in the Common Voice layout"),
    "run": ("eval.run", "run the study's protocol: encode, rank with S-DTW, P@K/R@K, anisotropy, report"),
    "stream": ("eval.stream", "streaming benchmark: FRR vs false alarms per hour (DET), latency, per condition"),
    "ratemap": ("eval.ratemap", "measure the own-speech rate maps enrollment ships (false alarms in a speaker's speech vs on the background)"),
    "prompts": ("eval.prompts", "build keyword-spotting stream corpora of real speech from Debian's Asterisk prompts"),
}
"""name -> (module, one-line help)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(commands.add_parser(name, help=help_text, description=help_text))
        modules[name] = module
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return modules[args.command].main(args)
    except KwsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
