"""The offline benchmark (python -m eval run): metrics worked by hand, the ranking against the
runtime's own distance + S-DTW functions, the protocol's rules, anisotropy, the cache, and the
whole ``--quick`` chain on a small synthetic corpus with a tiny random wav2vec2 exported through
``python -m export --all-layers``."""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from eval.anisotropy import anisotropy, sample_pairs
from eval.metrics import precision_recall
from eval.rank import RankOptions, corpus_stats, rank_queries
from eval.representations import FeatureCache, describe_encoder, segment_frames
from kwsstream.encoders.base import FrameGrid
from kwsstream.matcher import cosine_distances
from kwsstream.sdtw import band, best_match

TINY_LAYERS = 3  # export_helpers.TINY_ALL_LAYERS: the tiny all-layers model the eval tests share


# -- metrics --------------------------------------------------------------------------------------

def test_metrics_against_a_hand_worked_ranking():
    # keyword 0: queries 0 and 1, relevant sentences {0, 1}; keyword 1: query 2, relevant {2}
    relevant = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]], bool)
    scores = np.array([[0.1, 0.5, 0.3, 0.9],    # ranking 0 2 1 3: hits 1 1 2
                       [0.4, 0.2, 0.2, 0.1],    # ranking 3 1 2 0 (tie: corpus order): hits 0 1 1
                       [0.3, 0.3, 0.3, 0.3]])   # all tied, ranking 0 1 2 3: hits 0 0 1
    result = precision_recall(scores, relevant, np.array([0, 0, 1]))
    assert result.ks == (1, 2, 3)  # K > 4 sentences is not reported
    # P@K: keyword 0 averages its two queries, then the two keywords are averaged
    np.testing.assert_allclose(result.precision, [(0.5 + 0) / 2, (0.5 + 0) / 2, (0.5 + 1 / 3) / 2])
    np.testing.assert_allclose(result.recall, [(0.25 + 0) / 2, (0.5 + 0) / 2, (0.75 + 1) / 2])


def test_metrics_leave_excluded_sentences_out_of_the_ranking():
    scores = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.1, 0.2, 0.3]])
    relevant = np.array([[1, 1, 0, 0], [1, 0, 1, 0]], bool)
    own = np.array([[1, 0, 0, 0], [1, 0, 0, 0]], bool)
    kept = precision_recall(scores, relevant, np.array([0, 0]), ks=(1, 2, 3, 4))
    assert kept.ks == (1, 2, 3, 4) and kept.at(1) == (0.5, 0.25)
    out = precision_recall(scores, relevant, np.array([0, 0]), ks=(1, 2, 3, 4), excluded=own)
    # query 0 ranks 1, 2, 3 (1 relevant); query 1 ranks 1, 2, 3 (2 relevant): P@1 = (1 + 0) / 2
    assert out.ks == (1, 2, 3) and out.at(1) == (0.5, 0.5) and out.at(2) == (0.5, 1.0)
    with pytest.raises(Exception, match="no relevant"):  # its only relevant sentence is its own
        precision_recall(scores, relevant & ~np.array([[0, 1, 0, 0], [0, 0, 1, 0]], bool), np.array([0, 0]),
                         excluded=own)


def test_metrics_refuse_queries_without_relevant_sentences():
    from kwsstream.errors import UsageError

    with pytest.raises(UsageError, match=r"queries \[1\]"):
        precision_recall(np.zeros((2, 3)), np.array([[1, 0, 0], [0, 0, 0]], bool), np.array([0, 1]))


# -- ranking --------------------------------------------------------------------------------------

def _reference(queries, q_off, sentences, s_off):
    return np.array([[best_match(cosine_distances(queries[q_off[i]:q_off[i + 1]], sentences[s_off[j]:s_off[j + 1]]),
                                 *band(int(q_off[i + 1] - q_off[i])))[0]
                      for j in range(len(s_off) - 1)] for i in range(len(q_off) - 1)])


