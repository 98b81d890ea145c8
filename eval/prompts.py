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
occurrence whose two estimates disagree is not trusted and its whole prompt leaves the stream, so
a stream never holds an unlabelled keyword. One-word prompts are timed by their energy trim.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from eval import align as aligner
from eval import debian_audio as deb
from kwsstream.errors import KwsError, UsageError

FORMAT, VERSION = "kwsstream-streams", 1
SAMPLE_RATE = deb.SAMPLE_RATE
ENROLL_EXAMPLES = 3
"""Enrollment occurrences per keyword (each from a different prompt)."""
MIN_STREAM_OCCURRENCES = 4
"""Stream occurrences a keyword should have (keywords below it are taken only when too few
reach it)."""
MIN_KEYWORD_LETTERS = 5
PAUSE_RANGE_S = (0.3, 1.2)
"""Pause between two prompts (uniform, seconds)."""
PAUSE_LEVEL_DBFS = -65.0
"""RMS level of the pink noise that fills the pauses."""
DECOYS = 4
"""Other transcripts a borrowed transcript must fit better than (Armelle check)."""
DECOY_MARGIN = 0.0
"""How much lower (:func:`eval.align.fit_cost`) the borrowed transcript's cost must be than the
best decoy's. Measured on the Canadian French prompts, whose transcripts are right: about 80 %
beat all 4 decoys (the set holds many near-paraphrases), so the check is strict; a prompt it
wrongly rejects only shortens the stream."""
LANGUAGES = ("en", "fr")
ALIGNMENT_CACHE_VERSION = 1
STOP_WORDS = {
    "en": set("about after again always before being cannot could every other please there "
              "their these those thank under where which while would should yourself".split()),
    "fr": set("alors après autre autres avant avec avez celle celui cela ceci cette comme dans "
              "encore entre êtes faire leurs lorsque notre nous pendant plusieurs pouvez pour "
              "quand sont toujours veuillez votre vous".split()),
}
"""Function words of at least :data:`MIN_KEYWORD_LETTERS` letters, never keywords."""
_VOWELS = re.compile(r"[aeiouyàâäéèêëîïôöûùü]+")
_LOG = logging.getLogger(__name__)


class CorpusError(KwsError):
    """A corpus folder or manifest that cannot be built or read."""


@dataclass
class Item:
    """A prompt with its alignment (``None`` when its transcript has no words or is unknown)."""

    prompt: deb.Prompt
    alignment: aligner.Alignment | None = None

    def occurrences(self, keyword: str) -> list[aligner.WordTime]:
        """Every occurrence of ``keyword`` among the transcript's words."""
        return [] if self.alignment is None else [
            w for w in self.alignment.words if w.word == keyword]


@dataclass
class Selection:
    """Chosen keywords: enrollment occurrences per keyword, the stream's items and what was
    dropped."""

    enroll: dict[str, list[tuple[Item, aligner.WordTime]]] = field(default_factory=dict)
    stream: list[Item] = field(default_factory=list)
    dropped: list[Item] = field(default_factory=list)


# ----------------------------------------------------------------------------- alignment


def _alignment_to_json(alignment: aligner.Alignment) -> dict:
    return {"cost": alignment.cost, "words": [
        [w.word, w.index, w.start, w.end, w.disagreement, w.trusted] for w in alignment.words]}


def _alignment_from_json(data: dict) -> aligner.Alignment:
    return aligner.Alignment(tuple(aligner.WordTime(*row) for row in data["words"]), data["cost"])


def whole_word_alignment(audio: np.ndarray, word: str) -> aligner.Alignment:
    """A one-word prompt: the word spans the energy trim (exact, trusted)."""
    first, last = aligner.speech_frames(audio)
    frame_s = aligner.HOP / SAMPLE_RATE
    return aligner.Alignment((aligner.WordTime(word, 0, first * frame_s, last * frame_s, 0.0,
                                               True),), 0.0)


def align_items(key: str, prompts: Sequence[deb.Prompt], cache: Path) -> list[Item]:
    """Align every prompt whose transcript holds words (cached in ``cache/alignments``)."""
    source = deb.SOURCES[key]
    path = cache / "alignments" / f"{key}.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    if stored.get("version") != ALIGNMENT_CACHE_VERSION:
        stored = {"version": ALIGNMENT_CACHE_VERSION, "prompts": {}}
    table = stored["prompts"]
    items = [Item(p) for p in prompts]
    todo = [i for i in items if i.prompt.words and
            table.get(i.prompt.name, {}).get("transcript") != i.prompt.transcript]
    pairs = ((i.prompt.load(), i.prompt.transcript) for i in todo)
    results = aligner.align_many(list(pairs), source.espeak_voice) if todo else iter(())
    for item, result in tqdm(zip(todo, results), total=len(todo), desc=f"align {key}",
                             unit="prompt"):
        table[item.prompt.name] = {"transcript": item.prompt.transcript,
                                   **_alignment_to_json(result)}
    if todo:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stored))
    for item in items:
        if item.prompt.words:
            item.alignment = _alignment_from_json(table[item.prompt.name])
    return items


