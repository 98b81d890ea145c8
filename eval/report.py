"""Outputs of a run in ``RESULTS_DIR`` (names and columns of the CSVs are contracts).

==========================  ==================================================================
``results.csv``             ``representation,layer,normalization,k,precision,recall``
                            (macro-averaged over keywords, see :mod:`eval.metrics`)
``anisotropy.csv``          ``encoder,layer,normalization,mean_cosine,pairs,dim1,share1,dim2,
                            share2,dim3,share3`` (see :mod:`eval.anisotropy`)
``summary.md``              how to read it (protocol, relevance, P@K, R@K in a few lines), the
                            study's tables: anisotropy per layer, P@K and R@K at each
                            representation's best layer, the query's own sentence excluded vs
                            included, the normalisations compared, P@10 and R@10 per layer,
                            which representation wins at which K (and each one's lead over
                            MFCC), the target words, the stage times
``retrieval_by_layer.png``  P@10 and R@10 per representation and normalisation: across layers
                            when a representation has several (one-layer ones as a marker and
                            a level line), else bars
``anisotropy_by_layer.png`` mean cosine of random frame pairs: across layers, or bars
==========================  ==================================================================

``results.csv`` holds one convention for the query's own sentence (the run's: excluded unless
``--include-own``); the summary shows both. Every table and plot names the encoder of each
representation. The best layer of a representation is the one with the highest P@10 without
normalisation (ties: the lower layer), as the study reports it. The plots are drawn by
:mod:`eval.reportplots`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

RESULTS_COLUMNS = ("representation", "layer", "normalization", "k", "precision", "recall")
ANISOTROPY_COLUMNS = ("encoder", "layer", "normalization", "mean_cosine", "pairs",
                      "dim1", "share1", "dim2", "share2", "dim3", "share3")
BEST_K = 10
"""The K that picks a representation's best layer and that the plots show."""
REFERENCE_NORMALIZATION = "none"
BASELINE = "mfcc"
"""The representation every other one is compared with in "which wins where"."""
PLOT_DPI = 120


STUDY = ('the study "Assessing the Impact of Anisotropy in Neural Representations of Speech: A Case Study on Keyword Spotting" (arXiv 2506.11096)')
REPRESENTATION_TEXT = {
    "word": "the query word's audio encoded alone",
    "contextual": "the query word's frames cut from its whole sentence's encoding",
    "mfcc": "MFCC-13, the query word's audio encoded alone",
    "mfcc-contextual": "MFCC-13, the query word's frames cut from its sentence's encoding",
}


@dataclass(frozen=True)
class ResultRow:
    """One line of ``results.csv`` (``encoder``: the encoder's name for tables and plots;
    ``include_own``: the convention, the query's own sentence ranked and relevant; neither is a
    column of the CSV)."""

    representation: str
    layer: int
    normalization: str
    k: int
    precision: float
    recall: float
    encoder: str = ""
    include_own: bool = False

    @property
    def label(self) -> str:
        """``word — speech-embedding``: the representation and its encoder."""
        return label(self.representation, self.encoder)


def label(representation: str, encoder: str) -> str:
    """A representation with its encoder's name, for tables and legends."""
    return f"{representation} — {encoder}" if encoder and encoder != representation else representation


@dataclass(frozen=True)
class AnisotropyRow:
    """One line of ``anisotropy.csv`` (``top``: ``(dimension, share)`` pairs, largest first)."""

    encoder: str
    layer: int
    normalization: str
    mean_cosine: float
    pairs: int
    top: tuple[tuple[int, float], ...]


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(path)


def write_results(folder: Path, rows: Sequence[ResultRow]) -> Path:
    path = folder / "results.csv"
    _write_csv(path, RESULTS_COLUMNS, [(r.representation, r.layer, r.normalization, r.k,
                                        f"{r.precision:.6f}", f"{r.recall:.6f}") for r in rows])
    return path