@pytest.mark.parametrize("block_bytes", [4 * 40 * 150, 1 << 26])
def test_ranking_equals_the_runtime_distance_and_sdtw(block_bytes):
    rng = np.random.default_rng(0)
    dim = 24
    offset = rng.standard_normal(dim).astype(np.float32) * 3  # anisotropic: a large common mean
    scale = rng.uniform(0.3, 3, dim).astype(np.float32)
    s_off = np.concatenate([[0], np.cumsum(rng.integers(15, 50, 20))]).astype(np.int64)
    q_off = np.concatenate([[0], np.cumsum(rng.integers(3, 12, 6))]).astype(np.int64)
    sentences = ((rng.standard_normal((s_off[-1], dim)) + offset) * scale).astype(np.float32)
    queries = ((rng.standard_normal((q_off[-1], dim)) + offset) * scale).astype(np.float32)
    sentences[7] = 0  # an all-zero frame (digital silence): distance 1, as in the runtime
    queries[4] = 0
    context = sentences[s_off[2]:s_off[3]][5:14]  # a contextual query cut from sentence 2
    stats = corpus_stats(sentences)
    got = rank_queries([(queries, q_off), (context, np.array([0, 9]))], sentences, s_off, stats,
                       RankOptions(block_bytes=block_bytes))
    transforms = {"none": lambda x: x, "center": lambda x: x - stats.mean,
                  "zscore": lambda x: (x - stats.mean) / stats.std}
    for norm, f in transforms.items():
        np.testing.assert_allclose(got[0][norm], _reference(f(queries), q_off, f(sentences), s_off), atol=2e-5)
        np.testing.assert_allclose(got[1][norm], _reference(f(context), [0, 9], f(sentences), s_off), atol=2e-5)
        assert got[1][norm][0].argmin() == 2 and abs(got[1][norm][0, 2]) < 1e-5  # its own sentence, cost 0


# -- anisotropy, cache, segments -------------------------------------------------------------------

def test_anisotropy_finds_the_rogue_dimension():
    rng = np.random.default_rng(1)
    offsets = np.arange(0, 2001, 100)
    isotropic = rng.standard_normal((2000, 16)).astype(np.float32)
    first, second = sample_pairs(offsets, 5000, rng)
    recording = np.searchsorted(offsets, np.arange(2000), side="right") - 1
    assert not np.any(recording[first] == recording[second])
    assert abs(anisotropy(isotropic, first, second).mean_cosine) < 0.05
    rogue = isotropic.copy()
    rogue[:, 5] += 20.0  # one dimension with a large common value dominates every cosine
    result = anisotropy(rogue, first, second)
    assert result.mean_cosine > 0.9 and result.top[0][0] == 5 and result.top[0][1] > 0.9
    centred = anisotropy(rogue, first, second, corpus_stats(rogue), "center")
    assert abs(centred.mean_cosine) < 0.05


def test_cache_keeps_values_beyond_float16(tmp_path):
    info = describe_encoder("mfcc", "causal")
    cache = FeatureCache(tmp_path, info)
    small = np.full((3, info.dim), 0.5, np.float32)
    huge = np.full((2, info.dim), 1e6, np.float32)
    cache.write("a", {0: small})
    cache.write("b", {0: huge})
    assert cache.done("a") and not cache.done("c")
    assert np.load(cache.path(0, "a")).dtype == np.float16 and np.load(cache.path(0, "b")).dtype == np.float32
    frames, offsets = cache.load(0, ["a", "b"])
    assert offsets.tolist() == [0, 3, 5] and frames[3, 0] == 1e6 and frames[0, 0] == 0.5


