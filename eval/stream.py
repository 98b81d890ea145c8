"""python -m eval stream: detection measured the way wake-word users feel it.

Long test streams (real human speech corpora, or a synthetic one) go through the detection
pipeline a user's ``kwsstream detect FILE`` runs — :func:`kwsstream.audio.iter_audio_blocks` in
10 s blocks → :class:`kwsstream.spotter.Stream` ``feed``/``flush`` — with keywords enrolled from
each corpus's examples (per-example segments) and thresholds calibrated at enrollment
(:func:`kwsstream.enroll.calibrate_keywords`, 1 FA/h on the bundled background). Each stream is
played in every condition (``dry``, ``noiseSNR``: babble + pink noise at SNR dB, ``room``:
RT60 0.5 s); the conditioned audio is written to a FLAC under ``OUT/audio`` and that file is what
the pipeline reads. The per-keyword score trace of every run is cached under ``OUT/traces``
(named by a hash of the keyset and the audio), so reruns skip finished runs; the threshold sweep,
scoring, tables and plots (:mod:`eval.streamreport`) are replayed from the traces.

Stream corpus layout (``CORPUS/corpus.json``, format ``kwsstream-streams`` version 1): keywords with
their enrollment examples (``audio``, ``segment``, ``speaker``), streams (``audio``, ``truth`` CSV
``keyword,start,end,prompt``, ``kind``). ``--synthetic DIR`` builds one from eSpeak voices
(:func:`build_synthetic`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from eval import streamreport as report
from kwsstream.errors import UsageError

_LOG = logging.getLogger(__name__)
FORMAT = "kwsstream-streams"
CONDITIONS = ("dry", "noise20", "noise10", "room")
ROOM_RT60 = 0.5
DETECT_BLOCK_SECONDS = 10.0
"""Blocks read per ``feed`` call: what ``kwsstream detect FILE`` reads (not ``--realtime``)."""
ACTIVE_FRAME_S = 0.02
ACTIVE_RANGE_DB = 30.0
"""Speech power for the SNR: 20 ms frames within this many dB of the loudest 1 % of frames."""
PEAK = 0.95
BACKGROUND_SEED, BACKGROUND_SECONDS, BACKGROUND_GAP_S = 7, 20 * 60, (0.3, 0.8)
"""How ``scripts/make_background.py`` picks the Russian prompts of the calibration background
(replayed by :func:`_background_prompt_names` so that babble avoids them)."""
BABBLE_GERMAN = (
    "Der Zug nach Hamburg fährt heute später ab.", "Wir haben gestern lange im Garten gesessen.",
    "Kannst du mir bitte das Salz herüberreichen?", "Die Kinder spielen draußen im Schnee.",
    "Im Sommer fahren wir an die Ostsee.", "Das Konzert beginnt um acht Uhr abends.",
    "Meine Schwester arbeitet in einem großen Krankenhaus.", "Der Hund schläft neben dem warmen Ofen.",
)
"""eSpeak babble (German: in no stream) when the Russian prompts are not on this machine."""


# ----------------------------------------------------------------------------- corpora


@dataclass(frozen=True)
class StreamInfo:
    id: str
    audio: Path
    truth: Path | None
    kind: str


@dataclass(frozen=True)
class Corpus:
    name: str
    folder: Path
    keywords: dict  # name -> [{"audio": Path, "segment": (s, e), "speaker": str}]
    streams: tuple[StreamInfo, ...]


def load_corpus(folder: Path) -> Corpus:
    """Read and check ``folder/corpus.json`` (one line naming the problem otherwise)."""
    path = Path(folder) / "corpus.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: cannot read the stream corpus ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != 1:
        raise UsageError(f"{path}: not a {FORMAT} version 1 corpus")
    name = str(data.get("name") or Path(folder).name)
    streams = tuple(StreamInfo(str(s["id"]), Path(folder) / s["audio"],
                               Path(folder) / s["truth"] if s.get("truth") else None, str(s.get("kind", "speech")))
                    for s in data.get("streams", []))
    if name == "background" or any(s.kind == "background" for s in streams):
        raise UsageError(f"{path}: the background corpus is for calibration only, never for testing")
    keywords = {}
    for word, examples in (data.get("keywords") or {}).items():
        keywords[word] = [{"audio": Path(folder) / e["audio"], "segment": tuple(e["segment"]) if e.get("segment") else None,
                           "speaker": str(e.get("speaker", ""))} for e in examples]
    return Corpus(name, Path(folder), keywords, streams)


def read_truth(path: Path | None, names: list[str], cut: float | None) -> report.Truth:
    """The occurrences of ``names`` in a truth CSV (ending before ``cut`` s when given)."""
    if path is None or not path.exists():
        return report.Truth.empty()
    kw, start, end = [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["keyword"] in names and (cut is None or float(row["end"]) <= cut):
                kw.append(names.index(row["keyword"]))
                start.append(float(row["start"]))
                end.append(float(row["end"]))
    return report.Truth(np.array(kw, np.int64), np.array(start), np.array(end))


def safe_cut(path: Path | None, seconds: float) -> float:
    """``seconds``, moved past any keyword occurrence it would cut in two."""
    if path is None or not path.exists():
        return seconds
    with open(path, newline="", encoding="utf-8") as f:
        spans = sorted((float(r["start"]), float(r["end"])) for r in csv.DictReader(f))
    for s, e in spans:
        if s < seconds < e:
            seconds = e + 0.05
    return seconds


# ----------------------------------------------------------------------------- synthetic corpus

SYNTH_KEYWORDS = ("biblioteca", "mariposa", "computadora", "chocolate", "bicicleta", "elefante", "ventana", "guitarra")


def build_synthetic(folder: Path, *, minutes: float = 10.0, n_keywords: int = 4, seed: int = 0,
                    workers: int = 2) -> Path:
    """A synthetic stream corpus in ``folder`` (eSpeak Spanish): each keyword enrolled from 3
    voices (the word alone), one stream of sentences by 8 other voices, about a third of them with
    a keyword inside, the rest keyword-free fortune sentences. Seeded; kept if already there."""
    from eval.espeak import Voice
    from eval.scenes import _carrier, enrollment_clips, script_scene, write_audio
    from eval.textnorm import fortune_sentences, normalize_text

    folder = Path(folder)
    if (folder / "corpus.json").exists():
        return folder
    enroll_voices = [Voice("es", "m1", 160, 45), Voice("es-419", "f2", 190, 60), Voice("es", "klatt", 175, 50)]
    stream_voices = [Voice("es-419", "m3", 150, 40), Voice("es", "f4", 200, 65), Voice("es-419", "m7", 170, 55),
                     Voice("es", "f1", 140, 50), Voice("es", "m6", 180, 48), Voice("es-419", "f5", 165, 62),
                     Voice("es", "m4", 155, 42), Voice("es-419", "klatt3", 185, 52)]
    words = list(SYNTH_KEYWORDS[:max(1, min(n_keywords, len(SYNTH_KEYWORDS)))])
    rng = np.random.default_rng(seed)
    pool = [s for s in fortune_sentences() if 4 <= len(normalize_text(s).split()) <= 14
            and not set(normalize_text(s).split()) & set(words)]
    n_sentences = max(2 * len(words), int(minutes * 60 / 4.5))
    per_keyword = max(1, n_sentences // (3 * len(words)))
    texts = [_carrier(w, pool, rng) for w in words for _ in range(per_keyword)]
    texts += [pool[i] for i in rng.choice(len(pool), max(0, n_sentences - len(texts)), replace=False)]
    texts = [texts[i] for i in rng.permutation(len(texts))]
    keywords = {}
    for word in words:
        clips = enrollment_clips(word, enroll_voices, workers=workers)
        keywords[word] = []
        for voice, clip in zip(enroll_voices, clips):
            rel = f"enroll/{word}_{voice.name}-{voice.variant}.flac"
            write_audio(folder / rel, clip.audio)
            s, e = max(0.0, clip.words[0].start - 0.02), min(clip.duration, clip.words[-1].end + 0.02)
            keywords[word].append({"audio": rel, "segment": [math.ceil(s * 1000) / 1000, math.floor(e * 1000) / 1000], "speaker": voice.espeak_name})
    scene = script_scene(texts, words, stream_voices, noise_snr_db=None, seed=seed, workers=workers)
    write_audio(folder / "streams" / "es-synth.flac", scene.audio)
    with open(folder / "streams" / "es-synth.truth.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["keyword", "start", "end", "prompt"])
        for occ in scene.truth:
            prompt = next((i for i, s in enumerate(scene.segments) if s.start <= occ.start < s.end), -1)
            writer.writerow([occ.keyword, f"{occ.start:.4f}", f"{occ.end:.4f}", prompt])
    corpus = {"format": FORMAT, "version": 1, "name": "synthetic-es", "language": "es", "sample_rate": 16000,
              "sources": [{"kind": "espeak-ng", "seed": seed}], "keywords": keywords,
              "streams": [{"id": "es-synth", "audio": "streams/es-synth.flac", "truth": "streams/es-synth.truth.csv",
                           "seconds": round(scene.duration, 3), "speakers": [v.espeak_name for v in stream_voices],
                           "kind": "speech", "prompts": len(texts)}],
              "alignment": {"method": "espeak word events"}}
    (folder / "corpus.json").write_text(json.dumps(corpus, ensure_ascii=False, indent=1), encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------- conditions


def check_condition(name: str) -> str:
    if name in ("dry", "room") or re.fullmatch(r"noise-?\d+", name):
        return name
    raise UsageError(f"unknown condition {name!r}: use dry, room or noiseSNR (e.g. noise20)")


def speech_power(audio: np.ndarray) -> float:
    """Mean power of the active frames (see :data:`ACTIVE_RANGE_DB`)."""
    n = int(ACTIVE_FRAME_S * 16000)
    frames = audio[: len(audio) // n * n].astype(np.float64).reshape(-1, n)
    power = np.mean(frames ** 2, axis=1)
    if not len(power) or power.max() <= 0:
        return 0.0
    db = 10 * np.log10(power + 1e-20)
    return float(np.mean(power[db >= np.percentile(db, 99) - ACTIVE_RANGE_DB]))


_BABBLE: dict[str, tuple[list, str]] = {}


def _background_prompt_names(items) -> set[str]:
    """The Russian prompts ``scripts/make_background.py`` put into the calibration background."""
    rng = np.random.default_rng(BACKGROUND_SEED)
    used, total = set(), 0
    for i in rng.permutation(len(items)):
        n = int(rng.uniform(*BACKGROUND_GAP_S) * 16000)
        rng.standard_normal(n)  # what _pink(n, rng) draws
        used.add(items[i].name)
        total += len(np.load(items[i].audio_path, mmap_mode="r")) + n
        if total >= BACKGROUND_SECONDS * 16000:
            break
    return used


def babble_source(workers: int = 2) -> tuple[list, str]:
    """Babble talker material: real Russian prompts (Debian, decoded under ``.cache/debian``) not in
    the calibration background, else German eSpeak sentences. Returns (objects with ``.audio``,
    description)."""
    if "babble" in _BABBLE:
        return _BABBLE["babble"]
    found = None
    try:
        from eval.debian_audio import DEFAULT_CACHE, SOURCES, prompts

        if (DEFAULT_CACHE / "decoded" / SOURCES["ru"].audio.name).is_dir():
            items = prompts(SOURCES["ru"], DEFAULT_CACHE)
            used = _background_prompt_names(items)
            rest = [p for p in items if p.name not in used]
            clips = [SimpleNamespace(audio=p.load()) for p in rest]
            seconds = sum(len(c.audio) for c in clips) / 16000
            if seconds >= 60:
                found = (clips, f"real Russian prompts (Debian asterisk-core-sounds-ru, {len(clips)} prompts, "
                                f"{seconds / 60:.1f} min, none of them in the calibration background)")
    except Exception as err:  # noqa: BLE001 - any failure: fall back to eSpeak
        _LOG.warning("Russian prompts unavailable for babble (%s): using eSpeak German babble", err)
    if found is None:
        from eval.espeak import Voice, synthesize_many

        voices = [Voice("de", v, r, p) for v, r, p in (("m1", 160, 45), ("f2", 180, 60), ("m3", 170, 50),
                                                        ("f4", 150, 55))]
        utts = synthesize_many([(t, voices[i % len(voices)]) for i, t in enumerate(BABBLE_GERMAN * 2)],
                               workers=workers)
        found = (utts, "eSpeak German sentences (no Russian prompts on this machine)")
    _BABBLE["babble"] = found
    return found


def apply_condition(audio: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    """``audio`` in ``condition``: noise as :func:`eval.scenes._noise` makes it (babble of
    :data:`eval.scenes.BABBLE_TALKERS` talkers, :data:`eval.scenes.BABBLE_SHARE` of the power,
    the rest pink) at the SNR over the active speech; or heard in a room (RT60 0.5 s)."""
    from eval.scenes import _noise, reverberate, room_response

    x = np.asarray(audio, np.float64)
    if condition.startswith("noise"):
        snr = float(condition[5:].lstrip("-"))
        noise = _noise(len(x), babble_source()[0], rng)
        power = speech_power(audio)
        x = x + np.sqrt(power / np.mean(noise ** 2) / 10 ** (snr / 10)) * noise
    elif condition == "room":
        x = reverberate(x, room_response(ROOM_RT60, rng))
    peak = float(np.abs(x).max()) if len(x) else 0.0
    return (x * (PEAK / peak if peak > PEAK else 1.0)).astype(np.float32)


# ----------------------------------------------------------------------------- caches


_HASHES: dict[tuple, str] = {}


def file_hash(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def conditioned_audio(out: Path, corpus: Corpus, stream: StreamInfo, condition: str, seed: int,
                      cut: float | None) -> Path:
    """The stream's audio file in ``condition`` (cut to ``cut`` s): the original file when dry
    and uncut, else a FLAC under ``out/audio`` (reused when its key matches)."""
    from eval.scenes import write_audio
    from kwsstream.audio import MAX_SECONDS, load_audio

    if condition == "dry" and cut is None:
        return stream.audio
    babble = babble_source()[1] if condition.startswith("noise") else ""
    key = _key(file_hash(stream.audio), condition, seed, cut, babble, ROOM_RT60)
    path = out / "audio" / corpus.name / f"{stream.id}.{condition}.{key}.flac"
    if not path.exists():
        audio = load_audio(stream.audio, max_seconds=MAX_SECONDS)
        if cut is not None:
            audio = audio[: int(round(cut * 16000))]
        rng = np.random.default_rng([seed, int(hashlib.sha256(f"{corpus.name}/{stream.id}/{condition}".encode())
                                               .hexdigest()[:8], 16)])
        tmp = path.with_suffix(".part.flac")
        write_audio(tmp, apply_condition(audio, condition, rng))
        tmp.replace(path)
    return path


def enrolled_keyset(out: Path, corpus: Corpus, names: list[str], encoder, label: str):
    """The corpus's keywords enrolled with ``encoder`` from their per-example segments, then
    calibrated together (the enrollment thresholds); cached under ``out/keysets``."""
    from kwsstream.enroll import _add_examples, calibrate_keywords
    from kwsstream.keyset import load_keyset, save_keyset

    examples = [(n, str(e["audio"]), file_hash(e["audio"]), e["segment"]) for n in names for e in corpus.keywords[n]]
    key = _key(examples, encoder.identity, "calibrate-default")
    path = out / "keysets" / f"{corpus.name}.{label}.{key}.kws"
    if path.exists():
        return load_keyset(path), path
    keyset = None
    for name, audio, _, segment in examples:
        keyset = _add_examples(keyset, encoder, name, [audio], segment)
    keyset = calibrate_keywords(keyset, encoder)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_keyset(keyset, path)
    return keyset, path


def run_stream(spotter, path: Path) -> tuple[report.Trace, report.Events, float]:
    """The user's detection path over the file at ``path`` with a score sink: the trace, the live
    events and the wall seconds."""
    from kwsstream.audio import MAX_SECONDS, iter_audio_blocks

    chunks = []
    names = spotter.names
    stream = spotter.create_stream(source=str(path),
                                   score_sink=lambda f0, s, st, t: chunks.append((f0, s.copy(), st.copy(), t.copy())))
    started = time.perf_counter()
    events, samples = [], 0
    for block in iter_audio_blocks(path, block_seconds=DETECT_BLOCK_SECONDS, max_seconds=MAX_SECONDS):
        samples += len(block)
        events += stream.feed(block)
    events += stream.flush()
    wall = time.perf_counter() - started
    n_k = len(names)
    n = chunks[-1][0] + len(chunks[-1][1]) if chunks else 0
    score = np.full((n, n_k), np.inf, np.float32)
    start, template = np.zeros((n, n_k), np.int64), np.full((n, n_k), -1, np.int64)
    for f0, s, st, t in chunks:
        score[f0:f0 + len(s)], start[f0:f0 + len(s)], template[f0:f0 + len(s)] = s, st, t
    live = report.Events(np.array([names.index(e.keyword) for e in events], np.int64),
                         np.array([e.start for e in events]), np.array([e.end for e in events]),
                         np.array([e.cost for e in events]))
    return report.Trace(score, start, template, samples / 16000), live, wall


def cached_trace(out: Path, keyset_path: Path, keyset_corpus: str, stream_corpus: str, stream: StreamInfo,
                 condition: str, label: str, audio: Path, spotter) -> tuple[report.Trace, report.Events, float]:
    key = _key(file_hash(keyset_path), file_hash(audio), spotter.options, DETECT_BLOCK_SECONDS)
    path = out / "traces" / keyset_corpus / f"{stream_corpus}.{stream.id}.{condition}.{label}.{key}.npz"
    if path.exists():
        z = np.load(path)
        trace = report.Trace(z["score"], z["start"].astype(np.int64), z["template"].astype(np.int64),
                             float(z["seconds"]))
        return trace, report.Events(z["ev_keyword"], z["ev_start"], z["ev_end"], z["ev_cost"]), 0.0
    trace, live, wall = run_stream(spotter, audio)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.npz")
    np.savez(tmp, score=trace.score, start=trace.start.astype(np.int32), template=trace.template.astype(np.int32),
             seconds=trace.seconds, ev_keyword=live.keyword, ev_start=live.start, ev_end=live.end, ev_cost=live.cost)
    tmp.replace(path)
    return trace, live, wall


def same_events(a: report.Events, b: report.Events) -> bool:
    order = lambda e: np.lexsort((e.start, e.keyword, e.end))  # noqa: E731
    ia, ib = order(a), order(b)
    return (len(a) == len(b) and np.array_equal(a.keyword[ia], b.keyword[ib]) and np.allclose(a.start[ia], b.start[ib])
            and np.allclose(a.end[ia], b.end[ib]) and np.array_equal(a.cost[ia], b.cost[ib]))


# ----------------------------------------------------------------------------- the benchmark


def encoder_label(spec: str) -> str:
    return "mfcc" if spec == "mfcc" else Path(spec).stem


def run_benchmark(args: argparse.Namespace) -> dict:
    """Everything; returns what was written (paths) and the plotted data (for tests)."""
    from tqdm import tqdm

    from kwsstream.encoders import load_encoder
    from kwsstream.matcher import limit_blas_threads
    from kwsstream.spotter import Spotter

    limit_blas_threads()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folders = list(args.corpus or [])
    if args.synthetic:
        folders.append(build_synthetic(args.synthetic, minutes=args.synthetic_minutes,
                                       n_keywords=args.synthetic_keywords, seed=args.seed))
    if not folders:
        raise UsageError("give --corpus FOLDER... or --synthetic FOLDER")
    corpora = [load_corpus(f) for f in folders]
    negatives = [load_corpus(f) for f in args.negatives or []]
    conditions = [check_condition(c) for c in args.conditions]
    offsets = report.default_offsets(*args.offsets)
    cut_s = args.minutes * 60 if args.minutes else None
    encoders = {encoder_label(spec): load_encoder(spec) for spec in args.encoder}
    jobs = []
    for corpus in corpora:
        names = list(corpus.keywords)[: args.keywords or None]
        if not names:
            raise UsageError(f"{corpus.folder}: the corpus has no keywords")
        for label in encoders:
            for condition in conditions:
                for owner in [corpus, *negatives]:
                    for stream in owner.streams:
                        jobs.append((corpus, names, label, condition, owner, stream))
    det, ops, runs, plots, drawn = [], [], [], [], {}
    keysets, results = {}, {}
    bar = tqdm(jobs, desc="streams", unit="run", disable=args.no_progress or None)
    for corpus, names, label, condition, owner, stream in bar:
        bar.set_postfix_str(f"{corpus.name}/{owner.name}:{stream.id} {condition} {label}")
        if (corpus.name, label) not in keysets:
            keyset, path = enrolled_keyset(out, corpus, names, encoders[label], label)
            keysets[corpus.name, label] = (Spotter(keyset, encoders[label]), path)
        spotter, keyset_path = keysets[corpus.name, label]
        cut = safe_cut(stream.truth, cut_s) if cut_s else None
        audio = conditioned_audio(out, owner, stream, condition, args.seed, cut)
        trace, live, wall = cached_trace(out, keyset_path, corpus.name, owner.name, stream, condition, label, audio,
                                         spotter)
        truth = read_truth(stream.truth, names, cut)
        enrolled = spotter.thresholds.astype(np.float64)
        grid, options = spotter.encoder.grid, spotter.options.detector
        replayed = report.replay(trace, report.thresholds_at(enrolled, 0.0), grid, options)
        ok = same_events(replayed, live)
        if not ok:
            _LOG.error("%s/%s %s %s: replay at the enrollment thresholds differs from the live events",
                       owner.name, stream.id, condition, label)
        result = report.sweep(trace, truth, enrolled, offsets, grid, options)
        key = (corpus.name, condition, label)
        results[key] = result if key not in results else results[key] + result
        runs.append({"corpus": owner.name, "keyset": corpus.name, "stream": stream.id, "condition": condition,
                     "encoder": label, "minutes": trace.seconds / 60, "occurrences": len(truth.keyword),
                     "live_events": len(live), "seconds": wall, "replay_equals_live": ok, "audio": str(audio)})
    for (corpus_name, condition, label), result in results.items():
        corpus = next(c for c in corpora if c.name == corpus_name)
        names = list(corpus.keywords)[: args.keywords or None]
        enrolled = keysets[corpus_name, label][0].thresholds.astype(np.float64)
        rows = report.det_rows(result, names, enrolled, corpus=corpus_name, condition=condition, encoder=label)
        det += rows
        ops += report.operating_points(rows, result, names)
    for corpus in corpora:
        for condition in conditions:
            curves = {label: [r for r in det if (r["corpus"], r["condition"], r["encoder"], r["keyword"])
                              == (corpus.name, condition, label, report.ALL)] for label in encoders}
            kw_hours = {label: rows[0]["negative_hours"] * rows[0]["keywords"] for label, rows in curves.items()}
            name = f"det_{corpus.name}_{condition}.png"
            title = (f"{corpus.name}, {condition}: {min(kw_hours.values()):.2f} h x keywords of negative audio")
            drawn[corpus.name, condition] = report.plot_det(out / name, title, curves, kw_hours)
            plots.append((name, f"{corpus.name}, {condition}"))
    report.write_csv(out / "det.csv", det, report.DET_COLUMNS)
    report.write_csv(out / "operating_points.csv", ops, report.OP_COLUMNS)
    report.write_csv(out / "runs.csv", runs, ("corpus", "keyset", "stream", "condition", "encoder", "minutes",
                                              "occurrences", "live_events", "seconds", "replay_equals_live", "audio"))
    notes = [f"Babble: {babble_source()[1]}." if any(c.startswith("noise") for c in conditions) else "",
             f"Streams cut to the first {args.minutes:g} min (--minutes)." if args.minutes else "",
             f"Negative streams added to every corpus: {', '.join(n.name for n in negatives)}." if negatives else ""]
    command = "python -m eval stream " + " ".join(shlex.quote(a) for a in (args.argv or []))
    (out / "summary.md").write_text(report.summary_markdown(ops, runs, plots, command, [n for n in notes if n]),
                                    encoding="utf-8")
    return {"det": det, "ops": ops, "runs": runs, "drawn": drawn, "out": out}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", type=Path, nargs="+", help="stream corpus folders (corpus.json)")
    parser.add_argument("--negatives", type=Path, nargs="*", help="corpora of keyword-free streams (music-test)")
    parser.add_argument("--synthetic", type=Path, help="build (or reuse) a synthetic eSpeak corpus in this folder and test it")
    parser.add_argument("--synthetic-minutes", type=float, default=10.0, help="length of the synthetic stream (default 10)")
    parser.add_argument("--synthetic-keywords", type=int, default=4, help="keywords of the synthetic corpus (default 4)")
    parser.add_argument("--encoder", nargs="+", default=["mfcc"], help="mfcc and/or PATH.onnx (default mfcc)")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS),
                        help="dry, noiseSNR (babble + pink), room (RT60 0.5 s); default: " + " ".join(CONDITIONS))
    parser.add_argument("--out", type=Path, required=True, help="results folder (also holds the caches)")
    parser.add_argument("--keywords", type=int, help="use only the first N keywords of each corpus")
    parser.add_argument("--minutes", type=float, help="cut every stream to its first M minutes (quick runs)")
    parser.add_argument("--seed", type=int, default=0, help="noise, room and synthetic corpus seed (default 0)")
    parser.add_argument("--offsets", type=float, nargs=3, default=(-0.3, 0.3, 0.005), metavar=("LOW", "HIGH", "STEP"),
                        help="threshold offsets swept (default -0.3 0.3 0.005)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    if getattr(args, "argv", None) is None:
        args.argv = sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "stream" else []
    if args.keywords is not None and args.keywords < 1:
        raise UsageError("--keywords must be at least 1")
    if args.minutes is not None and not args.minutes > 0:
        raise UsageError("--minutes must be positive")
    if not (args.offsets[2] > 0 and args.offsets[0] <= 0 <= args.offsets[1]):
        raise UsageError("--offsets LOW HIGH STEP needs LOW <= 0 <= HIGH and STEP > 0")
    started = time.perf_counter()
    done = run_benchmark(args)
    print(f"wrote {done['out']}/summary.md, det.csv, operating_points.csv, runs.csv and "
          f"{len(done['drawn'])} DET plot(s) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0 if all(r["replay_equals_live"] for r in done["runs"]) else 1

