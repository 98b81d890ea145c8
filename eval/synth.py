"""A synthetic Spanish corpus in the Common Voice layout: ``python -m eval synth --out DIR``.

What it writes (readable by :func:`eval.corpus.read_corpus`)::

    DIR/validated.tsv        client_id path sentence_id sentence sentence_domain up_votes
                             down_votes age gender accents variant locale segment
    DIR/clips/<utt>.mp3      48 kHz mono MP3 (soundfile's libsndfile writes it; reading it back
                             gives the same length and timing)
    DIR/alignments.ctm       utt 1 start duration word   (word in eval.textnorm matching form)
    DIR/clip_durations.tsv   clip duration[ms], as in recent Common Voice releases
    DIR/synth.json           the parameters, the speakers and the designated target words

Sentences are Debian ``fortunes-es`` sentences of 4-20 words (:func:`fortune_sentences`).
Speakers: ``es`` and ``es-419`` with eSpeak NG variants, each with its own rate, pitch and noise
(white or pink at one of :data:`SNR_CHOICES`); ``client_id`` names the speaker. Synthesis runs in
parallel worker processes; the corpus is a function of ``--sentences`` and ``--seed`` only.

Sentence choice rule (so that the study's protocol — 30 target words x 10 query sentences, each
with exactly one target word, plus 700 sentences with none — is possible on 1000 sentences):

1. ``n_targets = min(30, floor(0.3 N / 10))`` target words are drawn (seeded) among fortune words
   of >= 5 letters in 30+ fortunes, not stopwords (:data:`eval.textnorm.SPANISH_STOPWORDS`,
   :data:`eval.textnorm.NON_TARGET_WORDS`), one per crude lemma (:func:`eval.textnorm.crude_stem`).
2. Each target gets 10 sentences that contain it once and no other word of any target's lemma;
   the other N - 10 n_targets sentences contain no word of a target's lemma.
3. While there are enough sentences, every other content-word lemma (>= 4 letters, not a
   stopword) is kept to at most 9 sentences of the whole corpus, so the targets are the only
   content words in 10+ sentences; ``synth.json`` records whether that cap held.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soxr

from eval.espeak import SPANISH_VOICES, Voice, list_variants, make_pool, synthesize_in_worker
from eval.scenes import add_noise, write_audio
from eval.textnorm import (NON_TARGET_WORDS, SPANISH_STOPWORDS, crude_stem, fortune_sentences, normalize_text,
                           normalize_word)
from kwsstream.errors import UsageError

log = logging.getLogger(__name__)

CLIP_RATE = 48_000
TARGET_WORDS = 30
QUERIES_PER_TARGET = 10
TARGET_SHARE = 0.3
"""Share of the corpus made of target-bearing sentences."""
MIN_TARGET_LETTERS = 5
MIN_CONTENT_LETTERS = 4
OTHER_LEMMA_CAP = QUERIES_PER_TARGET - 1
CANDIDATE_SENTENCES = 30
"""A target word must occur in at least this many fortunes."""
BEARING_MARGIN = 3
"""... and leave at least this many times 10 sentences with it as the only target word."""
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt2", "klatt3", "klatt4", "miguel", "pablo", "antonio", "marcelo",
            "Andrea", "Alicia", "belinda", "linda", "steph", "anika", "david", "pedro", "victor")
"""Preferred eSpeak NG variants (those installed are used), spoken in both Spanish voices."""
RATES = (130, 230)
PITCHES = (30, 70)
SNR_CHOICES = (None, 30.0, 20.0, 15.0, 10.0)
"""A speaker's noise: ``None`` is clean."""
NOISE_COLORS = ("pink", "white")
TSV_COLUMNS = ("client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
               "down_votes", "age", "gender", "accents", "variant", "locale", "segment")
ACCENTS = {"es": "España (eSpeak NG es)", "es-419": "América Latina (eSpeak NG es-419)"}


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: a voice at its own rate and pitch, with its own noise."""

    voice: Voice
    snr_db: float | None
    noise: str

    @property
    def client_id(self) -> str:
        """E.g. ``espeak-es-m3-r160-p45-pink20``; ``clean`` when noiseless."""
        v = self.voice
        noise = "clean" if self.snr_db is None else f"{self.noise}{self.snr_db:g}"
        return f"espeak-{v.name}-{v.variant or 'default'}-r{v.rate}-p{v.pitch}-{noise}"

    @property
    def gender(self) -> str:
        """Common Voice's label, from the variant's name (m*/f*), else empty."""
        variant = self.voice.variant or ""
        return ("male_masculine" if variant[:1] == "m" and variant[1:].isdigit() else
                "female_feminine" if variant[:1] == "f" and variant[1:].isdigit() else "")


@dataclass(frozen=True)
class Selection:
    """Chosen sentences (corpus order), the designated target words, and whether the cap held."""

    sentences: tuple[str, ...]
    targets: tuple[str, ...]
    cap_respected: bool


def _content_lemmas(sentence: str) -> list[str]:
    """Crude lemmas of the sentence's content words, one per occurrence."""
    return [crude_stem(w) for w in normalize_text(sentence).split()
            if len(w) >= MIN_CONTENT_LETTERS and w not in SPANISH_STOPWORDS]