def test_eval_mfcc_removes_each_recordings_mean(tmp_path):
    """``--mfcc-cmn utterance`` (default): the runtime's MFCC without its causal normalisation (its
    own identity, so its own cache), each item's mean removed at load; ``causal``: the runtime's."""
    causal, utterance = describe_encoder("mfcc", "causal"), describe_encoder("mfcc")
    assert utterance.key != causal.key and utterance.utterance_mean and not causal.utterance_mean
    assert utterance.open().identity["cmn_seconds"] is None and causal.open().identity["cmn_seconds"] == 1.0
    cache = FeatureCache(tmp_path, utterance)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 13)) + 3, rng.standard_normal((7, 13)) - 2
    cache.write("a", {0: a})
    cache.write("b", {0: b})
    frames, off = cache.load(0, ["a", "b"])
    np.testing.assert_allclose(frames[:5], a.astype(np.float16) - a.astype(np.float16).astype(np.float32).mean(0), atol=1e-5)
    assert np.abs(frames[5:].mean(axis=0)).max() < 1e-5
    with pytest.raises(Exception, match="mfcc-cmn"):
        describe_encoder("mfcc", "sometimes")


def test_segment_frames_follow_the_enrollment_rule():
    grid = FrameGrid(hop=320, length=400)  # wav2vec2: centres at 12.5 ms + 20 ms j
    first, stop = segment_frames(grid, 100, 0.5, 0.7)
    centres = grid.centre(np.arange(100))
    assert centres[first] >= 0.5 > centres[first - 1] and centres[stop - 1] <= 0.7 < centres[stop]
    assert segment_frames(grid, 100, 0.50, 0.505) == (grid.frame_at(0.5025), grid.frame_at(0.5025) + 1)


# -- the whole chain -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny all-layers model (tests/export_helpers.py; one file a session)."""
    if not all(importlib.util.find_spec(m) for m in ("torch", "transformers", "onnx")):
        pytest.skip("the export extra (torch, transformers, onnx) is not installed")
    from export_helpers import tiny_all_layers_model

    return tiny_all_layers_model(tmp_path_factory.getbasetemp())


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _run(corpus: Path, encoder: Path | str, out: Path, *extra: str) -> int:
    from eval.__main__ import main

    return main(["run", "--corpus", str(corpus), "--encoder", str(encoder), "--out", str(out), "--quick",
                 "--no-progress", *extra])


def _plotted_pixels(path: Path) -> float:
    """Share of the PNG's pixels that are coloured (not white, grey or black): bars, markers and
    lines in the tab10 colours; axes, text and grid are not."""
    from matplotlib.image import imread

    rgb = imread(path)[..., :3]
    return float(((rgb.max(axis=2) - rgb.min(axis=2)) > 0.2).mean())


def test_quick_chain_with_an_all_layers_model(corpus_dir, tiny_model, tmp_path):
    out = tmp_path / "results"
    assert _run(corpus_dir, tiny_model, out) == 0
    protocol = json.loads((out / "protocol.json").read_text(encoding="utf-8"))
    n_sentences = len(protocol["sentences"])
    assert len(protocol["targets"]) == 3 and len(protocol["queries"]) == 15 and n_sentences == 35
    rows = _rows(out / "results.csv")
    assert list(rows[0]) == ["representation", "layer", "normalization", "k", "precision", "recall"]
    ks = [k for k in (1, 2, 3, 5, 10, 20, 50, 100) if k <= n_sentences]
    combos = {(r["representation"], int(r["layer"]), r["normalization"]) for r in rows}
    expected = {(rep, layer, norm) for rep in ("word", "contextual") for layer in range(TINY_LAYERS + 1)
                for norm in ("none", "center", "zscore")} | {("mfcc", 0, n) for n in ("none", "center", "zscore")}
    assert combos == expected and len(rows) == len(expected) * len(ks)
    for combo in combos:
        mine = sorted((int(r["k"]), float(r["precision"]), float(r["recall"])) for r in rows
                      if (r["representation"], int(r["layer"]), r["normalization"]) == combo)
        assert [k for k, _, _ in mine] == ks
        assert all(0 <= p <= 1 and 0 <= r <= 1 for _, p, r in mine)
        assert all(a[2] <= b[2] + 1e-12 for a, b in itertools.pairwise(mine)), f"recall decreases in K for {combo}"
    aniso = _rows(out / "anisotropy.csv")
    assert len(aniso) == 3 * (TINY_LAYERS + 2) and all(-1 <= float(a["mean_cosine"]) <= 1 for a in aniso)
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "P@K and R@K" in summary and "contextual — tiny-xlsr-fp32 (layer" in summary
    assert "## How to read this" in summary and "arXiv 2506.11096" in summary and "**P@K**" in summary
    own = summary.split("## The query's own sentence")[1].split("##")[0]
    assert all(line.split(" | ")[3] == "100.0%" for line in own.splitlines() if line.startswith("| contextual"))
    assert "## Which wins where" in summary and "- word (layer" in summary and "| word vs mfcc |" in summary
    for name in ("retrieval_by_layer.png", "anisotropy_by_layer.png"):
        assert (out / name).stat().st_size > 1000
    # a rerun resumes from the cache: nothing is encoded or scored again
    cached = {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("*.npy")}
    assert _run(corpus_dir, tiny_model, out) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("*.npy")} == cached
    assert _rows(out / "results.csv") == rows


