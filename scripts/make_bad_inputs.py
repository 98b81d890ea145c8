"""Make the regression inputs for the keyword set and audio boundaries (deterministic).

    python scripts/make_bad_inputs.py [--out tests/data/bad] [--list]

Each input is one case a tester or the fuzzer (``scripts/fuzz.py``) found: a keyword set file or
an audio file that once gave a traceback, a hang, unbounded memory, or was accepted when it should
not have been. :func:`make_all` writes them and returns ``{file name: Case}``; the tests
(``tests/test_keyset_robust.py``, ``tests/test_audio_robust.py``) call it on a temporary folder,
so nothing binary is committed.

Keyword sets (``*.kws``, except ``plain.npy`` and ``make.py``) are refused by ``load_keyset``
with one line naming the file; ``Case.needle`` is a part of that line. Audio cases say what must
happen instead of a hang or a traceback (``Case.expect``).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kwsstream.encoders.mfcc import MfccEncoder  # noqa: E402

EXAMPLE = ROOT / "kwsstream" / "data" / "biblioteca_1.flac"
DIM = 13


@dataclass(frozen=True)
class Case:
    kind: str  # "keyset" or "audio"
    what: str  # the case, in words
    needle: str = ""  # part of the one-line error (keysets) or warning (audio)
    expect: str = "refused"  # audio: "refused" (enrollment), "warned" (read with one warning line)


# --- keyword sets ------------------------------------------------------------------------------

def valid_header(n_keywords: int = 2, frames_per_template: int = 6) -> dict:
    """A valid header (MFCC, 2 keywords x 2 templates) for :func:`valid_frames`."""
    return {
        "format": "kwsstream-keyset",
        "version": 1,
        "encoder": MfccEncoder().identity,
        "keywords": [
            {"name": f"word{k}", "threshold": 0.41, "threshold_source": "calibrated",
             "calibration": {"positives": [0.2, 0.25], "others_min": 0.5, "reversed_min": 0.6},
             "templates": [{"frames": frames_per_template, "source": f"word{k}_{j}.wav", "segment": [0.1, 0.5]}
                           for j in range(2)]}
            for k in range(n_keywords)
        ],
    }


def valid_frames(n_keywords: int = 2, frames_per_template: int = 6) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.standard_normal((n_keywords * 2 * frames_per_template, DIM)).astype(np.float32)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def kws_bytes(header: dict | str | bytes, frames: np.ndarray | bytes, *, compress: bool = False) -> bytes:
    """A keyword set file: ``header`` (object, JSON text or raw bytes) and ``frames`` (array or raw
    ``.npy`` bytes) as the two members of an npz."""
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode("utf-8")
    members = {"header.npy": npy_bytes(np.frombuffer(header, np.uint8)),
               "frames.npy": frames if isinstance(frames, bytes) else npy_bytes(frames)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            zf.writestr(info, data)
    return buf.getvalue()


def raw_npy(header_text: str, data: bytes = b"") -> bytes:
    """An ``.npy`` member with a hand-written (possibly corrupt) array header."""
    text = header_text.encode("latin1")
    pad = (64 - (10 + len(text) + 1) % 64) % 64
    text = text + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


def with_keyword(change) -> dict:
    header = valid_header()
    change(header["keywords"][0])
    return header


def with_template(change) -> dict:
    header = valid_header()
    change(header["keywords"][0]["templates"][0])
    return header


def with_encoder(**values) -> dict:
    header = valid_header()
    header["encoder"].update(values)
    return header


def keyset_cases() -> dict[str, tuple[bytes, Case]]:
    frames = valid_frames()
    ok = kws_bytes(valid_header(), frames)
    cases: dict[str, tuple[bytes, Case]] = {}

    def add(name: str, data: bytes, what: str, needle: str) -> None:
        cases[name] = (data, Case("keyset", what, needle))

    add("plain.npy", npy_bytes(frames), "a plain .npy, not an npz", "not a keyword set file")
    add("make.py", (ROOT / "scripts" / "make_bad_inputs.py").read_bytes()[:4000], "a Python file",
        "not a keyword set file")
    add("threshold_1e400.kws", kws_bytes(json.dumps(valid_header()).replace("0.41", "1e400", 1), frames),
        "threshold 1e400 (infinite)", "threshold")
    add("frames_infinity.kws",
        kws_bytes(json.dumps(valid_header()).replace('"frames": 6', '"frames": Infinity', 1), frames),
        "template frame count Infinity", "Infinity")
    add("nested_brackets.kws", kws_bytes("[" * 100_000 + "]" * 100_000, frames), "100,000 nested brackets",
        "nested deeper")
    compressed = bytearray(kws_bytes(valid_header(), frames, compress=True))
    compressed[len(compressed) // 3] ^= 0xFF
    add("compressed_flipped.kws", bytes(compressed), "a compressed npz with one flipped byte", "compressed")
    stored = bytearray(ok)
    stored[stored.index(b"frames.npy") + 200] ^= 0xFF  # inside the frames' data
    add("stored_flipped.kws", bytes(stored), "a stored npz with one flipped byte in the frames", "not a keyword set file")
    add("npy_header_tokens.kws",
        kws_bytes(valid_header(), raw_npy("{'descr': '<f4, 'fortran_order': False, 'shape': (24, 13), }",
                                          frames.tobytes())),
        "a corrupt array header inside the npz", "corrupt header of array 'frames'")
    add("npy_header_1tb.kws",
        kws_bytes(valid_header(), raw_npy(f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({2**40 // 52}, 13), }}",
                                          frames.tobytes())),
        "an array header claiming 1 TB", "over the limit")
    add("npy_object.kws",
        kws_bytes(valid_header(), raw_npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\x80\x04N.")),
        "an object (pickled) array", "not a keyword set file")
    add("n_mfcc_abc.kws", kws_bytes(with_encoder(n_mfcc="abc"), frames), 'encoder n_mfcc "abc"', "n_mfcc")
    add("fmax_null.kws", kws_bytes(with_encoder(fmax=None), frames), "encoder fmax null", "band edges")
    add("n_mels_1e9.kws", kws_bytes(with_encoder(n_mels=10**9), frames), "encoder n_mels 1e9", "n_mels")
    add("window_512.kws", kws_bytes(with_encoder(window=512), frames), "MFCC window 512", "window")
    onnx = valid_header()
    onnx["encoder"] = {"kind": "onnx", "path": 5, "sha256": "0" * 64, "layer": 0, "dim": DIM}
    add("onnx_path_5.kws", kws_bytes(onnx, frames), 'kind "onnx", path 5', "path")
    onnx_sha = valid_header()
    onnx_sha["encoder"] = {"kind": "onnx", "path": "m.onnx", "sha256": "xyz", "layer": 0, "dim": DIM}
    add("onnx_sha.kws", kws_bytes(onnx_sha, frames), "ONNX sha256 not hex", "sha256")
    add("kind_unknown.kws", kws_bytes(with_encoder(kind="wav2vec"), frames), "an unknown encoder kind", "wav2vec")
    add("frames_width_12.kws", kws_bytes(valid_header(), frames[:, :12].copy()), "frames of the wrong width",
        "12 wide")
    add("threshold_true.kws", kws_bytes(with_keyword(lambda k: k.update(threshold=True)), frames),
        "threshold true", "threshold")
    add("threshold_negative.kws", kws_bytes(with_keyword(lambda k: k.update(threshold=-5)), frames),
        "threshold -5", "threshold")
    add("threshold_3.kws", kws_bytes(with_keyword(lambda k: k.update(threshold=3.0)), frames),
        "threshold 3 (scores are in [0, 2])", "threshold")
    add("frames_73_9.kws", kws_bytes(with_template(lambda t: t.update(frames=73.9)), frames),
        "template frame count 73.9", "73.9")
    add("frames_str.kws", kws_bytes(with_template(lambda t: t.update(frames="73")), frames),
        'template frame count "73"', "'73'")
    add("frames_bool.kws", kws_bytes(with_template(lambda t: t.update(frames=True)), frames),
        "template frame count true", "True")
    one = valid_header()
    one["keywords"][0]["templates"][0]["frames"] = 1
    one["keywords"][0]["templates"][1]["frames"] = 11
    add("one_frame_template.kws", kws_bytes(one, frames), "a 1-frame template", "of 1 frames")
    zero = frames.copy()
    zero[:6] = 0
    add("zero_frames.kws", kws_bytes(valid_header(), zero), "a template of all-zero frames", "all-zero")
    add("frames_1e20.kws", kws_bytes(valid_header(), frames * np.float32(1e20)), "frames of 1e20", "at most 1e+06")
    nan = frames.copy()
    nan[3, 4] = np.nan
    add("frames_nan.kws", kws_bytes(valid_header(), nan), "a NaN frame value", "NaN")
    add("name_newline.kws", kws_bytes(with_keyword(lambda k: k.update(name="two\nlines")), frames),
        "a keyword name with a newline", "control characters")
    add("name_blanks.kws", kws_bytes(with_keyword(lambda k: k.update(name=" pad ")), frames),
        "a keyword name with surrounding blanks", "surrounding blanks")
    add("calibration_deep.kws",
        kws_bytes(with_keyword(lambda k: k.update(calibration=json.loads('{"a":' * 12 + "1" + "}" * 12))), frames),
        "a calibration object nested 12 deep", "calibration")
    add("calibration_list.kws", kws_bytes(with_keyword(lambda k: k.update(calibration=[1, 2])), frames),
        "a calibration that is not an object", "calibration")
    add("source_unknown.kws", kws_bytes(with_keyword(lambda k: k.update(threshold_source="guess")), frames),
        "an unknown threshold source", "threshold source")
    add("version_true.kws", kws_bytes({**valid_header(), "version": True}, frames), "version true", "version")
    add("segment_bad.kws", kws_bytes(with_template(lambda t: t.update(segment=[0.5, "x"])), frames),
        "a segment with a string", "segment")
    add("frames_left_over.kws", kws_bytes(valid_header(), np.concatenate([frames, frames[:3]])),
        "frames that belong to no template", "belong to no template")
    add("three_members.kws", _three_members(ok), "an npz with an extra array", "not a keyword set")
    return cases


def _three_members(ok: bytes) -> bytes:
    buf = io.BytesIO(ok)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr("extra.npy", npy_bytes(np.zeros(3, np.uint8)))
    return buf.getvalue()


def big_compressed_header(path: Path, megabytes: int = 400) -> Case:
    """A small file holding a ``megabytes`` MB header, deflated (426 KB for 400 MB)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        info = zipfile.ZipInfo("header.npy", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        size = megabytes << 20
        with zf.open(info, "w", force_zip64=True) as fh:
            fh.write(raw_npy(f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({size},), }}"))
            chunk = b" " * (1 << 20)
            for _ in range(megabytes):
                fh.write(chunk)
        info = zipfile.ZipInfo("frames.npy", date_time=(1980, 1, 1, 0, 0, 0))
        zf.writestr(info, npy_bytes(valid_frames()))
    return Case("keyset", f"a {path.stat().st_size // 1024} KB file holding a {megabytes} MB header", "compressed")


# --- audio -------------------------------------------------------------------------------------

def example_audio() -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(EXAMPLE, dtype="float32")
    assert rate == 16_000
    return audio


def audio_cases(out: Path) -> dict[str, Case]:
    import soundfile as sf

    speech = example_audio()
    cases = {}
    mp3 = out / "xing_frames.mp3"
    sf.write(mp3, speech, 16_000, format="MP3")
    data = bytearray(mp3.read_bytes())
    at = data.find(b"Xing")
    at = at if at >= 0 else data.find(b"Info")
    assert at >= 0, "libsndfile wrote no Xing/Info header"
    data[at + 9] = 0x80  # the frame count's second byte: the header now claims ~84 hours
    mp3.write_bytes(bytes(data))
    cases[mp3.name] = Case("audio", "an MP3 whose Xing header claims 84 h (one byte changed)", "truncated", "warned")

    wav = out / "cut_mid_frame.wav"
    sf.write(wav, np.stack([speech, speech], axis=1), 16_000, subtype="PCM_24")
    raw = wav.read_bytes()
    wav.write_bytes(raw[: 44 + (len(raw) - 44) // 2 + 4])  # half the keyword, the last frame cut in two
    cases[wav.name] = Case("audio", "a WAV cut mid-frame (half the keyword)", "truncated", "warned")

    square = out / "square_full_scale.wav"
    t = np.arange(16_000) / 16_000
    sf.write(square, np.sign(np.sin(2 * np.pi * 220 * t) + 1e-9).astype(np.float32), 16_000, subtype="PCM_16")
    cases[square.name] = Case("audio", "a full-scale square wave", "clipped throughout")

    tone = out / "steady_tone.wav"
    sf.write(tone, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16_000, subtype="PCM_16")
    cases[tone.name] = Case("audio", "a steady tone", "steady sound")

    silence = out / "digital_silence.wav"
    sf.write(silence, np.zeros(16_000, np.float32), 16_000, subtype="PCM_16")
    cases[silence.name] = Case("audio", "digital silence", "digital silence")

    noisy = out / "damaged_frames.mp3"
    sf.write(noisy, speech, 16_000, format="MP3")
    data = bytearray(noisy.read_bytes())
    rng = np.random.default_rng(0)
    for at in rng.integers(len(data) // 3, len(data), 6):
        data[at] = int(rng.integers(0, 256))
    noisy.write_bytes(bytes(data))
    cases[noisy.name] = Case("audio", "an MP3 with damaged frames (libmpg123 prints errors)", "decoder reported",
                             "warned")

    huge = out / "float_overflow.wav"
    loud = np.full((16_000, 2), 3e38, np.float32)
    sf.write(huge, loud, 16_000, subtype="FLOAT")
    cases[huge.name] = Case("audio", "float samples whose mix-down overflows", "infinite")
    return cases


def make_all(out: Path, *, big_megabytes: int = 400) -> dict[str, Case]:
    """Write every case into ``out``; returns ``{file name: Case}``."""
    out.mkdir(parents=True, exist_ok=True)
    cases = {}
    for name, (data, case) in keyset_cases().items():
        (out / name).write_bytes(data)
        cases[name] = case
    cases["big_header.kws"] = big_compressed_header(out / "big_header.kws", big_megabytes)
    cases.update(audio_cases(out))
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "bad")
    parser.add_argument("--big-megabytes", type=int, default=400, help="size of the deflated header case")
    parser.add_argument("--list", action="store_true", help="print each case")
    args = parser.parse_args(argv)
    cases = make_all(args.out, big_megabytes=args.big_megabytes)
    if args.list:
        for name, case in cases.items():
            print(f"{name:28} {case.kind:6} {case.what}")
    print(f"{len(cases)} inputs in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
