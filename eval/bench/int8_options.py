"""Which int8 recipe and onnxruntime settings make the XLSR-53 encoder fastest at equal fidelity.

Random weights with XLSR-53's exact architecture (``encoder_models.py``): speed does not depend on
the weights' values, and since random weights carry no quality, fidelity is measured as the
per-frame cosine of each variant's frames to the fp32 model's frames on the same audio.

For each variant (``int8_variants.py``: ``quantize_dynamic`` options, static QDQ calibrated on
speech, ``MatMulNBits``, graph preparation, session settings):

* speed at layer ``--layer``: one-shot encode of 10 s of speech, wall-clock and CPU RTF, median of
  ``--reps`` rounds; each round runs fp32, ``dyn`` (the exporter's recipe before this benchmark)
  and the variant back to back in a rotating order, so the ratios (variant / fp32, variant /
  dyn, medians of per-round ratios) hold on a shared machine; plus 1 s inputs (a streaming
  window's size) as a ratio to ``dyn``;
* fidelity: cosine to fp32 at layer ``--layer`` (mean, 1st percentile, min), and the mean cosine
  per layer of an all-layers model cut at ``--depth`` (layers 6, 12, 18, 24); the audio is eSpeak
  NG speech (static recipes are calibrated on other sentences and voices);
* file size, time to quantise; with ``--profile``, onnxruntime's profiler: time per operator type.

Usage (writes ~6 GB under --workdir, default /tmp/kwsstream-int8, while it runs; deleted at the
end unless --keep; ~40 min for all variants on a loaded 2-core machine)::

    nice -n 5 python -m eval.bench.int8_options [--reps 5] [--layer 12] [--depth 24]
        [--variants dyn-rr qdq-u8s8 ...] [--profile default dyn] [--out results/int8_options]

Writes ``int8_options.csv`` and ``int8_options.md`` (the table, the machine, the profile) to --out.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from eval.bench import machine
from eval.bench.int8_variants import BASELINE, CALIBRATION_CHUNK_S, DEFAULT, FP32, VARIANTS, Variant, make_session

SAMPLE_RATE = 16_000
ENCODE_SECONDS = 10.0
SHORT_SECONDS, SHORT_CALLS = 1.0, 5
FIDELITY_LAYERS = (6, 12, 18, 24)
CALIBRATION_CHUNKS = 4
"""Calibration batches of ``CALIBRATION_CHUNK_S`` seconds (other sentences and voices than the
evaluation's)."""
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "kwsstream-int8"
DEFAULT_OUT = Path("results/int8_options")
EVAL_TEXTS = ("el perro de mi vecino ladra todas las noches cuando llueve",
              "mañana iremos al mercado a comprar naranjas y pan",
              "la biblioteca de la ciudad abre a las nueve de la mañana")
CALIBRATION_TEXTS = ("los niños juegan en el parque después de la escuela",
                     "mi abuela prepara una sopa de verduras los domingos")


def speech(texts: tuple[str, ...], seconds: float, seed: int) -> np.ndarray:
    """``seconds`` of eSpeak NG Spanish (voices vary with ``seed``), or the exporter's speech-like
    test signal where libespeak-ng is missing."""
    try:
        from eval.espeak import Voice, synthesize_many

        voices = [Voice("es"), Voice("es-419"), Voice("es", rate=150), Voice("es-419", pitch=70)]
        items = [(text, voices[(i + seed) % len(voices)]) for i, text in enumerate(texts)]
        audio = np.concatenate([u.audio for u in synthesize_many(items)])
    except Exception:  # no libespeak-ng here: any speech-like signal ranks the variants
        from export.verify import verification_audio

        audio = verification_audio(seconds, seed=seed)
    reps = int(np.ceil(seconds * SAMPLE_RATE / len(audio)))
    return np.tile(audio, reps)[: int(seconds * SAMPLE_RATE)].astype(np.float32)


def cosine_stats(got: np.ndarray, want: np.ndarray) -> dict:
    """Per-frame cosine of two ``(frames, dim)`` arrays: mean, 1st percentile, min."""
    cos = (got * want).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1), 1e-30)
    return {"mean": float(cos.mean()), "p1": float(np.percentile(cos, 1)), "min": float(cos.min())}


