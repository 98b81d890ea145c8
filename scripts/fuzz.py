"""Fuzz the keyword set and audio loaders, the keyword listing and the search state loader with
mutated valid inputs (deterministic per seed).

    python scripts/fuzz.py --inputs 20000 [--target keyset|audio|listing|state|all] [--seed 0] [--keep DIR]

Seeds: valid keyword sets (``.kws``, from ``scripts/make_bad_inputs.py``'s valid header) and
speech written with soundfile as WAV (PCM 16, float, stereo 24-bit), FLAC, MP3 and OGG. Each input
is a seed mutated at the byte level (flips, random bytes, interesting values, cut, inserted or
duplicated runs) or, for keyword sets, at the JSON level (a field of the header replaced by an
odd value, before the file is packed again), so both the container and the validation behind it
are reached.

The ``listing`` target runs the mutated keyword sets through ``kwsstream keywords -k FILE`` (in
the worker process, output captured): exit 0, or exit 2 with one line, and nothing else. The
``state`` target mutates a valid search state file (``OUT.state.jsonl``: byte-level, or a line
replaced by odd JSON: wrong types, deep nesting, unhashable keywords, huge lines) and loads it
with :class:`kwsstream.searchstate.SearchState` (bad lines are skipped and counted, never raised).

Inputs run in batches in a worker subprocess (address space limited to ``--memory-gb``): each
input is loaded (``load_keyset`` then ``Spotter(keyset)``; ``load_audio`` then
``check_example``; the listing; the state loader), and its outcome reported to this parent
process, which counts (each input has ``--timeout`` seconds):

* ``ok`` and ``project errors`` (a :class:`kwsstream.errors.KwsError`: the one-line refusals);
* ``other exceptions`` (anything else, MemoryError included: a bug);
* ``hangs`` (no answer within ``--timeout`` seconds: the worker is killed and a new one goes on);
* ``crashes`` (the worker died: a signal, an abort in C code).

Exit status 0 when there were no other exceptions, hangs or crashes. ``--keep DIR`` writes each
offending input there.
"""

from __future__ import annotations

import argparse
import collections
import copy
import io
import json
import os
import random
import select
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

TARGETS = ("keyset", "audio", "listing", "state")
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFE, 0x40]
ODD_VALUES = [None, True, False, 0, -1, 1, 2, 3, 73.9, "73", "", "abc", [], {}, [1, 2], {"a": 1}, 1e308, -1e308,
              2**31, 2**63, 10**9, 1e-300, 0.5, "mfcc", "onnx", "\n", "x" * 1000, [[[[1]]]], 13, 12, 400, 160, 40]


# --- seeds --------------------------------------------------------------------------------------

def keyset_seeds() -> list[bytes]:
    import make_bad_inputs as mbi

    seeds = [mbi.kws_bytes(mbi.valid_header(), mbi.valid_frames())]
    one = mbi.valid_header(n_keywords=1, frames_per_template=4)
    seeds.append(mbi.kws_bytes(one, mbi.valid_frames(1, 4)))
    return seeds


STATE_KEYWORDS = ("word0", "word1")
STATE_KEY = "0" * 64


def state_seeds() -> list[bytes]:
    """Valid search state files: the header, then a few files' lines."""
    head = json.dumps({"kwsstream_search_state": 1, "spotter": STATE_KEY})
    entries = [{"path": f"/archive/file{i}.wav", "size": 1000 + i, "mtime_ns": 10**18 + i, "seconds": 12.5,
                "hits": [[STATE_KEYWORDS[i % 2], 1.0 + i, 1.5 + i, 0.2]] * (i % 3), "error": None if i % 4 else "bad"}
               for i in range(6)]
    lines = [head] + [json.dumps(e) for e in entries]
    return ["\n".join(lines[:n]).encode() + b"\n" for n in (1, 3, len(lines))]


