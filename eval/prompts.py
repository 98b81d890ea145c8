"""python -m eval prompts: keyword-spotting stream corpora of real speech from Debian's Asterisk
prompts (see ``eval/README_streams.md``).

Builds, under ``--out``, one folder per corpus with ``corpus.json``:

- ``en``, ``fr``: keywords enrolled from some prompts of one speaker, a stream of all her other
  prompts (same speaker);
- ``fr-armelle``: keywords enrolled from the Canadian French prompts, a stream of Armelle's
  prompts (another speaker; transcripts borrowed by prompt name and checked against the audio);
- ``music-test``: the second half of the music on hold (negatives only);
- ``background``: calibration background, never a test corpus: every Russian prompt and the
  first half of the music.

Keyword times inside prompts come from :mod:`eval.align` (eSpeak NG + DTW with two voices); an
occurrence whose two estimates disagree is not trusted and its whole prompt becomes an ``ignore``
span of that keyword, so a stream never holds an unlabelled keyword. Words containing or
inflecting a keyword are ``ignore`` spans too (truth CSV ``keyword,start,end,prompt,kind``, see
:data:`KIND_IGNORE`). One-word prompts are timed by their energy trim.

Keyword choice (aligned prompts, the keyword rules, the borrowed-transcript check) lives in
:mod:`eval.keywords`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from eval import align as aligner
from eval import debian_audio as deb
from eval.keywords import (DECOY_MARGIN, DECOYS, Item, Selection, align_items, check_borrowed, select_keywords,
                           trim_check)
from kwsstream.errors import KwsError, UsageError

__all__ = [
    "FORMAT", "VERSION", "SAMPLE_RATE", "PAUSE_RANGE_S", "PAUSE_LEVEL_DBFS", "LANGUAGES",
    "TRUTH_HEADER", "KIND_KEYWORD", "KIND_IGNORE", "CorpusError", "Piece", "pink_noise", "layout",
    "write_stream", "safe_name", "write_manifest", "read_manifest", "ignore_spans",
    "write_speech_corpus", "music_pieces", "add_arguments", "main",
]

FORMAT, VERSION = "kwsstream-streams", 1
SAMPLE_RATE = deb.SAMPLE_RATE
PAUSE_RANGE_S = (0.3, 1.2)
"""Pause between two prompts (uniform, seconds)."""
PAUSE_LEVEL_DBFS = -65.0
"""RMS level of the pink noise that fills the pauses."""
LANGUAGES = ("en", "fr")
TRUTH_HEADER = ("keyword", "start", "end", "prompt", "kind")
"""Columns of a stream's ``.truth.csv`` (the first four as before ``kind`` was added)."""
KIND_KEYWORD = "keyword"
"""A truth row that is an occurrence of its keyword: an event of that keyword overlapping it
(± the benchmark's tolerance) is a hit, and none is a miss."""
KIND_IGNORE = "ignore"
"""A truth row where events of its keyword count for nothing: an event of that keyword
overlapping it (± tolerance) that is not a hit is not a false alarm, and no event is no miss.
Words containing the keyword or inflecting it, compounds holding it, or the whole prompt when
one such word could not be timed."""
_LOG = logging.getLogger(__name__)


class CorpusError(KwsError):
    """A corpus folder or manifest that cannot be built or read."""


# ----------------------------------------------------------------------------- writing


def pink_noise(samples: int, rng: np.random.Generator, level_dbfs: float = PAUSE_LEVEL_DBFS
               ) -> np.ndarray:
    """Pink (1/f power) noise with RMS ``level_dbfs``, float32."""
    if samples <= 0:
        return np.zeros(0, dtype=np.float32)
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    frequencies = np.fft.rfftfreq(samples)
    spectrum[1:] /= np.sqrt(frequencies[1:])
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=samples)
    rms = np.sqrt(np.mean(noise ** 2)) or 1.0
    return (noise / rms * 10 ** (level_dbfs / 20)).astype(np.float32)


@dataclass(frozen=True)
class Piece:
    """One stretch of a stream: name, samples, transcript, keyword spans within it and
    don't-care spans per keyword (``(keyword, start, end)``, seconds)."""

    name: str
    audio: np.ndarray
    transcript: str
    keywords: tuple[tuple[str, float, float], ...] = ()
    ignores: tuple[tuple[str, float, float], ...] = ()


