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
