"""``report.html``: a grid's answer on one self-contained page (inline CSS, the report's PNGs beside it).

Top-down: the question and the grid in a sentence; a verdict per cell and compared pair for the dataset
target (the difference, its interval, the posterior mass below / inside / above the ROPE drawn as a bar,
the verdict, p, failures), then the population extrapolation with its assumed r and break-even r*; what
the grid could not have seen (MDE80 against the ROPE, one table); the health check
(heads against the linear probe, tuning selections against the budget's edges); the plots; the per-cell
tables; warnings; provenance and the MLflow experiment and run ids. Every number is formatted from the
same frames the CSV files are written from (``stats.csv``, ``health.csv``, ``table_*.csv``), never computed
here; every cell of the verdict table carries its ``stats.csv`` column name (``data-col``) so a reader or a
test can map it back.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.analysis.comparisons import WORST_RANK, primary_rows
from benchmark.analysis.report_data import ReportData
from benchmark.analysis.stats import DATASET, POPULATION
from benchmark.schema import COLUMNS

PAGE = "report.html"
CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1c2833; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 1.2em 1.4em 3em; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.3em; } h2 { font-size: 1.25em; margin-top: 1.8em;
  border-bottom: 1px solid #d5d8dc; padding-bottom: 0.2em; } h3 { font-size: 1.05em; margin-top: 1.2em; }
p.lead { font-size: 1.05em; } .muted { color: #5d6d7e; font-size: 0.92em; }
.scroll { overflow-x: auto; } table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e5e8e8; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f6f7; white-space: nowrap; } tr.group th { background: #fff; padding-top: 0.8em;
  border-bottom: 1px solid #aab7b8; } td.num { text-align: right; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
.bar { display: flex; width: 9em; height: 0.9em; border: 1px solid #aab7b8; margin-top: 0.25em; }
.bar span { display: block; height: 100%; } .below { background: #c0392b; } .rope { background: #aab7b8; }
.above { background: #1e8449; }
.verdict { font-weight: 600; white-space: nowrap; } .flag { color: #c0392b; font-weight: 600; }
td.pair { white-space: nowrap; }
.ok { color: #1e8449; } figure { margin: 1em 0; } figure img { max-width: 100%; height: auto;
  border: 1px solid #e5e8e8; } figcaption { color: #5d6d7e; font-size: 0.9em; }
details { margin: 0.6em 0; } summary { cursor: pointer; color: #2e86c1; } code { font-size: 0.92em; }
ul.warnings li { margin-bottom: 0.3em; }
@media (max-width: 720px) {
  table.stack, table.stack tbody, table.stack tr, table.stack td { display: block; width: auto; }
  table.stack tr:first-child { display: none; } table.stack tr { border-bottom: 1px solid #aab7b8; padding: 0.3em 0; }
  table.stack tr.group { display: block; border: 0; } table.stack td { border: 0; padding: 0.1em 0.4em;
    text-align: left; white-space: normal; }
  table.stack td[data-label]::before { content: attr(data-label) ": "; color: #5d6d7e; font-weight: 400; }
}
"""
FIGURES = {
    "forest_srcc.png": "Each compared pair: the mean per-split ΔSRCC with its interval, over the ROPE band.",
    "slope_srcc.png": "Per split: each head against the reference head.",
    "tuning_lr.png": "Val SRCC against the learning rate: where each head's optimum lies within the budget.",
    "scatter.png": "Test predictions against MOS on one split (the first every head ran).",
    "learning_curves.png": "Validation SRCC and training loss per epoch (first split, lowest seed).",
    "k_ablation.png": "Test SRCC against the number of bins K.",
    "critical_difference.png": "Average ranks over independent dataset blocks (backbones averaged).",
}


@dataclass
class ReportPage:
    """Everything the page shows: the grid's data and what the report built from it."""

    data: ReportData
    stats: pd.DataFrame
    health: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    plots: Sequence[str]
    warnings: Sequence[str]
    provenance: dict[str, Any]


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or pd.isna(value):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _cell(pair_key: str) -> str:
    return pair_key.replace("|", " · ").replace("->", "→")


def _td(column: str, text: str, css: str = "num", label: str = "") -> str:
    labelled = f' data-label="{_e(label)}"' if label else ""
    return f'<td class="{css}" data-col="{column}"{labelled}>{text}</td>'