def write_anisotropy(folder: Path, rows: Sequence[AnisotropyRow]) -> Path:
    path = folder / "anisotropy.csv"
    lines = []
    for r in rows:
        top = [x for d, s in r.top for x in (d, f"{s:.6f}")]
        lines.append([r.encoder, r.layer, r.normalization, f"{r.mean_cosine:.6f}", r.pairs,
                      *top, *[""] * (6 - len(top))])
    _write_csv(path, ANISOTROPY_COLUMNS, lines)
    return path


def best_k(rows: Sequence[ResultRow]) -> int:
    ks = sorted({r.k for r in rows})
    return BEST_K if BEST_K in ks else max([k for k in ks if k <= BEST_K] or ks)


def best_layers(rows: Sequence[ResultRow]) -> dict[str, int]:
    """Representation -> its best layer (highest P@10 without normalisation, ties: lower)."""
    k = best_k(rows)
    best: dict[str, tuple[float, int]] = {}
    for r in rows:
        if r.k == k and r.normalization == REFERENCE_NORMALIZATION:
            key = (-r.precision, r.layer)
            if r.representation not in best or key < best[r.representation]:
                best[r.representation] = key
    return {rep: layer for rep, (_, layer) in best.items()}


def _points(lead: float) -> str:
    """A lead in points with its sign, never "-0.0" (a difference that rounds to nothing is +0.0)."""
    return f"{round(lead, 1) + 0.0:+.1f}"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(row) + " |" for row in body], ""]


def wins_markdown(rows: Sequence[ResultRow], baseline: str = BASELINE) -> list[str]:
    """The "which wins where" section: per K, the best representation by P@K and by R@K (each at
    its best layer, no normalisation) and every other representation's lead over ``baseline`` in
    points; then one line per representation: at which K its P@K is better, worse or level.
    Empty when the rows have no ``baseline`` or nothing else."""
    best = best_layers(rows)
    index = {(r.representation, r.k): r for r in rows
             if r.normalization == REFERENCE_NORMALIZATION and r.layer == best.get(r.representation)}
    reps = [rep for rep in dict.fromkeys(r.representation for r in rows) if rep != baseline]
    ks = sorted({r.k for r in rows})
    if baseline not in best or not reps:
        return []

    def lead(rep: str, k: int) -> tuple[float, float] | None:
        here, base = index.get((rep, k)), index.get((baseline, k))
        if here is None or base is None:
            return None
        return round(100 * (here.precision - base.precision), 6), round(100 * (here.recall - base.recall), 6)

    def winner(k: int, attr: str) -> str:
        cells = [(getattr(index[(rep, k)], attr), rep) for rep in [baseline, *reps] if (rep, k) in index]
        top = max(value for value, _ in cells)
        return " = ".join(rep for value, rep in cells if value == top) + f" ({top:.1%})"

    out = [f"## Which wins where (each representation at its best layer, no normalisation; "
           f"leads over {baseline} in points of P@K / R@K)", ""]
    body = []
    for k in ks:
        cells = [lead(rep, k) for rep in reps]
        body.append([str(k), winner(k, "precision"), winner(k, "recall")]
                    + [f"{_points(x[0])} / {_points(x[1])}" if x else "" for x in cells])
    out += _table(["K", "best P@K", "best R@K"] + [f"{rep} vs {baseline}" for rep in reps], body)
    for rep in reps:
        leads = {k: x[0] for k in ks if (x := lead(rep, k)) is not None}
        parts = [f"{word} at K = {', '.join(str(k) for k in leads if test(leads[k]))}"
                 for word, test in (("better", lambda d: d > 0), ("worse", lambda d: d < 0), ("level", lambda d: d == 0))
                 if any(test(d) for d in leads.values())]
        out.append(f"- {rep} (layer {best[rep]}) vs {baseline}, P@K: {'; '.join(parts)}.")
    return out + [""]


