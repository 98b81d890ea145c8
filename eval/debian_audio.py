"""Real recorded speech and music from Debian's Asterisk sound packages.

``apt-get download`` fetches each package into a cache folder, ``dpkg-deb -x`` unpacks it and
ffmpeg decodes every prompt (G.722 at 16 kHz or GSM at 8 kHz) to 16 kHz mono float32, cached as
``.npy`` beside the package so that reruns are fast. Transcripts come from the base package of
the same language (``core-sounds-<lang>.txt.gz``: lines ``name: transcript``, names such as
``digits/1`` for prompts in subfolders); a package without transcripts borrows another's by
prompt name (:data:`SOURCES`). Licences are read from each package's ``copyright`` file.

Transcript normalisation (:func:`words_of`): Unicode NFC, lower case, annotations in brackets or
parentheses (``[ascending tones]``, ``(1 second of silence)``) removed, every character that is
neither a letter nor a digit is a word break; numbers stay as written (``1``).
"""

from __future__ import annotations

import gzip
import logging
import re
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kwsstream.errors import KwsError

SAMPLE_RATE = 16_000
"""Rate of every decoded prompt (Hz)."""
DEFAULT_CACHE = Path(".cache/debian")
"""Where packages are downloaded, unpacked and decoded (git-ignored)."""
SKIPPED_FOLDERS = ("silence",)
"""Prompt subfolders never used (``silence/N``: N seconds of digital silence, no speech)."""
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)")
_WORD = re.compile(r"[^\W_]+")
_LOG = logging.getLogger(__name__)


class SourceError(KwsError):
    """A Debian package that cannot be downloaded, unpacked, decoded or read."""


@dataclass(frozen=True)
class Package:
    """One Debian package and what the corpora take from it.

    Attributes:
        name: the Debian package name.
        folder: folder inside the package holding the audio (``None``: no audio, transcripts only).
        extension: audio file extension (``.g722`` or ``.gsm``).
        licence: the licence as recorded in the manifest.
        licence_marker: text that must appear in the package's ``copyright`` file (checked, so
            the recorded licence is the one read there).
    """

    name: str
    folder: str | None
    extension: str
    licence: str
    licence_marker: str


@dataclass(frozen=True)
class Source:
    """A speaker's prompts: an audio package, the package giving the transcripts, and the eSpeak
    NG voice of the language (for alignment)."""

    audio: Package
    transcripts: Package | None
    speaker: str
    language: str
    espeak_voice: str


@dataclass(frozen=True)
class Prompt:
    """One recorded prompt: name (``vm-intro``, ``digits/1``), decoded audio file (``.npy``,
    16 kHz float32), transcript as written (``None`` when unknown) and its speaker."""

    name: str
    audio_path: Path
    transcript: str | None
    speaker: str

    def load(self) -> np.ndarray:
        """The decoded samples (float32, 16 kHz mono)."""
        return np.load(self.audio_path)

    @property
    def words(self) -> list[str]:
        """The transcript's normalised words (empty when unknown or without speech)."""
        return [] if self.transcript is None else words_of(self.transcript)


_CC_SA = "CC-BY-SA-3.0"
_TEXT_EN = Package("asterisk-core-sounds-en", None, "",
                   "CC-BY-SA-3.0 (Allison Smith / Digium)", _CC_SA)
_TEXT_FR = Package("asterisk-core-sounds-fr", None, "",
                   "CC-BY-SA-3.0 (June Wallack; translation C. Patry, K. Lalletti)", _CC_SA)
