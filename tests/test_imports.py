"""The search driver never trains, so it must not load TensorFlow (start-up seconds, ~600 MiB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def test_the_optuna_driver_path_imports_no_tensorflow() -> None:
    code = (
        "import sys\n"
        "import search.cli, search.study.runner, search.engines.optuna_engine, search.trial.process, search.trial.task\n"
        "from models import UNetSpec, estimate_training_memory_bytes\n"
        "from search.results.environment import environment_info\n"
        "from search.config import load_config\n"
        "from search.config.specs import specs_from_values, check_memory\n"
        "cfg = load_config('search_space.yaml', overrides=['data.channels=3'])\n"  # auto is resolved from the data
        "specs = specs_from_values(cfg, cfg.fixed_values(), seed=0)\n"
        "check_memory(specs, budget_bytes=2**40)\n"
        "info = environment_info()\n"
        "assert info['tensorflow'], info\n"  # the version comes from the package metadata
        "loaded = sorted(m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules)\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_keras_names_still_load_from_models_on_first_use() -> None:
    import models

    assert callable(models.build_model) and models.get_loss("bce_dice") is models.bce_dice_loss


def test_no_import_cycle_in_search() -> None:
    """Issue 21.2: no module of search/ reaches itself through its imports (those inside functions count)."""
    import grimp

    graph = grimp.build_graph("search", include_external_packages=False)
    cycles = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain:
                cycles.add(" -> ".join((module, *chain)))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_the_cycle_check_finds_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above works: two modules that import each other inside a function are a cycle."""
    import grimp

    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from cyclic import b\n")
    (package / "b.py").write_text("from cyclic import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclic", include_external_packages=False)
    assert graph.find_shortest_chain(importer="cyclic.b", imported="cyclic.a") == ("cyclic.b", "cyclic.a")
    assert graph.find_shortest_chain(importer="cyclic.a", imported="cyclic.b") == ("cyclic.a", "cyclic.b")


# Own-module imports inside functions, outside search/cli (whose commands import what they run, so that
# `--help` stays fast): only these, each keeping a heavy library out of the driver.
LAZY_IMPORTS = {
    "models": {  # Keras: losses, metrics, the model builder
        "ForegroundHardDice", "HardDice", "HardIoU", "PredictedForeground", "SoftDice", "build_model", "get_loss",
        "hard_dice_per_image", "iou_per_image", "soft_dice", "hard_dice_per_class", "image_means", "iou_per_class",
        "predicted_labels",
    },
    "data": {"eval_dataset", "train_dataset"},  # tf.data
    "search.engines.optuna_engine": None,  # Optuna
    "search.engines.kt_engine": None,  # Keras Tuner (and Keras)
    "search.tools.dashboard": None,  # Optuna, optuna-dashboard
}


def _imports_inside_functions(path: Path) -> list[tuple[int, str, list[str]]]:
    import ast

    tree = ast.parse(path.read_text())
    found = set()
    for func in ast.walk(tree):
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in (
                        "search", "models", "data"):
                    found.add((node.lineno, node.module, tuple(a.name for a in node.names)))
    return [(line, module, list(names)) for line, module, names in sorted(found)]


def test_own_modules_are_imported_at_the_top_unless_they_keep_a_heavy_library_out() -> None:
    """Issue 21.2: an import inside a function hides a dependency; only the listed ones have a reason."""
    offenders = []
    for path in sorted((REPO / "search").rglob("*.py")):
        if "cli" in path.relative_to(REPO / "search").parts:
            continue
        for line, module, names in _imports_inside_functions(path):
            allowed = LAZY_IMPORTS.get(module, set())
            if allowed is None or set(names) <= allowed:
                continue
            offenders.append(f"{path.relative_to(REPO)}:{line}: from {module} import {', '.join(names)}")
    assert not offenders, "import these at the top of the module (or say in LAZY_IMPORTS why not):\n" + "\n".join(
        offenders)


def test_the_lazy_import_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from search.results import StudyDir\n    return StudyDir\n")
    assert _imports_inside_functions(module) == [(2, "search.results", ["StudyDir"])]