def _explain(rows: Sequence[ResultRow], context: dict) -> list[str]:
    """A few lines a newcomer reads first: the task, the protocol's sizes, relevance, P@K, R@K."""
    p = context.get("protocol")
    include_own = bool(context.get("include_own"))
    out = ["## How to read this", "",
           f"Query-by-example keyword spotting, as in {STUDY}: a **query** is one spoken example of a "
           "target word, cut from a sentence of the corpus by its word alignment. Every searched "
           "sentence gets a score for how well the query matches somewhere inside it (subsequence DTW "
           "on cosine distances between frames: the runtime's matcher), and the sentences are ranked, "
           "best first.", ""]
    if p:
        relevant = p["queries_per_target"] - (0 if include_own else 1)
        out += [f"- **Protocol**: {p['targets']} target words x {p['queries_per_target']} queries each (each "
                f"query from its own sentence), searched in {p['sentences']} sentences: the "
                f"{p['queries']} query sentences and {p['negatives']} negatives (sentences without "
                f"any target word){' (' + p['note'] + ')' if p.get('note') else ''}.",
                f"- **Relevant** to a query: a sentence whose normalised transcript contains its word, i.e. its "
                f"target's other query sentences ({relevant} per query here"
                + (", its own included)." if include_own else ")."),
                ("- **The query's own sentence** is ranked and counted relevant (the study's convention, "
                 "`--include-own`): a contextual query is cut from it, so it comes first and contextual "
                 "P@1 is 100 % by construction." if include_own else
                 "- **The query's own sentence** is left out of its ranking (default): kept and counted "
                 "relevant, as the study does (`--include-own`), it comes first by construction and "
                 "contextual P@1 is 100 % whatever the representation; both are compared below."),
                f"- **P@K** (precision): share of the K best-ranked sentences that are relevant. With {relevant} "
                f"relevant sentences a query's P@K is at most {relevant}/K when K > {relevant} "
                f"(P@10 at most {min(1.0, relevant / 10):.0%}); chance level is about "
                f"{relevant / max(p['sentences'] - (0 if include_own else 1), 1):.1%}.",
                "- **R@K** (recall): share of the query's relevant sentences among the K best.",
                "- Both are averaged over a word's queries, then over the words (every word counts the same)."]
    reps = {r.representation: r.encoder for r in rows}
    out += ["- **Representations**: " + "; ".join(
        f"`{rep}` = {enc or rep}: {REPRESENTATION_TEXT.get(rep, rep)}" for rep, enc in reps.items()) + "."]
    if context.get("mfcc_cmn"):
        out += [f"- **MFCC normalisation**: {context['mfcc_cmn']}."]
    return out + [""]


def _own_markdown(rows: Sequence[ResultRow], k: int, include_own: bool) -> list[str]:
    """P@1 and P@K with the query's own sentence excluded and included, at each representation's
    best layer (by the run's convention), no normalisation."""
    both = {(r.representation, r.layer, r.include_own, r.k): r for r in rows
            if r.normalization == REFERENCE_NORMALIZATION}
    if len({key[2] for key in both}) < 2:
        return []
    best = best_layers([r for r in rows if r.include_own == include_own])
    out = ["## The query's own sentence: excluded (default) vs included (the study's convention)", "",
           f"P@1 and P@{k} / R@{k} at each representation's best layer, no normalisation; the run's "
           f"convention, used everywhere else in this summary and in results.csv, is "
           f"**{'included' if include_own else 'excluded'}**.", ""]
    body = []
    for rep, layer in best.items():
        cells = []
        for own in (False, True):
            one, at_k = both.get((rep, layer, own, 1)), both.get((rep, layer, own, k))
            cells += [f"{one.precision:.1%}" if one else "",
                      f"{at_k.precision:.1%} / {at_k.recall:.1%}" if at_k else ""]
        enc = next((r.encoder for r in rows if r.representation == rep), "")
        body.append([f"{label(rep, enc)} (layer {layer})"] + cells)
    return out + _table(["representation", "P@1 excluded", f"P@{k} / R@{k} excluded", "P@1 included",
                         f"P@{k} / R@{k} included"], body)


