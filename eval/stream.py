"""python -m eval stream: detection measured the way wake-word users feel it.

Long test streams (real human speech corpora, or a synthetic one) go through the detection
pipeline a user's ``kwsstream detect FILE`` runs — :func:`kwsstream.audio.iter_audio_blocks` in
10 s blocks → :class:`kwsstream.spotter.Stream` ``feed``/``flush`` — with keywords enrolled from
each corpus's examples (per-example segments) and thresholds calibrated at enrollment
(:func:`kwsstream.enroll.calibrate_keywords`: the default target on the bundled background, through
the encoder's own-speech rate map, :mod:`kwsstream.ratemap`; ``--rate-map none`` for the
background's own rates: calibration ``builtin``; keysets and caches in :mod:`eval.streamkeys`). Each stream is played in every condition (``dry``, ``noiseSNR``: babble + pink
noise at SNR dB, ``room``: RT60 0.5 s); the conditioned audio is written to a FLAC under
``OUT/audio`` and that file is what the pipeline reads. The per-keyword score trace of every run
is cached under ``OUT/traces`` (named by a hash of the keyset and the audio), so reruns skip
finished runs; the threshold sweep and scoring (:mod:`eval.streamscore`), tables and plots
(:mod:`eval.streamreport`) are replayed from the traces.

Calibration ``adaptive`` (``--calibration ... adaptive``): the built-in thresholds moving as the
stream plays, the runtime's own adapter replayed on the trace (:mod:`eval.streamadapt`; every
event of the whole stream counted, the learning period included), swept over offsets -0.1..0.1.

Calibration ``own``: for a one-speaker stream, the first ``--own-minutes`` of its keyword-free
prompts are held out (``OUT/own``), the same templates are calibrated on them, and only the rest
of the stream is counted. Calibration accuracy: every keyword's threshold is moved to each rate of ``--asked`` (default
:data:`eval.streamscore.ASKED`) along its stored curve (``set_sensitivity``) and the rate got is
measured. Latency: when a live stream emits the event (:func:`eval.streamtiming.probe_timing`).

Stream corpus layout (``CORPUS/corpus.json``, format ``kwsstream-streams`` version 1): keywords with
their enrollment examples (``audio``, ``segment``, ``speaker``), streams (``audio``, ``truth`` CSV
``keyword,start,end,prompt[,kind]``, ``kind``, ``speakers``; ``<id>.prompts.csv`` beside the
audio): :mod:`eval.streamcorpus`, which also builds a synthetic one from eSpeak voices
(``--synthetic DIR``) and makes the conditions.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from eval import streamreport as report
from eval import streamscore as scoring
from eval.streamcorpus import (CONDITIONS, ROOM_RT60, Corpus, OwnSplit, StreamInfo, apply_condition, babble_source,
                              build_synthetic, check_condition, load_corpus, own_split, read_truth, safe_cut)
from eval.streamkeys import cache_key, enrolled_keyset, file_hash, own_background, own_keyset, thresholds_for
from eval.streamtiming import probe_timing
from kwsstream.errors import UsageError

_LOG = logging.getLogger(__name__)
DETECT_BLOCK_SECONDS = 10.0
"""Blocks read per ``feed`` call: what ``kwsstream detect FILE`` reads (not ``--realtime``)."""

def conditioned_audio(out: Path, corpus: Corpus, stream: StreamInfo, condition: str, seed: int,
                      cut: float | None) -> Path:
    """The stream's audio file in ``condition`` (cut to ``cut`` s): the original file when dry
    and uncut, else a FLAC under ``out/audio`` (reused when its key matches)."""
    from eval.scenes import write_audio
    from kwsstream.audio import MAX_SECONDS, load_audio

    if condition == "dry" and cut is None:
        return stream.audio
    babble = babble_source()[1] if condition.startswith("noise") else ""
    key = cache_key(file_hash(stream.audio), condition, seed, cut, babble, ROOM_RT60)
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


def run_stream(spotter, path: Path) -> tuple[scoring.Trace, scoring.Events, float]:
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
    live = scoring.Events(np.array([names.index(e.keyword) for e in events], np.int64),
                          np.array([e.start for e in events]), np.array([e.end for e in events]),
                          np.array([e.cost for e in events]))
    return scoring.Trace(score, start, template, samples / 16000), live, wall


def cached_trace(out: Path, keyset_path: Path, keyset_corpus: str, stream_corpus: str, stream: StreamInfo,
                 condition: str, label: str, audio: Path, spotter) -> tuple[scoring.Trace, scoring.Events, float]:
    key = cache_key(file_hash(keyset_path), file_hash(audio), spotter.options, DETECT_BLOCK_SECONDS)
    path = out / "traces" / keyset_corpus / f"{stream_corpus}.{stream.id}.{condition}.{label}.{key}.npz"
    if path.exists():
        z = np.load(path)
        trace = scoring.Trace(z["score"], z["start"].astype(np.int64), z["template"].astype(np.int64),
                              float(z["seconds"]))
        return trace, scoring.Events(z["ev_keyword"], z["ev_start"], z["ev_end"], z["ev_cost"]), 0.0
    trace, live, wall = run_stream(spotter, audio)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.npz")
    np.savez(tmp, score=trace.score, start=trace.start.astype(np.int32), template=trace.template.astype(np.int32),
             seconds=trace.seconds, ev_keyword=live.keyword, ev_start=live.start, ev_end=live.end, ev_cost=live.cost)
    tmp.replace(path)
    return trace, live, wall


def same_events(a: scoring.Events, b: scoring.Events) -> bool:
    order = lambda e: np.lexsort((e.start, e.keyword, e.end))  # noqa: E731
    ia, ib = order(a), order(b)
    return (len(a) == len(b) and np.array_equal(a.keyword[ia], b.keyword[ib]) and np.allclose(a.start[ia], b.start[ib])
            and np.allclose(a.end[ia], b.end[ib]) and np.array_equal(a.cost[ia], b.cost[ib]))


# ----------------------------------------------------------------------------- the benchmark


def encoder_label(spec: str) -> str:
    return "mfcc" if spec == "mfcc" else Path(spec).stem


OWN_SPAN = scoring.OWN_SPAN


def own_plan(corpus: Corpus, minutes: float, max_share: float,
             cut_s: float | None = None) -> tuple[dict[str, OwnSplit] | None, str]:
    """Each speech stream's own-voice split, or None with the reason when the corpus has none
    (a stream of several speakers, no prompt list, no keyword-free prompt)."""
    splits = {}
    for stream in corpus.streams:
        if len(stream.speakers) != 1:
            return None, (f"{corpus.name}: no own-voice calibration (stream {stream.id} has "
                          f"{len(stream.speakers) or 'no listed'} speakers)")
        split = own_split(stream, minutes, max_share, safe_cut(stream.truth, cut_s) if cut_s else None)
        if split is None:
            return None, f"{corpus.name}: no own-voice calibration (stream {stream.id}: no keyword-free prompt list)"
        splits[stream.id] = split
    return splits, ""


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
    offsets = scoring.default_offsets(*args.offsets)
    asked = np.array(sorted(args.asked))
    cut_s = args.minutes * 60 if args.minutes else None
    encoders = {encoder_label(spec): load_encoder(spec) for spec in args.encoder}
    calibrations = list(dict.fromkeys(args.calibration))
    own_notes, splits = [], {}
    for corpus in corpora:
        if "own" not in calibrations:
            break
        plan, why = own_plan(corpus, args.own_minutes, args.own_max_share, cut_s)
        if plan is None:
            own_notes.append(why)
            continue
        splits[corpus.name] = plan
        for stream in corpus.streams:
            sp = plan[stream.id]
            seconds = min(json_seconds(stream), safe_cut(stream.truth, cut_s)) if cut_s else json_seconds(stream)
            speakers = {e["speaker"] for examples in corpus.keywords.values() for e in examples}
            cross = (f" Cross-speaker: the templates are {', '.join(sorted(speakers))}'s, the stream (and so the "
                     f"own-voice background) is {stream.speakers[0]}'s." if speakers and stream.speakers[0]
                     not in speakers else "")
            own_notes.append(f"{corpus.name} / {stream.id} ({stream.speakers[0]}): held out "
                             f"{sp.held_out_seconds / 60:.1f} min of keyword-free prompts ({len(sp.segments)} prompts "
                             f"with their pauses) from the first {sp.test_start / 60:.1f} min of the stream; tested "
                             f"from {sp.test_start:.1f} s on ({(seconds - sp.test_start) / 60:.1f} min) plus the "
                             f"negative streams.{cross}")
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
    det, ops, cal, runs, plots, drawn = [], [], [], [], [], {}
    keysets, results, asked_results = {}, {}, {}
    bar = tqdm(jobs, desc="streams", unit="run", disable=args.no_progress or None)
    for corpus, names, label, condition, owner, stream in bar:
        bar.set_postfix_str(f"{corpus.name}/{owner.name}:{stream.id} {condition} {label}")
        if (corpus.name, label) not in keysets:
            keyset, path = enrolled_keyset(out, corpus, names, encoders[label], label, args.rate_map)
            spotter = Spotter(keyset, encoders[label])
            entry = {"spotter": spotter, "path": path, "timing": probe_timing(spotter),
                     "builtin": (keyset, {t: thresholds_for(keyset, names, t) for t in asked})}
            if corpus.name in splits:
                backgrounds = [own_background(out, corpus, s, splits[corpus.name][s.id]) for s in corpus.streams]
                own, _ = own_keyset(out, corpus, label, keyset, path, encoders[label], backgrounds)
                entry["own"] = (own, {t: thresholds_for(own, names, t) for t in asked})
            keysets[corpus.name, label] = entry
        entry = keysets[corpus.name, label]
        spotter, keyset_path, timing = entry["spotter"], entry["path"], entry["timing"]
        cut = safe_cut(stream.truth, cut_s) if cut_s else None
        audio = conditioned_audio(out, owner, stream, condition, args.seed, cut)
        trace, live, wall = cached_trace(out, keyset_path, corpus.name, owner.name, stream, condition, label, audio,
                                         spotter)
        truth = read_truth(stream.truth, names, cut)
        grid, options = spotter.encoder.grid, spotter.options.detector
        replayed = scoring.replay(trace, scoring.thresholds_at(spotter.thresholds.astype(np.float64), 0.0), grid,
                                  options)
        ok = same_events(replayed, live)
        if not ok:
            _LOG.error("%s/%s %s %s: replay at the enrollment thresholds differs from the live events",
                       owner.name, stream.id, condition, label)
        own_start = splits[corpus.name][stream.id].test_start if corpus.name in splits and owner is corpus else 0.0
        if "adaptive" in calibrations:  # the built-in thresholds moving as the stream plays (kwsstream.adapt)
            from eval.streamadapt import sweep_adaptive
            from kwsstream.adapt import AdaptOptions, keyword_target

            keyset = entry["builtin"][0]
            base = np.array([keyset.get(n).threshold for n in names], np.float64)
            targets = np.array([keyword_target(keyset.get(n)) for n in names], np.float64)
            result = sweep_adaptive(trace, truth, base, targets, scoring.default_offsets(-0.1, 0.1, 0.01), grid,
                                    spotter.block, options, AdaptOptions(), timing=timing)
            key = (corpus.name, condition, label, "adaptive")
            results[key] = result if key not in results else results[key] + result
        for c in calibrations:
            if c not in entry:
                continue
            keyset, at = entry[c]
            count_from = own_start if c == "own" else 0.0
            base = np.array([keyset.get(n).threshold for n in names], np.float64)
            result = scoring.sweep(trace, truth, base, offsets, grid, options, count_from=count_from, timing=timing)
            points = scoring.evaluate(trace, truth, [at[t] for t in asked], asked, grid, options,
                                      count_from=count_from, timing=timing)
            key = (corpus.name, condition, label, c)
            results[key] = result if key not in results else results[key] + result
            asked_results[key] = points if key not in asked_results else asked_results[key] + points
            if c == "builtin" and "own" in entry:  # the same thresholds counted on the own-voice test span
                key = (corpus.name, condition, label, OWN_SPAN)
                span = scoring.sweep(trace, truth, base, offsets, grid, options, count_from=own_start, timing=timing)
                results[key] = span if key not in results else results[key] + span
                span = scoring.evaluate(trace, truth, [at[t] for t in asked], asked, grid, options,
                                        count_from=own_start, timing=timing)
                asked_results[key] = span if key not in asked_results else asked_results[key] + span
        runs.append({"corpus": owner.name, "keyset": corpus.name, "stream": stream.id, "condition": condition,
                     "encoder": label, "minutes": trace.seconds / 60, "occurrences": len(truth.keyword),
                     "live_events": len(live), "seconds": wall, "replay_equals_live": ok, "audio": str(audio)})
    names_of = {c.name: list(c.keywords)[: args.keywords or None] for c in corpora}
    for (corpus_name, condition, label, c), result in results.items():
        names = names_of[corpus_name]
        keyset = keysets[corpus_name, label]["own" if c == "own" else "builtin"][0]
        base = np.array([keyset.get(n).threshold for n in names], np.float64)
        rows = scoring.det_rows(result, names, base, corpus=corpus_name, condition=condition, encoder=label,
                                calibration=c)
        det += rows
        ops += scoring.operating_points(rows, result, names)
    for (corpus_name, condition, label, c), result in asked_results.items():
        cal += scoring.calibration_rows(result, names_of[corpus_name], corpus=corpus_name, condition=condition,
                                        encoder=label, calibration=c)
    for corpus in corpora:
        for condition in conditions:
            curves, kw_hours = {}, {}
            for label in encoders:
                for c in calibrations:
                    rows = [r for r in det if (r["corpus"], r["condition"], r["encoder"], r["calibration"],
                                               r["keyword"]) == (corpus.name, condition, label, c, scoring.ALL)]
                    if rows:
                        curves[label, c] = rows
                        kw_hours[label, c] = rows[0]["negative_hours"] * rows[0]["keywords"]
            name = f"det_{corpus.name}_{condition}.png"
            title = (f"{corpus.name}, {condition}: {min(kw_hours.values()):.2f} h x keywords of negative audio "
                     f"(least)")
            drawn[corpus.name, condition] = report.plot_det(out / name, title, curves, kw_hours)
            plots.append((name, f"DET {corpus.name}, {condition}"))
        series = {}
        for (corpus_name, condition, label, c), result in asked_results.items():
            if corpus_name != corpus.name or c == OWN_SPAN:
                continue
            n_k = result.hits.shape[1]
            got = result.false_alarms.sum(axis=1) / (result.hours * n_k)
            series[c, label, condition] = (list(asked), list(got), result.hours * n_k)
        name = f"asked_vs_got_{corpus.name}.png"
        drawn[corpus.name, "asked"] = report.plot_asked_vs_got(out / name, corpus.name, series)
        plots.insert(0, (name, f"asked vs got, {corpus.name}"))
    report.write_csv(out / "det.csv", det, report.DET_COLUMNS)
    report.write_csv(out / "operating_points.csv", ops, report.OP_COLUMNS)
    report.write_csv(out / "calibration.csv", cal, report.CAL_COLUMNS)
    report.write_csv(out / "runs.csv", runs, ("corpus", "keyset", "stream", "condition", "encoder", "minutes",
                                              "occurrences", "live_events", "seconds", "replay_equals_live", "audio"))
    timing_notes = {}
    for (corpus_name, label), entry in keysets.items():
        t = entry["timing"]
        ends = np.arange(1000, 1000 + t.period)
        lag = t.emitted(ends) - (ends * t.hop - t.pad + t.length / 2 + t.hop / 2) / t.sample_rate
        timing_notes[label] = (f"{label}: emitted {lag.min():.3f}-{lag.max():.3f} s after the event's end time "
                               f"(detector look-ahead {t.lookahead} frames, then the encoder's and the matcher's wait; "
                               f"pattern every {t.period} frames).")
    notes = [f"Babble: {babble_source()[1]}." if any(c.startswith("noise") for c in conditions) else "",
             f"Streams cut to the first {args.minutes:g} min (--minutes)." if args.minutes else "",
             f"Negative streams added to every corpus: {', '.join(n.name for n in negatives)}." if negatives else "",
             "Latency model, measured on each spotter: " + " ".join(timing_notes.values())]
    command = "python -m eval stream " + " ".join(shlex.quote(a) for a in (args.argv or []))
    (out / "summary.md").write_text(report.summary_markdown(ops, runs, plots, command, [n for n in notes if n], cal,
                                                            own_notes), encoding="utf-8")
    return {"det": det, "ops": ops, "cal": cal, "runs": runs, "drawn": drawn, "out": out, "splits": splits,
            "timing": {k: v["timing"] for k, v in keysets.items()}}


def json_seconds(stream: StreamInfo) -> float:
    """The stream's length in seconds (from its audio file's header)."""
    import soundfile as sf

    return float(sf.info(str(stream.audio)).duration)


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
    parser.add_argument("--calibration", nargs="+", choices=("builtin", "own", "adaptive"),
                        default=["builtin", "own"],
                        help="thresholds calibrated on the bundled background (builtin), on the stream speaker's "
                             "own held-out keyword-free speech (own), and/or the built-in ones adapting as the "
                             "stream plays (adaptive: kwsstream.adapt replayed on the trace, offsets -0.1..0.1; "
                             "slower); default builtin own")
    parser.add_argument("--own-minutes", type=float, default=8.0,
                        help="minutes of keyword-free prompts held out of each one-speaker stream for the own-voice "
                             "calibration (default 8)")
    parser.add_argument("--own-max-share", type=float, default=0.5,
                        help="the held-out part never reaches past this share of the stream (default 0.5)")
    parser.add_argument("--asked", type=float, nargs="+", default=list(scoring.ASKED), metavar="RATE",
                        help="false alarms per hour asked of the stored curves (calibration accuracy; default "
                             + " ".join(f"{a:g}" for a in scoring.ASKED) + ")")
    parser.add_argument("--rate-map", choices=("shipped", "none"), default="shipped",
                        help="built-in calibration through the encoder's shipped own-speech rate map (default, what "
                             "enrollment does) or on the background's own rates (none: what 'python -m eval ratemap' "
                             "fits the maps on)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    if getattr(args, "argv", None) is None:
        args.argv = sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "stream" else []
    if args.keywords is not None and args.keywords < 1:
        raise UsageError("--keywords must be at least 1")
    if args.minutes is not None and not args.minutes > 0:
        raise UsageError("--minutes must be positive")
    if not args.own_minutes > 0 or not 0 < args.own_max_share < 1:
        raise UsageError("--own-minutes must be positive and --own-max-share between 0 and 1")
    if not (args.offsets[2] > 0 and args.offsets[0] <= 0 <= args.offsets[1]):
        raise UsageError("--offsets LOW HIGH STEP needs LOW <= 0 <= HIGH and STEP > 0")
    started = time.perf_counter()
    done = run_benchmark(args)
    print(f"wrote {done['out']}/summary.md, det.csv, operating_points.csv, calibration.csv, runs.csv and "
          f"{len(done['drawn'])} plot(s) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0 if all(r["replay_equals_live"] for r in done["runs"]) else 1