def select_sentences(pool: list[str], n: int, rng: np.random.Generator) -> Selection:
    """Choose ``n`` sentences of ``pool`` by the rule in the module docstring."""
    if n < 1 or n > len(pool):
        raise UsageError(f"--sentences must be 1-{len(pool)}, got {n}")
    words = [normalize_text(s).split() for s in pool]
    lemmas = [_content_lemmas(s) for s in pool]
    n_targets = min(TARGET_WORDS, int(TARGET_SHARE * n) // QUERIES_PER_TARGET)
    counts: dict[str, int] = {}
    for ws in words:
        for w in set(ws):
            if len(w) >= MIN_TARGET_LETTERS and w not in SPANISH_STOPWORDS | NON_TARGET_WORDS:
                counts[w] = counts.get(w, 0) + 1
    candidates = sorted(w for w, c in counts.items() if c >= CANDIDATE_SENTENCES)
    by_stem: dict[str, list[int]] = {}
    for i, ls in enumerate(lemmas):
        for stem in set(ls):
            by_stem.setdefault(stem, []).append(i)

    def bearing(target: str, stems: set[str]) -> list[int]:
        """Sentences with ``target`` once and no other word of a lemma in ``stems``."""
        stem = crude_stem(target)
        return [i for i in by_stem.get(stem, []) if words[i].count(target) == 1
                and [s for s in lemmas[i] if s in stems] == [stem]]

    targets: list[str] = []
    for i in rng.permutation(len(candidates)):
        if len(targets) == n_targets:
            break
        trial = targets + [candidates[i]]
        trial_stems = {crude_stem(t) for t in trial}
        if len(trial_stems) == len(trial) and all(
                len(bearing(t, trial_stems)) >= BEARING_MARGIN * QUERIES_PER_TARGET for t in trial):
            targets = trial
    if len(targets) < n_targets:
        raise UsageError(f"only {len(targets)} of {n_targets} target words found in the fortunes")
    stems = {crude_stem(t): t for t in targets}
    used: dict[str, int] = {}
    chosen: list[int] = []
    taken: set[int] = set()
    cap_ok = True

    def take(indices: list[int], needed: int) -> None:
        """Add ``needed`` of ``indices``: within the cap if possible, else ignoring it."""
        nonlocal cap_ok
        picked = 0
        for capped in (True, False):
            for i in indices:
                if picked == needed:
                    break
                others = set(lemmas[i]) - stems.keys()
                full = capped and any(used.get(s, 0) >= OTHER_LEMMA_CAP for s in others)
                if i in taken or full:
                    continue
                taken.add(i)
                chosen.append(i)
                picked += 1
                for s in others:
                    used[s] = used.get(s, 0) + 1
            if capped and picked < needed:
                cap_ok = False
        if picked < needed:
            raise UsageError(f"the fortunes hold too few suitable sentences for {n} sentences")

    order = [int(i) for i in rng.permutation(len(pool))]
    rank = {i: r for r, i in enumerate(order)}
    pools = {t: sorted(bearing(t, set(stems)), key=rank.__getitem__) for t in targets}
    for target in sorted(targets, key=lambda t: len(pools[t])):  # scarcest first
        take(pools[target], QUERIES_PER_TARGET)
    negatives = [i for i in order if not any(s in stems for s in lemmas[i])]
    take(negatives, n - len(chosen))
    sentences = tuple(pool[chosen[i]] for i in rng.permutation(len(chosen)))
    return Selection(sentences, tuple(targets), cap_ok)


def make_speakers(rng: np.random.Generator) -> list[Speaker]:
    """A speaker per (Spanish voice, installed variant), with a seeded rate, pitch and noise."""
    installed = set(list_variants())
    speakers = []
    for name in SPANISH_VOICES:
        for variant in (v for v in VARIANTS if v in installed):
            voice = Voice(name, variant, int(rng.integers(RATES[0], RATES[1] + 1)),
                          int(rng.integers(PITCHES[0], PITCHES[1] + 1)))
            snr = SNR_CHOICES[int(rng.integers(len(SNR_CHOICES)))]
            speakers.append(Speaker(voice, snr, NOISE_COLORS[int(rng.integers(len(NOISE_COLORS)))]))
    return speakers


def _render_clip(task: tuple[int, str, Speaker, int, str, str]) -> tuple[str, list, float]:
    """Worker task: synthesise one sentence, add its speaker's noise, write the 48 kHz MP3."""
    index, text, speaker, seed, clips_dir, utt = task
    utterance = synthesize_in_worker(text, speaker.voice)
    audio = np.asarray(utterance.audio, dtype=np.float32)
    if speaker.snr_db is not None and utterance.words:
        rate = utterance.sample_rate
        speech = slice(int(utterance.words[0].start * rate), int(utterance.words[-1].end * rate))
        audio = add_noise(audio, speaker.snr_db, np.random.default_rng([seed, index]),
                          color=speaker.noise, speech=speech)
    clip = soxr.resample(audio, utterance.sample_rate, CLIP_RATE, quality="HQ")
    write_audio(Path(clips_dir) / f"{utt}.mp3", clip, CLIP_RATE)
    words = [(normalize_word(w.text), w.start, w.end) for w in utterance.words]
    return utt, [w for w in words if w[0]], len(clip) / CLIP_RATE


def synthesize_corpus(out: Path | str, sentences: int = 1000, seed: int = 0, *, workers: int = 2,
                      progress: bool = True, force: bool = False) -> dict:
    """Write the corpus (see the module docstring) and return what ``synth.json`` holds."""
    from tqdm import tqdm

    out = Path(out)
    if seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}")
    if out.exists() and any(out.iterdir()) and not force:
        raise UsageError(f"{out} is not empty; choose another --out or pass --force")
    rng = np.random.default_rng(seed)
    selection = select_sentences(fortune_sentences(), sentences, rng)
    speakers = make_speakers(rng)
    picks = rng.integers(len(speakers), size=len(selection.sentences))
    assigned = [speakers[int(i)] for i in picks]
    if not selection.cap_respected:
        log.warning("some content words other than the targets occur in %d+ sentences",
                    OTHER_LEMMA_CAP + 1)
    clips_dir = out / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    tasks = [(i, text, speaker, seed, str(clips_dir), f"synth_es_{seed}_{i:06d}")
             for i, (text, speaker) in enumerate(zip(selection.sentences, assigned))]
    with make_pool(workers) as pool:
        results = list(tqdm(pool.imap(_render_clip, tasks, chunksize=4), total=len(tasks),
                            desc="synth", unit="clip", disable=not progress, file=sys.stderr))
    _write_tables(out, tasks, results)
    info = {"sentences": len(tasks), "seed": seed, "sample_rate": CLIP_RATE,
            "targets": list(selection.targets), "queries_per_target": QUERIES_PER_TARGET,
            "other_lemma_cap": OTHER_LEMMA_CAP, "cap_respected": selection.cap_respected,
            "hours": round(sum(r[2] for r in results) / 3600, 4),
            "speakers": [{"client_id": s.client_id, **asdict(s)} for s in speakers]}
    (out / "synth.json").write_text(json.dumps(info, ensure_ascii=False, indent=1) + "\n",
                                    encoding="utf-8")
    return info


