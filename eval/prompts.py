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
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
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
MIN_KEYWORD_LETTERS = 5
MIN_KEYWORD_SYLLABLES = 2
"""Keywords have at least this many syllables (:func:`syllables`): a one-syllable word is not a
keyword a user would choose."""
INFLECTION_ENDING = 3
"""Two words sharing all but endings of at most this many letters (and a prefix of at least
:data:`MIN_KEYWORD_LETTERS`) are inflections of one another (:func:`dont_care`)."""
PAUSE_RANGE_S = (0.3, 1.2)
"""Pause between two prompts (uniform, seconds)."""
PAUSE_LEVEL_DBFS = -65.0
"""RMS level of the pink noise that fills the pauses."""
DECOYS = 4
"""Other transcripts a borrowed transcript must fit better than (Armelle check)."""
DECOY_MARGIN = 0.0
"""How much lower (:func:`eval.align.fit_cost`) the borrowed transcript's cost must be than the
best decoy's. Measured (:func:`measure_borrowed_check`): 78 % of June's own transcripts pass,
and 23 % of wrong (swapped) ones; the cost discriminates weakly, so loosening the check would
let in more wrong transcripts (see ``eval/README_streams.md``)."""
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
ALIGNMENT_CACHE_VERSION = 1
STOP_WORDS = {
    "en": set("about after again always before being cannot could every other please there "
              "their these those thank under where which while would should yourself".split()),
    "fr": set("alors après autre autres avant avec avez celle celui cela ceci cette comme dans "
              "encore entre êtes faire leurs lorsque notre nous pendant plusieurs pouvez pour "
              "quand sont toujours veuillez votre vous".split()),
}
"""Function words of at least :data:`MIN_KEYWORD_LETTERS` letters, never keywords."""
_VOWELS = re.compile(r"[aeiouyàâäéèêëîïôöûùüœæ]+")
_STEM_ENDINGS = ("es", "s", "e")
_LOG = logging.getLogger(__name__)


class CorpusError(KwsError):
    """A corpus folder or manifest that cannot be built or read."""


@dataclass
class Item:
    """A prompt with its alignment (``None`` when its transcript has no words or is unknown)."""

    prompt: deb.Prompt
    alignment: aligner.Alignment | None = None

    @cached_property
    def compound_indices(self) -> frozenset[int]:
        """Indices of the transcript's words joined by a hyphen to another word (``re-enter``,
        ``call-forward``): parts of a compound, never keyword occurrences."""
        if self.prompt.transcript is None:
            return frozenset()
        return frozenset(i for i, m in enumerate(deb.word_matches(self.prompt.transcript))
                         if _in_compound(m))

    def occurrences(self, keyword: str) -> list[aligner.WordTime]:
        """Every occurrence of ``keyword`` as a word of its own (not part of a compound)."""
        if self.alignment is None:
            return []
        compounds = self.compound_indices if len(self.alignment.words) > 1 else frozenset()
        return [w for w in self.alignment.words
                if w.word == keyword and w.index not in compounds]

    def dont_cares(self, keyword: str) -> list[aligner.WordTime]:
        """Words where a detection of ``keyword`` counts for nothing (:func:`dont_care`), and
        occurrences of ``keyword`` inside a compound."""
        if self.alignment is None:
            return []
        compounds = self.compound_indices if len(self.alignment.words) > 1 else frozenset()
        return [w for w in self.alignment.words if dont_care(w.word, keyword)
                or (w.word == keyword and w.index in compounds)]


@dataclass
class Selection:
    """Chosen keywords: enrollment occurrences per keyword, the stream's items and what was
    dropped (nothing since untrusted occurrences became don't-care spans; kept for the
    manifest's ``prompts_dropped``)."""

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


def syllables(word: str, language: str = "en") -> int:
    """A rough syllable count: groups of written vowels (``y`` included), at least 1.

    French: a final mute ``-e`` or ``-es`` does not count (``passe`` 1, ``dièse`` 1,
    ``message`` 2; ``désolé`` 3). English: a final silent ``-e`` does not count after a
    consonant unless the word ends in consonant + ``le`` (``phone`` 1, ``simple`` 2), nor ``-es``
    unless after ``s x z c g h`` (``names`` 1, ``voices`` 2), nor ``-ed`` unless after ``t d``
    (``pressed`` 1, ``wanted`` 2).
    """
    stem = word
    if language == "fr":
        for ending in ("es", "e"):
            if stem.endswith(ending) and _VOWELS.search(stem[:-len(ending)]):
                stem = stem[:-len(ending)]
                break
    elif language == "en":
        if stem.endswith("ed") and len(stem) > 3 and stem[-3] not in "td":
            stem = stem[:-2]
        elif stem.endswith("es") and len(stem) > 3 and stem[-3] not in "sxzcgh":
            stem = stem[:-2]
        elif (stem.endswith("e") and len(stem) > 2 and not _VOWELS.fullmatch(stem[-2])
              and not (stem.endswith("le") and len(stem) > 3 and not _VOWELS.fullmatch(stem[-3]))):
            stem = stem[:-1]
        if not _VOWELS.search(stem):
            stem = word
    return max(1, len(_VOWELS.findall(stem)))


