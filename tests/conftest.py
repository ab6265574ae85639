"""Shared fixtures: quiet TensorFlow, a tiny synthetic dataset, a tiny study config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from data.augment import AUGMENTATIONS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 synthetic CT-like pairs at 32 px in the dataset layout (made once per test session)."""
    from data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic") / "ds"
    write_synthetic_dataset(root, n=40, size=32, seed=0)
    return root


def tiny_raw_config(data_root: Path, **sections: Any) -> dict[str, Any]:
    """A study config small enough to search in seconds (32 px, 2–3 levels, few filters)."""
    raw: dict[str, Any] = {
        "study": {"name": "tiny", "strategy": "random-optuna", "pruner": "none", "max_trials": 3, "seed": 1,
                  "baselines": False},
        "data": {"root": str(data_root), "image_size": 32, "channels": 1, "batch_size": 8,
                 "num_val_predictions": 2},
        # one pass over the ~24 training images per epoch, no warm-up: seconds per trial
        "train": {"max_epochs": 3, "patience": 3, "samples_per_epoch": None, "warmup_samples": 0},
        "final": {"retrain": False, "num_predictions": 2},
        "search_space": {
            "base_filters": {"type": "choice", "values": [4, 8]},
            "base_kernels": {"value": 3},
            "num_layers": {"type": "int", "min": 2, "max": 3},
            "learning_rate": {"type": "float", "min": 1e-3, "max": 1e-2, "log": True},
            "dropout_rate": {"value": 0.0},
            "dilation": {"value": 1},
            **{f"augment.{k}": {"value": 0.0} for k in AUGMENTATIONS},
        },
    }
    for name, section in sections.items():
        raw.setdefault(name, {}).update(section)
    return raw


def write_config(path: Path, data_root: Path, **sections: Any) -> Path:
    """:func:`tiny_raw_config` with ``sections`` merged in, written as YAML to ``path``."""
    import yaml

    path.write_text(yaml.safe_dump(tiny_raw_config(data_root, **sections)))
    return path


def spawn_search(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``python -m search ARGS`` in its own process group (so a test can kill the whole group)."""
    return subprocess.Popen([sys.executable, "-m", "search", *args], cwd=REPO, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish_process(proc: subprocess.Popen[str], *, timeout_s: float = 300) -> tuple[int, str]:
    """Wait for a spawned search; on timeout kill its group and fail the test with its output."""
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the run did not finish in {timeout_s} s:\n{out[-3000:]}")
    return proc.returncode, out


def step_counter() -> tuple[Any, list[int]]:
    """A Keras callback counting the optimizer steps of each epoch, and the counts it fills."""
    import keras

    counts: list[int] = []

    class Count(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            counts.append(0)

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            counts[-1] += 1

    return Count(), counts


def final_task_of(task: Any, **fields: Any) -> Any:
    """The final stage's task with ``task``'s common fields (number, specs, folder, outputs, units, ...)."""
    import dataclasses

    from search.trial.final import FinalTask
    from search.trial.task import TrialTask

    common = {f.name: getattr(task, f.name) for f in dataclasses.fields(TrialTask)}
    return FinalTask(**common, **fields)
