"""Paper-style tables of a grid report: Markdown, LaTeX (booktabs) and CSV.

* ``table_<metric>``: rows backbone × head (and the linear probe as a reference row), columns test
  datasets (``train→test`` for cross-dataset pairs), cells ``mean (± sd)`` over splits (seeds averaged
  within a split first: the statistic the tests compare), the highest mean of each backbone and column in
  bold (a ranking of means, not a test: the caption says so), ``†`` where the head differs from the
  reference head after Holm, ``≈`` where it is practically equivalent to it (Bayesian verdict), ``‡`` where
  the health check found it below the linear probe.
* ``summary_pairs``: every pair the grid compares (``compare:``, e.g. DOR as published vs corrected vs MSE),
  with both heads' means and the dataset test of their SRCC difference.

The marks speak for the dataset target only (``stats.csv`` rows with ``target = dataset``): the paired
t-test on the per-split mean differences, Holm-adjusted over the grid's within-dataset comparisons of the
metric. The population rows (an extrapolation under an assumed split correlation r) never mark a table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.analysis.report_data import ReportData, Scores
from benchmark.metrics import HIGHER_IS_BETTER, METRIC_LABELS
from benchmark.schema import COLUMNS, test_metric

log = logging.getLogger(__name__)

DAGGER, EQUIVALENT, FLAGGED = "†", "≈", "‡"
MARKS = {"significant": DAGGER, "equivalent": EQUIVALENT, "flagged": FLAGGED}
"""Marks after a table cell, keyed by the :func:`paper_table` column that sets them."""
SUMMARY_METRICS = ("srcc", "plcc", "rmse")
"""The metrics of the compared-pairs summary."""
TARGET_NOTE = ("the test speaks for this dataset: the mean difference over random splits of it (paired t-test on the "
               "per-split mean differences, seeds averaged); extrapolating to other data of its kind rests on an "
               "assumed split correlation r (stats.csv, target = population, with the r* at which it would flip)")
"""Clause of every table note that says what the marks' test speaks for."""
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "_": r"\_", "&": r"\&", "%": r"\%", "#": r"\#", "$": r"\$",
                  "{": r"\{", "}": r"\}", "→": r"$\rightarrow$", "±": r"$\pm$", "†": r"$^\dagger$",
                  "–": "--", "<": r"$<$", ">": r"$>$", "≈": r"$\approx$", "‡": r"$^\ddagger$",
                  "≥": r"$\geq$", "Δ": r"$\Delta$"}


def column_label(dataset: str, test_dataset: str) -> str:
    """Table column of a (train, test) dataset pair: the dataset, or ``train→test`` across datasets."""
    return dataset if dataset == test_dataset else f"{dataset}→{test_dataset}"


def latex_escape(text: str) -> str:
    r"""Escape LaTeX special characters.

    Examples
    --------
    >>> latex_escape("efficientnet_lite0 & koniq→livec")
    'efficientnet\\_lite0 \\& koniq$\\rightarrow$livec'
    """
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def head_split_summary(scores: Scores, metric: str) -> pd.DataFrame:
    """Mean, std (ddof 1) and median over splits of each head's test metric per cell (seeds averaged first)."""
    keys = [COLUMNS.backbone, COLUMNS.regime, COLUMNS.dataset, COLUMNS.test_dataset, COLUMNS.pair_key, COLUMNS.head]
    per_split = scores.per_split.dropna(subset=[test_metric(metric)])
    summary = per_split.groupby(keys, sort=False)[test_metric(metric)].agg(["mean", "std", "median", "size"])
    summary = summary.reset_index().rename(columns={"size": "n_splits"})
    datasets = zip(summary[COLUMNS.dataset], summary[COLUMNS.test_dataset], strict=True)
    summary["column"] = [column_label(a, b) for a, b in datasets]
    return summary