def eligible(word: str, language: str) -> bool:
    """A keyword a user could choose: letters only, at least :data:`MIN_KEYWORD_LETTERS`
    letters and :data:`MIN_KEYWORD_SYLLABLES` syllables, not a function word."""
    return (len(word) >= MIN_KEYWORD_LETTERS and word.isalpha()
            and word not in STOP_WORDS.get(language, ())
            and syllables(word, language) >= MIN_KEYWORD_SYLLABLES)


def stem(word: str) -> str:
    """``word`` without a final ``es``, ``s`` or ``e`` (when at least 3 letters remain)."""
    for ending in _STEM_ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            return word[:-len(ending)]
    return word


def related(a: str, b: str) -> bool:
    """Two words that may not both be keywords: one contains the other, or they differ only by a
    final ``s``, ``e`` or ``es``."""
    return a in b or b in a or stem(a) == stem(b)


def dont_care(word: str, keyword: str) -> bool:
    """Whether ``word`` (not ``keyword`` itself) is a don't-care for ``keyword``: it contains
    the keyword (``entered``, ``passwords`` for ``enter``, ``password``), it differs from it
    only by a final ``s``/``e``/``es``, or the two share a prefix of at least
    :data:`MIN_KEYWORD_LETTERS` letters beyond which each has at most :data:`INFLECTION_ENDING`
    (``participant`` for ``participants``, ``increasing`` for ``increase``, ``entrer`` for
    ``entrez``)."""
    if word == keyword:
        return False
    if keyword in word or stem(word) == stem(keyword):
        return True
    prefix = len(os.path.commonprefix([word, keyword]))
    return (prefix >= MIN_KEYWORD_LETTERS and len(word) - prefix <= INFLECTION_ENDING
            and len(keyword) - prefix <= INFLECTION_ENDING)


def _in_compound(match: re.Match) -> bool:
    """Whether a word (a match of :func:`eval.debian_audio.word_matches`) is joined to another
    by a hyphen."""
    text, start, end = match.string, match.start(), match.end()
    before = start >= 2 and text[start - 1] == "-" and text[start - 2].isalnum()
    after = end + 1 < len(text) and text[end] == "-" and text[end + 1].isalnum()
    return before or after


def candidate_words(items: Sequence[Item], language: str) -> list[str]:
    """Words that could be keywords (:func:`eligible`), sorted."""
    words = {w for item in items for w in item.prompt.words}
    return sorted(w for w in words if eligible(w, language))


def _trusted_prompts(items: Sequence[Item], keyword: str) -> list[Item]:
    """Items holding ``keyword`` whose every occurrence of it is trusted."""
    return [i for i in items if i.occurrences(keyword)
            and all(w.trusted for w in i.occurrences(keyword))]


def _stream_count(keyword: str, stream: Sequence[Item], excluded: set[str]) -> tuple[int, int]:
    """(trusted, untrusted) occurrences in stream items not excluded."""
    trusted = untrusted = 0
    for item in stream:
        if item.prompt.name in excluded:
            continue
        for word in item.occurrences(keyword):
            trusted += word.trusted
            untrusted += not word.trusted
    return trusted, untrusted


