"""Comparison plots of a grid report (PNG, 120 dpi), one function per plot.

Each function takes tidy DataFrames built by :mod:`benchmark.analysis.report` and an output path. Figures are
built with :class:`matplotlib.figure.Figure` and its Agg canvas, never through ``pyplot``, so plotting
changes no global backend or state and leaks no open figure. Titles are wrapped to the width they have and
every figure uses matplotlib's constrained layout, so no title, label or legend is cut at an edge.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from scipy import stats

from benchmark.metrics import METRIC_LABELS
from benchmark.schema import COLUMNS, PREDICTION_COLUMNS, TUNED_PREFIX, VAL_SRCC

DPI = 120
SIGNIFICANT, NOT_SIGNIFICANT = "#c0392b", "#7f8c8d"
UP, DOWN = "#1e8449", "#c0392b"


def head_colors(heads: list[str]) -> dict[str, tuple]:
    """A fixed colour per head label (tab10 order), so every plot colours a head the same way."""
    palette = colormaps["tab10"].colors
    return {head: palette[i % len(palette)] for i, head in enumerate(heads)}


def _cell_label(pair_key: str) -> str:
    return pair_key.replace("|", " · ").replace("->", "→")


def _common_parts(pair_keys: list[str]) -> tuple[list[str], str]:
    """Cell labels without the ``|``-separated parts every pair key shares, and those parts (for a title).

    Examples
    --------
    >>> _common_parts(["r50|livec->livec|frozen", "r50|koniq->livec|frozen"])
    (['livec→livec', 'koniq→livec'], 'r50 · frozen')
    """
    parts = [key.split("|") for key in pair_keys]
    if not parts:
        return [], ""
    width = min(len(p) for p in parts)
    shared = [i for i in range(width) if len({p[i] for p in parts}) == 1]
    if len(shared) == max(len(p) for p in parts):  # one cell: keep its full label
        shared = []
    labels = [_cell_label("|".join(v for i, v in enumerate(p) if i not in shared)) for p in parts]
    return labels, _cell_label("|".join(parts[0][i] for i in shared))


def _wrap(text: str, width_inches: float, fontsize: float) -> str:
    """``text`` with each line wrapped to fit ``width_inches`` at ``fontsize`` (DejaVu Sans: ~0.55 em a character)."""
    columns = max(20, int(width_inches * 72 / (fontsize * 0.55)))
    return "\n".join(textwrap.fill(line, columns) for line in text.split("\n"))


def _title(ax, text: str, fontsize: float = 10, **kwargs) -> None:
    """Axes title wrapped to the axes' width, at a fixed height: with the default automatic height matplotlib
    measures every tick label of the axes to dodge them (a third of the drawing time of a panel); no plot
    here has ticks above its axes."""
    width = ax.get_position().width * ax.figure.get_size_inches()[0]
    ax.set_title(_wrap(text, width, fontsize), y=1.0, fontsize=fontsize, **kwargs)


def _suptitle(fig: Figure, text: str, fontsize: float = 11) -> None:
    """Figure title wrapped to the figure's width."""
    fig.suptitle(_wrap(text, fig.get_size_inches()[0] - 0.4, fontsize), fontsize=fontsize)


def _few_ticks(ax, n_x: int | None = 5, n_y: int | None = 5, integer_x: bool = False) -> None:
    """At most about ``n`` major ticks per axis: every tick is several artists, the main drawing cost."""
    steps = [1, 2, 2.5, 5, 10]
    if n_x:
        ax.xaxis.set_major_locator(MaxNLocator(n_x, steps=steps, integer=integer_x))
    if n_y:
        ax.yaxis.set_major_locator(MaxNLocator(n_y, steps=steps))


def _grid(n: int, max_cols: int, width: float, height: float, **share: bool | str) -> tuple[Figure, list]:
    cols = min(max_cols, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **share).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _text_inches(labels: list[str], fontsize: float) -> float:
    """Rough width of the longest label (DejaVu Sans averages ~0.55 em per character)."""
    return max((len(label) for label in labels), default=0) * fontsize * 0.55 / 72