def summary_markdown(rows: Sequence[ResultRow], aniso: Sequence[AnisotropyRow], context: dict) -> str:
    """The study's tables as Markdown. ``rows`` may hold both conventions for the query's own
    sentence (``include_own``); the tables use ``context["include_own"]``'s (default excluded).
    ``context``: ``encoder`` (title), ``facts``, ``protocol`` (``targets``, ``queries_per_target``,
    ``queries``, ``negatives``, ``sentences``, optional ``note``), ``include_own``, ``mfcc_cmn``,
    ``targets``, ``timings``."""
    include_own = bool(context.get("include_own"))
    all_rows = list(rows)
    rows = [r for r in all_rows if r.include_own == include_own] or all_rows
    index = {(r.representation, r.layer, r.normalization, r.k): r for r in rows}
    encoder_of = {r.representation: r.encoder for r in rows}
    reps = list(dict.fromkeys(r.representation for r in rows))
    norms = list(dict.fromkeys(r.normalization for r in rows))
    ks = sorted({r.k for r in rows})
    k = best_k(rows)
    best = best_layers(rows)
    out = [f"# Keyword retrieval benchmark — {context.get('encoder', '')}", ""]
    out += [f"- {name}: {value}" for name, value in context.get("facts", {}).items()] + [""]
    out += _explain(rows, context)
    if aniso:
        out += ["## Anisotropy per layer (no normalisation)", "",
                ("Mean cosine of random frame pairs from different recordings (0: directions spread "
                 "evenly; near 1: every frame points the same way), and the three dimensions with the "
                 "largest share of it (see eval/anisotropy.py)."), ""]
        body = [[a.encoder, str(a.layer), f"{a.mean_cosine:.3f}",
                 ", ".join(f"{d} ({s:.0%})" for d, s in a.top)]
                for a in aniso if a.normalization == REFERENCE_NORMALIZATION]
        out += _table(["encoder", "layer", "mean cos", "top dimensions (share)"], body)
    out += [f"## P@K and R@K at each representation's best layer (by P@{k}, no normalisation)", ""]
    body = []
    for rep in reps:
        cells = [index.get((rep, best[rep], REFERENCE_NORMALIZATION, kk)) for kk in ks]
        body.append([f"{label(rep, encoder_of[rep])} (layer {best[rep]})"]
                    + [f"{c.precision:.1%}" if c else "" for c in cells]
                    + [f"{c.recall:.1%}" if c else "" for c in cells])
    out += _table(["representation"] + [f"P@{kk}" for kk in ks] + [f"R@{kk}" for kk in ks], body)
    out += _own_markdown(all_rows, k, include_own)
    out += [f"## Does fixing anisotropy help? P@{k} / R@{k} per normalisation", "",
            "At the best layer without normalisation, and (in brackets) each normalisation's own best layer. "
            "center: the corpus mean frame subtracted; zscore: and each dimension divided by its "
            "standard deviation (eval/rank.py).", ""]
    body = []
    for rep in reps:
        line = [label(rep, encoder_of[rep])]
        for norm in norms:
            here = index.get((rep, best[rep], norm, k))
            own = max((r for r in rows if r.representation == rep and r.normalization == norm and r.k == k),
                      key=lambda r: (r.precision, -r.layer), default=None)
            line.append(f"{here.precision:.1%} / {here.recall:.1%} [L{own.layer}: {own.precision:.1%}]"
                        if here and own else "")
        body.append(line)
    out += _table(["representation"] + norms, body)
    layered = [rep for rep in reps if len({r.layer for r in rows if r.representation == rep}) > 1]
    if layered:
        out += [f"## P@{k} / R@{k} per layer (no normalisation)", ""]
        layers = sorted({r.layer for r in rows if r.representation in layered})
        body = [[str(layer)] + [f"{c.precision:.1%} / {c.recall:.1%}" if c else "" for c in
                                (index.get((rep, layer, REFERENCE_NORMALIZATION, k)) for rep in layered)]
                for layer in layers]
        out += _table(["layer"] + [label(rep, encoder_of[rep]) for rep in layered], body)
    out += wins_markdown(rows)
    if context.get("targets"):
        out += ["## Target words", "", ", ".join(context["targets"]), ""]
    if context.get("timings"):
        out += ["## Stage wall times", ""]
        out += _table(["stage", "seconds"], [[s, f"{v:.1f}"] for s, v in context["timings"].items()])
    return "\n".join(out)
