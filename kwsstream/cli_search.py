"""``kwsstream search``: a folder of recordings searched on workers (see ``cli.py``)."""

from __future__ import annotations

import argparse

from .cliterm import EXIT_OK, _say
from .cliutil import add_command, add_threads_option, parse_threshold_option
from .errors import UsageError


def cmd_search(args: argparse.Namespace) -> int:
    from .keyset import load_keyset
    from .search import search
    from .searchworkers import SpotterSpec, TlsFiles

    tls_given = [args.tls_ca_file, args.tls_cert, args.tls_key]
    if any(tls_given) and not all(tls_given):
        raise UsageError("--tls-ca-file, --tls-cert and --tls-key go together")
    tls = TlsFiles(*tls_given) if all(tls_given) else None
    thresholds: dict[str, float] = {}
    for name, value in args.threshold or []:
        names = [kw.name for kw in load_keyset(args.keyset).keywords] if name is None else [name]
        thresholds.update({n: value for n in names})
    spec = SpotterSpec.from_file(args.keyset, encoder=args.encoder, thresholds=thresholds, threads=args.threads)
    result = search(spec, args.paths, out=args.out, top=args.top, workers=args.workers,
                    scheduler=args.scheduler, tls=tls, progress=not args.no_progress, say=_say)
    where = f" on {args.scheduler}" if args.scheduler else f" with {result.workers} worker(s)"
    _say(f"{len(result.rows)} hit(s); searched {len(result.searched)} file(s) ({result.seconds / 3600:.2f} h of audio "
         f"in {result.wall:.0f} s{where}), {len(result.resumed)} already searched, {len(result.bad)} skipped"
         + (f"; table: {args.out}" if args.out else ""))
    return EXIT_OK


def add_search_parser(sub) -> None:
    """The ``search`` subcommand."""

    def positive(text: str) -> int:
        if not text.strip().isdigit() or len(text.strip()) > 9 or int(text) < 1:
            raise UsageError(f"{text!r} must be a whole number from 1 to 999999999")
        return int(text)

    def workers(text: str) -> int:
        from .searchworkers import max_workers

        if not text.strip().isdigit() or len(text.strip()) > 9 or not 1 <= int(text) <= max_workers():
            raise UsageError(f"--workers {text!r} must be a whole number from 1 to {max_workers()} (4 per CPU)")
        return int(text)

    def scheduler(text: str) -> str:
        from .searchworkers import SCHEDULER_PATTERN

        match = SCHEDULER_PATTERN.fullmatch(text)
        if match is None or not 1 <= int(match.group(3)) <= 65535:
            raise UsageError(f"--scheduler {text!r} is not a Dask scheduler address (tcp://HOST:PORT or tls://HOST:PORT)")
        return text

    p = add_command(
        sub, "search", "search folders of audio files for the enrolled keywords: one ranked table, resumable",
        "Run every audio file under the PATHs through the detection pipeline (as 'detect' does) on local "
        "worker processes or a Dask cluster, and write one table of hits ranked by cost within each keyword. "
        "A bad file is reported in one line and skipped; a rerun with the same --out skips the files already "
        "searched.",
        "examples:\n"
        "  kwsstream search -k my.kws recordings/ --out hits.csv\n"
        "  kwsstream search -k my.kws 'archive/**/*.flac' --top 20 --out best.jsonl\n"
        "  kwsstream search -k my.kws @files.txt --scheduler tls://10.0.0.5:8786 \\\n"
        "      --tls-ca-file ca.pem --tls-cert me.pem --tls-key me.key --out hits.csv")
    p.add_argument("-k", "--keyset", required=True, help="the keyword set to search for (made with 'kwsstream enroll')")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="folder (searched recursively for audio files), glob ('**' spans folders), audio file, "
                        "or @LIST.txt (one path a line)")
    p.add_argument("--out", help="the table: .csv for CSV, else JSON lines (default: JSON lines on stdout); "
                                 "OUT.state.jsonl beside it lets a rerun skip the files already searched")
    p.add_argument("--top", type=positive, metavar="N", help="keep each keyword's N best hits")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=workers, metavar="N",
                       default=1,
                       help="local worker processes, talking to this one over pipes (no network port), never "
                            "more than files; default 1: in this process - each worker starts its own numba "
                            "kernels and model and shares the cores with this one (on 2 cores one per CPU took "
                            "122 s where 1 took 52 s): more pay off with free cores and many files")
    where.add_argument("--scheduler", type=scheduler, metavar="ADDRESS",
                       help="an existing Dask cluster's scheduler: tls://HOST:PORT with the three --tls-* files "
                            "(mutual TLS), or tcp://HOST:PORT - unauthenticated: anyone who can reach a tcp:// "
                            "scheduler runs code on its workers, so only on a network that only its users reach")
    p.add_argument("--tls-ca-file", metavar="PEM", help="--scheduler tls://: the CA certificate of the cluster")
    p.add_argument("--tls-cert", metavar="PEM", help="--scheduler tls://: this client's certificate")
    p.add_argument("--tls-key", metavar="PEM", help="--scheduler tls://: this client's private key")
    p.add_argument("--threshold", type=parse_threshold_option, action="append", metavar="[NAME=]T",
                   help="detection threshold: T for every keyword or NAME=T for one (repeatable; overrides the set's). "
                        "Higher: more detections and more false alarms; lower: fewer of both")
    p.add_argument("--encoder", help="path of the ONNX model, if it moved since enrollment (checked by sha256)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_option(p)
    p.set_defaults(func=cmd_search)