def _grid_sentence(page: ReportPage) -> str:
    grid, n_missing = page.data.record, len(page.data.missing)
    pairs = ", ".join(f"<b>{_e(a)}</b> − <b>{_e(b)}</b>" for a, b in grid.compare) or "no pairs"
    tuning = "; ".join(f"{_e(k)} ∈ {{{', '.join(f'{v:g}' for v in vals)}}}" for k, vals in grid.tuning.items())
    datasets = ", ".join(_e(a if a == b else f"{a}→{b}") for a, b in grid.datasets)
    return (f"<p class='lead'>Does one head beat another at no-reference IQA when everything else is matched? "
            f"This grid compares {pairs}: {len(grid.backbones)} backbone(s) ({_e(', '.join(grid.backbones))}) × "
            f"{len(grid.heads)} heads × {len(grid.datasets)} dataset(s) ({datasets}) × {len(grid.splits)} splits × "
            f"{len(grid.seeds)} seed(s), {_e(grid.regime)} regime; every head starts at the data and is tuned "
            f"alike on validation SRCC{f' ({tuning})' if tuning else ''}; a closed-form linear probe is recorded per "
            f"split. {len(page.data.usable)} result runs{f', {n_missing} expected units missing' if n_missing else ''}."
            "</p>")


def _bar(row: pd.Series) -> str:
    parts = [(row.get("p_below"), "below"), (row.get("p_rope"), "rope"), (row.get("p_above"), "above")]
    if any(p is None or pd.isna(p) for p, _ in parts):
        return "–"
    spans = "".join(f'<span class="{css}" style="width:{100 * p:.1f}%"></span>' for p, css in parts)
    numbers = " / ".join(f"{p:.2f}" for p, _ in parts)
    return (f'<span class="muted">{numbers}</span><div class="bar" title="P(A worse beyond the ROPE) / P(within '
            f'the ROPE) / P(A better beyond the ROPE)">{spans}</div>')


def _interval(row: pd.Series) -> str:
    return f"[{_num(row['ci_low'], signed=True)}, {_num(row['ci_high'], signed=True)}]"


def _p(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.2g}"


def _verdict_rows(stats: pd.DataFrame) -> str:
    rows = []
    for pair_key, group in stats.groupby(COLUMNS.pair_key, sort=False):
        rows.append(f'<tr class="group"><th colspan="8" data-col="pair_key">{_e(_cell(pair_key))}</th></tr>')
        for _, row in group.iterrows():
            descriptive = bool(row.get("descriptive", False))
            verdict = _e(row.get("verdict") or "no test") + (" (descriptive)" if descriptive else "")
            sensitivity = row.get("analysis") == WORST_RANK
            label = f"{_e(row['head_a'])} − {_e(row['head_b'])}" + (
                '<br><span class="muted">failed runs as the worst run</span>' if sensitivity else "")
            failures = f"{int(row['failures_a'])} / {int(row['failures_b'])}" + (
                f" (p = {row['p_failures']:.2g})" if row["failures_a"] + row["failures_b"] else "")
            rows.append(
                "<tr>" + f'<td class="pair" data-col="pair" data-label="A − B">{label}</td>'
                + f'<td class="verdict" data-col="verdict" data-label="verdict">{verdict}</td>'
                + _td("mean_delta", _num(row["mean_delta"], signed=True), label="mean ΔSRCC")
                + _td("interval", _interval(row), label="95 % interval")
                + f'<td data-col="posterior" data-label="posterior">{_bar(row)}</td>'
                + _td("p", _p(row["p"]), label="p")
                + _td("failures", failures, label="failures A / B")
                + _td("n_splits", f"{int(row['n_splits'])} × {int(row['n_seeds'])}", label="splits × seeds") + "</tr>")
    return "\n".join(rows)