def test_quick_chain_with_mfcc(corpus_dir, tmp_path):
    """MFCC alone: its one layer is drawn (bars), and with the study's convention (--include-own)
    contextual P@1 is 100 % by construction, while the default leaves the own sentence out."""
    out = tmp_path / "mfcc"
    assert _run(corpus_dir, "mfcc", out) == 0
    rows = _rows(out / "results.csv")
    assert {r["representation"] for r in rows} == {"mfcc", "mfcc-contextual"}
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "MFCC-13 (per-utterance CMN)" in summary and "left out of its ranking" in summary
    own = tmp_path / "own"
    assert _run(corpus_dir, "mfcc", own, "--include-own") == 0
    included = _rows(own / "results.csv")
    assert all(float(r["precision"]) == 1.0 for r in included if r["representation"] == "mfcc-contextual" and r["k"] == "1")
    assert "the study's convention, --include-own" in (own / "summary.md").read_text(encoding="utf-8")
    p1 = {r["representation"]: float(r["precision"]) for r in rows if r["k"] == "1" and r["normalization"] == "none"}
    assert all(0 <= p <= 1 for p in p1.values())
    assert _plotted_pixels(out / "retrieval_by_layer.png") > 0.02  # bars, not an empty frame
    # (MFCC's anisotropy bars are about 0.004 high on the cosine's 0-1 scale: checked on the figure)


def test_summary_says_which_representation_wins_where():
    from eval.report import ResultRow, wins_markdown

    table = {"mfcc": [(1, 0.95, 0.10), (5, 0.60, 0.25), (10, 0.50, 0.50)],
             "word": [(1, 0.90, 0.10), (5, 0.70, 0.30), (10, 0.60, 0.60)],
             "contextual": [(1, 1.00, 0.10), (5, 0.60, 0.30), (10, 0.50, 0.50)]}
    rows = [ResultRow(rep, 0, "none", k, p, r) for rep, cells in table.items() for k, p, r in cells]
    rows += [ResultRow("word", 3, "none", k, p / 2, r / 2) for k, p, r in table["word"]]  # a worse layer
    rows += [ResultRow("word", 0, "zscore", k, 1.0, 1.0) for k, _, _ in table["word"]]  # not the reference
    text = "\n".join(wins_markdown(rows))
    assert "| 1 | contextual (100.0%) | mfcc = word = contextual (10.0%) | -5.0 / +0.0 | +5.0 / +0.0 |" in text
    assert "| 10 | word (60.0%) | word (60.0%) | +10.0 / +10.0 | +0.0 / +0.0 |" in text
    assert "- word (layer 0) vs mfcc, P@K: better at K = 5, 10; worse at K = 1." in text
    assert "- contextual (layer 0) vs mfcc, P@K: better at K = 1; level at K = 5, 10." in text
    assert wins_markdown([r for r in rows if r.representation != "mfcc"]) == []  # nothing to compare with