def paper_table(data: ReportData, stats_df: pd.DataFrame, metric: str,
                health: pd.DataFrame | None = None) -> pd.DataFrame:
    """Tidy table behind ``table_<metric>``: one row per (backbone, regime, head, column), the linear probe's
    rows as a reference; significance and equivalence are read against the grid's reference head.

    Columns: ``mean, std, median, n_splits`` over splits; ``best`` (best rounded mean among the heads of
    its backbone and column); ``significant`` (differs from the reference after Holm), ``equivalent``
    (the Bayesian verdict says practically equivalent to the reference, when ``stats_df`` has one);
    ``flagged`` (the health check found it below the linear probe); ``failures`` (its failed runs);
    ``is_reference`` for the probe's row.
    """
    scores, probes, reference = data.scores, data.probes, data.record.reference
    table = head_split_summary(scores, metric).assign(is_reference=False)
    if not probes.per_split.empty:
        table = pd.concat([table, head_split_summary(probes, metric).assign(is_reference=True)], ignore_index=True)
    rounded = table["mean"].round(3).where(~table["is_reference"])
    group = [table[COLUMNS.backbone], table[COLUMNS.regime], table["column"]]
    best = rounded.groupby(group).transform("max" if HIGHER_IS_BETTER[metric] else "min")
    table["best"] = rounded == best
    keys = pd.MultiIndex.from_frame(table[[COLUMNS.pair_key, COLUMNS.head]])
    vs_ref = stats_df[(stats_df["metric"] == metric) & (stats_df["head_b"] == reference)] if not stats_df.empty \
        else stats_df
    if "descriptive" in vs_ref:  # cross-dataset comparisons are descriptive: never marked
        vs_ref = vs_ref[~vs_ref["descriptive"].astype(bool)]
    for column, source in (("significant", "significant"), ("equivalent", "verdict")):
        if source in vs_ref:
            marks = vs_ref.set_index([COLUMNS.pair_key, "head_a"])[source]
            marks = marks == "equivalent" if source == "verdict" else marks.astype(bool)
            table[column] = marks.reindex(keys, fill_value=False).to_numpy(dtype=bool)
        else:
            table[column] = False
    failed = scores.per_split.groupby([COLUMNS.pair_key, COLUMNS.head])["n_failed"].sum()
    table["failures"] = failed.reindex(keys, fill_value=0).to_numpy()
    table["flagged"] = False
    if health is not None and not health.empty:
        unit = [COLUMNS.pair_key, COLUMNS.head]
        below = health.drop_duplicates(unit).set_index(unit)["below_probe"]
        table["flagged"] = below.reindex(keys, fill_value=False).to_numpy(dtype=bool)
    return table


def _cell(row: dict, bold: tuple[str, str], pm: str, marks: dict[str, str]) -> str:
    value = f"{row['mean']:.3f}"
    if row["best"]:
        value = f"{bold[0]}{value}{bold[1]}"
    std = "–" if np.isnan(row["std"]) else f"{row['std']:.3f}"
    failures = f" [{row['failures']} failed]" if row["failures"] else ""
    return f"{value} ({pm} {std})" + "".join(mark for name, mark in marks.items() if row[name]) + failures


def _layout(table: pd.DataFrame, bold: tuple[str, str], pm: str, marks: dict[str, str],
            escape=lambda s: s) -> tuple[list[str], list[list[str]]]:
    """Header and body rows (strings) of a rendered table; missing cells are ``--``; the probe's row last
    within its backbone, labelled as the reference it is."""
    columns = list(dict.fromkeys(table["column"]))
    show_regime = table[COLUMNS.regime].nunique() > 1
    ordered = table.sort_values("is_reference", kind="stable")
    ordered = ordered.sort_values([COLUMNS.backbone, COLUMNS.regime], key=lambda c: c.map(
        {v: i for i, v in enumerate(dict.fromkeys(table[c.name]))}), kind="stable")
    rows = list(dict.fromkeys(zip(ordered[COLUMNS.backbone], ordered[COLUMNS.regime], ordered[COLUMNS.head],
                                  ordered["is_reference"],
                                  strict=True)))
    cells = {(r.backbone, r.regime, r.head, r.column): _cell(r._asdict(), bold, pm, marks)
             for r in table.itertuples()}
    header = ["Backbone", *(["Regime"] if show_regime else []), "Head", *map(escape, columns)]
    body = [[escape(b), *([escape(g)] if show_regime else []), escape(f"{h} (reference)" if ref else h),
             *(cells.get((b, g, h, c), "--") for c in columns)] for b, g, h, ref in rows]
    return header, body