ODD_LINES = ["[" * 100_000, "{" * 50_000, '"' + "\\\"" * 100_000, "x" * 70_000, "", "\x00", "null", "[]", "{}",
             '{"path": ["x"]}', '1e999', "-" * 10_000]


def mutate_state(data: bytes, rng: random.Random) -> bytes:
    """A state file with one line replaced by odd JSON, a field of one entry replaced by an odd
    value, or mutated bytes."""
    lines = data.split(b"\n")
    op = rng.randrange(3)
    if op == 0:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(ODD_LINES).encode("utf-8", "surrogatepass"))
    elif op == 1 and len(lines) > 2:
        at = rng.randrange(1, len(lines) - 1)
        entry = json.loads(lines[at])
        paths = [p for p in _paths(entry) if p]
        path = rng.choice(paths)
        parent = entry
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES + [[["word0"]], {"word0": 1}, "\udcff"]))
        lines[at] = json.dumps(entry).encode()
    else:
        return mutate_bytes(data, rng)
    return b"\n".join(lines)


def audio_seeds() -> list[tuple[str, bytes]]:
    import numpy as np
    import soundfile as sf

    import make_bad_inputs as mbi

    speech = mbi.example_audio()[:12_000]
    seeds = []
    for suffix, fmt, subtype, data, rate in [
        ("wav", "WAV", "PCM_16", speech, 16_000),
        ("wav", "WAV", "FLOAT", speech, 22_050),
        ("wav", "WAV", "PCM_24", np.stack([speech, -speech], axis=1), 8_000),
        ("flac", "FLAC", "PCM_16", speech, 16_000),
        ("mp3", "MP3", "MPEG_LAYER_III", speech, 16_000),
        ("ogg", "OGG", "VORBIS", speech, 16_000),
    ]:
        buf = io.BytesIO()
        sf.write(buf, data, rate, format=fmt, subtype=subtype)
        seeds.append((suffix, buf.getvalue()))
    return seeds


def seeds_of(target: str):
    return {"keyset": keyset_seeds, "listing": keyset_seeds, "state": state_seeds, "audio": audio_seeds}[target]()


# --- mutations ------------------------------------------------------------------------------------