def test_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    from eval.__main__ import main

    assert main(["run", "--corpus", str(tmp_path / "missing"), "--encoder", "mfcc", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "missing") in err


def test_protocol_rules(corpus_dir):
    from eval.corpus import read_corpus
    from eval.protocol import ProtocolError, ProtocolOptions, make_protocol
    from eval.textnorm import normalize_text

    corpus = read_corpus(corpus_dir)
    options = ProtocolOptions(targets=3, queries_per_target=6, negatives=40, seed=2)
    protocol = make_protocol(corpus, options)
    assert protocol == make_protocol(corpus, options)  # seeded
    targets = set(protocol.targets)
    texts = [normalize_text(s.text) for s in protocol.sentences]
    assert len(set(texts)) == len(texts)  # distinct sentences
    for q in protocol.queries:
        words = texts[q.sentence].split()
        assert words.count(q.word) == 1 and sum(words.count(t) for t in targets) == 1 and q.end > q.start
    queried = {q.sentence for q in protocol.queries}
    assert len(queried) == len(protocol.queries) == 18
    for i, text in enumerate(texts):
        if i not in queried:
            assert not targets & set(text.split()) and len(text.split()) >= 4
    relevant = protocol.relevance()
    assert all(relevant[i, q.sentence] for i, q in enumerate(protocol.queries))
    assert (relevant.sum(axis=1) == 6).all()
    own = protocol.own_sentence()
    assert (own.sum(axis=1) == 1).all() and (relevant & ~own).sum(axis=1).tolist() == [5] * 18
    # sizes: an error names the option and the largest value that works; auto takes what fits
    with pytest.raises(ProtocolError, match=r"negative sentences .*use --negatives (\d+) \(the most") as error:
        make_protocol(corpus, ProtocolOptions(targets=3, negatives=10_000))
    most = int(re.search(r"--negatives (\d+)", str(error.value)).group(1))
    assert len(make_protocol(corpus, ProtocolOptions(targets=3, negatives=most)).sentences) == 3 * 10 + most
    with pytest.raises(ProtocolError, match=r"only (\d+) target words .*use --targets \1 .*--targets auto"):
        make_protocol(corpus, ProtocolOptions(targets=500, negatives=0))
    fitted = make_protocol(corpus, ProtocolOptions(targets=500, negatives=10_000, fit_targets=True, fit_negatives=True))
    assert 1 <= len(fitted.targets) < 500 and len(fitted.sentences) - len(fitted.queries) == most
    assert fitted.sizes().startswith(f"{len(fitted.targets)} targets x 10 queries, {most} negatives")
    with pytest.raises(ProtocolError, match=r"use --queries-per-target \d+ or lower"):
        make_protocol(corpus, ProtocolOptions(targets=3, queries_per_target=10_000, negatives=0))


def test_cli_sizes_auto(corpus_dir, tmp_path, capsys):
    """``--targets auto`` runs where the default sizes do not fit, and prints what it took."""
    from eval.__main__ import main

    base = ["run", "--corpus", str(corpus_dir), "--encoder", "mfcc", "--no-progress", "--layers", "0",
            "--normalizations", "none", "--pairs", "200"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 2
    assert "--targets auto" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "b"), "--targets", "auto"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"protocol: \d+ targets x 10 queries, \d+ negatives .*auto sizes", err), err