def layout(pieces: Sequence[Piece], seed: int) -> tuple[np.ndarray, list[list], list[list]]:
    """Concatenate pieces in a seeded random order with pink-noise pauses between them.

    Returns the audio, the prompt rows ``[prompt, start, end, transcript]`` and the truth rows
    ``[keyword, start, end, prompt, kind]`` (seconds from the stream start; kind
    :data:`KIND_KEYWORD` or :data:`KIND_IGNORE`; sorted by start).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pieces))
    parts, prompt_rows, truth_rows, offset = [], [], [], 0
    for rank, index in enumerate(order):
        if rank:
            pause = pink_noise(int(round(rng.uniform(*PAUSE_RANGE_S) * SAMPLE_RATE)), rng)
            parts.append(pause)
            offset += len(pause)
        piece = pieces[index]
        start = offset / SAMPLE_RATE
        parts.append(np.asarray(piece.audio, dtype=np.float32))
        offset += len(piece.audio)
        prompt_rows.append([piece.name, round(start, 3), round(offset / SAMPLE_RATE, 3),
                            piece.transcript])
        truth_rows += [[k, round(start + s, 3), round(start + e, 3), piece.name, kind]
                       for spans, kind in ((piece.keywords, KIND_KEYWORD),
                                           (piece.ignores, KIND_IGNORE))
                       for k, s, e in spans]
    audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return audio, prompt_rows, sorted(truth_rows, key=lambda row: row[1])


def write_stream(folder: Path, stream_id: str, pieces: Sequence[Piece], seed: int, kind: str,
                 speakers: list[str]) -> dict:
    """Write ``streams/<id>.flac``, ``.truth.csv`` and ``.prompts.csv``; return the manifest
    entry."""
    audio, prompt_rows, truth_rows = layout(pieces, seed)
    streams = folder / "streams"
    streams.mkdir(parents=True, exist_ok=True)
    sf.write(streams / f"{stream_id}.flac", np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16")
    _write_csv(streams / f"{stream_id}.truth.csv", list(TRUTH_HEADER), truth_rows)
    _write_csv(streams / f"{stream_id}.prompts.csv", ["prompt", "start", "end", "transcript"],
               prompt_rows)
    return {"id": stream_id, "audio": f"streams/{stream_id}.flac",
            "truth": f"streams/{stream_id}.truth.csv", "seconds": round(len(audio) / SAMPLE_RATE, 3),
            "speakers": speakers, "kind": kind, "prompts": len(pieces)}


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def safe_name(prompt: str) -> str:
    """A prompt name usable as a file name (``digits/1`` → ``digits-1``)."""
    return prompt.replace("/", "-")


def write_manifest(folder: Path, manifest: dict) -> Path:
    """Write ``folder/corpus.json`` (format and version added)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.json"
    path.write_text(json.dumps({"format": FORMAT, "version": VERSION, **manifest}, indent=1,
                               ensure_ascii=False), encoding="utf-8")
    return path


def read_manifest(folder: Path) -> dict:
    """``folder/corpus.json``, checked for format, version and the fields every reader needs."""
    path = Path(folder) / "corpus.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CorpusError(f"{path}: cannot read ({error})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CorpusError(f"{path}: not a {FORMAT} v{VERSION} manifest")
    missing = [k for k in ("name", "sample_rate", "keywords", "streams") if k not in manifest]
    if missing:
        raise CorpusError(f"{path}: missing {', '.join(missing)}")
    return manifest


def ignore_spans(item: Item, keywords: Sequence[str], seconds: float
                 ) -> tuple[tuple[str, float, float], ...]:
    """Don't-care spans of ``keywords`` in an item lasting ``seconds``: each
    :meth:`Item.dont_cares` word's span, or the whole prompt ``(0, seconds)`` for a keyword one
    of whose don't-care words or occurrences is not trusted."""
    spans = []
    for keyword in keywords:
        words = item.dont_cares(keyword)
        if any(not (w.trusted and np.isfinite(w.start)) for w in words + item.occurrences(keyword)):
            spans.append((keyword, 0.0, seconds))
        else:
            spans += [(keyword, w.start, w.end) for w in words]
    return tuple(spans)


def _pieces(items: Sequence[Item], keywords: Sequence[str]) -> list[Piece]:
    """Stream pieces of aligned prompts, with every trusted keyword occurrence and every
    don't-care span (:func:`ignore_spans`)."""
    pieces = []
    for item in items:
        audio = item.prompt.load()
        spans = tuple((k, w.start, w.end) for k in keywords for w in item.occurrences(k)
                      if w.trusted)
        pieces.append(Piece(item.prompt.name, audio, item.prompt.transcript or "", spans,
                            ignore_spans(item, keywords, len(audio) / SAMPLE_RATE)))
    return pieces