def _verdicts(page: ReportPage) -> str:
    stats = page.stats
    srcc = stats[(stats["metric"] == "srcc") & (stats["target"] == DATASET)] if len(stats) else stats
    if srcc.empty:
        return "<h2>Verdicts</h2><p>No head pairs were compared.</p>"
    rope = page.data.record.rope
    header = ("<tr><th>A − B</th><th>verdict</th><th>mean ΔSRCC</th><th>95 % interval</th>"
              "<th>posterior below / in / above ROPE</th><th>p</th><th>failures A / B</th><th>splits × seeds</th></tr>")
    return ("<h2>Verdicts: over random splits of this dataset</h2><p>Per cell and compared pair, test SRCC of head A "
            "minus head B, averaged over each split's seeds. These verdicts answer for the dataset they were measured "
            "on: the mean difference over random splits of it, the claim an IQA paper makes per dataset. Random "
            "splits of a given dataset are independent draws, so the test is the paired t-test on the per-split "
            "means (exact, J − 1 df), and the verdict reads its posterior at 0.95: <i>a better</i>, <i>b better</i>, "
            f"<i>equivalent</i> (inside the ROPE ± {rope:g}) or <i>undecided</i>. Verdicts and p-values are per "
            "comparison, unadjusted; the tables' † marks use Holm over the grid's within-dataset comparisons. "
            "Failed runs are left out of the differences; their counts are compared on their own (an exact sign test "
            "over splits), and a second row scores them as the cell's worst run to show whether that changes the "
            "verdict. Cross-dataset cells share one fixed test set: their statistics are descriptive only.</p>"
            f"<div class='scroll'><table id='verdicts' class='stack'>{header}{_verdict_rows(srcc)}</table></div>"
            + _population(page))


def _r_star(value: Any) -> str:
    if value is None or pd.isna(value):
        return "–"
    return "never" if math.isinf(value) else f"{value:.2g}"


def _population(page: ReportPage) -> str:
    rows = primary_rows(page.stats, POPULATION)
    rows = rows[(rows["metric"] == "srcc") & ~rows["descriptive"].astype(bool)] if len(rows) else rows
    if rows.empty:
        return ""
    body = "".join(
        f"<tr><td data-label='cell'>{_e(_cell(r.pair_key))}</td><td data-label='A − B'>{_e(r.head_a)} − "
        f"{_e(r.head_b)}</td><td class='verdict' data-col='verdict' data-label='verdict'>{_e(r.verdict)}</td>"
        f"{_td('interval', _interval(pd.Series(r._asdict())), label='95 % interval')}{_td('p', _p(r.p), label='p')}"
        f"{_td('r', _num(r.r, 2), label='assumed r')}"
        f"{_td('r_star_significance', _r_star(r.r_star_significance), label='r* significance')}"
        f"{_td('r_star_verdict', _r_star(r.r_star_verdict), label='r* verdict')}</tr>" for r in rows.itertuples())
    return ("<h3>Beyond this dataset: an extrapolation under an assumed r</h3><p>To other data of the same kind the "
            "verdicts above do not speak. Random splits of one dataset share their images, so their effects "
            "correlate; the test below (the variance-components test; with one seed per split the corrected "
            "resampled t-test) inflates the split variance by an <b>assumed</b> split correlation r — "
            "n_test/n_train (Nadeau &amp; Bengio) unless the grid sets one — which one dataset cannot measure. "
            "r* is the largest r at "
            "which a significant difference would still be significant, and separately at which the verdict would "
            "still read the same (<i>never</i>: it does not flip; – : not significant at the assumed r, which a "
            "larger r cannot change). Claims beyond a dataset are what several datasets as units test (the "
            "across-dataset test).</p>"
            "<div class='scroll'><table id='population' class='stack'><tr><th>cell</th><th>A − B</th><th>verdict</th>"
            "<th>95 % interval</th><th>p</th><th>assumed r</th><th>r* significance</th><th>r* verdict</th></tr>"
            f"{body}</table></div>")


