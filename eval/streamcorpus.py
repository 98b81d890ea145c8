"""Stream corpora for ``python -m eval stream``: reading them, building a synthetic one, and the
listening conditions (noise, room) a stream is played in.

Layout (``CORPUS/corpus.json``, format ``kwsstream-streams`` version 1): ``keywords`` maps each
word to its enrollment examples (``audio`` relative to the corpus folder, ``segment`` [start, end]
seconds, ``speaker``); ``streams`` lists long recordings (``id``, ``audio``, ``truth`` CSV
``keyword,start,end,prompt[,kind]`` with every occurrence — ``kind`` ``keyword`` or ``ignore``, a
4-column file has only keyword rows —, ``kind`` speech/music/background, ``speakers``), and next
to the audio ``<id>.prompts.csv`` (``prompt,start,end,transcript``) for the own-voice split
(:func:`own_split`). A corpus named ``background`` (or holding a background stream) is
calibration material and is refused.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from eval import streamscore as scoring
from kwsstream.errors import UsageError

_LOG = logging.getLogger(__name__)
FORMAT = "kwsstream-streams"
CONDITIONS = ("dry", "noise20", "noise10", "room")
ROOM_RT60 = 0.5
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
    speakers: tuple[str, ...] = ()

    @property
    def prompts(self) -> Path:
        """The stream's prompt list (``prompt,start,end,transcript``), next to its audio."""
        return self.audio.parent / f"{self.id}.prompts.csv"


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
                               Path(folder) / s["truth"] if s.get("truth") else None, str(s.get("kind", "speech")),
                               tuple(str(x) for x in s.get("speakers") or ()))
                    for s in data.get("streams", []))
    if name == "background" or any(s.kind == "background" for s in streams):
        raise UsageError(f"{path}: the background corpus is for calibration only, never for testing")
    keywords = {}
    for word, examples in (data.get("keywords") or {}).items():
        keywords[word] = [{"audio": Path(folder) / e["audio"], "segment": tuple(e["segment"]) if e.get("segment") else None,
                           "speaker": str(e.get("speaker", ""))} for e in examples]
    return Corpus(name, Path(folder), keywords, streams)


def read_truth(path: Path | None, names: list[str], cut: float | None) -> scoring.Truth:
    """The occurrences and ignore spans of ``names`` in a truth CSV (ending before ``cut`` s when
    given); a row without ``kind`` (the 4-column format) is an occurrence."""
    if path is None or not path.exists():
        return scoring.Truth.empty()
    rows = {"keyword": ([], [], []), "ignore": ([], [], [])}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            kind = (row.get("kind") or "keyword").strip()
            if kind not in rows:
                raise UsageError(f"{path}: unknown kind {kind!r} (keyword or ignore)")
            if row["keyword"] in names and (cut is None or float(row["end"]) <= cut):
                kw, start, end = rows[kind]
                kw.append(names.index(row["keyword"]))
                start.append(float(row["start"]))
                end.append(float(row["end"]))
    (kw, start, end), (ikw, istart, iend) = rows["keyword"], rows["ignore"]
    return scoring.Truth(np.array(kw, np.int64), np.array(start, np.float64), np.array(end, np.float64),
                         np.array(ikw, np.int64), np.array(istart, np.float64), np.array(iend, np.float64))


@dataclass(frozen=True)
class OwnSplit:
    """A one-speaker stream split for own-voice calibration: the held-out keyword-free prompts
    (``segments``, seconds: each prompt to the start of the next one, its pause included) and
    where the test part starts (``test_start``: the first prompt after the last held-out one)."""

    segments: tuple[tuple[float, float], ...]
    test_start: float
    held_out_seconds: float


def own_split(stream: StreamInfo, minutes: float, max_share: float = 0.5, cut: float | None = None) -> OwnSplit | None:
    """Hold out the first ``minutes`` of the stream's keyword-free prompts (no ``keyword`` and no
    ``ignore`` row overlaps them), never letting the held-out part reach past ``max_share`` of
    the stream (cut to ``cut`` s when given). None when the stream has no prompt list or no
    keyword-free prompt fits."""
    if not stream.prompts.exists():
        return None
    with open(stream.prompts, newline="", encoding="utf-8") as f:
        prompts = sorted((float(r["start"]), float(r["end"])) for r in csv.DictReader(f))
    if cut is not None:
        prompts = [(s, e) for s, e in prompts if e <= cut]
    spans = []
    if stream.truth is not None and stream.truth.exists():
        with open(stream.truth, newline="", encoding="utf-8") as f:
            spans = [(float(r["start"]), float(r["end"])) for r in csv.DictReader(f)]
    if not prompts:
        return None
    limit = max_share * prompts[-1][1]
    segments, held = [], 0.0
    for i, (s, e) in enumerate(prompts):
        if held >= minutes * 60:
            break
        nxt = prompts[i + 1][0] if i + 1 < len(prompts) else None
        if nxt is None or nxt > limit:
            break
        if any(a < e and b > s for a, b in spans):
            continue
        segments.append((s, nxt))
        held += nxt - s
    if not segments:
        return None
    last = segments[-1][1]
    test_start = next(s for s, _ in prompts if s >= last)
    return OwnSplit(tuple(segments), test_start, held)


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
        writer.writerow(["keyword", "start", "end", "prompt", "kind"])
        for occ in scene.truth:
            prompt = next((i for i, s in enumerate(scene.segments) if s.start <= occ.start < s.end), -1)
            writer.writerow([occ.keyword, f"{occ.start:.4f}", f"{occ.end:.4f}", prompt, "keyword"])
    with open(folder / "streams" / "es-synth.prompts.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "start", "end", "transcript"])
        for i, seg in enumerate(scene.segments):
            writer.writerow([i, f"{seg.start:.4f}", f"{seg.end:.4f}", seg.text])
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