def build_models(checkpoint: str, workdir: Path, layer: int, depth: int) -> dict[str, Path]:
    """fp32 exports: ``L<layer>`` (speed) and ``all<depth>`` (layers 0..depth, fidelity)."""
    from export.wav2vec2 import export_graph, load_model

    paths = {"speed": workdir / f"L{layer}-fp32.onnx", "layers": workdir / f"all{depth}-fp32.onnx"}
    model = None
    for key, layers in (("speed", [layer]), ("layers", list(range(depth + 1)))):
        if not paths[key].is_file():
            model = model or load_model(checkpoint)
            print(f"exporting {paths[key].name} ...", file=sys.stderr, flush=True)
            export_graph(model, paths[key], layers, checkpoint)
    return paths


def quantized(variant: Variant, fp32: Path, calib: list[np.ndarray]) -> tuple[Path, float]:
    """The variant's file made from ``fp32`` (reused when there), and the seconds it took."""
    if variant.name == FP32.name:
        return fp32, 0.0
    out = fp32.with_name(fp32.name.replace("fp32", variant.file_key))
    start = time.perf_counter()
    if not out.is_file():
        by_name = {v.name: v for v in (DEFAULT, *VARIANTS)}
        by_name[variant.file_key].build(fp32, out, calib)
    return out, time.perf_counter() - start


def run_once(session, audio: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Wall and process CPU seconds of one run, and its first output's first batch item."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = session.run(None, {"audio": audio[None]})[0][0]
    return time.perf_counter() - wall, time.process_time() - cpu, out


def measure_speed(sessions: dict[str, object], audio: np.ndarray, reps: int) -> tuple[dict[str, dict], dict]:
    """Interleaved rounds over ``sessions``; per name: medians of wall/CPU seconds, of 1 s-call
    seconds, and of per-round ratios to ``fp32`` and ``dyn``; plus the output of the last round."""
    names = list(sessions)
    short = audio[: int(SHORT_SECONDS * SAMPLE_RATE)]
    for name in names:  # warm-up: first-run allocations, pre-packing
        run_once(sessions[name], audio)
        run_once(sessions[name], short)
    rounds: dict[str, list[dict]] = {name: [] for name in names}
    outputs = {}
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            wall, cpu, outputs[name] = run_once(sessions[name], audio)
            short_wall = sum(run_once(sessions[name], short)[0] for _ in range(SHORT_CALLS))
            rounds[name].append({"wall": wall, "cpu": cpu, "short": short_wall})
    result = {}
    for name in names:
        rows = rounds[name]
        result[name] = {
            "wall": float(np.median([r["wall"] for r in rows])), "cpu": float(np.median([r["cpu"] for r in rows])),
            "vs_fp32": float(np.median([f["wall"] / r["wall"] for r, f in zip(rows, rounds[FP32.name])])),
            "vs_dyn": float(np.median([d["wall"] / r["wall"] for r, d in zip(rows, rounds[BASELINE.name])])),
            "short_vs_dyn": float(np.median([d["short"] / r["short"] for r, d in zip(rows, rounds[BASELINE.name])])),
        }
    return result, outputs


def layer_outputs(session, audio: np.ndarray) -> dict[int, np.ndarray]:
    """``layer_<L>`` outputs of an all-layers model, by layer."""
    names = [o.name for o in session.get_outputs() if o.name.startswith("layer_")]
    values = session.run(names, {"audio": audio[None]})
    return {int(name.split("_")[1]): value[0] for name, value in zip(names, values)}


def profile(path: Path, variant: Variant, threads: int, audio: np.ndarray, prefix: Path,
            top: int = 12) -> list[tuple[str, float, float]]:
    """(operator type, ms, share) of one profiled encode of ``audio`` (after a warm-up run),
    largest first."""
    session = make_session(path, variant, threads, profile_prefix=prefix)
    for _ in range(2):
        session.run(None, {"audio": audio[None]})
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    last = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][-1]
    totals: collections.Counter = collections.Counter()
    for e in events:
        if (e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
                and last["ts"] <= e["ts"] <= last["ts"] + last["dur"]):
            totals[e["args"]["op_name"]] += e["dur"]
    whole = sum(totals.values()) or 1
    return [(op, us / 1000, us / whole) for op, us in totals.most_common(top)]