def legend(table: pd.DataFrame, metric: str, reference: str) -> str:
    """One-line legend of a paper table."""
    low, high = int(table["n_splits"].min()), int(table["n_splits"].max())
    n = str(low) if low == high else f"{low}–{high}"
    best = "highest" if HIGHER_IS_BETTER[metric] else "lowest"
    text = (f"Test {METRIC_LABELS[metric]}: mean (± sd) over {n} splits, seeds averaged within a split (the "
            f"tests compare these means); bold: the {best} mean among the heads of its backbone and column, a "
            "ranking of means and not a test (the marks are the tests)")
    if table["is_reference"].any():
        text += ("; probe (reference): closed-form ridge on the initial backbone's features, not a tested head")
    if reference in set(table[COLUMNS.head]):
        text += (f"; {DAGGER}: differs from {reference} (Holm-adjusted p < 0.05 over the grid's within-dataset "
                 f"comparisons of this metric; {TARGET_NOTE})")
        if table["equivalent"].any():
            text += (f"; {EQUIVALENT}: practically equivalent to {reference} (the test's posterior: "
                     "P(|Δ| within the ROPE) ≥ 0.95; verdicts are read one comparison at a time, unadjusted)")
    if table["flagged"].any():
        text += f"; {FLAGGED}: below the linear probe (health check): under-trained, read its comparisons with care"
    if table["failures"].any():
        text += ("; [n failed]: runs whose head failed (an exception, a diverged model or a constant prediction), "
                 "left out of the mean (stats.csv tests the failure rates apart)")
    return text + "."


def to_markdown(table: pd.DataFrame, metric: str, reference: str) -> str:
    """Markdown rendering of :func:`paper_table` (bold ``**x**``, legend below)."""
    header, body = _layout(table, ("**", "**"), "±", MARKS)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + f"\n\n{legend(table, metric, reference)}\n"


def to_latex(table: pd.DataFrame, metric: str, reference: str) -> str:
    """LaTeX rendering of :func:`paper_table`: a ``table`` with a booktabs ``tabular`` and the legend as caption."""
    header, body = _layout(table, (r"\textbf{", "}"), r"$\pm$", {k: latex_escape(v) for k, v in MARKS.items()},
                           latex_escape)
    n_text = len(header) - table["column"].nunique()
    spec = "l" * n_text + "c" * (len(header) - n_text)
    caption = latex_escape(legend(table, metric, reference))
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule", *(" & ".join(row) + r" \\" for row in body),
             r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", r"\end{table}"]
    return "\n".join(lines).replace("–", "--") + "\n"


