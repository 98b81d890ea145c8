"""The streaming benchmark's keyword sets and caches: enrollment as a user gets it, the own-voice
calibration, thresholds moved along the stored curves (:mod:`eval.stream` runs them).

Everything here is cached under the results folder by a hash of what went in (examples, encoder
identity, enrollment rules, rate map, background files), so a rerun reuses it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from eval.streamcorpus import Corpus, OwnSplit, StreamInfo

_HASHES: dict[tuple, str] = {}


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes (memoised per path, size and mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def cache_key(*parts) -> str:
    """A short hash of JSON-able parts (cache file names)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def enrolled_keyset(out: Path, corpus: Corpus, names: list[str], encoder, label: str, rate_map: str = "shipped"):
    """The corpus's keywords enrolled with ``encoder`` from their per-example segments, then
    calibrated together (the enrollment thresholds; ``rate_map`` ``none``: on the background's
    own rates, not the encoder's shipped map); cached under ``out/keysets``."""
    from kwsstream.enroll import add_examples, calibrate_keywords
    from kwsstream.keyset import load_keyset, save_keyset
    from kwsstream.ratemap import rate_map_for

    from kwsstream.calibrate import DEFAULT_FA_PER_HOUR

    chosen = rate_map_for(encoder.name) if rate_map == "shipped" else None
    examples = [(n, str(e["audio"]), file_hash(e["audio"]), e["segment"]) for n in names for e in corpus.keywords[n]]
    # the enrollment rules: the default target, the context an encoder's normalisation gets, the map
    key = cache_key(examples, encoder.identity, f"calibrate-default-{DEFAULT_FA_PER_HOUR}",
                    f"context-{encoder.context_seconds}", chosen.to_json() if chosen else None)
    path = out / "keysets" / f"{corpus.name}.{label}.{key}.kws"
    if path.exists():
        return load_keyset(path), path
    keyset = None
    for name, audio, _, segment in examples:
        keyset = add_examples(keyset, encoder, name, [audio], segment)
    keyset = calibrate_keywords(keyset, encoder, rate_map=chosen)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_keyset(keyset, path)
    return keyset, path


def own_background(out: Path, corpus: Corpus, stream: StreamInfo, split: OwnSplit) -> Path:
    """The held-out prompts of ``stream`` (dry, each with the pause after it) in one FLAC under
    ``out/own`` (reused when its key matches): the own-voice calibration background."""
    from eval.scenes import write_audio
    from kwsstream.audio import MAX_SECONDS, load_audio

    key = cache_key(file_hash(stream.audio), split.segments)
    path = out / "own" / corpus.name / f"{stream.id}.heldout.{key}.flac"
    if not path.exists():
        audio = load_audio(stream.audio, max_seconds=MAX_SECONDS)
        parts = [audio[int(round(a * 16000)):int(round(b * 16000))] for a, b in split.segments]
        tmp = path.with_suffix(".part.flac")
        write_audio(tmp, np.concatenate(parts))
        tmp.replace(path)
    return path


def own_keyset(out: Path, corpus: Corpus, label: str, keyset, keyset_path: Path, encoder, backgrounds: list[Path]):
    """The enrolled templates calibrated on the own-voice background files instead of the bundled
    set (``keep_user=False``); cached under ``out/keysets``."""
    from kwsstream.calibrate import Background
    from kwsstream.enroll import calibrate_keywords
    from kwsstream.keyset import load_keyset, save_keyset

    key = cache_key(file_hash(keyset_path), [file_hash(b) for b in backgrounds], "calibrate-own")
    path = out / "keysets" / f"{corpus.name}.{label}.own.{key}.kws"
    if path.exists():
        return load_keyset(path), path
    own = calibrate_keywords(keyset, encoder, background=Background.files(backgrounds), keep_user=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_keyset(own, path)
    return own, path


def thresholds_for(keyset, names: list[str], fa_per_hour: float) -> np.ndarray:
    """Every keyword's threshold moved to ``fa_per_hour`` along its stored false-alarm curve
    (:func:`kwsstream.enroll.set_sensitivity`, what ``--fa-per-hour`` does; no audio)."""
    from kwsstream.enroll import set_sensitivity

    return np.array([set_sensitivity(keyset, n, fa_per_hour=fa_per_hour).get(n).threshold for n in names], np.float64)
