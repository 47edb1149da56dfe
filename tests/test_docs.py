"""The README front page and docs/: size, the two commands, links that resolve, every page reachable."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown page: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_the_front_page_is_short_and_opens_with_the_two_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 10_000
    commands = re.findall(r"```bash\n(.+?)\n```", readme, flags=re.DOTALL)
    assert commands[:2] == ["python3 -m pip install -e . && dor-bench run && dor-bench report",
                            "python3 -m pip install -e '.[dev]' && python3 -m pytest -q"]
    assert commands[1] in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link {target} names no file"
        if anchor:
            assert anchor in _anchors(file), f"{page.name}: link {target} names no heading of {file.name}"


def test_every_docs_page_is_linked_from_the_front_page():
    readme = (REPO / "README.md").read_text()
    assert [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme] == []


def _table(text: str, first_header: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header row starts with ``| first_header |``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _number(text: str) -> float:
    return float(text.replace("−", "-").rstrip("†"))


BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def test_the_front_page_shows_the_committed_live_challenge_numbers():
    import pandas as pd

    readme = (REPO / "README.md").read_text()
    results = REPO / "results" / "livec"
    tables = {metric: pd.read_csv(results / f"table_{metric}.csv") for metric in ("srcc", "plcc")}
    for head, *cells in _table(readme, "head"):
        label = "probe" if head.startswith("probe") else head
        for backbone, cell in zip(BACKBONES, cells, strict=True):
            for metric, shown in zip(("srcc", "plcc"), cell.split(" / "), strict=True):
                table = tables[metric]
                mean = table[(table["backbone"] == backbone) & (table["head"] == label)]["mean"].item()
                assert _number(shown) == round(mean, 3), (head, backbone, metric)
    stats = pd.read_csv(results / "stats.csv")
    stats = stats[(stats["metric"] == "srcc") & (stats["analysis"] == "complete-case") & (stats["target"] == "dataset")]
    for comparison, *cells in _table(readme, "comparison"):
        head_a, head_b = comparison.split(" − ")
        for backbone, cell in zip(BACKBONES, cells, strict=True):
            row = stats[(stats["backbone"] == backbone) & (stats["head_a"] == head_a) & (stats["head_b"] == head_b)].iloc[0]
            delta, interval, rest = cell.split(" ", 1)[0], cell[cell.index("[") + 1:cell.index("]")], cell.split("] ")[1]
            verdict, mde = rest.rsplit(", ", 1)
            assert _number(delta) == round(row["mean_delta"], 3) and delta.endswith("†") == bool(row["significant"])
            assert [_number(v) for v in interval.split(", ")] == [round(row["ci_low"], 3), round(row["ci_high"], 3)]
            assert verdict == row["verdict"] and _number(mde) == round(row["mde80"], 3), (comparison, backbone)
    paper = _table(readme, "backbone · head")
    srcc = tables["srcc"]
    for label, *cells in paper:
        backbone, head = label.split(" · ")
        assert _number(cells[4]) == round(srcc[(srcc["backbone"] == backbone) & (srcc["head"] == head)]["mean"].item(), 3)
        assert cells[:4] == ["–"] * 4 and cells[5] == "–"


def test_the_front_page_shows_the_committed_pool_numbers():
    import re

    import pandas as pd

    readme = (REPO / "README.md").read_text()
    shown = re.search(r"dor − mse = (\S+) \[(\S+), (\S+)\], p < (\S+),\s+and \*\*practically equivalent\*\* "
                      r"\(P\(\|Δ\| ≤ 0.01\) = (\S+)\)", readme)
    assert shown, "the README's livec-pool sentence changed shape"
    stats = pd.read_csv(REPO / "results" / "livec-pool" / "stats.csv")
    row = stats[(stats["metric"] == "srcc") & (stats["target"] == "dataset") & (stats["analysis"] == "complete-case")
                & (stats["head_a"] == "dor") & (stats["head_b"] == "mse")].iloc[0]
    delta, low, high, p_bound, p_rope = shown.groups()
    assert [_number(v) for v in (delta, low, high)] == [round(row[c], 3) for c in ("mean_delta", "ci_low", "ci_high")]
    assert row["p"] < float(p_bound) and _number(p_rope) == round(row["p_rope"], 3)
    assert row["verdict"] == "equivalent"