def trim_check(items: Sequence[Item]) -> list[float]:
    """Boundary errors (s) of the DTW aligner on one-word prompts against their energy trim (the
    truth there); these prompts then take the energy span."""
    errors = []
    for item in items:
        if item.alignment is None or len(item.prompt.words) != 1:
            continue
        exact = whole_word_alignment(item.prompt.load(), item.prompt.words[0])
        dtw = item.alignment.words[0]
        if np.isfinite(dtw.start):
            errors += [abs(dtw.start - exact.words[0].start), abs(dtw.end - exact.words[0].end)]
        item.alignment = exact
    return errors


def check_borrowed(items: Sequence[Item], pool: Sequence[str], voice: str,
                   seed: int) -> tuple[list[Item], dict[str, list[str]]]:
    """Keep the items whose borrowed transcript fits the audio better than each of
    :data:`DECOYS` other transcripts of ``pool`` of similar length (:func:`eval.align.fit_cost`,
    first voice of the cross-check, by :data:`DECOY_MARGIN`). Returns the kept items and the
    rejected prompt names by reason."""
    rng = np.random.default_rng(seed)
    rejected: dict[str, list[str]] = {"no transcript": [], "no speech in transcript": [],
                                      "transcript does not fit": []}
    kept = []
    lengths = np.array([len(deb.words_of(t)) for t in pool])
    base_voice = aligner.voices(voice)[0]
    for item in tqdm(items, desc="check borrowed transcripts", unit="prompt"):
        if item.prompt.transcript is None:
            rejected["no transcript"].append(item.prompt.name)
            continue
        if item.alignment is None:
            rejected["no speech in transcript"].append(item.prompt.name)
            continue
        n = len(item.prompt.words)
        near = np.argsort(np.abs(lengths - n) + rng.random(len(pool)))
        decoys = [pool[i] for i in near if deb.words_of(pool[i]) != item.prompt.words][:DECOYS]
        audio = item.prompt.load()
        requests = [(deb.speech_text(t), base_voice) for t in [item.prompt.transcript, *decoys]]
        costs = [aligner.fit_cost(audio, u.audio) for u in aligner.iter_synthesize(requests, 1)]
        if costs[0] < min(costs[1:]) - DECOY_MARGIN:
            kept.append(item)
        else:
            rejected["transcript does not fit"].append(item.prompt.name)
    return kept, rejected


# ----------------------------------------------------------------------------- keywords


def candidate_words(items: Sequence[Item], language: str) -> list[str]:
    """Content words (letters only, at least :data:`MIN_KEYWORD_LETTERS`, not stop words), sorted."""
    words = {w for item in items for w in item.prompt.words}
    return sorted(w for w in words if len(w) >= MIN_KEYWORD_LETTERS and w.isalpha()
                  and w not in STOP_WORDS.get(language, ()))


def syllables(word: str) -> int:
    """Vowel groups in a word (a rough syllable count)."""
    return len(_VOWELS.findall(word))


def _trusted_prompts(items: Sequence[Item], keyword: str) -> list[Item]:
    """Items holding ``keyword`` whose every occurrence of it is trusted."""
    return [i for i in items if i.occurrences(keyword)
            and all(w.trusted for w in i.occurrences(keyword))]


def _stream_count(keyword: str, stream: Sequence[Item], excluded: set[str]) -> tuple[int, int]:
    """(trusted occurrences in stream items not excluded, items with an untrusted one)."""
    trusted = untrusted = 0
    for item in stream:
        if item.prompt.name in excluded or not item.occurrences(keyword):
            continue
        if all(w.trusted for w in item.occurrences(keyword)):
            trusted += len(item.occurrences(keyword))
        else:
            untrusted += 1
    return trusted, untrusted


