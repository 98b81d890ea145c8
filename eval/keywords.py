"""Keyword choice for the real-speech stream corpora (``python -m eval prompts``, see
``eval/README_streams.md``): aligned prompts, which words may be keywords and which words are
don't-cares for one, and the check of borrowed transcripts.

- :class:`Item`: a prompt with its alignment (:func:`align_items`, cached; one-word prompts timed
  by their energy trim, :func:`trim_check`), its keyword occurrences and don't-care words;
- rules: :func:`syllables` and :func:`eligible` (what a user could choose), :func:`related` (two
  words that may not both be keywords), :func:`dont_care` (containing or inflecting a keyword);
- :func:`select_keywords`: the chosen keywords, their enrollment occurrences and the stream's
  items (:class:`Selection`);
- :func:`check_borrowed`: Armelle's transcripts, borrowed by prompt name, kept only when they fit
  the audio better than decoys (rates: :func:`measure_borrowed_check`).

:mod:`eval.prompts` lays the streams out and writes the corpora.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eval import align as aligner
from eval import debian_audio as deb

ENROLL_EXAMPLES = 3
"""Enrollment occurrences per keyword (each from a different prompt)."""
MIN_KEYWORD_LETTERS = 5
MIN_KEYWORD_SYLLABLES = 2
"""Keywords have at least this many syllables (:func:`syllables`): a one-syllable word is not a
keyword a user would choose."""
INFLECTION_ENDING = 3
"""Two words sharing all but endings of at most this many letters (and a prefix of at least
:data:`MIN_KEYWORD_LETTERS`) are inflections of one another (:func:`dont_care`)."""
DECOYS = 4
"""Other transcripts a borrowed transcript must fit better than (Armelle check)."""
DECOY_MARGIN = 0.0
"""How much lower (:func:`eval.align.fit_cost`) the borrowed transcript's cost must be than the
best decoy's. Measured (:func:`measure_borrowed_check`): 78 % of June's own transcripts pass,
and 23 % of wrong (swapped) ones; the cost discriminates weakly, so loosening the check would
let in more wrong transcripts (see ``eval/README_streams.md``)."""
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
    frame_s = aligner.HOP / deb.SAMPLE_RATE
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
    keyword stays in the stream as a don't-care for that keyword
    (:func:`eval.prompts.ignore_spans`); ``dropped`` stays empty.
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


# ----------------------------------------------------------------------------- check rates


def measure_borrowed_check(cache: Path = deb.DEFAULT_CACHE, others: int = 10, seed: int = 0,
                           margins: Sequence[float] = (0.0, 0.01, 0.02)) -> list[dict]:
    """Rates of the borrowed-transcript check (:func:`check_borrowed`'s rule) on June's
    multi-word prompts, whose transcripts are right, and on Armelle's borrowed ones.

    Each prompt's audio is scored (:func:`eval.align.fit_cost`, first voice) against its own
    transcript and ``others`` June transcripts of similar length. True accept: the own transcript
    beats the first ``n`` others by ``margin``; false accept: the first other (a wrong transcript,
    as if swapped with another prompt's) beats the next ``n`` by ``margin``. ``python -c "from
    eval.keywords import measure_borrowed_check as m; [print(r) for r in m()]"`` (~2 min).
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