def _blind_spots(page: ReportPage) -> str:
    primary = primary_rows(page.stats)
    srcc = primary[(primary["metric"] == "srcc") & ~primary["descriptive"].astype(bool)] if len(primary) else primary
    srcc = srcc.dropna(subset=["mde80"]) if len(srcc) else srcc
    if srcc.empty:
        return "<h2>What this grid could not have seen</h2><p>No within-dataset comparison has an MDE.</p>"
    rope = page.data.record.rope
    body = "".join(
        f"<tr><td data-label='cell'>{_e(_cell(r.pair_key))}</td><td data-label='A − B'>{_e(r.head_a)} − "
        f"{_e(r.head_b)}</td>{_td('mde80', _num(r.mde80), label='MDE80')}"
        f"{_td('mde80_range', f'{_num(r.mde80_low)}–{_num(r.mde80_high)}', label='90 % range')}"
        f"{_td('mde_over_rope', f'{r.mde80 / rope:.1f}×' if rope else '–', label='MDE / ROPE')}"
        f"<td data-label='equivalence'>{'reachable' if r.mde80 <= rope else 'out of reach'}</td></tr>"
        for r in srcc.itertuples())
    return ("<h2>What this grid could not have seen</h2><p>MDE80: the smallest true mean ΔSRCC the dataset test "
            "detects with 80 % power at this grid's splits and seeds (a plug-in from the observed spread of the split "
            "means, with its 90 % sampling range). A smaller true difference would most likely read <i>undecided</i>; "
            f"<i>equivalent</i> needs an MDE below the ROPE (± {rope:g}).</p><div class='scroll'><table id='blind' "
            "class='stack'><tr><th>cell</th><th>A − B</th><th>MDE80</th><th>90 % range</th><th>MDE / ROPE</th>"
            f"<th>equivalence</th></tr>{body}</table></div>")


def _health(page: ReportPage) -> str:
    health = page.health
    if health.empty:
        return "<h2>Health check</h2><p>No probe runs or tuning trials to check against.</p>"
    gaps = health.drop_duplicates([COLUMNS.pair_key, COLUMNS.head])
    rows = "".join(
        f"<tr><td>{_e(_cell(r.pair_key))}</td><td>{_e(r.head)}</td>{_td('mean_srcc', _num(r.mean_srcc))}"
        f"{_td('probe_srcc', _num(r.probe_srcc))}{_td('gap', _num(r.gap, signed=True))}"
        f"<td class='{'flag' if r.below_probe else 'ok'}' data-col='below_probe'>"
        f"{'below the probe' if r.below_probe else 'ok'}</td></tr>" for r in gaps.itertuples())
    text = ("<h2>Health check</h2><p>A head clearly below a ridge probe on the features it starts from is "
            "under-trained by its recipe; its comparisons would measure the recipe, not the loss.</p>"
            "<div class='scroll'><table id='probe'><tr><th>cell</th><th>head</th><th>mean test SRCC</th>"
            f"<th>probe</th><th>gap</th><th>flag</th></tr>{rows}</table></div>")
    if "setting" in health and health["setting"].notna().any():
        tuned = health.dropna(subset=["setting"])
        rows = "".join(
            f"<tr><td>{_e(_cell(r.pair_key))}</td><td>{_e(r.head)}</td><td>{_e(r.setting)}</td>"
            f"<td class='num'>{_e(r.selected)}</td>{_td('edge_rate', f'{r.edge_rate:.0%}')}"
            f"<td class='num'>{_e(r.profile)}</td>{_td('peak', f'{r.peak:g}')}"
            f"{_td('edge_gain', '–' if pd.isna(r.edge_gain) else f'{r.edge_gain:+.3f} ± {r.edge_gain_se:.3f}')}"
            f"<td class='{'flag' if r.tuning_edge else 'ok'}' data-col='tuning_edge'>"
            f"{'widen the budget' if r.tuning_edge else 'ok'}</td></tr>" for r in tuned.itertuples())
        text += ("<h3>Tuning selections</h3><p>How many cells selected each value (on val SRCC), the head's mean val "
                 "SRCC at each value, and — where that mean peaks at an edge of the budget — how much the edge beats "
                 "the best inner value (± SE over cells). A head is flagged when its selections sit on an edge in more "
                 "than a third of the cells and its val SRCC still rises at that edge.</p>"
                 "<div class='scroll'><table id='tuning'><tr><th>cell</th><th>head</th><th>setting</th>"
                 "<th>selected</th><th>on an edge</th><th>mean val SRCC per value</th><th>peak</th>"
                 f"<th>edge gain</th><th>flag</th></tr>{rows}</table></div>")
    return text


def _figures(page: ReportPage) -> str:
    shown = [name for name in FIGURES if name in page.plots]
    return "<h2>Plots</h2>" + "".join(
        f"<figure><img src='{_e(name)}' alt='{_e(FIGURES[name])}' loading='lazy'><figcaption>{_e(FIGURES[name])}"
        "</figcaption></figure>" for name in shown)