def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One to eight byte-level mutations."""
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        if not b:
            b = bytearray(rng.randbytes(rng.randint(1, 64)))
        op = rng.randrange(8)
        at = rng.randrange(len(b))
        if op == 0:
            b[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[at] = rng.randrange(256)
        elif op == 2:
            b[at] = rng.choice(INTERESTING)
        elif op == 3:  # a 32-bit field set to an extreme
            value = rng.choice([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, rng.getrandbits(32)])
            b[at:at + 4] = value.to_bytes(4, "little")
        elif op == 4:
            del b[at:]
        elif op == 5:
            del b[at:at + rng.randint(1, 256)]
        elif op == 6:
            b[at:at] = rng.randbytes(rng.randint(1, 64))
        else:
            run = b[at:at + rng.randint(1, 512)]
            b[rng.randrange(len(b) + 1):0] = run
    return bytes(b)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def mutate_keyset_json(data: bytes, rng: random.Random) -> bytes:
    """Replace one field of a valid set's header by an odd value (or drop it, or resize the
    frames array), and pack the file again."""
    import numpy as np

    import make_bad_inputs as mbi

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        header = json.loads(np.load(io.BytesIO(zf.read("header.npy"))).tobytes())
        frames = np.load(io.BytesIO(zf.read("frames.npy")))
    for _ in range(rng.choice([1, 1, 2])):
        paths = [p for p in _paths(header) if p]
        path = rng.choice(paths)
        parent = header
        for key in path[:-1]:
            parent = parent[key]
        op = rng.randrange(6)
        if op == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        elif op == 1 and isinstance(parent[path[-1]], (int, float)) and not isinstance(parent[path[-1]], bool):
            parent[path[-1]] = parent[path[-1]] * rng.choice([-1, 0, 2, 1000, 1e30, 0.5])
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))  # never one shared list or dict
    op = rng.randrange(6)
    if op == 0:
        frames = frames[: rng.randrange(len(frames) + 1)]
    elif op == 1:
        frames = frames[:, : rng.randrange(frames.shape[1] + 1)]
    elif op == 2:
        frames = (frames * np.float32(rng.choice([0, 1e20, -1, np.inf, np.nan]))).astype(np.float32)
    text = json.dumps(header, allow_nan=True)
    return mbi.kws_bytes(text, np.ascontiguousarray(frames), compress=rng.random() < 0.05)


def make_input(target: str, index: int, seed: int, seeds) -> tuple[str, bytes]:
    """Input ``index`` of ``target`` (deterministic): ``(suffix, bytes)``."""
    rng = random.Random(f"{seed}:{target}:{index}")
    if target == "state":
        return "jsonl", mutate_state(rng.choice(seeds), rng)
    if target in ("keyset", "listing"):
        base = rng.choice(seeds)
        if rng.random() < 0.5:
            data = mutate_keyset_json(base, rng)
            if rng.random() < 0.3:
                data = mutate_bytes(data, rng)
        else:
            data = mutate_bytes(base, rng)
        return "kws", data
    suffix, base = rng.choice(seeds)
    return suffix, mutate_bytes(base, rng)


# --- one input -------------------------------------------------------------------------------------

def run_input(target: str, path: Path) -> None:
    """Load ``path`` as the user's commands would; raises whatever the project raises."""
    if target == "keyset":
        from kwsstream.keyset import load_keyset
        from kwsstream.spotter import Spotter

        Spotter(load_keyset(path))
    elif target == "listing":
        run_listing(path)
    elif target == "state":
        from kwsstream.searchstate import SearchState

        notes: list[str] = []
        SearchState(path, STATE_KEY, STATE_KEYWORDS, notes.append).load()
        if len(notes) > 1 or any("\n" in n for n in notes):
            raise RuntimeError(f"the state loader said {len(notes)} things: {notes[:3]}")
    else:
        from kwsstream.audio import check_example, load_audio

        audio = load_audio(path)
        check_example(audio, str(path))


def run_listing(path: Path) -> None:
    """``kwsstream keywords -k PATH`` in this process: exit 0, or exit 2 with exactly one line
    (raised as the project's error); anything else raises."""
    import contextlib

    from kwsstream.cli import main
    from kwsstream.errors import KwsError

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["keywords", "-k", str(path)])
    lines = err.getvalue().strip().splitlines()
    if code == 2 and len(lines) == 1:
        raise KwsError(lines[0])
    if code != 0:
        raise RuntimeError(f"keywords exited {code} with {len(lines)} line(s): {lines[:2]}")


