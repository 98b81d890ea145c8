"""Read a corpus in the Common Voice layout, with word timings.

Layout (the contract in ARCHITECTURE.md)::

    CORPUS_DIR/validated.tsv        (or any split: train.tsv, dev.tsv, test.tsv, other.tsv ...)
    CORPUS_DIR/clips/<path>         MP3 at 48 kHz in real Common Voice (any format soundfile reads)
    CORPUS_DIR/alignments.ctm       "utt channel start duration word [confidence]" per line,
                                    utt = clip file name without its suffix
    CORPUS_DIR/alignments/**/<utt>.TextGrid   or Montreal Forced Aligner TextGrids (tier "words")

The split TSVs are tab-separated without quoting (sentences may hold quotes). Column names
changed across releases; :data:`COLUMN_ALIASES` maps the known variants onto ``path``,
``sentence`` and ``client_id``; other columns are kept as they are. Early releases give ``path``
without its ``.mp3`` suffix; the reader finds the file either way. Words are compared in the
matching form of :func:`eval.textnorm.normalize_word`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from eval.textnorm import normalize_text, normalize_word
from eval.words import TimedWord
from kwsstream.errors import KwsError

DEFAULT_SPLIT = "validated"
CTM_FILE = "alignments.ctm"
TEXTGRID_DIR = "alignments"
CLIPS_DIR = "clips"
CLIP_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg")
COLUMN_ALIASES = {
    "path": ("path", "file", "filename", "file_name", "audio", "clip"),
    "sentence": ("sentence", "text", "transcript", "transcription", "normalized_text"),
    "client_id": ("client_id", "speaker_id", "speaker", "client"),
}
"""Accepted header names per required column, first match wins."""
WORD_TIERS = ("words", "word")
"""TextGrid tier names holding words (MFA 1 prefixes them with the speaker: ``spk - words``)."""
NON_WORDS = frozenset({"", "sil", "sp", "spn", "<eps>", "<unk>", "<sil>", "[noise]", "<noise>"})
"""Aligner labels that are silence or noise, not words."""


class CorpusError(KwsError):
    """A corpus folder, TSV, CTM or TextGrid that cannot be used (the message names the file)."""


@dataclass(frozen=True)
class Clip:
    """One recording of the corpus.

    Attributes:
        utt_id: the clip's file name without suffix (the key of the alignments).
        path: the audio file.
        sentence: the transcript as written in the TSV.
        client_id: the speaker.
        words: aligned words in time order, or ``None`` when the clip has no alignment.
        extra: the TSV's other columns.
    """

    utt_id: str
    path: Path
    sentence: str
    client_id: str
    words: tuple[TimedWord, ...] | None
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def sentence_words(self) -> list[str]:
        """The transcript's words in matching form."""
        return normalize_text(self.sentence).split()


@dataclass(frozen=True)
class Corpus:
    """A read corpus: its folder, the split TSV read, the clips in TSV order, and where the word
    timings came from (``"ctm"``, ``"textgrid"`` or ``None``)."""

    root: Path
    tsv: Path
    clips: tuple[Clip, ...]
    alignment_source: str | None

    def aligned(self) -> list[Clip]:
        """The clips that have word timings."""
        return [c for c in self.clips if c.words is not None]


