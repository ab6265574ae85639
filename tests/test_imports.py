"""The search driver never trains, so it must not load TensorFlow (start-up seconds, ~600 MiB)."""

from __future__ import annotations

import subprocess
import sys

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
