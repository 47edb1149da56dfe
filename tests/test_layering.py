"""The package is layered one way: data below everything, the run side above what it uses, the report and the
grid parser free of torch and of the run side."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "benchmark"
TORCH_SIDE = ("torch", "timm", "piq", "benchmark.run", "benchmark.factory", "benchmark.models", "benchmark.bundle",
              "benchmark.predict", "benchmark.folding", "benchmark.data.cell_data")
RUN_SIDE_ENTRIES = {("benchmark/cli.py", "_run")}
"""Where a module outside ``benchmark/run`` may import the run side: the CLI's ``run`` command, inside it."""


def _imports(path: Path) -> list[tuple[str, str]]:
    """``(imported module, enclosing function or '')`` of every import that runs (``TYPE_CHECKING`` blocks skipped);
    ``from a import b`` gives both ``a`` and ``a.b`` (``b`` may be a module), a relative import its dots."""
    found: list[tuple[str, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, function) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found.append((module, function))
            found.extend((f"{module}.{alias.name}", function) for alias in node.names)
        inner = node.name if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not function else function
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text()), "")
    return found


def _modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_imports_are_absolute() -> None:
    relative = [f"{_name(p)} imports {module}" for p in _modules(PACKAGE) for module, _ in _imports(p)
                if module.startswith(".")]
    assert not relative, "the checks below read absolute imports only:\n" + "\n".join(relative)


def test_data_imports_nothing_above_it() -> None:
    wrong = [f"{_name(p)} imports {module}" for p in _modules(PACKAGE / "data") for module, _ in _imports(p)
             if module.startswith("benchmark") and not module.startswith("benchmark.data")]
    assert not wrong, "benchmark/data must not import the layers above it:\n" + "\n".join(wrong)


def test_only_the_run_command_imports_the_run_side() -> None:
    outside = [p for p in _modules(PACKAGE) if not _name(p).startswith("benchmark/run/")]
    wrong = [f"{_name(p)} ({function or 'module level'}) imports {module}" for p in outside
             for module, function in _imports(p)
             if module.startswith("benchmark.run") and (_name(p), function) not in RUN_SIDE_ENTRIES]
    assert not wrong, "only the run side and `dor-bench run` may import benchmark.run:\n" + "\n".join(wrong)


def test_the_analysis_imports_no_torch_and_no_run_side() -> None:
    wrong = [f"{_name(p)} imports {module}" for p in _modules(PACKAGE / "analysis") for module, _ in _imports(p)
             if module.startswith(TORCH_SIDE)]
    assert not wrong, "benchmark/analysis reads stores and tables only:\n" + "\n".join(wrong)


def test_parsing_grids_reporting_and_the_cli_load_no_torch() -> None:
    code = """
import json, sys
from benchmark.config import builtin_grids, load_grid
from benchmark.cli import build_parser
import benchmark.analysis.report, benchmark.analysis.design
grids = [load_grid(name).name for name in builtin_grids()]
build_parser()
print(json.dumps({"grids": grids, "loaded": sorted(m for m in sys.modules if m.startswith(%r))}))
""" % (TORCH_SIDE,)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert "default" in seen["grids"] and seen["loaded"] == []


def test_the_checks_can_fail(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
                      "import benchmark.run.grid\ndef f():\n    from benchmark import run\n")
    assert _imports(module) == [("typing", ""), ("typing.TYPE_CHECKING", ""), ("benchmark.run.grid", ""),
                                ("benchmark", "f"), ("benchmark.run", "f")]
