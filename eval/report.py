"""Outputs of a run in ``RESULTS_DIR`` (names and columns of the CSVs are contracts).

==========================  ==================================================================
``results.csv``             ``representation,layer,normalization,k,precision,recall``
                            (macro-averaged over keywords, see :mod:`eval.metrics`)
``anisotropy.csv``          ``encoder,layer,normalization,mean_cosine,pairs,dim1,share1,dim2,
                            share2,dim3,share3`` (see :mod:`eval.anisotropy`)
``summary.md``              the study's tables: anisotropy per layer, P@K and R@K at each
                            representation's best layer, the normalisations compared, P@10 and
                            R@10 per layer, which representation wins at which K (and each one's
                            lead over MFCC), the target words, the stage times
``retrieval_by_layer.png``  P@10 and R@10 across layers, per representation and normalisation
``anisotropy_by_layer.png`` mean cosine of random frame pairs across layers
==========================  ==================================================================

The best layer of a representation is the one with the highest P@10 without normalisation
(ties: the lower layer), as the study reports it.
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


@dataclass(frozen=True)
class ResultRow:
    """One line of ``results.csv``."""

    representation: str
    layer: int
    normalization: str
    k: int
    precision: float
    recall: float


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


def _best_k(rows: Sequence[ResultRow]) -> int:
    ks = sorted({r.k for r in rows})
    return BEST_K if BEST_K in ks else max([k for k in ks if k <= BEST_K] or ks)


def best_layers(rows: Sequence[ResultRow]) -> dict[str, int]:
    """Representation -> its best layer (highest P@10 without normalisation, ties: lower)."""
    k = _best_k(rows)
    best: dict[str, tuple[float, int]] = {}
    for r in rows:
        if r.k == k and r.normalization == REFERENCE_NORMALIZATION:
            key = (-r.precision, r.layer)
            if r.representation not in best or key < best[r.representation]:
                best[r.representation] = key
    return {rep: layer for rep, (_, layer) in best.items()}


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
                    + [f"{x[0]:+.1f} / {x[1]:+.1f}" if x else "" for x in cells])
    out += _table(["K", "best P@K", "best R@K"] + [f"{rep} vs {baseline}" for rep in reps], body)
    for rep in reps:
        leads = {k: x[0] for k in ks if (x := lead(rep, k)) is not None}
        parts = [f"{word} at K = {', '.join(str(k) for k in leads if test(leads[k]))}"
                 for word, test in (("better", lambda d: d > 0), ("worse", lambda d: d < 0), ("level", lambda d: d == 0))
                 if any(test(d) for d in leads.values())]
        out.append(f"- {rep} (layer {best[rep]}) vs {baseline}, P@K: {'; '.join(parts)}.")
    return out + [""]


def summary_markdown(rows: Sequence[ResultRow], aniso: Sequence[AnisotropyRow], context: dict) -> str:
    """The study's tables as Markdown (``context``: title facts, targets, timings)."""
    index = {(r.representation, r.layer, r.normalization, r.k): r for r in rows}
    reps = list(dict.fromkeys(r.representation for r in rows))
    norms = list(dict.fromkeys(r.normalization for r in rows))
    ks = sorted({r.k for r in rows})
    k = _best_k(rows)
    best = best_layers(rows)
    out = [f"# Keyword retrieval benchmark — {context.get('encoder', '')}", ""]
    out += [f"- {name}: {value}" for name, value in context.get("facts", {}).items()] + [""]
    if aniso:
        out += ["## Anisotropy per layer (no normalisation)", "",
                ("Mean cosine of random frame pairs from different recordings, and the three "
                 "dimensions with the largest share of it (see eval/anisotropy.py)."), ""]
        body = [[a.encoder, str(a.layer), f"{a.mean_cosine:.3f}",
                 ", ".join(f"{d} ({s:.0%})" for d, s in a.top)]
                for a in aniso if a.normalization == REFERENCE_NORMALIZATION]
        out += _table(["encoder", "layer", "mean cos", "top dimensions (share)"], body)
    out += [f"## P@K and R@K at each representation's best layer (by P@{k}, no normalisation)", ""]
    body = []
    for rep in reps:
        cells = [index.get((rep, best[rep], REFERENCE_NORMALIZATION, kk)) for kk in ks]
        body.append([f"{rep} (layer {best[rep]})"] + [f"{c.precision:.1%}" if c else "" for c in cells]
                    + [f"{c.recall:.1%}" if c else "" for c in cells])
    out += _table(["representation"] + [f"P@{kk}" for kk in ks] + [f"R@{kk}" for kk in ks], body)
    out += [f"## Does fixing anisotropy help? P@{k} / R@{k} per normalisation", "",
            "At the best layer without normalisation, and (in brackets) each normalisation's own best layer.", ""]
    body = []
    for rep in reps:
        line = [rep]
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
        out += _table(["layer"] + layered, body)
    out += wins_markdown(rows)
    if context.get("targets"):
        out += ["## Target words", "", ", ".join(context["targets"]), ""]
    if context.get("timings"):
        out += ["## Stage wall times", ""]
        out += _table(["stage", "seconds"], [[s, f"{v:.1f}"] for s, v in context["timings"].items()])
    return "\n".join(out)


def plot_retrieval(folder: Path, rows: Sequence[ResultRow]) -> Path:
    """``retrieval_by_layer.png``: P@10 and R@10 across layers (single-layer representations as
    horizontal lines), one colour per representation, one line style per normalisation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = _best_k(rows)
    reps = list(dict.fromkeys(r.representation for r in rows))
    norms = list(dict.fromkeys(r.normalization for r in rows))
    all_layers = sorted({r.layer for r in rows})
    styles = dict(zip(norms, ("-", "--", ":")))
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharex=True)
    for ax, metric in zip(axes, ("precision", "recall")):
        for c, rep in enumerate(reps):
            for norm in norms:
                pts = sorted((r.layer, getattr(r, metric)) for r in rows
                             if r.representation == rep and r.normalization == norm and r.k == k)
                if len(pts) == 1:
                    pts = [(all_layers[0], pts[0][1]), (all_layers[-1], pts[0][1])]
                ax.plot(*zip(*pts), styles.get(norm, "-"), color=f"C{c}", label=f"{rep} ({norm})",
                        marker="o" if len({r.layer for r in rows if r.representation == rep}) > 1 else None,
                        markersize=3)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"{'P' if metric == 'precision' else 'R'}@{k}")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    path = folder / "retrieval_by_layer.png"
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)
    return path


def plot_anisotropy(folder: Path, aniso: Sequence[AnisotropyRow]) -> Path:
    """``anisotropy_by_layer.png``: mean cosine of random pairs across layers, per encoder and
    normalisation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    layers = sorted({a.layer for a in aniso})
    for c, enc in enumerate(dict.fromkeys(a.encoder for a in aniso)):
        for style, norm in zip(("-", "--", ":"), dict.fromkeys(a.normalization for a in aniso)):
            pts = sorted((a.layer, a.mean_cosine) for a in aniso if a.encoder == enc and a.normalization == norm)
            single = len(pts) == 1  # a layer-less encoder (MFCC): a horizontal line
            pts = [(layers[0], pts[0][1]), (layers[-1], pts[0][1])] if single else pts
            ax.plot(*zip(*pts), style, color=f"C{c}", marker=None if single else "o", markersize=3,
                    label=f"{enc} ({norm})")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("mean cosine of random frame pairs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    path = folder / "anisotropy_by_layer.png"
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)
    return path
