"""Remake the bundled calibration background in ``kwsstream/data/background/`` (deterministic).

Enrollment sets each keyword's threshold to a false-alarm rate measured on this audio
(``kwsstream/calibrate.py``), so it must be real and keyword-free, and it must never be what the
streaming benchmark reports false alarms on:

* ``speech-ru.ogg`` — Russian telephone prompts by one human speaker (Debian's
  ``asterisk-core-sounds-ru-g722``, CC BY 3.0), in a seeded order, up to :data:`SPEECH_SECONDS`;
* ``music.ogg`` — the first :data:`MUSIC_SECONDS` of the music on hold of
  ``asterisk-moh-opsound-g722`` (CC BY-SA 3.0; the benchmark's music negatives are the second
  half of the same package);
* ``noise.ogg`` — pink, white and brown noise at several levels (made here).

The English and French prompts the benchmark streams are made of are not used. Needs apt-get,
dpkg-deb and ffmpeg (the packages are fetched with ``apt-get download``). Opus at ~19 kbit/s
keeps the files small (about 3.5 MB in all).

    python scripts/make_background.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.debian_audio import DEFAULT_CACHE, SOURCES, music_tracks, prompts  # noqa: E402
from eval.scenes import _pink  # noqa: E402
from kwsstream.encoders.base import SAMPLE_RATE as RATE  # noqa: E402

OUT = ROOT / "kwsstream" / "data" / "background"
SEED = 7
SPEECH_SECONDS = 20 * 60
MUSIC_SECONDS = 5 * 60
GAP_S = (0.3, 0.8)
GAP_DBFS = -65.0
OPUS_LEVEL = 0.95  # libsndfile's compression level: ~19 kbit/s for speech
NOISES = (("pink", -35.0), ("white", -45.0), ("brown", -30.0), ("pink", -50.0))
NOISE_SECONDS = 15.0


def _level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x / np.sqrt(np.mean(x.astype(np.float64) ** 2)) * 10 ** (dbfs / 20)).astype(np.float32)


def speech(rng: np.random.Generator, cache: Path) -> np.ndarray:
    items = prompts(SOURCES["ru"], cache)
    parts, total = [], 0
    for i in rng.permutation(len(items)):
        audio = items[i].load()
        gap = _level(_pink(int(rng.uniform(*GAP_S) * RATE), rng), GAP_DBFS)
        parts += [audio, gap]
        total += len(audio) + len(gap)
        if total >= SPEECH_SECONDS * RATE:
            break
    return np.concatenate(parts)[: SPEECH_SECONDS * RATE]


def music(cache: Path) -> np.ndarray:
    tracks = [np.load(p) for p in music_tracks(cache).values()]
    return np.concatenate(tracks)[: MUSIC_SECONDS * RATE]


def noise(rng: np.random.Generator) -> np.ndarray:
    n = int(NOISE_SECONDS * RATE)
    parts = []
    for kind, dbfs in NOISES:
        if kind == "pink":
            x = _pink(n, rng)
        elif kind == "white":
            x = rng.standard_normal(n)
        else:  # brown: integrated white noise, its drift taken out by a 50 ms moving average
            x = np.cumsum(rng.standard_normal(n))
            x = x - np.convolve(x, np.ones(801) / 801, "same")
        parts.append(_level(np.asarray(x, np.float64), dbfs))
    return np.concatenate(parts)


def write(name: str, audio: np.ndarray) -> None:
    path = OUT / name
    sf.write(path, np.clip(audio, -1, 1), RATE, format="OGG", subtype="OPUS", compression_level=OPUS_LEVEL)
    print(f"{path.relative_to(ROOT)}: {len(audio) / RATE / 60:.1f} min, {path.stat().st_size / 1e6:.2f} MB")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    write("speech-ru.ogg", speech(rng, DEFAULT_CACHE))
    write("music.ogg", music(DEFAULT_CACHE))
    write("noise.ogg", noise(rng))
    return 0


if __name__ == "__main__":
    sys.exit(main())