def test_none_distances_and_scores_are_the_runtimes_number_for_number():
    """For ``none`` (the runtime's own normalisation) the ranking forms exactly the runtime's local
    distances (``Templates.distances``) and its scores are those of the runtime's streaming
    matcher (``MatcherState``: best end score over a sentence) to float32 rounding (the two
    compiled kernels may order a sum differently on another CPU: equal bit for bit on an AVX-512
    machine, within 1e-7 on an AVX2-only one); the other normalisations are the same distances of
    transformed frames (up to rounding)."""
    from eval.rank import local_distances
    from kwsstream.matcher import MatcherState, Templates

    rng = np.random.default_rng(3)
    dim = 16
    offset = rng.standard_normal(dim).astype(np.float32) * 4  # anisotropic, like wav2vec2's frames
    queries = [(rng.standard_normal((m, dim)) + offset).astype(np.float32) for m in (4, 9, 6, 9)]
    s_off = np.concatenate([[0], np.cumsum(rng.integers(12, 40, 6))]).astype(np.int64)
    sentences = (rng.standard_normal((s_off[-1], dim)) + offset).astype(np.float32)
    sentences[5] = 0  # digital silence: distance 1 in both
    stats = corpus_stats(sentences)
    templates = Templates(queries, list(range(len(queries))))
    assert np.array_equal(local_distances("none", queries, sentences, stats), templates.distances(sentences))
    centred = Templates([q - stats.mean for q in queries], list(range(len(queries))))
    np.testing.assert_allclose(local_distances("center", queries, sentences, stats),
                               centred.distances(sentences - stats.mean), atol=1e-6)

    q_off = np.concatenate([[0], np.cumsum([len(q) for q in queries])]).astype(np.int64)
    (got,) = rank_queries([(np.concatenate(queries), q_off)], sentences, s_off, stats, RankOptions(("none",)))
    for j in range(len(s_off) - 1):
        state = MatcherState(templates, block=len(sentences))
        score, _, _ = state.push(sentences[s_off[j]:s_off[j + 1]])
        tail, _, _ = state.flush()
        best = np.concatenate([score, tail]).min(axis=0)
        want = np.empty(len(queries), np.float32)
        want[templates.order] = best
        np.testing.assert_allclose(got["none"][:, j], want, rtol=2e-6, atol=1e-7, err_msg=str(j))


# -- plots carry their data ----------------------------------------------------------------------------

def _bar_heights(ax) -> list[float]:
    from matplotlib.patches import Rectangle

    return [round(p.get_height(), 6) for p in ax.patches if isinstance(p, Rectangle)]


def test_one_layer_plots_draw_every_representation_as_bars():
    """Every encoder has one layer (MFCC, speech_embedding): each representation x normalisation is
    a bar of its value, named with its encoder; titles say what is shown."""
    from eval.report import AnisotropyRow, ResultRow
    from eval.reportplots import anisotropy_figure, retrieval_figure

    rows = [ResultRow(rep, 0, norm, k, p + (k == 10) * 0.1, p / 2, enc)
            for rep, enc, p in (("word", "speech-embedding", 0.5), ("contextual", "speech-embedding", 0.4),
                                ("mfcc", "MFCC-13 (per-utterance CMN)", 0.3))
            for norm in ("none", "zscore") for k in (1, 10)]
    fig = retrieval_figure(rows, "a title")
    precision, recall = fig.axes[:2]
    assert sorted(_bar_heights(precision)) == sorted(round(r.precision, 6) for r in rows if r.k == 10)
    assert sorted(_bar_heights(recall)) == sorted(round(r.recall, 6) for r in rows if r.k == 10)
    ticks = [t.get_text() for t in precision.get_xticklabels()]
    assert ticks == ["word\nspeech-embedding", "contextual\nspeech-embedding", "mfcc\nMFCC-13 (per-utterance CMN)"]
    assert fig._suptitle.get_text() == "a title" and precision.get_title().startswith("P@10")
    assert [t.get_text() for t in recall.get_legend().get_texts()] == ["none", "zscore"]
    aniso = [AnisotropyRow(enc, 0, norm, c, 100, ((0, 0.5),)) for enc, c in (("speech-embedding", 0.31),
                                                                              ("MFCC-13", 0.004))
             for norm in ("none", "center")]
    fig = anisotropy_figure(aniso)
    (ax,) = fig.axes
    assert sorted(_bar_heights(ax)) == sorted(round(a.mean_cosine, 6) for a in aniso)
    assert ax.get_ylim()[1] >= 1 and ax.get_title()