def row_for(variant: Variant, speed: dict, l_cos: dict, layer_cos: dict[int, float], size: float, built: float) -> dict:
    """One CSV row: speed (RTF over the 10 s input; ratios), fidelity, size, quantising time."""
    return {"variant": variant.name, "about": variant.about, "size_mb": round(size, 1),
            "encode_rtf": speed["wall"] / ENCODE_SECONDS, "cpu_rtf": speed["cpu"] / ENCODE_SECONDS,
            "x_fp32": speed["vs_fp32"], "x_dyn": speed["vs_dyn"], "short_x_dyn": speed["short_vs_dyn"],
            "cos_mean": l_cos["mean"], "cos_p1": l_cos["p1"], "cos_min": l_cos["min"],
            **{f"cos_L{k}": v for k, v in layer_cos.items()}, "quantise_s": round(built, 1)}


def markdown(rows: list[dict], layer: int) -> str:
    """The rows as a Markdown table (ready for models/README.md)."""
    layers = [k for k in rows[0] if k.startswith("cos_L")]
    head = (f"| variant | size MB | encode wall RTF | CPU RTF | x fp32 | x dyn | 1 s calls x dyn "
            f"| cos L{layer} mean | 1st pct | min | " + " | ".join(f"mean {k[4:]}" for k in layers) + " | what |")
    lines = [head, "|" + "---|" * (11 + len(layers))]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['size_mb']:.0f} | {r['encode_rtf']:.3f} | {r['cpu_rtf']:.3f} "
                     f"| {r['x_fp32']:.2f} | {r['x_dyn']:.2f} | {r['short_x_dyn']:.2f} | {r['cos_mean']:.5f} "
                     f"| {r['cos_p1']:.5f} | {r['cos_min']:.5f} | "
                     + " | ".join(f"{r[k]:.5f}" for k in layers) + f" | {r['about']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.int8_options", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="wav2vec2 folder or hub id (default: random XLSR-53 weights)")
    parser.add_argument("--layer", type=int, default=12)
    parser.add_argument("--depth", type=int, default=24, help="all-layers model for per-layer fidelity")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", help=f"names (default: all): {' '.join(v.name for v in VARIANTS)}")
    parser.add_argument("--profile", nargs="*", default=None, help="variants to profile (no names: fp32 default dyn)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep", action="store_true", help="keep the models under --workdir")
    args = parser.parse_args(argv)
    known = {v.name: v for v in (FP32, DEFAULT, *VARIANTS)}
    unknown = sorted(set(args.variants or []) - set(known))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(known)}")
    chosen = [DEFAULT] + [v for v in VARIANTS if args.variants is None or v.name in args.variants]
    chosen = [v for i, v in enumerate(chosen) if v.name != BASELINE.name or i == 0]
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"# machine: {machine()}", file=sys.stderr, flush=True)
    try:
        rows, profiles = run(args, chosen, known)
    finally:
        if not args.keep:  # only what this script writes there
            for pattern in (f"L{args.layer}-*.onnx", f"all{args.depth}-*.onnx", "*-prepared.onnx"):
                for path in args.workdir.glob(pattern):
                    path.unlink()
            shutil.rmtree(args.workdir / "xlsr53-random", ignore_errors=True)
    text = (f"`{' '.join(['python -m eval.bench.int8_options', *(argv if argv is not None else sys.argv[1:])])}`\n\n"
            f"machine: {machine()}; {args.threads} threads; {ENCODE_SECONDS:.0f} s of eSpeak NG speech; "
            f"median of {args.reps} interleaved rounds\n\n" + markdown(rows, args.layer) + "\n")
    for name, ops in profiles.items():
        text += f"\nProfile of `{name}` (one {ENCODE_SECONDS:.0f} s encode, kernel time by operator type):\n\n"
        text += "| op | ms | share |\n|---|---|---|\n" + "".join(f"| {op} | {ms:.1f} | {share:.1%} |\n" for op, ms, share in ops)
    (args.out / "int8_options.md").write_text(text)
    with open(args.out / "int8_options.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(text)
    return 0


def run(args, chosen: list[Variant], known: dict[str, Variant]) -> tuple[list[dict], dict]:
    """Build, time, compare; returns the table's rows and the profiles."""
    from eval.bench.encoder_models import checkpoint_or_random

    checkpoint = checkpoint_or_random(args.checkpoint, args.workdir)
    fp32 = build_models(checkpoint, args.workdir, args.layer, args.depth)
    audio = speech(EVAL_TEXTS, ENCODE_SECONDS, seed=0)
    chunk = int(CALIBRATION_CHUNK_S * SAMPLE_RATE)
    calib_audio = speech(CALIBRATION_TEXTS, CALIBRATION_CHUNKS * CALIBRATION_CHUNK_S, seed=1)
    calib = [calib_audio[i:i + chunk] for i in range(0, len(calib_audio), chunk)]
    session = make_session(fp32["layers"], FP32, args.threads)
    want_layers = layer_outputs(session, audio)
    del session
    depth_layers = [k for k in FIDELITY_LAYERS if k in want_layers]
    refs = {FP32.name: make_session(fp32["speed"], FP32, args.threads),
            BASELINE.name: make_session(quantized(BASELINE, fp32["speed"], calib)[0], BASELINE, args.threads)}
    rows = []
    for variant in [FP32, BASELINE, *[v for v in chosen if v.name != BASELINE.name]]:
        try:
            path, built = quantized(variant, fp32["speed"], calib)
        except ImportError as err:  # MatMulNBitsQuantizer needs the onnx-ir package
            print(f"skipping {variant.name}: {err}", file=sys.stderr, flush=True)
            continue
        sessions = dict(refs)
        if variant.name not in sessions:
            sessions[variant.name] = make_session(path, variant, args.threads)
        load = os.getloadavg()[0]
        speed, outputs = measure_speed(sessions, audio, args.reps)
        l_cos = cosine_stats(outputs[variant.name], outputs[FP32.name])
        layers_path, layers_built = quantized(variant, fp32["layers"], calib)
        got = layer_outputs(make_session(layers_path, variant, args.threads), audio)
        layer_cos = {k: cosine_stats(got[k], want_layers[k])["mean"] for k in depth_layers}
        row = row_for(variant, speed[variant.name], l_cos, layer_cos, path.stat().st_size / 1e6, built + layers_built)
        row["load_avg"] = f"{load:.1f}-{os.getloadavg()[0]:.1f}"
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        later = chosen[chosen.index(variant) + 1:] if variant in chosen else []
        keep = {FP32.name, BASELINE.name, DEFAULT.name} | {v.file_key for v in later}
        if variant.file_key not in keep and not args.keep:  # multi-GB: free the disk as we go
            path.unlink(missing_ok=True)
            layers_path.unlink(missing_ok=True)
    profiles = {}
    if args.profile is not None:
        for name in args.profile or [FP32.name, DEFAULT.name, BASELINE.name]:
            variant = known[name]
            path, _ = quantized(variant, fp32["speed"], calib)
            profiles[name] = profile(path, variant, args.threads, audio, args.workdir / "profile")
    return rows, profiles


if __name__ == "__main__":
    raise SystemExit(main())