def select_keywords(enroll_items: Sequence[Item], stream_items: Sequence[Item], language: str,
                    count: int, seed: int, same_speaker: bool) -> Selection:
    """Choose ``count`` keywords and their enrollment occurrences (greedy, seeded).

    Candidates (:func:`candidate_words`) need :data:`ENROLL_EXAMPLES` trusted enrollment
    prompts and at least one trusted stream occurrence; among them the most trusted stream
    occurrences first, then fewer prompts with an untrusted occurrence, then seeded random order.
    A candidate :func:`related` to a chosen keyword is never chosen. With ``same_speaker`` the
    enrollment prompts leave the stream. A prompt holding an untrusted occurrence of a chosen
    keyword stays in the stream as a don't-care for that keyword (:func:`ignore_spans`);
    ``dropped`` stays empty.
    """
    rng = np.random.default_rng(seed)
    words = candidate_words(stream_items, language)
    shuffle = dict(zip(words, rng.random(len(words))))
    selection = Selection()
    excluded: set[str] = set()

    def rank(word: str) -> tuple:
        enroll_ok = len(_trusted_prompts(enroll_items, word)) >= ENROLL_EXAMPLES
        trusted, untrusted = _stream_count(word, stream_items, excluded)
        if same_speaker:  # the enrollment prompts leave the stream; used ones are reused first
            reusable = sum(i.prompt.name in excluded for i in _trusted_prompts(enroll_items, word))
            trusted -= max(0, ENROLL_EXAMPLES - reusable)
        return (not enroll_ok, trusted < 1, -trusted, untrusted, shuffle[word])

    remaining = list(words)
    while remaining and len(selection.enroll) < count:
        remaining = [w for w in remaining if not any(related(w, k) for k in selection.enroll)]
        if not remaining:
            break
        remaining.sort(key=rank)
        best = remaining.pop(0)
        if rank(best)[0] or rank(best)[1]:
            break
        used = {i.prompt.name for pairs in selection.enroll.values() for i, _ in pairs}
        options = _trusted_prompts(enroll_items, best)
        options.sort(key=lambda i: (i.prompt.name not in used, len(i.prompt.words),
                                    rng.random()))
        chosen = options[:ENROLL_EXAMPLES]
        selection.enroll[best] = [(i, i.occurrences(best)[0]) for i in chosen]
        if same_speaker:
            excluded |= {i.prompt.name for i in chosen}
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


# ----------------------------------------------------------------------------- check rates


def measure_borrowed_check(cache: Path = deb.DEFAULT_CACHE, others: int = 10, seed: int = 0,
                           margins: Sequence[float] = (0.0, 0.01, 0.02)) -> list[dict]:
    """Rates of the borrowed-transcript check (:func:`check_borrowed`'s rule) on June's
    multi-word prompts, whose transcripts are right, and on Armelle's borrowed ones.

    Each prompt's audio is scored (:func:`eval.align.fit_cost`, first voice) against its own
    transcript and ``others`` June transcripts of similar length. True accept: the own transcript
    beats the first ``n`` others by ``margin``; false accept: the first other (a wrong transcript,
    as if swapped with another prompt's) beats the next ``n`` by ``margin``. ``python -c "from
    eval.prompts import measure_borrowed_check as m; [print(r) for r in m()]"`` (~2 min).
    """
    june = [p for p in deb.prompts(deb.SOURCES["fr"], cache) if p.words]
    pool = [p.transcript for p in june]
    lengths = np.array([len(p.words) for p in june])
    armelle = [p for p in deb.prompts(deb.SOURCES["fr-armelle"], cache) if p.words]
    rng = np.random.default_rng(seed)
    plan = []
    for prompt in [p for p in june if len(p.words) > 1] + armelle:
        near = np.argsort(np.abs(lengths - len(prompt.words)) + rng.random(len(pool)))
        texts = [pool[i] for i in near if june[i].words != prompt.words][:others]
        plan.append((prompt, [prompt.transcript, *texts]))
    texts = sorted({t for _, ts in plan for t in ts})
    voice = aligner.voices(deb.SOURCES["fr"].espeak_voice)[0]
    synthetic = {t: u.audio for t, u in zip(texts, aligner.iter_synthesize(
        [(deb.speech_text(t), voice) for t in texts], 2))}
    costs = {"june": [], "armelle": []}
    for prompt, ts in tqdm(plan, desc="fit costs", unit="prompt"):
        audio = prompt.load()
        costs["armelle" if prompt.speaker != june[0].speaker else "june"].append(
            [aligner.fit_cost(audio, synthetic[t]) for t in ts])
    j, a = np.array(costs["june"]), np.array(costs["armelle"])

    def rate(table: np.ndarray, first: int, n: int, margin: float) -> float:
        wins = table[:, first] < table[:, first + 1:first + 1 + n].min(1) - margin
        return round(float(np.mean(wins)), 3)

    return [{"decoys": n, "margin": m, "june_true_accept": rate(j, 0, n, m),
             "swapped_false_accept": rate(j, 1, n, m), "armelle_accept": rate(a, 0, n, m),
             "june_prompts": len(j), "armelle_prompts": len(a)}
            for n in sorted({DECOYS, others - 1}) for m in margins]