def test_layer_plots_draw_lines_and_one_layer_representations_as_markers(tmp_path):
    from eval.report import AnisotropyRow, ResultRow
    from eval.reportplots import anisotropy_figure, plot_retrieval, retrieval_figure

    rows = [ResultRow("word", layer, "none", 10, 0.1 * layer, 0.05 * layer, "xlsr") for layer in range(4)]
    rows += [ResultRow("mfcc", 0, "none", 10, 0.25, 0.2, "MFCC-13")]
    fig = retrieval_figure(rows)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["word — xlsr (none)"].get_ydata(), [0, 0.1, 0.2, 0.3])
    assert list(lines["word — xlsr (none)"].get_xdata()) == [0, 1, 2, 3]
    marker = lines["mfcc — MFCC-13 (none)"]
    assert list(marker.get_ydata()) == [0.25] and marker.get_marker() == "D"
    aniso = [AnisotropyRow("xlsr", layer, "none", 0.2 * layer, 10, ()) for layer in range(4)]
    aniso.append(AnisotropyRow("MFCC-13", 0, "none", 0.01, 10, ()))
    lines = {line.get_label(): line for line in anisotropy_figure(aniso).axes[0].get_lines()}
    assert list(lines["MFCC-13 (none)"].get_ydata()) == [0.01]
    # and the saved file has the data's colours in it, not only axes and text
    assert _plotted_pixels(plot_retrieval(tmp_path, rows)) > 0.001


# -- shared matrix products ------------------------------------------------------------------------

def test_shared_products_give_the_straightforward_scores_on_anisotropic_frames():
    """``none`` read from the centred products (one matrix product fewer per block) scores as the
    plain computation does: unit rows, the runtime's distance, S-DTW per pair; on wide, strongly
    anisotropic frames (mean cosine about 0.97, a rogue dimension) with silent (all-zero) frames."""
    from eval.rank import local_distances

    rng = np.random.default_rng(7)
    dim = 256
    offset = rng.standard_normal(dim).astype(np.float32) * 6
    offset[3] = 60  # a rogue dimension
    s_off = np.concatenate([[0], np.cumsum(rng.integers(20, 60, 12))]).astype(np.int64)
    q_off = np.concatenate([[0], np.cumsum(rng.integers(4, 15, 7))]).astype(np.int64)
    sentences = (rng.standard_normal((s_off[-1], dim)) + offset).astype(np.float32)
    queries = (rng.standard_normal((q_off[-1], dim)) + offset).astype(np.float32)
    sentences[[3, 40]] = 0
    queries[2] = 0
    stats = corpus_stats(sentences)
    assert anisotropy(sentences, *sample_pairs(s_off, 2000, rng)).mean_cosine > 0.9
    shared = rank_queries([(queries, q_off)], sentences, s_off, stats)[0]
    apart = rank_queries([(queries, q_off)], sentences, s_off, stats, RankOptions(share_products=False))[0]
    np.testing.assert_allclose(shared["none"], _reference(queries, q_off, sentences, s_off), atol=2e-5)
    np.testing.assert_allclose(shared["none"], apart["none"], atol=2e-5)
    for norm in ("center", "zscore"):
        assert np.array_equal(shared[norm], apart[norm]), norm  # computed the same way either way
    parts = [queries[q_off[i]:q_off[i + 1]] for i in range(len(q_off) - 1)]
    exact = local_distances("none", parts, sentences, stats)
    derived = local_distances("none", parts, sentences, stats, share=True)
    np.testing.assert_allclose(derived, exact, atol=1e-5)
    assert np.all(derived[[3, 40]] == 1) and np.all(exact[[3, 40]] == 1)  # silence: distance exactly 1
    # both are float32 roundings of the same float64 distances, the shared one no worse
    from kwsstream.matcher import TemplateLayout

    cells = queries.astype(np.float64)[TemplateLayout.from_lengths(np.diff(q_off)).cell_rows()]
    truth = 1 - unit64(sentences) @ unit64(cells).T
    assert np.abs(derived - truth).max() <= max(np.abs(exact - truth).max(), 1e-6)


def unit64(x):
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)
