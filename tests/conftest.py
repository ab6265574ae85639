"""Shared fixtures: quiet TensorFlow, a tiny synthetic dataset, a tiny study config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

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
        "train": {"max_epochs": 3, "patience": 3},
        "final": {"retrain": False, "num_predictions": 2},
        "search_space": {
            "base_filters": {"type": "choice", "values": [4, 8]},
            "base_kernels": {"value": 3},
            "num_layers": {"type": "int", "min": 2, "max": 3},
            "learning_rate": {"type": "float", "min": 1e-3, "max": 1e-2, "log": True},
            "dropout_rate": {"value": 0.0},
            "dilation": {"value": 1},
            **{f"augment.{k}": {"value": 0.0} for k in ("hflip", "vflip", "rotation", "shrink", "shear", "elastic",
                                                        "distortion", "barrel", "pincushion")},
        },
    }
    for name, section in sections.items():
        raw.setdefault(name, {}).update(section)
    return raw