_TEXT_RU = Package("asterisk-core-sounds-ru", None, "", "CC-BY-3.0 (Maxim Topal)", "CC-BY-3.0")
SOURCES = {
    "en": Source(Package("asterisk-core-sounds-en-g722", "usr/share/asterisk/sounds/en_US_f_Allison",
                         ".g722", _TEXT_EN.licence, _CC_SA), _TEXT_EN, "en_US_f_Allison", "en",
                 "en-US"),
    "fr": Source(Package("asterisk-core-sounds-fr-g722", "usr/share/asterisk/sounds/fr_CA_f_June",
                         ".g722", _TEXT_FR.licence, _CC_SA), _TEXT_FR, "fr_CA_f_June", "fr", "fr"),
    "fr-armelle": Source(Package("asterisk-prompt-fr-armelle", "usr/share/asterisk/sounds/fr",
                                 ".gsm", "BSD-style permissive (C) 2006 Michel Gutierrez; voice "
                                 "Armelle Desjardins", "Redistribution and use"),
                         _TEXT_FR, "fr_f_Armelle", "fr", "fr"),
    "ru": Source(Package("asterisk-core-sounds-ru-g722", "usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU",
                         ".g722", _TEXT_RU.licence, "CC-BY-3.0"), _TEXT_RU, "ru_RU_f_IvrvoiceRU",
                 "ru", "ru"),
}
"""Speech sources by key. ``fr-armelle`` has no transcripts of its own: it borrows the Canadian
French ones by prompt name (to be checked against the audio, see ``eval/prompts.py``)."""
MUSIC = Package("asterisk-moh-opsound-g722", "usr/share/asterisk/moh", ".g722",
                "CC-BY-SA-3.0 (Macroform, Manolo Camp, Reno Project)",
                "Creative Commons Attribution-ShareAlike")
"""Music on hold (~17 min): half calibration background, half test negatives."""


# ----------------------------------------------------------------------------- text


def strip_annotations(text: str) -> str:
    """``text`` without bracketed or parenthesised annotations (``at [@]`` → ``at``)."""
    return " ".join(_ANNOTATION.sub(" ", text).split())


def words_of(text: str) -> list[str]:
    """Normalised words of a transcript (see the module docstring).

    >>> words_of("Press 1, then l'appel [beep]!")
    ['press', '1', 'then', 'l', 'appel']
    """
    return [m.group() for m in word_matches(text)]


def word_matches(text: str) -> list[re.Match]:
    """The words of ``strip_annotations(nfc(text)).lower()`` as regex matches (their ``start()``
    and ``end()`` index that string, see :func:`speech_text`)."""
    return list(_WORD.finditer(speech_text(text).lower()))


def speech_text(text: str) -> str:
    """The spoken part of a transcript: NFC, annotations removed, otherwise as written (what
    eSpeak is given; lower-casing it keeps the indices of :func:`word_matches`)."""
    return strip_annotations(unicodedata.normalize("NFC", text))


def parse_transcripts(text: str) -> dict[str, str]:
    """Prompt name → transcript from a ``core-sounds-<lang>.txt`` file's text.

    Lines are ``name: transcript``; blank lines and ``;`` comments are skipped, as are lines
    without ``": "`` (none in the packages read). Surrounding quotes and spaces are removed.
    """
    transcripts = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(";") or ":" not in line:
            continue
        name, _, transcript = line.partition(":")
        name, transcript = name.strip(), transcript.strip().strip('"').strip()
        if name and " " not in name:
            transcripts[name] = transcript
    return transcripts


# ----------------------------------------------------------------------------- packages


def _run(command: list[str], what: str, cwd: Path | None = None) -> bytes:
    """Run a command; its failure is a :class:`SourceError` naming ``what``."""
    if shutil.which(command[0]) is None:
        raise SourceError(f"{command[0]} is not installed (needed to {what})")
    result = subprocess.run(command, cwd=cwd, capture_output=True)
    if result.returncode != 0:
        last = (result.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        raise SourceError(f"cannot {what}: {last}")
    return result.stdout


def require_ffmpeg() -> None:
    """Refuse up front, in one line saying how to install it, when ffmpeg (which decodes every
    prompt) is missing: before any package is downloaded."""
    if shutil.which("ffmpeg") is None:
        raise SourceError("ffmpeg is not installed, and it decodes the Debian prompts: "
                          "apt-get install ffmpeg (as root; prefix sudo otherwise), then run again")


def deb_file(package: str, cache: Path) -> Path:
    """The package's ``.deb`` in ``cache``, downloaded with ``apt-get download`` if missing."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{package}_*.deb"))
    if not found:
        _run(["apt-get", "download", package], f"download {package} (try apt-get update)", cache)
        found = sorted(cache.glob(f"{package}_*.deb"))
    if not found:
        raise SourceError(f"apt-get download {package} left no {package}_*.deb in {cache}")
    return found[-1]


def unpacked(package: str, cache: Path) -> Path:
    """Root of the package's files, unpacked under ``cache/unpacked/<package>``."""
    root = cache / "unpacked" / package
    if not (root / "usr").is_dir():
        deb = deb_file(package, cache)
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(partial)], f"unpack {deb}")
        shutil.rmtree(root, ignore_errors=True)
        partial.rename(root)
    return root


