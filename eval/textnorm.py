"""Text for the benchmark: the one word normalisation used to match words, and clean Spanish
sentences from Debian's ``fortunes-es``.

Matching rule (used by the corpus readers, the synthetic corpus, the protocol and the scenes):
:func:`normalize_text` — Unicode NFC, lower case, every character that is neither a letter nor a
digit (punctuation, ``¿`` ``¡``, quotes, dashes, apostrophes) becomes a word break, accents kept.
With ``fold_accents=True`` acute accents and diaeresis are removed too (``canción`` → ``cancion``,
``pingüino`` → ``pinguino``) for transcripts written without them; ``ñ`` is kept, because it is a
letter of its own in Spanish (``año`` and ``ano`` are different words).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path

from kwsstream.errors import UsageError

FORTUNES_DIR = Path("/usr/share/games/fortunes/es")
"""Where Debian's ``fortunes-es`` puts its Spanish fortunes (the offensive ones, under ``off/``,
are not used)."""
FORTUNE_SUFFIX = ".fortunes"
MIN_SENTENCE_WORDS = 4
MAX_SENTENCE_WORDS = 20
_KEEP_AFTER_FOLD = {"n\u0303": "ñ", "N\u0303": "Ñ"}
_ALLOWED_SENTENCE = re.compile(r"[A-Za-zÁÉÍÓÚÜÑáéíóúüñ ,;:.¿?¡!]+")
"""Characters a usable sentence may hold: no digits (spoken as several words), no quotes,
parentheses, dashes or foreign letters, so eSpeak's words are exactly the written words."""
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_ATTRIBUTION = re.compile(r"^\s*--")
_ACRONYM = re.compile(r"\b[A-ZÁÉÍÓÚÑ]{2,}\b")


def normalize_text(text: str, *, fold_accents: bool = False) -> str:
    """Words of ``text`` in matching form, separated by single spaces (see the module docstring).

    >>> normalize_text("¿Dónde está la BIBLIOTECA, señor?")
    'dónde está la biblioteca señor'
    >>> normalize_text("¡Qué canción!", fold_accents=True)
    'que cancion'
    """
    text = unicodedata.normalize("NFC", text).lower()
    if fold_accents:
        decomposed = unicodedata.normalize("NFD", text)
        for combined, letter in _KEEP_AFTER_FOLD.items():
            decomposed = decomposed.replace(combined, letter)
        text = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
        text = unicodedata.normalize("NFC", text)
    cleaned = "".join(c if (c.isalnum() and unicodedata.category(c)[0] in "LN") else " "
                      for c in text)
    return " ".join(cleaned.split())


def normalize_word(word: str, *, fold_accents: bool = False) -> str:
    """One written token in matching form (``"¿Dónde"`` → ``"dónde"``); same rule as
    :func:`normalize_text` (a token with an inner apostrophe or hyphen stays one string, its
    parts joined by a space)."""
    return normalize_text(word, fold_accents=fold_accents)


def fortune_sentences(folder: Path | str = FORTUNES_DIR, *, min_words: int = MIN_SENTENCE_WORDS,
                      max_words: int = MAX_SENTENCE_WORDS) -> list[str]:
    """Unique, speakable Spanish sentences of ``min_words``-``max_words`` words from the fortune
    files in ``folder`` (files ``*.fortunes``, sorted by name; the order is deterministic).

    Each fortune is split into sentences; attribution lines (``-- Author``) are dropped; sentences
    with digits, acronyms, ellipses, a lower-case start, quotes, brackets or other symbols are
    left out, so that every written word is one spoken word. Duplicates (same normalised words)
    are kept once.
    """
    folder = Path(folder)
    files = sorted(folder.glob(f"*{FORTUNE_SUFFIX}"))
    if not files:
        raise UsageError(f"no {FORTUNE_SUFFIX} files in {folder}; install Debian's fortunes-es")
    if min_words < 1 or max_words < min_words:
        raise UsageError(f"bad sentence length range {min_words}-{max_words}")
    seen: set[str] = set()
    sentences = []
    for path in files:
        for fortune in path.read_text(encoding="utf-8", errors="replace").split("\n%"):
            for sentence in _split_fortune(fortune):
                key = normalize_text(sentence)
                if min_words <= len(key.split()) <= max_words and key not in seen:
                    seen.add(key)
                    sentences.append(sentence)
    return sentences


