"""The study's protocol: which words are searched, with which queries, in which sentences.

Rule (the study's, every number configurable in :class:`ProtocolOptions`):

1. **Target words** (``targets``, 30): words in matching form (:func:`eval.textnorm.normalize_word`)
   of at least ``min_letters`` (4) letters, not a stopword (:data:`eval.textnorm.SPANISH_STOPWORDS`
   and :data:`eval.textnorm.NON_TARGET_WORDS`), one per crude lemma (:func:`eval.textnorm.crude_stem`).
   Candidates are tried in a seeded random order; one is kept when every target kept so far, and
   it, still has ``queries_per_target`` eligible sentences. A synthetic corpus's ``synth.json``
   names the targets it was built for; they are used as they are (``use_synth_targets``).
2. **Query sentences**: a sentence is eligible for target ``w`` when its transcript holds ``w``
   exactly once and no other target word, its alignment holds ``w`` once, at least
   ``min_word_seconds`` long, and its text differs from the other query sentences' (distinct
   sentences). With ``exclude_lemma`` (default) "no other target word" means no other word of any
   target's lemma either, its own included (``hambre`` and ``hambres`` in one sentence is out). ``queries_per_target`` (10) eligible sentences are drawn per target
   (seeded); the query is the aligned segment of ``w`` in it.
3. **Negatives** (``negatives``, 700): sentences of at least ``min_negative_words`` (4) words with
   no target word (with ``exclude_lemma``: no word of a target's lemma), texts distinct from each
   other and from the query sentences, drawn seeded.
4. The **searched corpus** is the query sentences plus the negatives; a query's relevant
   sentences are those whose normalised transcript holds its word (:meth:`Protocol.relevance`;
   by the rules above: exactly its target's query sentences). The query's **own sentence** is
   left out of its ranking by default (:meth:`Protocol.own_sentence`; kept and counted relevant,
   it comes first by construction for contextual queries, so P@1 would be 100 %); the study's
   convention keeps it (``python -m eval run --include-own``).

**Sizes.** ``targets``, ``queries_per_target`` and ``negatives`` are asked for; a corpus that
cannot give them is a :class:`ProtocolError` naming the option to lower and the largest value
that works. With ``fit_targets`` (``--targets auto``) the protocol takes as many targets as the
rule allows, at most ``targets``; with ``fit_negatives`` (``--negatives auto``, implied by
``--targets auto``) as many negatives as the rule allows, at most ``negatives``.

:func:`make_protocol` applies the rule; :func:`write_protocol` writes it as ``protocol.json`` in the
results folder (options, targets, every query and sentence, and a hash that names the protocol
in caches), so a run can be audited and repeated.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from eval.corpus import Clip, Corpus
from eval.textnorm import NON_TARGET_WORDS, SPANISH_STOPWORDS, crude_stem, normalize_text
from kwsstream.errors import KwsError

log = logging.getLogger(__name__)

PROTOCOL_FILE = "protocol.json"
SYNTH_FILE = "synth.json"
PROTOCOL_VERSION = 2


class ProtocolError(KwsError):
    """The corpus cannot give the protocol asked for (the message says what is missing)."""


@dataclass(frozen=True)
class ProtocolOptions:
    """Word and sentence choice (see the module docstring for the rule).

    Attributes:
        targets: number of target words.
        queries_per_target: query occurrences per target, each from its own sentence.
        negatives: sentences with no target word added to the searched corpus.
        min_letters: shortest target word (letters).
        min_negative_words: shortest negative sentence (words).
        min_word_seconds: shortest aligned query segment (seconds).
        exclude_lemma: query and negative sentences hold no other word of a target's lemma.
        use_synth_targets: take the targets named in the corpus's ``synth.json`` when there is one.
        fit_targets: take as many targets as the rule allows, at most ``targets`` (``--targets
            auto``, ``--quick``); otherwise fewer than ``targets`` is a :class:`ProtocolError`.
        fit_negatives: the same for ``negatives``.
        seed: the random choices' seed.
    """

    targets: int = 30
    queries_per_target: int = 10
    negatives: int = 700
    min_letters: int = 4
    min_negative_words: int = 4
    min_word_seconds: float = 0.1
    exclude_lemma: bool = True
    use_synth_targets: bool = True
    fit_targets: bool = False
    fit_negatives: bool = False
    seed: int = 0


@dataclass(frozen=True)
class Query:
    """One query: the aligned segment of ``word`` (seconds ``start``-``end``) in the searched
    sentence number ``sentence`` (an index into :attr:`Protocol.sentences`)."""

    word: str
    sentence: int
    start: float
    end: float


@dataclass(frozen=True)
class Sentence:
    """One searched recording: its utterance id, audio file, transcript and speaker."""

    utt_id: str
    path: str
    text: str
    client_id: str


@dataclass(frozen=True)
class Protocol:
    """A drawn protocol: targets, queries, searched sentences, and the options it came from."""

    options: ProtocolOptions
    corpus: str
    targets: tuple[str, ...]
    queries: tuple[Query, ...]
    sentences: tuple[Sentence, ...]

    @property
    def key(self) -> str:
        """Short hash of the protocol's content: names its cached scores."""
        payload = json.dumps(_as_json(self, with_key=False), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def relevance(self) -> np.ndarray:
        """``(queries, sentences)`` bool: the sentence's normalised transcript holds the query's
        word (the query's own sentence included; :meth:`own_sentence` says which it is)."""
        words = [set(normalize_text(s.text).split()) for s in self.sentences]
        return np.array([[q.word in w for w in words] for q in self.queries], dtype=bool).reshape(
            len(self.queries), len(self.sentences))

    def own_sentence(self) -> np.ndarray:
        """``(queries, sentences)`` bool: the sentence the query was cut from (left out of the
        query's ranking unless the study's convention, ``--include-own``, is asked for)."""
        own = np.zeros((len(self.queries), len(self.sentences)), dtype=bool)
        own[np.arange(len(self.queries)), [q.sentence for q in self.queries]] = True
        return own

    def sizes(self) -> str:
        """The protocol's sizes in words, e.g. ``6 targets x 10 queries, 140 negatives (200 searched
        sentences)``."""
        per = sorted({sum(q.word == t for q in self.queries) for t in self.targets})
        return (f"{len(self.targets)} targets x {'/'.join(map(str, per))} queries, "
                f"{len(self.sentences) - len(self.queries)} negatives ({len(self.sentences)} searched sentences)")

    def keyword_of(self) -> np.ndarray:
        """``(queries,)`` int: index of each query's word in :attr:`targets`."""
        index = {t: i for i, t in enumerate(self.targets)}
        return np.array([index[q.word] for q in self.queries], dtype=np.int64)


def _is_target_word(word: str, options: ProtocolOptions, extra_stopwords: frozenset[str]) -> bool:
    return len(word) >= options.min_letters and word not in SPANISH_STOPWORDS | extra_stopwords


class _Index:
    """Per-clip words, lemmas and alignments, computed once."""

    def __init__(self, clips: list[Clip]):
        self.clips = clips
        self.words = [c.sentence_words for c in clips]
        self.word_sets = [set(ws) for ws in self.words]
        self.stems = [{crude_stem(w) for w in ws} for ws in self.words]
        self.text = [" ".join(ws) for ws in self.words]
        self.by_stem: dict[str, list[int]] = {}
        for i, stems in enumerate(self.stems):
            for s in stems:
                self.by_stem.setdefault(s, []).append(i)

    def segment(self, i: int, word: str, min_seconds: float) -> tuple[float, float] | None:
        """The one aligned occurrence of ``word`` in clip ``i`` if it is long enough."""
        aligned = self.clips[i].words or ()
        hits = [w for w in aligned if w.text == word]
        if len(hits) != 1 or hits[0].end - hits[0].start < min_seconds:
            return None
        return hits[0].start, hits[0].end

    def holds(self, i: int, word: str, options: ProtocolOptions) -> bool:
        """Whether clip ``i`` holds ``word`` (with ``exclude_lemma``: a word of its lemma)."""
        return crude_stem(word) in self.stems[i] if options.exclude_lemma else word in self.word_sets[i]

    def eligible(self, word: str, targets: set[str], options: ProtocolOptions) -> list[int]:
        """Clips eligible as query sentences of ``word`` given all ``targets`` (rule 2)."""
        others = targets - {word}
        stem = crude_stem(word)
        out = []
        for i in self.by_stem.get(stem, []):
            if self.words[i].count(word) != 1 or any(self.holds(i, t, options) for t in others):
                continue
            if options.exclude_lemma and sum(crude_stem(w) == stem for w in self.words[i]) != 1:
                continue
            if self.segment(i, word, options.min_word_seconds) is not None:
                out.append(i)
        return out


def _distinct(candidates: list[int], index: _Index, used_texts: set[str], needed: int) -> list[int]:
    """The first ``needed`` candidates whose texts are new (``used_texts`` is updated)."""
    chosen = []
    for i in candidates:
        if len(chosen) == needed:
            break
        if index.text[i] not in used_texts:
            used_texts.add(index.text[i])
            chosen.append(i)
    return chosen


def synth_targets(root: Path) -> list[str] | None:
    """The targets a synthetic corpus was built for (its ``synth.json``), or ``None``."""
    path = Path(root) / SYNTH_FILE
    if not path.is_file():
        return None
    try:
        targets = json.loads(path.read_text(encoding="utf-8"))["targets"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ProtocolError(f"{path}: cannot read its 'targets' ({error})") from error
    return [normalize_text(str(t)) for t in targets]


def choose_targets(index: _Index, options: ProtocolOptions, rng: np.random.Generator) -> list[str]:
    """Rule 1 on a corpus without ``synth.json``: seeded greedy choice of the target words.

    Each kept target's eligible sentences are kept up to date as targets are added (a new target
    only removes the sentences that hold it), so the cost grows with the corpus, not with the
    corpus times the candidates tried.
    """

    needed = options.queries_per_target
    counts: dict[str, int] = {}
    for i, words in enumerate(index.word_sets):
        if index.clips[i].words is not None:
            for w in words:
                if _is_target_word(w, options, NON_TARGET_WORDS):
                    counts[w] = counts.get(w, 0) + 1
    candidates = sorted(w for w, c in counts.items() if c >= needed)
    eligible: dict[str, list[int]] = {}
    for k in rng.permutation(len(candidates)):
        if len(eligible) == options.targets:
            break
        word = candidates[int(k)]
        if any(crude_stem(word) == crude_stem(t) for t in eligible):
            continue
        own = index.eligible(word, set(eligible) | {word}, options)
        if len(_distinct(own, index, set(), needed)) < needed:
            continue
        updated = {t: [i for i in pool if not index.holds(i, word, options)] for t, pool in eligible.items()}
        if all(len(_distinct(pool, index, set(), needed)) >= needed for pool in updated.values()):
            eligible = {**updated, word: own}
    return list(eligible)


def make_protocol(corpus: Corpus, options: ProtocolOptions = ProtocolOptions()) -> Protocol:
    """Draw the protocol from ``corpus`` by the rule in the module docstring.

    Raises:
        ProtocolError: the corpus has no aligned clips, or too few targets, queries or negatives
            for ``options`` (unless ``fit_targets`` / ``fit_negatives``); the message names the
            option to change and the largest value that works.
    """
    if min(options.targets, options.queries_per_target) < 1 or options.negatives < 0:
        raise ProtocolError(f"targets={options.targets}, queries_per_target={options.queries_per_target} "
                            f"and negatives={options.negatives} must be positive")
    clips = list(corpus.clips)
    if not corpus.aligned():
        raise ProtocolError(f"{corpus.root}: no clip has word timings (alignments.ctm or alignments/ TextGrids)")
    index = _Index(clips)
    rng = np.random.default_rng(options.seed)
    given = synth_targets(corpus.root) if options.use_synth_targets else None
    if given is not None:
        targets = given[:options.targets]
        log.info("targets from %s: %s", corpus.root / SYNTH_FILE, ", ".join(targets))
    else:
        targets = choose_targets(index, options, rng)
    target_set = set(targets)
    used_texts: set[str] = set()
    picked: dict[str, list[int]] = {}
    for word in targets:
        eligible = index.eligible(word, target_set, options)
        order = [eligible[k] for k in rng.permutation(len(eligible))]
        picked[word] = _distinct(order, index, used_texts, options.queries_per_target)
    need = options.queries_per_target
    short = {w: len(p) for w, p in picked.items() if len(p) < need}
    full = [w for w in targets if len(picked[w]) == need]
    if short and not options.fit_targets:
        raise ProtocolError(f"{corpus.tsv}: too few eligible query sentences (need {need}) for {short}: "
                            f"use --queries-per-target {min(short.values())} or lower, or --targets auto "
                            f"(keeps the {len(full)} target(s) that have {need})")
    targets = full
    if not targets:
        most = max((len(p) for p in picked.values()), default=0)
        raise ProtocolError(f"{corpus.tsv}: no target word has {need} eligible query sentences"
                            + (f": use --queries-per-target {most} or lower" if most else
                               " (no word satisfies the rule; see eval/protocol.py)"))
    if len(targets) < options.targets and not options.fit_targets:
        raise ProtocolError(f"{corpus.tsv}: only {len(targets)} target words satisfy the rule with {need} "
                            f"queries each ({options.targets} asked): use --targets {len(targets)} (the most "
                            f"this corpus allows), --targets auto, or a lower --queries-per-target")
    negatives = _negatives(index, targets, used_texts, options, rng)
    if len(negatives) < options.negatives and not options.fit_negatives:
        raise ProtocolError(f"{corpus.tsv}: only {len(negatives)} negative sentences satisfy the rule "
                            f"({options.negatives} asked, with {len(targets)} targets): use --negatives "
                            f"{len(negatives)} (the most this corpus allows) or --negatives auto")
    chosen = [i for w in targets for i in picked[w]] + negatives
    position = {clip: k for k, clip in enumerate(chosen)}
    sentences = tuple(Sentence(c.utt_id, str(c.path), c.sentence, c.client_id) for c in (clips[i] for i in chosen))
    queries = []
    for word in targets:
        for i in picked[word]:
            start, end = index.segment(i, word, options.min_word_seconds)
            queries.append(Query(word, position[i], start, end))
    log.info("protocol: %d targets, %d queries, %d sentences (%d negatives)",
             len(targets), len(queries), len(sentences), len(negatives))
    return Protocol(options, str(corpus.root), tuple(targets), tuple(queries), sentences)


def _negatives(index: _Index, targets: list[str], used_texts: set[str], options: ProtocolOptions,
               rng: np.random.Generator) -> list[int]:
    """Rule 3: seeded negatives with no target word (or lemma) and distinct texts."""
    target_words = set(targets)
    target_stems = {crude_stem(t) for t in targets}
    candidates = []
    for i in rng.permutation(len(index.clips)):
        ws = index.words[int(i)]
        if len(ws) < options.min_negative_words or target_words.intersection(ws):
            continue
        if options.exclude_lemma and index.stems[int(i)] & target_stems:
            continue
        candidates.append(int(i))
    return _distinct(candidates, index, used_texts, options.negatives)


def _as_json(protocol: Protocol, with_key: bool = True) -> dict:
    data = {
        "version": PROTOCOL_VERSION,
        "options": asdict(protocol.options),
        "corpus": protocol.corpus,
        "targets": list(protocol.targets),
        "queries": [asdict(q) for q in protocol.queries],
        "sentences": [asdict(s) for s in protocol.sentences],
    }
    if with_key:
        data["key"] = protocol.key
    return data


def write_protocol(protocol: Protocol, folder: Path) -> Path:
    """Write ``folder/protocol.json`` (atomically) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PROTOCOL_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_as_json(protocol), ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)
    return path