def _write_tables(out: Path, tasks: list, results: list) -> None:
    """validated.tsv, alignments.ctm and clip_durations.tsv, in corpus order."""
    with (out / "validated.tsv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n")
        writer.writerow(TSV_COLUMNS)
        for (_, text, speaker, _, _, utt), _ in zip(tasks, results):
            sentence_id = hashlib.sha256(text.encode("utf-8")).hexdigest()
            writer.writerow([speaker.client_id, f"{utt}.mp3", sentence_id, text, "", 2, 0, "",
                             speaker.gender, ACCENTS.get(speaker.voice.name, ""), "", "es", ""])
    with (out / "alignments.ctm").open("w", encoding="utf-8") as f:
        for utt, words, _ in results:
            for word, start, end in words:
                start, end = round(start, 3), round(end, 3)  # so start + duration = end exactly
                f.write(f"{utt} 1 {start:.3f} {end - start:.3f} {word}\n")
    with (out / "clip_durations.tsv").open("w", encoding="utf-8") as f:
        f.write("clip\tduration[ms]\n")
        for utt, _, duration in results:
            f.write(f"{utt}.mp3\t{round(duration * 1000)}\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m eval synth``."""
    parser.add_argument("--out", type=Path, required=True, help="corpus folder to create")
    parser.add_argument("--sentences", type=int, default=1000, help="number of clips (1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes (2)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty folder")


def main(args: argparse.Namespace) -> int:
    """Run ``python -m eval synth``; returns the exit status."""
    info = synthesize_corpus(args.out, args.sentences, args.seed, workers=args.workers,
                             force=args.force)
    print(f"wrote {info['sentences']} clips ({info['hours'] * 60:.1f} min), "
          f"{len(info['targets'])} target words, to {args.out}", file=sys.stderr)
    warning = protocol_fit_warning(info)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def protocol_fit_warning(info: dict) -> str | None:
    """What ``python -m eval run``'s default protocol (30 targets x 10 queries, 700 negatives)
    cannot get from a corpus described by ``info`` (``synth.json``), and what to run instead;
    ``None`` when it fits."""
    from eval.protocol import ProtocolOptions

    default = ProtocolOptions()
    targets = len(info["targets"])
    negatives = info["sentences"] - targets * info["queries_per_target"]
    if targets >= default.targets and negatives >= default.negatives:
        return None
    return (f"this corpus holds {targets} target words x {info['queries_per_target']} queries and at most "
            f"{negatives} negatives, too few for the default protocol of 'python -m eval run' "
            f"({default.targets} x {default.queries_per_target}, {default.negatives} negatives; needs about "
            f"{default.targets * default.queries_per_target + default.negatives} sentences): run it with "
            f"--targets auto, or --targets {targets} --negatives {negatives}")