def _tables(page: ReportPage) -> str:
    parts = ["<h2>Per-cell results</h2>"]
    for metric, table in page.tables.items():
        columns = list(dict.fromkeys(table["column"]))
        body = []
        groups = table.groupby([COLUMNS.backbone, COLUMNS.head, "is_reference"], sort=False)
        for (backbone, head, reference), group in groups:
            cells = {r.column: r for r in group.itertuples()}
            values = "".join(
                _td(f"{metric}:{c}", f"{'<b>' if cells[c].best else ''}{cells[c].mean:.3f}{'</b>' if cells[c].best else ''}"
                    f" <span class='muted'>± {_num(cells[c].std)}</span>"
                    + (" ‡" if cells[c].flagged else "") + (f" [{cells[c].failures} failed]" if cells[c].failures else ""))
                if c in cells else "<td>–</td>" for c in columns)
            label = f"{head} (reference)" if reference else head
            body.append(f"<tr><td>{_e(backbone)}</td><td>{_e(label)}</td>{values}</tr>")
        header = "".join(f"<th>{_e(c)}</th>" for c in columns)
        parts.append(f"<h3>Test {metric.upper()}: mean ± sd over splits</h3><div class='scroll'><table "
                     f"id='table-{metric}'><tr><th>backbone</th><th>head</th>{header}</tr>{''.join(body)}</table></div>")
    return "".join(parts) + ("<p class='muted'>Bold: the highest mean among the heads of its backbone and column, a "
                             "ranking of means and not a test; ‡: below the linear probe (health check). The tables in "
                             "Markdown and LaTeX, with their significance marks, are beside this page.</p>")


def _warnings(page: ReportPage) -> str:
    if not page.warnings:
        return ""
    items = "".join(f"<li>{_e(w)}</li>" for w in page.warnings)
    return f"<h2>Warnings</h2><ul class='warnings'>{items}</ul>"


def _provenance(page: ReportPage) -> str:
    record = page.provenance
    machine = record.get("machine", {})
    packages = ", ".join(f"{k} {v}" for k, v in (machine.get("packages") or {}).items() if v)
    rows = [("command", f"<code>{_e(record.get('command', ''))}</code>"), ("git sha", _e(record.get("git_sha", ""))),
            ("date", _e(record.get("date", ""))),
            ("machine", _e(f"{machine.get('platform', '')}, Python {machine.get('python', '')}, "
                           f"{machine.get('cpu_count', '')} CPUs, GPU {machine.get('gpu') or 'none'}")),
            ("packages", _e(packages)), ("report built in", f"{record.get('duration_s', 0):.1f} s"),
            ("MLflow", _e(f"experiment {record.get('experiment_id', '')} ({page.data.record.name}) in a "
                          f"{record.get('tracking_uri_kind', '')} store"))]
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    usable = page.data.usable
    runs = "".join(f"<tr><td>{_e(_cell(r.pair_key))}</td><td class='num'>{r.split}</td><td class='num'>{r.seed}</td>"
                   f"<td>{_e(r.head)}</td><td><code>{_e(r.run_id)}</code></td></tr>" for r in usable.itertuples())
    return (f"<h2>Provenance</h2><table>{table}</table><details><summary>MLflow run ids ({len(usable)} result runs; "
            "open them with <code>mlflow ui</code>, score images with <code>dor-bench predict --run-id</code>)"
            "</summary><div class='scroll'><table id='runs'><tr><th>cell</th><th>split</th><th>seed</th><th>head</th>"
            f"<th>run id</th></tr>{runs}</table></div></details>")


def render(page: ReportPage) -> str:
    """The whole page as HTML text."""
    name = _e(page.data.record.name)
    body = "".join([f"<h1>DOR-IQA benchmark — grid <code>{name}</code></h1>", _grid_sentence(page),
                    _verdicts(page), _blind_spots(page), _health(page), _figures(page), _tables(page),
                    _warnings(page), _provenance(page)])
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>DOR-IQA report: {name}</title>"
            f"<style>{CSS}</style></head><body><main>{body}</main></body></html>\n")


def write_html(out: Path, page: ReportPage) -> Path:
    """Write ``report.html`` into ``out`` and return its path."""
    path = out / PAGE
    path.write_text(render(page), encoding="utf-8")
    return path


__all__ = ["PAGE", "ReportPage", "render", "write_html"]