def _split_fortune(fortune: str) -> list[str]:
    """Clean sentences of one fortune (attribution dropped, lines joined)."""
    lines = [line for line in fortune.splitlines()
             if line.strip() and line.strip() != "%" and not _ATTRIBUTION.match(line)]
    text = " ".join(" ".join(lines).split())
    result = []
    for sentence in _SENTENCE_END.split(text):
        sentence = re.sub(r"\s+([,;:.?!])", r"\1", sentence.strip())
        if not sentence or not _ALLOWED_SENTENCE.fullmatch(sentence):
            continue
        if _ACRONYM.search(sentence) or not _balanced(sentence):
            continue
        if not sentence.lstrip("¿¡")[:1].isupper() or ".." in sentence:  # fragment, signature
            continue
        if sentence[-1] not in ".?!":
            sentence += "."
        result.append(sentence)
    return result


def _balanced(sentence: str) -> bool:
    """``¿…?`` and ``¡…!`` come in pairs (a fragment of a split question is left out)."""
    return sentence.count("¿") == sentence.count("?") and sentence.count("¡") == sentence.count("!")


SPANISH_STOPWORDS = frozenset("""
de la que el en y a los del se las por un para con no una su al lo como más pero sus le ya o
este sí porque esta entre cuando muy sin sobre también me hasta hay donde quien desde todo nos
durante todos uno les ni contra otros ese eso ante ellos e esto mí antes algunos qué unos yo otro
otras otra él tanto esa estos mucho quienes nada muchos cual poco ella estar estas algunas algo
nosotros mi mis tú te ti tu tus ellas nosotras vosotros vosotras os mío mía míos mías tuyo tuya
tuyos tuyas suyo suya suyos suyas nuestro nuestra nuestros nuestras vuestro vuestra vuestros
vuestras esos esas estoy estás está estamos estáis están esté estés estemos estéis estén estaré
estarás estará estaremos estaréis estarán estaría estarías estaríamos estaríais estarían estaba
estabas estábamos estabais estaban estuve estuviste estuvo estuvimos estuvisteis estuvieron
estuviera estuvieras estuviéramos estuvierais estuvieran estuviese estuvieses estuviésemos
estuvieseis estuviesen estando estado estada estados estadas estad he has ha hemos habéis han
haya hayas hayamos hayáis hayan habré habrás habrá habremos habréis habrán habría habrías
habríamos habríais habrían había habías habíamos habíais habían hube hubiste hubo hubimos
hubisteis hubieron hubiera hubieras hubiéramos hubierais hubieran hubiese hubieses hubiésemos
hubieseis hubiesen habiendo habido habida habidos habidas soy eres es somos sois son sea seas
seamos seáis sean seré serás será seremos seréis serán sería serías seríamos seríais serían era
eras éramos erais eran fui fuiste fue fuimos fuisteis fueron fuera fueras fuéramos fuerais
fueran fuese fueses fuésemos fueseis fuesen sintiendo sentido sentida sentidos sentidas siente
sentid tengo tienes tiene tenemos tenéis tienen tenga tengas tengamos tengáis tengan tendré
tendrás tendrá tendremos tendréis tendrán tendría tendrías tendríamos tendríais tendrían tenía
tenías teníamos teníais tenían tuve tuviste tuvo tuvimos tuvisteis tuvieron tuviera tuvieras
tuviéramos tuvierais tuvieran tuviese tuvieses tuviésemos tuvieseis tuviesen teniendo tenido
tenida tenidos tenidas tened
""".split())
"""Spanish function words: the Snowball stop list (the one NLTK ships), in matching form."""


@functools.lru_cache(maxsize=None)
def crude_stem(word: str) -> str:
    """A crude Spanish lemma key for "one word per lemma" rules: accents folded, then a plural
    ``-es``/``-s`` and a final ``-a``/``-e``/``-o`` removed (``hombres``, ``hombre`` → ``hombr``;
    ``razones``, ``razón`` → ``razon``; ``buena``, ``buenos`` → ``buen``). Verbs are not
    conjugated back; it errs towards treating related forms as one lemma. Cached: the protocol asks
    for the same words' stems many times."""
    stem = normalize_word(word, fold_accents=True)
    if stem.endswith("es") and len(stem) > 4:
        stem = stem[:-2]
    elif stem.endswith("s") and len(stem) > 3:
        stem = stem[:-1]
    if stem[-1:] in ("a", "e", "o") and len(stem) > 3:
        stem = stem[:-1]
    return stem


NON_TARGET_WORDS = frozenset("""
siempre nunca mientras ningún ninguna ninguno nadie quién cuál cómo dónde cuándo muchas pueden
puede puedo podemos podría hacer hace hacen sino menos cada bien así pues aquí allí ahora luego
entonces todavía además aunque según tampoco demasiado bastante mismo misma mismos mismas aquel
aquella aquello aquellos cualquier alguien alguno alguna viene tiene tienen dice dijo quiere
sabe cosa cosas mejor peor gran grande tanta tantos tantas toda todas vez veces hoy ayer
""".split())
"""Function-like words not in the Snowball stop list that are never chosen as targets."""
