"""The plots of a run in ``RESULTS_DIR`` (:mod:`eval.report` has the tables and the summary):
``retrieval_by_layer.png`` (P@K and R@K per representation and normalisation, across layers or
as bars) and ``anisotropy_by_layer.png`` (mean cosine of random frame pairs). matplotlib is
imported only when a figure is drawn (Agg backend).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from eval.report import PLOT_DPI, AnisotropyRow, ResultRow, best_k

STYLES = ("-", "--", ":", "-.")
HATCHES = ("", "//", "..", "xx")
SINGLE_MARKERS = {"-": "D", "--": "s", ":": "^", "-.": "v"}
"""A one-layer representation's marker, per normalisation's line style."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(ax, groups: Sequence[str], series: Sequence[str], values: dict[tuple[str, str], float],
          colours: dict[str, str], fmt: str = "%.2f") -> None:
    """Grouped bars: one group per ``groups`` item (x tick), one bar per ``series`` item
    (hatch and legend), height ``values[(group, series)]`` written on the bar."""
    import numpy as np

    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for j, name in enumerate(series):
        heights = [values.get((g, name), np.nan) for g in groups]
        bars = ax.bar(x + (j - (len(series) - 1) / 2) * width, heights, width * 0.95, label=name,
                      color=[colours[g] for g in groups], hatch=HATCHES[j % len(HATCHES)], edgecolor="black",
                      linewidth=0.5)
        ax.bar_label(bars, fmt=fmt, fontsize=7, padding=1)
        bars.set_label(name)
    ax.set_xticks(x, [g.replace(" — ", "\n") for g in groups], fontsize=8)


def _legend(ax, bars: bool, title: str) -> None:
    """Legend outside the axes; for bars, grey swatches with each series' hatch (the colours
    are the groups')."""
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    if bars:
        handles = [Patch(facecolor="lightgrey", edgecolor="black", hatch=HATCHES[j % len(HATCHES)])
                   for j in range(len(labels))]
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), title=title,
              title_fontsize=7)


def _layer_lines(ax, series: dict[str, list[tuple[int, float]]], styles: dict[str, str],
                 colours: dict[str, str], layers: Sequence[int]) -> None:
    """Lines across layers; a one-layer series is a marker at its layer and a dotted level line."""
    from matplotlib.ticker import MaxNLocator

    for name, pts in series.items():
        pts = sorted(pts)
        colour, style = colours[name], styles[name]
        if len(pts) == 1:
            (layer, value), = pts
            ax.plot([layer], [value], SINGLE_MARKERS.get(style, "D"), color=colour, markersize=7, label=name)
            ax.hlines(value, min(layers), max(layers), colors=colour, linestyles=":", linewidth=1)
        else:
            ax.plot(*zip(*pts), style, color=colour, marker="o", markersize=3, label=name)
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def retrieval_figure(rows: Sequence[ResultRow], title: str = ""):
    """The figure of ``retrieval_by_layer.png`` (matplotlib ``Figure``; see :func:`plot_retrieval`)."""
    plt = _pyplot()
    k = best_k(rows)
    reps = list(dict.fromkeys(r.label for r in rows))
    norms = list(dict.fromkeys(r.normalization for r in rows))
    colours = {rep: f"C{i}" for i, rep in enumerate(reps)}
    layers = sorted({r.layer for r in rows})
    layered = any(len({r.layer for r in rows if r.label == rep}) > 1 for rep in reps)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, metric in zip(axes, ("precision", "recall")):
        name = f"{'P' if metric == 'precision' else 'R'}@{k}"
        if layered:
            series = {f"{rep} ({norm})": [(r.layer, getattr(r, metric)) for r in rows
                                          if r.label == rep and r.normalization == norm and r.k == k]
                      for rep in reps for norm in norms}
            series = {n: pts for n, pts in series.items() if pts}
            _layer_lines(ax, series, {f"{rep} ({norm})": STYLES[j % len(STYLES)] for rep in reps
                                      for j, norm in enumerate(norms)},
                         {f"{rep} ({norm})": colours[rep] for rep in reps for norm in norms}, layers)
        else:
            values = {(r.label, r.normalization): getattr(r, metric) for r in rows if r.k == k}
            _bars(ax, reps, norms, values, colours)
            ax.set_xlabel("representation — encoder (bars: feature normalisation)")
        ax.set_ylabel(name)
        ax.set_title(f"{name} ({'precision' if metric == 'precision' else 'recall'} in the {k} best-ranked sentences)",
                     fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3, axis="y" if not layered else "both")
    _legend(axes[1], not layered, "representation (normalisation)" if layered else "normalisation")
    fig.suptitle(title or f"Keyword retrieval: P@{k} and R@{k} per representation", fontsize=11)
    fig.tight_layout()
    return fig


def anisotropy_figure(aniso: Sequence[AnisotropyRow], title: str = ""):
    """The figure of ``anisotropy_by_layer.png`` (see :func:`plot_anisotropy`)."""
    plt = _pyplot()
    encoders = list(dict.fromkeys(a.encoder for a in aniso))
    norms = list(dict.fromkeys(a.normalization for a in aniso))
    colours = {enc: f"C{i}" for i, enc in enumerate(encoders)}
    layers = sorted({a.layer for a in aniso})
    layered = any(len({a.layer for a in aniso if a.encoder == enc}) > 1 for enc in encoders)
    fig, ax = plt.subplots(figsize=(9, 5))
    if layered:
        series = {f"{enc} ({norm})": [(a.layer, a.mean_cosine) for a in aniso
                                      if a.encoder == enc and a.normalization == norm]
                  for enc in encoders for norm in norms}
        series = {n: pts for n, pts in series.items() if pts}
        _layer_lines(ax, series, {f"{enc} ({norm})": STYLES[j % len(STYLES)] for enc in encoders
                                  for j, norm in enumerate(norms)},
                     {f"{enc} ({norm})": colours[enc] for enc in encoders for norm in norms}, layers)
    else:
        _bars(ax, encoders, norms, {(a.encoder, a.normalization): a.mean_cosine for a in aniso}, colours, "%.3f")
        ax.set_xlabel("encoder (bars: feature normalisation)")
    ax.axhline(0, color="black", linewidth=0.6)
    low = min((a.mean_cosine for a in aniso), default=0.0)
    ax.set_ylim(min(-0.05, low - 0.05), 1.05)  # the cosine's own scale: 0.004 looks like 0
    ax.set_ylabel("mean cosine of random frame pairs")
    ax.grid(alpha=0.3, axis="y" if not layered else "both")
    _legend(ax, not layered, "encoder (normalisation)" if layered else "normalisation")
    ax.set_title(title or "Anisotropy: mean cosine of random frame pairs from different recordings\n"
                 "(0 = directions spread evenly, 1 = all frames point the same way)", fontsize=10)
    fig.tight_layout()
    return fig


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)
    return path


def plot_retrieval(folder: Path, rows: Sequence[ResultRow], title: str = "") -> Path:
    """``retrieval_by_layer.png``: P@10 and R@10 per representation (with its encoder's name) and
    normalisation: lines across layers when a representation has several layers (a one-layer
    representation is a marker at its layer and a dotted level line), else grouped bars."""
    return _save(retrieval_figure(rows, title), folder / "retrieval_by_layer.png")


def plot_anisotropy(folder: Path, aniso: Sequence[AnisotropyRow], title: str = "") -> Path:
    """``anisotropy_by_layer.png``: mean cosine of random pairs per encoder and normalisation,
    across layers (or bars when every encoder has one layer)."""
    return _save(anisotropy_figure(aniso, title), folder / "anisotropy_by_layer.png")