def _agreement(selection: Selection, items: Sequence[Item]) -> dict:
    """The manifest's ``alignment`` block for the chosen keywords."""
    occurrences = [w for i in items for k in selection.enroll for w in i.occurrences(k)]
    timed = [w.disagreement for i in items if len(i.prompt.words) > 1
             for k in selection.enroll for w in i.occurrences(k) if np.isfinite(w.disagreement)]
    kept = sum(w.trusted for w in occurrences)
    return {"method": f"eSpeak NG ({'+'.join(v[0] or 'default' for v in aligner.VOICE_VARIANTS)}) + "
                      f"MFCC DTW, two voices agree within {aligner.TOLERANCE_S} s; one-word "
                      "prompts: energy trim",
            "occurrences_kept": kept, "dropped": len(occurrences) - kept,
            "agreement_median_s": round(float(np.median(timed)), 4) if timed else None,
            "agreement_p90_s": round(float(np.percentile(timed, 90)), 4) if timed else None,
            "prompts_dropped": len(selection.dropped),
            "prompts_ignoring_untrusted": sum(
                1 for i in selection.stream
                if any(not w.trusted for k in selection.enroll for w in i.occurrences(k)))}


def write_speech_corpus(out: Path, name: str, language: str, selection: Selection,
                        all_items: Sequence[Item], sources: list[dict], speakers: list[str],
                        seed: int, extra: dict | None = None) -> dict:
    """Write one keyword corpus (enrollment files, stream, manifest); return the manifest."""
    folder = out / name
    (folder / "enroll").mkdir(parents=True, exist_ok=True)
    keywords = {}
    for keyword, pairs in selection.enroll.items():
        examples = []
        for item, occurrence in pairs:
            relative = f"enroll/{safe_name(item.prompt.name)}.flac"
            if not (folder / relative).is_file():
                sf.write(folder / relative, item.prompt.load(), SAMPLE_RATE, subtype="PCM_16")
            examples.append({"audio": relative,
                             "segment": [round(occurrence.start, 3), round(occurrence.end, 3)],
                             "speaker": item.prompt.speaker})
        keywords[keyword] = examples
    stream = write_stream(folder, name, _pieces(selection.stream, list(keywords)), seed, "speech",
                          speakers)
    manifest = {"name": name, "language": language, "sample_rate": SAMPLE_RATE,
                "sources": sources, "keywords": keywords, "streams": [stream],
                "alignment": {**_agreement(selection, all_items), **(extra or {})}}
    write_manifest(folder, manifest)
    return manifest


def music_pieces(cache: Path) -> tuple[list[Piece], list[Piece]]:
    """The music tracks in name order, cut at half their total length: (first half, second)."""
    tracks = [(n, np.load(p)) for n, p in deb.music_tracks(cache).items()]
    half = sum(len(a) for _, a in tracks) // 2
    first, second, done = [], [], 0
    for name, audio in tracks:
        cut = int(np.clip(half - done, 0, len(audio)))
        if cut:
            first.append(Piece(f"{name}[0:{cut / SAMPLE_RATE:.2f}]", audio[:cut], "[music]"))
        if cut < len(audio):
            second.append(Piece(f"{name}[{cut / SAMPLE_RATE:.2f}:]", audio[cut:], "[music]"))
        done += len(audio)
    return first, second


# ----------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m eval prompts``."""
    parser.add_argument("--out", type=Path, required=True, help="folder for the corpora")
    parser.add_argument("--langs", nargs="+", default=list(LANGUAGES), choices=LANGUAGES,
                        help="speech corpora to build (fr also builds fr-armelle)")
    parser.add_argument("--keywords", type=int, default=10, help="keywords per language")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=deb.DEFAULT_CACHE,
                        help="download and decode cache (default %(default)s)")


def _summary(manifest: dict, counts: dict[str, int], ignores: int) -> str:
    """One line per corpus: hours, streams, keywords, occurrences, ignore rows, alignment
    agreement."""
    hours = sum(s["seconds"] for s in manifest["streams"]) / 3600
    line = f"{manifest['name']}: {hours:.2f} h in {len(manifest['streams'])} stream(s)"
    if manifest["keywords"]:
        a = manifest["alignment"]
        line += (f", {len(manifest['keywords'])} keywords, {sum(counts.values())} stream "
                 f"occurrences, {ignores} ignore rows, {a['prompts_dropped']} prompts dropped, "
                 f"{a.get('prompts_ignoring_untrusted', 0)} prompts kept as don't-care for an "
                 f"untrusted occurrence, agreement median "
                 f"{a['agreement_median_s']} s p90 {a['agreement_p90_s']} s\n  "
                 + ", ".join(f"{k} {n}" for k, n in counts.items()))
    return line