def read_corpus(root: Path | str, split: str = DEFAULT_SPLIT, *, alignments: str = "auto",
                check_audio: bool = True) -> Corpus:
    """Read ``root/<split>.tsv`` (``split`` may also be a TSV's path) and its alignments.

    ``alignments``: ``"auto"`` (the CTM if there is one, else TextGrids if there are any, else
    none), ``"ctm"``, ``"textgrid"`` or ``"none"``. With ``check_audio`` every clip's file must
    exist. Rows with an empty path are refused; clips without alignment get ``words=None``.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"corpus folder {root} does not exist")
    tsv = Path(split) if Path(split).suffix == ".tsv" else root / f"{split}.tsv"
    if not tsv.is_file():
        found = sorted(p.name for p in root.glob("*.tsv"))
        raise CorpusError(f"{tsv} not found (TSVs in {root}: {found or 'none'})")
    ctm, grids = root / CTM_FILE, root / TEXTGRID_DIR
    if alignments not in ("auto", "ctm", "textgrid", "none"):
        raise CorpusError(f"alignments must be auto, ctm, textgrid or none, not {alignments!r}")
    if alignments == "auto":
        alignments = "ctm" if ctm.is_file() else "textgrid" if grids.is_dir() else "none"
    timings = (read_ctm(ctm) if alignments == "ctm" else
               read_textgrids(grids) if alignments == "textgrid" else {})
    clips = []
    for number, row in enumerate(read_split(tsv), start=2):
        if not row["path"]:
            raise CorpusError(f"{tsv}:{number}: empty path")
        path = _clip_path(root / CLIPS_DIR, row["path"], check_audio, f"{tsv}:{number}")
        name = Path(row["path"]).name
        utt = Path(name).stem if Path(name).suffix.lower() in CLIP_SUFFIXES else name
        extra = tuple((k, v) for k, v in row.items() if k not in COLUMN_ALIASES)
        clips.append(Clip(utt, path, row["sentence"], row["client_id"],
                          tuple(timings[utt]) if utt in timings else None, extra))
    return Corpus(root, tsv, tuple(clips), None if alignments == "none" else alignments)


def read_split(tsv: Path | str) -> list[dict[str, str]]:
    """Rows of a Common Voice split TSV, with the required columns renamed to ``path``,
    ``sentence`` and ``client_id`` (see :data:`COLUMN_ALIASES`)."""
    tsv = Path(tsv)
    with tsv.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise CorpusError(f"{tsv} is empty")
        header = [h.strip().lower() for h in header]
        rename = {}
        for column, aliases in COLUMN_ALIASES.items():
            match = next((h for h in aliases if h in header), None)
            if match is None:
                raise CorpusError(f"{tsv} has no {column!r} column (header: {header})")
            rename[match] = column
        names = [rename.get(h, h) for h in header]
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            if len(values) < len(names):
                values = values + [""] * (len(names) - len(values))
            rows.append({k: v.strip() for k, v in zip(names, values)})
    return rows


def read_ctm(path: Path | str) -> dict[str, list[TimedWord]]:
    """Word timings from a CTM file (``utt channel start duration word [conf]``; ``;;`` lines are
    comments), per utterance in time order; non-word labels are dropped."""
    path = Path(path)
    result: dict[str, list[TimedWord]] = {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0].startswith(";;"):
                continue
            if len(fields) < 5:
                raise CorpusError(f"{path}:{number}: expected 'utt channel start duration word', "
                                  f"got {line.strip()!r}")
            try:
                start, duration = float(fields[2]), float(fields[3])
            except ValueError:
                raise CorpusError(f"{path}:{number}: bad start/duration in "
                                  f"{line.strip()!r}") from None
            if start < 0 or duration < 0:
                raise CorpusError(f"{path}:{number}: negative time in {line.strip()!r}")
            word = normalize_word(fields[4])
            if fields[4].lower() not in NON_WORDS and word:
                result.setdefault(fields[0], []).append(TimedWord(word, start, start + duration))
    for words in result.values():
        words.sort(key=lambda w: w.start)
    return result


def read_textgrids(folder: Path | str) -> dict[str, list[TimedWord]]:
    """Word timings from Montreal Forced Aligner TextGrids anywhere under ``folder`` (read with
    praatio), keyed by file name without suffix."""
    try:
        from praatio import textgrid
    except ImportError as error:
        raise CorpusError("TextGrids need praatio: pip install 'kwsstream[eval]'") from error
    folder = Path(folder)
    result: dict[str, list[TimedWord]] = {}
    for path in sorted(folder.rglob("*.TextGrid")):
        try:
            grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False,
                                         duplicateNamesMode="rename")
        except Exception as error:  # praatio raises several types for malformed files
            raise CorpusError(f"{path}: cannot read TextGrid ({error})") from error
        tier_name = next((n for n in grid.tierNames
                          if n.lower() in WORD_TIERS or n.lower().endswith(" - words")), None)
        if tier_name is None:
            raise CorpusError(f"{path}: no words tier (tiers: {grid.tierNames})")
        words = [TimedWord(normalize_word(label), float(start), float(end))
                 for start, end, label in grid.getTier(tier_name).entries
                 if label.strip().lower() not in NON_WORDS and normalize_word(label)]
        result[path.stem] = sorted(words, key=lambda w: w.start)
    return result


def _clip_path(clips: Path, name: str, check: bool, where: str) -> Path:
    """The clip's file; tries the known suffixes when the TSV gives the name without one."""
    path = clips / name
    if path.is_file() or not check:
        return path
    for suffix in CLIP_SUFFIXES:
        if (clips / f"{name}{suffix}").is_file():
            return clips / f"{name}{suffix}"
    raise CorpusError(f"{where}: clip {path} not found")