def worker(target: str, start: int, count: int, seed: int, memory_gb: float) -> None:
    """Run inputs ``start``..``start+count``; report ``index outcome detail`` lines on stdout."""
    import logging
    import resource
    import warnings

    limit = int(memory_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.disable(logging.CRITICAL)
    from kwsstream.errors import KwsError

    seeds = seeds_of(target)
    out = sys.stdout
    with tempfile.TemporaryDirectory(prefix="kwsfuzz-") as folder:
        for index in range(start, start + count):
            suffix, data = make_input(target, index, seed, seeds)
            path = Path(folder) / f"input.{suffix}"
            path.write_bytes(data)
            out.write(f"{index} start\n")
            out.flush()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", RuntimeWarning)  # numpy's: noise a user would see
                    run_input(target, path)
                outcome, detail = "ok", ""
            except KwsError as err:
                outcome, detail = "project", str(err).replace("\n", "\\n")[:300]
                if "\n" in str(err):
                    outcome, detail = "other", "multi-line KwsError: " + detail
            except BaseException as err:  # noqa: BLE001 - counting is the point
                import traceback

                where = traceback.extract_tb(err.__traceback__)[-1]
                outcome = "other"
                detail = f"{type(err).__name__}: {str(err)[:200]} at {Path(where.filename).name}:{where.lineno}"
                detail = detail.replace("\n", "\\n")
            out.write(f"{index} {outcome} {detail}\n")
            out.flush()


# --- the parent -------------------------------------------------------------------------------------

def fuzz(target: str, inputs: int, seed: int, batch: int, timeout: float, memory_gb: float, keep: Path | None,
         say=print) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    examples: dict[str, list[str]] = collections.defaultdict(list)
    seeds = seeds_of(target)
    next_index = 0
    started = time.monotonic()

    def record(kind: str, index: int, detail: str) -> None:
        counts[kind] += 1
        if kind in ("other", "hang", "crash"):
            key = detail.split(" at ")[0][:80] if kind == "other" else kind
            if len(examples[key]) < 3:
                examples[key].append(f"#{index}: {detail}")
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                suffix, data = make_input(target, index, seed, seeds)
                (keep / f"{target}-{kind}-{index}.{suffix}").write_bytes(data)

    while next_index < inputs:
        count = min(batch, inputs - next_index)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", target, "--start", str(next_index),
               "--count", str(count), "--seed", str(seed), "--memory-gb", str(memory_gb)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        current, last, killed = None, time.monotonic(), False
        end = next_index + count
        buffer = ""
        startup = 60.0  # importing numpy, numba, soundfile
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536).decode("utf-8", "replace")
                if not chunk:  # the worker exited
                    proc.wait()
                    break
                buffer += chunk
                *lines, buffer = buffer.split("\n")
                for line in lines:
                    index_text, _, rest = line.partition(" ")
                    outcome, _, detail = rest.partition(" ")
                    index = int(index_text)
                    last = time.monotonic()
                    if outcome == "start":
                        current = index
                    else:
                        record(outcome, index, detail)
                        current = None
                        next_index = index + 1
            limit = timeout if current is not None else startup
            if time.monotonic() - last > limit:
                proc.kill()
                proc.wait()
                killed = True
                if current is None:
                    current = next_index
                record("hang", current, f"no answer in {limit:g} s")
                next_index = current + 1
                break
        stderr = proc.stderr.read()
        proc.stderr.close()
        proc.stdout.close()
        if current is not None and not killed:  # died inside an input
            record("crash", current, f"exit status {proc.returncode}: {stderr.strip().splitlines()[-1:] or ''}")
            next_index = current + 1
        elif next_index < end and not killed:
            record("crash", next_index, f"worker failed (status {proc.returncode}): {stderr.strip()[-300:]}")
            next_index += 1
        say(f"  {target}: {next_index}/{inputs} inputs, {time.monotonic() - started:.0f} s, {dict(counts)}")
    for key, lines in examples.items():
        for line in lines:
            say(f"  {target} {key}: {line}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1000, help="mutated inputs per target")
    parser.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=500, help="inputs per worker process")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds after which an input is a hang")
    parser.add_argument("--memory-gb", type=float, default=4.0, help="address space of a worker")
    parser.add_argument("--keep", type=Path, help="write offending inputs here")
    parser.add_argument("--worker", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.start, args.count, args.seed, args.memory_gb)
        return 0
    targets = list(TARGETS) if args.target == "all" else [args.target]
    bad = 0
    summary = []
    for target in targets:
        started = time.monotonic()
        counts = fuzz(target, args.inputs, args.seed, args.batch, args.timeout, args.memory_gb, args.keep,
                      say=lambda text: print(text, file=sys.stderr, flush=True))
        n = sum(counts.values())
        summary.append(f"{target}: {n} inputs, {counts['ok']} ok, {counts['project']} project errors, "
                       f"{counts['other']} other exceptions, {counts['hang']} hangs (> {args.timeout:g} s), "
                       f"{counts['crash']} crashes [{time.monotonic() - started:.0f} s]")
        bad += counts["other"] + counts["hang"] + counts["crash"]
    print("\n".join(summary), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