def _count_truth(out: Path, manifest: dict) -> tuple[dict[str, int], int]:
    """Stream occurrences per keyword (kind ``keyword``) and the number of ``ignore`` rows, read
    back from the truth CSVs."""
    counts, ignores = dict.fromkeys(manifest["keywords"], 0), 0
    for stream in manifest["streams"]:
        with (out / manifest["name"] / stream["truth"]).open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row["kind"] == KIND_KEYWORD:
                    counts[row["keyword"]] = counts.get(row["keyword"], 0) + 1
                else:
                    ignores += 1
    return counts, ignores


def main(args: argparse.Namespace) -> int:
    """Build the corpora and print what was built."""
    if args.keywords < 1:
        raise UsageError(f"--keywords {args.keywords} must be at least 1")
    deb.require_ffmpeg()
    out, cache = Path(args.out), Path(args.cache)
    built = []
    aligned: dict[str, list[Item]] = {}
    trim_errors: list[float] = []
    for key in args.langs:
        items = align_items(key, deb.prompts(deb.SOURCES[key], cache), cache)
        trim_errors += trim_check(items)
        aligned[key] = [i for i in items if i.prompt.transcript is not None]
        source = deb.SOURCES[key]
        selection = select_keywords(aligned[key], aligned[key], source.language, args.keywords,
                                    args.seed, same_speaker=True)
        built.append(write_speech_corpus(out, key, source.language, selection, aligned[key],
                                         deb.source_records(source, cache), [source.speaker],
                                         args.seed))
    if "fr" in args.langs:
        source = deb.SOURCES["fr-armelle"]
        items = align_items("fr-armelle", deb.prompts(source, cache), cache)
        pool = [i.prompt.transcript for i in aligned["fr"] if i.prompt.words]
        kept, rejected = check_borrowed(items, pool, source.espeak_voice, args.seed)
        trim_errors += trim_check(kept)
        for reason, names in rejected.items():
            _LOG.info("fr-armelle: %d prompts rejected (%s)%s", len(names), reason,
                      f": {', '.join(names[:8])}..." if names else "")
        selection = select_keywords(aligned["fr"], kept, source.language, args.keywords,
                                    args.seed, same_speaker=False)
        sources = deb.source_records(deb.SOURCES["fr"], cache) + deb.source_records(source, cache)
        extra = {"rejected_prompts": {k: len(v) for k, v in rejected.items()},
                 "decoys": DECOYS, "decoy_margin": DECOY_MARGIN}
        built.append(write_speech_corpus(out, "fr-armelle", source.language, selection, kept,
                                         sources, [source.speaker], args.seed, extra))
    built += _write_music_and_background(out, cache, args.seed)
    if trim_errors:
        print(f"aligner vs energy trim on one-word prompts: {len(trim_errors)} boundaries, "
              f"median {np.median(trim_errors):.3f} s, p90 {np.percentile(trim_errors, 90):.3f} s")
    for manifest in built:
        print(_summary(manifest, *_count_truth(out, manifest)))
    return 0


def _write_music_and_background(out: Path, cache: Path, seed: int) -> list[dict]:
    """``music-test`` (second half of the music) and ``background`` (Russian + first half)."""
    first, second = music_pieces(cache)
    music_source = [deb.source_record(deb.MUSIC, cache)]
    no_alignment = {"method": "none", "occurrences_kept": 0, "dropped": 0,
                    "agreement_median_s": None, "agreement_p90_s": None}
    music = {"name": "music-test", "language": "zxx", "sample_rate": SAMPLE_RATE,
             "sources": music_source, "keywords": {},
             "streams": [write_stream(out / "music-test", "music-test", second, seed, "music",
                                      ["music"])],
             "alignment": no_alignment}
    write_manifest(out / "music-test", music)
    ru = deb.SOURCES["ru"]
    russian = [Piece(p.name, p.load(), p.transcript or "") for p in deb.prompts(ru, cache)]
    background = {"name": "background", "language": "ru", "sample_rate": SAMPLE_RATE,
                  "sources": deb.source_records(ru, cache) + music_source, "keywords": {},
                  "streams": [write_stream(out / "background", "background-ru", russian, seed,
                                           "background", [ru.speaker]),
                              write_stream(out / "background", "background-music", first, seed,
                                           "background", ["music"])],
                  "alignment": no_alignment}
    write_manifest(out / "background", background)
    return [music, background]