def pairs_summary(data: ReportData, stats_df: pd.DataFrame) -> pd.DataFrame:
    """Per cell and compared pair (the grid's ``compare:``): each head's mean test SRCC, PLCC and RMSE, and the
    dataset test of ΔSRCC (``stats.csv``'s p, verdict and 80 %-power MDE); empty without pairs."""
    srcc = stats_df[stats_df["metric"] == "srcc"].set_index([COLUMNS.pair_key, "head_a", "head_b"]) if len(stats_df) \
        else stats_df
    keys = [COLUMNS.pair_key, COLUMNS.head]
    means = {metric: head_split_summary(data.scores, metric).set_index(keys) for metric in SUMMARY_METRICS}
    rows = []
    for cell in means["srcc"].reset_index().drop_duplicates(COLUMNS.pair_key).itertuples():
        for head_a, head_b in data.record.compare:
            if (cell.pair_key, head_a) not in means["srcc"].index or (cell.pair_key, head_b) not in means["srcc"].index:
                continue
            row = {COLUMNS.backbone: cell.backbone, COLUMNS.regime: cell.regime, COLUMNS.dataset: cell.column,
                   COLUMNS.pair_key: cell.pair_key,
                   "head_a": head_a, "head_b": head_b}
            for metric, table in means.items():
                row[f"{metric}_a"], row[f"{metric}_b"] = (table.loc[(cell.pair_key, h), "mean"] for h in (head_a, head_b))
            test = srcc.loc[(cell.pair_key, head_a, head_b)] if (cell.pair_key, head_a, head_b) in srcc.index else None
            row.update({key: (test[key] if test is not None else np.nan) for key in ("mean_delta", "p", "verdict", "mde80")})
            rows.append(row)
    return pd.DataFrame(rows)


def summary_markdown(summary: pd.DataFrame) -> str:
    """Markdown rendering of :func:`pairs_summary`."""
    header = ["Backbone", "Regime", "Dataset", "A", "B", *(f"{METRIC_LABELS[m]} A / B" for m in SUMMARY_METRICS),
              "ΔSRCC", "p", "verdict", "MDE80"]
    lines = ["## Compared pairs", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for values in summary.to_dict("records"):
        cells = [values[COLUMNS.backbone], values[COLUMNS.regime], values[COLUMNS.dataset], values["head_a"],
                 values["head_b"],
                 *(f"{values[f'{m}_a']:.3f} / {values[f'{m}_b']:.3f}" for m in SUMMARY_METRICS),
                 f"{values['mean_delta']:+.3f}", f"{values['p']:.2g}",
                 values["verdict"] if isinstance(values["verdict"], str) else "–", f"{values['mde80']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("Means over splits (seeds averaged within a split); ΔSRCC, p: the paired t-test on the per-split "
            "mean SRCC differences of A and B, unadjusted (stats.csv has the Holm-adjusted values); verdict: its "
            "posterior with the grid's ROPE (a better / b better / equivalent at posterior ≥ 0.95, else undecided; "
            "unadjusted); MDE80: the smallest true ΔSRCC this grid detects with 80 % power (a plug-in estimate; "
            f"stats.csv gives its 90 % range); {TARGET_NOTE}.")
    lines += ["", note]
    return "\n".join(lines) + "\n"


def write_tables(out: Path, tables: dict[str, pd.DataFrame], summary: pd.DataFrame, reference: str) -> dict[str, Path]:
    """Write ``table_<metric>.{md,tex,csv}`` per :func:`paper_table` and ``summary_pairs.{md,csv}``
    (:func:`pairs_summary`; none when it is empty).

    Returns
    -------
    dict of str to Path
        File name -> path of every file written.
    """
    written: dict[str, Path] = {}
    for metric, table in tables.items():
        for ext, text in (("md", to_markdown(table, metric, reference)), ("tex", to_latex(table, metric, reference))):
            written[f"table_{metric}.{ext}"] = out / f"table_{metric}.{ext}"
            written[f"table_{metric}.{ext}"].write_text(text, encoding="utf-8")
        written[f"table_{metric}.csv"] = out / f"table_{metric}.csv"
        table.to_csv(written[f"table_{metric}.csv"], index=False)
    if summary.empty:
        log.info("no compared pair in this grid: no summary_pairs table")
        return written
    written["summary_pairs.md"] = out / "summary_pairs.md"
    written["summary_pairs.md"].write_text(summary_markdown(summary), encoding="utf-8")
    written["summary_pairs.csv"] = out / "summary_pairs.csv"
    summary.to_csv(written["summary_pairs.csv"], index=False)
    return written


__all__ = ["column_label", "head_split_summary", "pairs_summary", "latex_escape", "paper_table",
           "to_latex", "to_markdown", "write_tables"]