def select_keywords(enroll_items: Sequence[Item], stream_items: Sequence[Item], language: str,
                    count: int, seed: int, same_speaker: bool) -> Selection:
    """Choose ``count`` keywords and their enrollment occurrences (greedy, seeded).

    Candidates with :data:`ENROLL_EXAMPLES` trusted enrollment prompts and at least
    :data:`MIN_STREAM_OCCURRENCES` trusted stream occurrences come first, those with no untrusted
    occurrence before the others, several syllables before one, then in seeded random order.
    With ``same_speaker`` the enrollment prompts leave the stream. Prompts holding an untrusted
    occurrence of a chosen keyword are dropped from the stream.
    """
    rng = np.random.default_rng(seed)
    words = candidate_words(stream_items, language)
    shuffle = dict(zip(words, rng.random(len(words))))
    selection = Selection()
    excluded: set[str] = set()

    def rank(word: str) -> tuple:
        enroll_ok = len(_trusted_prompts(enroll_items, word)) >= ENROLL_EXAMPLES
        trusted, untrusted = _stream_count(word, stream_items, excluded)
        if same_speaker:
            trusted -= ENROLL_EXAMPLES
        return (not enroll_ok, trusted < MIN_STREAM_OCCURRENCES, trusted < 1, untrusted > 0,
                syllables(word) < 2, shuffle[word])

    remaining = list(words)
    while remaining and len(selection.enroll) < count:
        remaining.sort(key=rank)
        best = remaining.pop(0)
        if rank(best)[0] or rank(best)[2]:
            break
        used = {i.prompt.name for pairs in selection.enroll.values() for i, _ in pairs}
        options = _trusted_prompts(enroll_items, best)
        options.sort(key=lambda i: (i.prompt.name not in used, len(i.prompt.words),
                                    rng.random()))
        chosen = options[:ENROLL_EXAMPLES]
        selection.enroll[best] = [(i, i.occurrences(best)[0]) for i in chosen]
        if same_speaker:
            excluded |= {i.prompt.name for i in chosen}
        excluded |= {i.prompt.name for i in stream_items if i.occurrences(best)
                     and not all(w.trusted for w in i.occurrences(best))}
    enroll_names = {i.prompt.name for pairs in selection.enroll.values() for i, _ in pairs}
    for item in stream_items:
        if same_speaker and item.prompt.name in enroll_names:
            continue
        (selection.dropped if item.prompt.name in excluded else selection.stream).append(item)
    return selection


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
    """One stretch of a stream: name, samples, transcript, keyword spans within it (seconds)."""

    name: str
    audio: np.ndarray
    transcript: str
    keywords: tuple[tuple[str, float, float], ...] = ()


def layout(pieces: Sequence[Piece], seed: int) -> tuple[np.ndarray, list[list], list[list]]:
    """Concatenate pieces in a seeded random order with pink-noise pauses between them.

    Returns the audio, the prompt rows ``[prompt, start, end, transcript]`` and the truth rows
    ``[keyword, start, end, prompt]`` (seconds from the stream start, truth sorted by start).
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
        truth_rows += [[k, round(start + s, 3), round(start + e, 3), piece.name]
                       for k, s, e in piece.keywords]
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
    _write_csv(streams / f"{stream_id}.truth.csv", ["keyword", "start", "end", "prompt"],
               truth_rows)
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


def _pieces(items: Sequence[Item], keywords: Sequence[str]) -> list[Piece]:
    """Stream pieces of aligned prompts, with every trusted keyword occurrence."""
    pieces = []
    for item in items:
        spans = tuple((k, w.start, w.end) for k in keywords for w in item.occurrences(k))
        pieces.append(Piece(item.prompt.name, item.prompt.load(), item.prompt.transcript or "",
                            spans))
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
            "prompts_dropped": len(selection.dropped)}


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


def _summary(manifest: dict, counts: dict[str, int]) -> str:
    """One line per corpus: hours, streams, keywords, occurrences, alignment agreement."""
    hours = sum(s["seconds"] for s in manifest["streams"]) / 3600
    line = f"{manifest['name']}: {hours:.2f} h in {len(manifest['streams'])} stream(s)"
    if manifest["keywords"]:
        a = manifest["alignment"]
        line += (f", {len(manifest['keywords'])} keywords, {sum(counts.values())} stream "
                 f"occurrences, {a['prompts_dropped']} prompts dropped, agreement median "
                 f"{a['agreement_median_s']} s p90 {a['agreement_p90_s']} s\n  "
                 + ", ".join(f"{k} {n}" for k, n in counts.items()))
    return line


def _count_truth(out: Path, manifest: dict) -> dict[str, int]:
    """Stream occurrences per keyword, read back from the truth CSVs."""
    counts = dict.fromkeys(manifest["keywords"], 0)
    for stream in manifest["streams"]:
        with (out / manifest["name"] / stream["truth"]).open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                counts[row["keyword"]] = counts.get(row["keyword"], 0) + 1
    return counts


def main(args: argparse.Namespace) -> int:
    """Build the corpora and print what was built."""
    if args.keywords < 1:
        raise UsageError(f"--keywords {args.keywords} must be at least 1")
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
        print(_summary(manifest, _count_truth(out, manifest)))
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
