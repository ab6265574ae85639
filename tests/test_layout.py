"""search/results/layout.py is the only place that spells a name of the study folder (issue 21.3)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

from search.results import layout

LAYOUT = REPO / "search" / "results" / "layout.py"


def _study_folder_names() -> set[str]:
    """Every file or folder name that layout.py defines (its str constants)."""
    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)}
    assert {"trial.json", "final.json", "test_metrics.json", "scores.json", "best.weights.h5"} <= names
    return names


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """The str literals of a module, docstrings left out (they may name files to explain them)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):  # f"…/trial.json": the literal parts
            out += [(node.lineno, part.value) for part in node.values
                    if isinstance(part, ast.Constant) and isinstance(part.value, str)]
    return out


def test_no_module_but_layout_spells_a_study_folder_name() -> None:
    names = _study_folder_names() - {"trials", "final", "engine", "predictions", "checkpoint", "tb"}  # also words
    offenders = []
    for path in sorted((REPO / "search").rglob("*.py")):
        if path == LAYOUT:
            continue
        for line, text in _string_constants(path):
            if text in names or any(text.endswith(f"/{n}") or text.startswith(f"{n}/") for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{line}: {text!r}")
    assert not offenders, "spell these through search/results/layout.py:\n" + "\n".join(offenders)


def test_the_scan_finds_a_spelled_name(tmp_path: Path) -> None:
    """The scan itself works: a literal file name outside a docstring is found, one inside is not."""
    module = tmp_path / "m.py"
    module.write_text('"""Writes final.json."""\n\ndef f(d):\n    """trial.json"""\n    return d / "final.json", f"{d}/scores.json"\n')
    found = [text for _, text in _string_constants(module)]
    assert "final.json" in found and "/scores.json" in found and "trial.json" not in found
    assert "Writes final.json." not in found


def test_the_tests_mirror_the_packages() -> None:
    """Issue 21.7: tests/<package>_tests/ for each package of search/ (and models/, data/); end-to-end in tests/e2e/.
    (The suffix keeps tests/models and tests/data from shadowing the real packages on sys.path.)"""
    packages = {p.name for p in (REPO / "search").iterdir() if (p / "__init__.py").is_file()} | {"models", "data"}
    folders = {p.name.removesuffix("_tests") for p in (REPO / "tests").iterdir() if p.name.endswith("_tests")}
    assert packages <= folders, f"no tests/<package>_tests/ for: {sorted(packages - folders)}"
    assert (REPO / "tests" / "e2e").is_dir()
    stray = sorted(p.name for p in (REPO / "tests").glob("test_*.py"))
    assert stray == ["test_imports.py", "test_layout.py", "test_readme.py"], stray  # the house rules, not a package