def _save(fig: Figure, path: Path) -> None:
    """Save a constrained-layout figure (the layout keeps titles, labels and outside legends on the canvas)
    with fast PNG compression (level 1: several times faster to encode, files ~1.5x larger)."""
    fig.savefig(path, dpi=DPI, pil_kwargs={"compress_level": 1})


def forest(rows: pd.DataFrame, metric: str, path: Path) -> None:
    """Mean per-split difference (head A - head B) with the 95 % CI of its test (``test`` column), one line per
    cell and pair, over the grey band of practical equivalence (± ROPE) with each comparison's Bayesian verdict.

    Parameters
    ----------
    rows : pandas.DataFrame
        ``stats.csv`` rows of one metric (columns pair_key, head_a, head_b, test, mean_delta, ci_low,
        ci_high, significant, n_splits, rope, verdict, mde80).
    metric : str
        Metric name, for the labels.
    path : Path
        Output PNG.
    """
    rows = rows.reset_index(drop=True)
    n = len(rows)
    cells, shared = _common_parts(rows[COLUMNS.pair_key].tolist())
    same_j = rows["n_splits"].nunique() == 1
    labels = [f"{cell}: {r.head_a} − {r.head_b}" + ("" if same_j else f" (J={r.n_splits})")
              + f" [{r.verdict or 'no test'}{', descriptive' if r.descriptive else ''}; MDE80 {r.mde80:.3f}]"
              for cell, r in zip(cells, rows.itertuples(), strict=True)]
    common = [shared] if shared else []
    if same_j and n:
        common.append(f"J = {rows['n_splits'].iloc[0]} splits")
    label_width = _text_inches(labels, 8) + 0.3
    fig = Figure(figsize=(6 + label_width, max(2.8, 0.3 * n + 1.6)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(n)[::-1]
    rope = float(rows["rope"].max())
    ax.axvspan(-rope, rope, color="#d5d8dc", alpha=0.6, lw=0)
    significant = rows["significant"].astype(bool).to_numpy()
    for chosen, marker, color, face in ((significant, "D", SIGNIFICANT, SIGNIFICANT),
                                        (~significant, "o", NOT_SIGNIFICANT, "white")):
        if chosen.any():
            sub = rows[chosen]
            err = [sub["mean_delta"] - sub["ci_low"], sub["ci_high"] - sub["mean_delta"]]
            ax.errorbar(sub["mean_delta"], y[chosen], xerr=err, fmt=marker, color=color, mfc=face, capsize=3, lw=1.5)
    ax.axvline(0.0, color="black", lw=1, ls="--")
    ax.set_yticks(y, labels, fontsize=8)
    name = METRIC_LABELS.get(metric, metric)
    ax.set_xlabel(f"Δ {name} (head A − head B), mean over splits")
    _few_ticks(ax, n_x=5, n_y=None)
    ax.set_ylim(-0.7, n - 0.3)
    scope = f" ({', '.join(common)})" if common else ""
    tests = ", ".join(dict.fromkeys(str(t) for t in rows.get("test", []) if isinstance(t, str) and t)) or "no test"
    _title(ax, f"Δ test {name} per cell and head pair{scope}:\nmean over splits with the 95 % CI of its test "
               f"({tests}; unadjusted);\nfilled marker: significant after Holm; [Bayesian verdict; 80 %-power "
               "MDE]", fontsize=10)
    ax.legend(handles=[
        Line2D([], [], marker="D", color=SIGNIFICANT, ls="", label="significant (Holm p < 0.05)"),
        Line2D([], [], marker="o", color=NOT_SIGNIFICANT, mfc="white", ls="", label="not significant"),
        Patch(color="#d5d8dc", label=f"ROPE ± {rope:g} (practically equivalent)")],
        loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def slope(pairs: pd.DataFrame, metric: str, colors: dict[str, tuple], path: Path) -> None:
    """Paired per-split slope plot: each split a line from the reference head to the other head.

    Parameters
    ----------
    pairs : pandas.DataFrame
        ``pairs.csv`` rows of one metric whose ``head_b`` is the reference (columns pair_key, split,
        head_a, head_b, value_a, value_b, delta).
    metric : str
        Metric name, for the labels.
    colors : dict
        Head colours (:func:`head_colors`).
    path : Path
        Output PNG; one panel per cell.
    """
    cells = list(dict.fromkeys(pairs[COLUMNS.pair_key]))
    heads = list(dict.fromkeys(pairs["head_a"]))
    reference = pairs["head_b"].iloc[0]
    titles, shared = _common_parts(cells)
    cols = min(4, len(cells))
    fig, axes = _grid(len(cells), cols, max(3.0, 0.9 * len(heads) + 1.0), 2.8)
    name = METRIC_LABELS.get(metric, metric)
    for k, (ax, cell, title) in enumerate(zip(axes, cells, titles, strict=True)):
        segments, segment_colors, means, xs, ys, point_colors = [], [], [], [], [], []
        for i, head in enumerate(heads):
            sub = pairs[(pairs[COLUMNS.pair_key] == cell) & (pairs["head_a"] == head)]
            x0, x1 = 3 * i, 3 * i + 1
            segments += [[(x0, b), (x1, a)] for a, b in zip(sub["value_a"], sub["value_b"], strict=True)]
            segment_colors += [UP if d > 0 else DOWN for d in sub["delta"]]
            means.append([(x0, sub["value_b"].mean()), (x1, sub["value_a"].mean())])
            xs += [x0] * len(sub) + [x1] * len(sub)
            ys += [*sub["value_b"], *sub["value_a"]]
            point_colors += [colors.get(reference)] * len(sub) + [colors.get(head)] * len(sub)
        ax.add_collection(LineCollection(segments, colors=segment_colors, alpha=0.55, lw=1))
        ax.add_collection(LineCollection(means, colors="black", lw=2.2, zorder=4))
        ax.scatter(xs, ys, s=10, c=point_colors, zorder=3)
        ax.set_xticks([3 * i + 0.5 for i in range(len(heads))], heads, fontsize=8)
        ax.set_xlim(-0.5, 3 * len(heads) - 1.5)
        _few_ticks(ax, n_x=None, n_y=4)
        if k % cols == 0:
            ax.set_ylabel(f"test {name}")
        _title(ax, title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    _suptitle(fig, f"Per-split paired {name}{f' ({shared})' if shared else ''}: each line joins {reference} "
                   "(left end) to the head named below (right end) on one split\n"
                   "green: head better, red: worse; black: mean over splits")
    _save(fig, path)


def scatter(panels: dict[str, pd.DataFrame], pair_key: str, split: int, colors: dict[str, tuple],
            path: Path) -> None:
    """Predicted score vs MOS on one split's test images, one panel per head.

    Parameters
    ----------
    panels : dict of str to pandas.DataFrame
        Head -> its ``predictions.csv`` (columns mos, pred).
    pair_key, split : str, int
        The cell and split shown (title).
    colors : dict
        Head colours.
    path : Path
        Output PNG.
    """
    fig, axes = _grid(len(panels), 5, 3.0, 3.6, sharex=True, sharey=True)
    mos, pred = PREDICTION_COLUMNS.mos, PREDICTION_COLUMNS.pred
    low = min(min(p[mos].min(), p[pred].min()) for p in panels.values())
    high = max(max(p[mos].max(), p[pred].max()) for p in panels.values())
    low, high = low - 0.03 * (high - low), high + 0.03 * (high - low)
    cols = min(5, len(panels))
    for k, (ax, (head, frame)) in enumerate(zip(axes, panels.items(), strict=True)):
        ax.scatter(frame[mos], frame[pred], s=9, alpha=0.6, color=colors.get(head))
        ax.plot([low, high], [low, high], color="black", lw=1, ls="--")
        _title(ax, f"{head}: SRCC {stats.spearmanr(frame[mos], frame[pred]).statistic:.3f}", fontsize=10)
        ax.set_xlabel("MOS")
        ax.xaxis.set_tick_params(labelbottom=True)  # a shared axis hides them above an empty panel
        if k % cols == 0:
            ax.set_ylabel("prediction (MOS scale)")
    axes[0].set_xlim(low, high)
    axes[0].set_ylim(low, high)
    _few_ticks(axes[0])
    _suptitle(fig, f"Test predictions vs MOS — {_cell_label(pair_key)}, split {split} (the first split every head "
                   "ran; chosen without looking at scores)")
    _save(fig, path)


def learning_curves(curves: pd.DataFrame, colors: dict[str, tuple], n_cells: int, path: Path) -> None:
    """Validation SRCC and training loss per epoch, one row of panels per cell.

    Parameters
    ----------
    curves : pandas.DataFrame
        Columns pair_key, head, metric (``val_srcc`` or ``train_loss``), step, value.
    colors : dict
        Head colours.
    n_cells : int
        Number of cells in the grid (the title says when only some are shown).
    path : Path
        Output PNG.
    """
    cells = list(dict.fromkeys(curves[COLUMNS.pair_key]))
    fig = Figure(figsize=(10, 2.3 * len(cells) + 0.9), layout="constrained")
    axes = fig.subplots(len(cells), 2, squeeze=False, sharex=True)
    for (ax_val, ax_loss), cell in zip(axes, cells, strict=True):
        for (head, metric), sub in curves[curves[COLUMNS.pair_key] == cell].groupby([COLUMNS.head, "metric"], sort=False):
            sub = sub.sort_values("step")
            if metric == VAL_SRCC:
                ax_val.plot(sub["step"], sub["value"], color=colors.get(head), label=head, lw=1.4)
            else:  # heads' losses differ in kind and scale: show each relative to its first epoch
                ax_loss.plot(sub["step"], sub["value"] / sub["value"].iloc[0], color=colors.get(head), lw=1.4)
        _title(ax_val, f"{_cell_label(cell)}: validation SRCC", fontsize=9)
        ax_val.set_ylabel("val SRCC")
        _title(ax_loss, f"{_cell_label(cell)}: training loss", fontsize=9)
        ax_loss.set_ylabel("loss ÷ epoch-0 loss")
        for ax in (ax_val, ax_loss):
            _few_ticks(ax, n_x=None, n_y=4)
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
        _few_ticks(ax, n_y=None, integer_x=True)
    axes[0][0].legend(fontsize=8)
    shown = f" — first {len(cells)} of {n_cells} cells" if len(cells) < n_cells else ""
    _suptitle(fig, f"Learning curves of the first split every head ran (lowest seed){shown}", 12)
    _save(fig, path)


def tuning(trials: pd.DataFrame, setting: str, colors: dict[str, tuple], path: Path, max_cells: int = 4) -> None:
    """Val SRCC against a tuned setting (log axis), mean ± sd over the cells, one line per head and a panel per
    comparison group: where each head's optimum lies within the tuning budget.

    Parameters
    ----------
    trials : pandas.DataFrame
        FINISHED trial runs (columns pair_key, head, split, seed, ``tuned.<setting>``, best_val_srcc).
    setting : str
        The tuned setting on the x axis (other tuned settings are averaged over).
    colors : dict
        Head colours.
    path : Path
        Output PNG.
    max_cells : int
        Comparison groups shown (the first ones).
    """
    column = f"{TUNED_PREFIX}{setting}"
    cells = list(dict.fromkeys(trials[COLUMNS.pair_key]))[:max_cells]
    fig, axes = _grid(len(cells), 2, 4.6, 3.4, sharey=False)
    titles, shared = _common_parts(cells)
    for ax, cell, title in zip(axes, cells, titles, strict=True):
        mine = trials[trials[COLUMNS.pair_key] == cell]
        per_cell = mine.groupby([COLUMNS.head, COLUMNS.split, COLUMNS.seed, column],
                                sort=False)[COLUMNS.best_val_srcc].mean().reset_index()
        for head, group in per_cell.groupby(COLUMNS.head, sort=False):
            profile = group.groupby(column)[COLUMNS.best_val_srcc].agg(["mean", "std"])
            ax.plot(profile.index, profile["mean"], marker="o", color=colors.get(head), label=head, lw=1.5)
            ax.fill_between(profile.index, profile["mean"] - profile["std"], profile["mean"] + profile["std"],
                            color=colors.get(head), alpha=0.12, lw=0)
        ax.set_xscale("log")
        ax.set_xticks(sorted(per_cell[column].unique()), [f"{v:g}" for v in sorted(per_cell[column].unique())],
                      fontsize=8)
        ax.minorticks_off()
        ax.set(xlabel=setting, ylabel="best val SRCC of the trial")
        _title(ax, title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    _suptitle(fig, f"Tuning: val SRCC against {setting}, mean ± sd over cells{f' ({shared})' if shared else ''}; "
                   "a head whose line still rises at an edge may have its optimum outside the budget", 11)
    _save(fig, path)


def k_ablation(table: pd.DataFrame, path: Path) -> None:
    """Test SRCC vs the number of bins K (mean ± std over splits), one panel per head type.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns head_type, pair_key, num_bins, mean, std, n_splits.
    path : Path
        Output PNG.
    """
    head_types = list(dict.fromkeys(table[COLUMNS.head_type]))
    fig, axes = _grid(len(head_types), 3, 4.6, 3.6)
    for ax, head_type in zip(axes, head_types, strict=True):
        sub = table[table[COLUMNS.head_type] == head_type]
        for cell, line in sub.groupby(COLUMNS.pair_key, sort=False):
            line = line.sort_values("num_bins")
            ax.errorbar(line["num_bins"], line["mean"], yerr=line["std"], marker="o", capsize=3,
                        label=_cell_label(cell))
        ax.set_xticks(sorted(sub["num_bins"].unique()))
        ax.set(xlabel="K (head.num_bins)", ylabel="test SRCC (mean ± std over splits)")
        _title(ax, f"{head_type}: SRCC vs K")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def critical_difference(ranks: pd.Series, cd: float, friedman: tuple[float, float], n_blocks: int,
                        path: Path) -> None:
    """Critical-difference diagram (Demšar 2006): average ranks, the Nemenyi CD bar, and thick bars
    joining heads whose average ranks differ by less than CD.

    Parameters
    ----------
    ranks : pandas.Series
        Average rank per head (1 = best), sorted best first.
    cd : float
        Nemenyi critical difference.
    friedman : (float, float)
        Friedman statistic and p-value (title).
    n_blocks : int
        Number of blocks the ranks average over (title).
    path : Path
        Output PNG.
    """
    # Hand-drawn: neither matplotlib nor seaborn has a CD diagram.
    k = len(ranks)
    half = math.ceil(k / 2)
    step = 0.35
    fig = Figure(figsize=(9, 2.0 + step * half * 1.6), layout="constrained")
    ax = fig.add_subplot()
    ax.axis("off")
    ax.set_xlim(1 - 0.45 * k, k + 0.45 * k)
    ax.set_ylim(-(half + 0.8) * step, 1.0)
    ax.hlines(0, 1, k, color="black", lw=1.2)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.08, color="black")
        ax.text(r, 0.12, str(r), ha="center", va="bottom", fontsize=9)
    ax.hlines(0.65, 1, 1 + cd, color="black", lw=2)
    ax.vlines([1, 1 + cd], 0.6, 0.7, color="black")
    ax.text(1 + cd / 2, 0.74, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    for i, (head, r) in enumerate(ranks.items()):
        left = i < half
        y = -(i + 1 if left else k - i) * step
        x_text = 1 - 0.15 * k if left else k + 0.15 * k
        ax.vlines(r, y, 0, color="black", lw=0.8)
        ax.hlines(y, min(r, x_text), max(r, x_text), color="black", lw=0.8)
        ax.text(x_text + (-0.05 if left else 0.05), y, f"{head} ({r:.2f})", ha="right" if left else "left",
                va="center", fontsize=9)
    values = ranks.to_numpy()
    groups = []
    for i in range(k):
        j = max(m for m in range(i, k) if values[m] - values[i] < cd)
        if j > i and not any(a <= i and j <= b for a, b in groups):
            groups.append((i, j))
    for g, (i, j) in enumerate(groups):
        y = -0.1 - 0.07 * g
        ax.hlines(y, values[i] - 0.03, values[j] + 0.03, color="#34495e", lw=4)
    stat, p = friedman
    _title(ax, f"Average rank of test SRCC over {n_blocks} independent blocks (backbone × dataset, splits "
               "averaged), 1 = best\n"
                 f"Friedman χ² = {stat:.1f}, p = {p:.2g}; bars join heads within the Nemenyi CD (α = 0.05)",
                 fontsize=10)
    _save(fig, path)


__all__ = ["critical_difference", "forest", "head_colors", "k_ablation", "learning_curves", "scatter", "slope",
           "tuning"]