def package_version(package: str, cache: Path) -> str:
    """The ``Version`` field of the downloaded package."""
    return _run(["dpkg-deb", "-f", str(deb_file(package, cache)), "Version"],
                f"read the version of {package}").decode().strip()


def licence_of(package: Package, cache: Path) -> str:
    """The package's licence after checking its marker in ``/usr/share/doc/<pkg>/copyright``."""
    path = unpacked(package.name, cache) / "usr/share/doc" / package.name / "copyright"
    if not path.is_file():
        raise SourceError(f"{path} is missing")
    if package.licence_marker not in path.read_text(errors="replace"):
        raise SourceError(f"{path} does not mention {package.licence_marker!r}; licence unknown")
    return package.licence


def source_record(package: Package, cache: Path) -> dict:
    """``{"package", "version", "licence"}`` for a corpus manifest."""
    return {"package": package.name, "version": package_version(package.name, cache),
            "licence": licence_of(package, cache)}


def read_transcripts(package: Package, cache: Path) -> dict[str, str]:
    """Prompt name → transcript from the package's ``core-sounds-*.txt.gz``."""
    found = sorted(unpacked(package.name, cache).rglob("core-sounds-*.txt.gz"))
    if not found:
        raise SourceError(f"{package.name} holds no core-sounds-*.txt.gz transcript file")
    with gzip.open(found[0], "rt", encoding="utf-8") as handle:
        return parse_transcripts(handle.read())


def decode(path: Path, extension: str) -> np.ndarray:
    """16 kHz mono float32 samples of an audio file, decoded by ffmpeg (raw ``.g722`` needs its
    format named)."""
    forced = ["-f", "g722"] if extension == ".g722" else []
    raw = _run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *forced, "-i",
                str(path), "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"],
               f"decode {path}")
    audio = np.frombuffer(raw, dtype=np.float32)
    if audio.size == 0:
        raise SourceError(f"{path} decodes to no audio")
    return audio


def decoded_files(package: Package, cache: Path) -> dict[str, Path]:
    """Name (relative path without extension, ``/`` separated) → cached ``.npy`` of every audio
    file of the package (decoded on first use)."""
    root = unpacked(package.name, cache) / package.folder
    out_root = cache / "decoded" / package.name
    files = {}
    for path in sorted(root.rglob(f"*{package.extension}")):
        name = path.relative_to(root).with_suffix("").as_posix()
        if name.split("/")[0] in SKIPPED_FOLDERS or not path.is_file():
            continue
        if path.stat().st_size == 0:  # the ru package ships one empty file (is.g722)
            _LOG.warning("%s: %s is empty; skipped", package.name, name)
            continue
        target = out_root / f"{name}.npy"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial.npy")
            np.save(partial, decode(path, package.extension))
            partial.rename(target)
        files[name] = target
    if not files:
        raise SourceError(f"{package.name} has no {package.extension} files under {package.folder}")
    return files


def prompts(source: Source, cache: Path = DEFAULT_CACHE) -> list[Prompt]:
    """Every prompt of a speech source, sorted by name (transcript ``None`` when the transcript
    file has no line for it)."""
    texts = read_transcripts(source.transcripts, cache) if source.transcripts else {}
    return [Prompt(name, path, texts.get(name), source.speaker)
            for name, path in decoded_files(source.audio, cache).items()]


def music_tracks(cache: Path = DEFAULT_CACHE) -> dict[str, Path]:
    """Track name → decoded ``.npy`` of the music-on-hold package, sorted by name."""
    return decoded_files(MUSIC, cache)


def source_records(source: Source, cache: Path = DEFAULT_CACHE) -> list[dict]:
    """Manifest records of a speech source's packages (audio, then transcripts)."""
    packages = [source.audio] + ([source.transcripts] if source.transcripts else [])
    return [source_record(p, cache) for p in packages]
