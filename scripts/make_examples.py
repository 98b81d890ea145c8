"""Make the bundled demo audio in ``kwsstream/data/`` (deterministic; run from the repository root).

    python scripts/make_examples.py [--out kwsstream/data]

Writes, all 16 kHz mono FLAC:

- ``<keyword>_<n>.flac``: each of :data:`KEYWORDS` spoken alone by the three
  :data:`ENROLLMENT_VOICES` (n = 1, 2, 3), cut to the word plus :data:`CLIP_MARGIN_S` each side;
- ``stream.flac``: about half a minute of everyday sentences (:data:`STREAM_SENTENCES`) spoken by
  *other* voices (:data:`STREAM_VOICES`), each keyword inside a sentence once or twice, some
  sentences without keywords, with light pink noise at :data:`STREAM_SNR_DB`;
- ``stream.json``: the true keyword times (``truth``: a list of ``{"keyword", "start", "end"}`` in
  seconds), every sentence with its voice, and the voice of every enrollment file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.espeak import Voice  # noqa: E402
from kwsstream.encoders.base import SAMPLE_RATE  # noqa: E402
from eval.scenes import enrollment_clips, scene_record, script_scene, write_audio  # noqa: E402

KEYWORDS = ("mariposa", "computadora", "biblioteca")
"""Distinctive Spanish words of four or more syllables: across voices, MFCC separates long words
far better than short ones (measured: "naranja" and "ventana" scored like unrelated speech in
another voice, these did not)."""
ENROLLMENT_VOICES = (Voice("es", "m3", 165, 48), Voice("es-419", "f2", 185, 55),
                     Voice("es", "m7", 200, 45))
STREAM_VOICES = (Voice("es-419", "m1", 170, 50), Voice("es", "f4", 180, 52),
                 Voice("es", "m5", 160, 46))
STREAM_SENTENCES = (
    "Buenos días, hoy vamos a ordenar la casa.",
    "En el jardín había una mariposa de color azul.",
    "Después pasaré por la biblioteca a devolver dos libros.",
    "El autobús llega tarde todos los lunes.",
    "Mi computadora nueva no arranca por las mañanas.",
    "Mi hermana estudia en la biblioteca del barrio por las tardes.",
    "Los niños vieron una mariposa sobre las flores.",
    "Apaga la computadora antes de salir.",
    "Nos vemos mañana a las diez.",
)
STREAM_SNR_DB = 25.0
SEED = 20240
CLIP_MARGIN_S = 0.05


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("kwsstream/data"))
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    enrollment = []
    for keyword in KEYWORDS:
        for n, clip in enumerate(enrollment_clips(keyword, list(ENROLLMENT_VOICES)), start=1):
            (word,) = clip.words
            start = max(0, int((word.start - CLIP_MARGIN_S) * SAMPLE_RATE))
            end = min(len(clip.audio), int((word.end + CLIP_MARGIN_S) * SAMPLE_RATE))
            path = write_audio(out / f"{keyword}_{n}.flac", clip.audio[start:end], SAMPLE_RATE)
            enrollment.append({"file": path.name, "keyword": keyword,
                               "voice": clip.voice.espeak_name, "rate": clip.voice.rate,
                               "pitch": clip.voice.pitch})
    scene = script_scene(list(STREAM_SENTENCES), list(KEYWORDS), list(STREAM_VOICES),
                         noise_snr_db=STREAM_SNR_DB, seed=SEED)
    write_audio(out / "stream.flac", scene.audio, scene.sample_rate)
    record = {"file": "stream.flac", **scene_record(scene), "enrollment": enrollment,
              "made_by": "scripts/make_examples.py (eSpeak NG voices through eval.espeak)"}
    (out / "stream.json").write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n",
                                     encoding="utf-8")
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"wrote {len(enrollment)} enrollment clips and a {scene.duration:.1f} s stream with "
          f"{len(scene.truth)} keyword occurrences to {out} ({size / 1e6:.2f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
