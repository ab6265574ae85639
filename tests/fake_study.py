"""A study folder built with the results contract's own writers, for tests that read studies.

Used by test_report, test_export, test_predict and test_browser_report.
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from conftest import tiny_raw_config

from data.augment import AUGMENTATIONS
from search.config import Config, config_from_dict
from search.config.space import complete_values
from search.results import StudyDir, TrialRecord, atomic_write_json, atomic_write_text, write_history_csv

AUG = AUGMENTATIONS


def raw_config(name: str = "tiny", *, data_root: str = "dataset/tiny", strategy: str = "random-optuna",
               strengths: dict[str, float] | None = None) -> dict[str, Any]:
    """The tests' tiny study config, with a sampled dropout and fixed augmentation strengths."""
    strengths = {k: 0.0 for k in AUG} | (strengths or {})
    raw = tiny_raw_config(Path(data_root), study={"name": name, "strategy": strategy, "max_trials": 8,
                                                  "baselines": True})
    raw["data"]["root"] = data_root
    raw["search_space"].update(
        dropout_rate={"type": "float", "min": 0.0, "max": 0.1},
        **{f"augment.{k}": {"value": v} for k, v in strengths.items()},
    )
    return raw


def _panels(folder: Path, n: int, rng: np.random.Generator, size: int = 32) -> None:
    from search.results.images import save_predictions

    yy, xx = np.mgrid[:size, :size]
    images, masks, probs = [], [], []
    for _ in range(n):
        cy, cx, r = rng.integers(10, 22), rng.integers(10, 22), rng.integers(4, 8)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        images.append((60 + 120 * disc + rng.integers(0, 40, (size, size))).astype(np.uint8)[..., None])
        masks.append(disc)
        probs.append(np.clip(np.roll(disc, 1, axis=1) * 0.9 + rng.random((size, size)) * 0.2, 0, 1))
    save_predictions(folder, np.stack(images), np.stack(masks), np.stack(probs), [f"img_{i:03d}" for i in range(n)])


def build_study(
    results: Path,
    *,
    name: str = "tiny",
    n_complete: int = 4,
    n_pruned: int = 1,
    n_failed: int = 1,
    n_running: int = 0,
    final: bool = True,
    predictions: bool = True,
    strategy: str = "random-optuna",
    data_root: str = "dataset/tiny",
    strengths: dict[str, float] | None = None,
    seed: int = 0,
) -> StudyDir:
    """A study folder as the runner leaves it: study.yaml, trials/<n>/{trial.json, history.csv, predictions}, final/."""
    cfg: Config = config_from_dict(raw_config(name, data_root=data_root, strategy=strategy, strengths=strengths))
    study = StudyDir(results / name)
    study.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(study.study_yaml, cfg.to_yaml())
    atomic_write_json(study.environment_json, {"python": "3.11", "tensorflow": "2.21.0", "keras": "3.15.0"})
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    statuses = ["complete"] * n_complete + ["pruned"] * n_pruned + ["failed"] * n_failed + ["running"] * n_running
    t0 = time.time() - 3600
    for number, status in enumerate(statuses):
        sampled = {
            "base_filters": rng.choice([4, 8]),
            "num_layers": rng.randint(2, 3),
            "learning_rate": 10 ** rng.uniform(-3, -2),
            "dropout_rate": rng.uniform(0, 0.1),
        }
        values = complete_values(cfg, sampled)
        epochs = {"complete": 3, "pruned": 2, "failed": 1, "running": 1}[status]
        history = []
        for e in range(epochs):
            history.append({"epoch": e, "loss": 0.9 - 0.1 * e - 0.01 * number, "hard_dice": 0.3 + 0.1 * e,
                            "val_loss": 0.95 - 0.1 * e, "val_hard_dice": 0.2 + 0.05 * e + 0.04 * number,
                            "lr": values["learning_rate"], "epoch_s": 0.5})
        write_history_csv(study.trial_dir(number) / "history.csv", history)
        score = max(h["val_hard_dice"] for h in history)
        rec = TrialRecord(
            number=number, status=status, values=values, seed=number, baseline=number == 0,
            score=score if status in ("complete", "pruned") else None,
            best_epoch=epochs - 1 if status == "complete" else None, epochs_run=epochs,
            duration_s=10.0 + number, started_at=t0 + 60 * number,
            finished_at=None if status == "running" else t0 + 60 * number + 10,
            reason={"pruned": "pruned at epoch 1 (asha)", "failed": "loss became nan at epoch 0"}.get(status, ""),
        )
        if status == "pruned":
            rec.score = 0.99  # a pruned trial's partial score must never be exported as the best
        study.write_trial(rec)
        if status == "complete" and predictions:
            _panels(study.trial_dir(number) / "predictions", 2, nprng)
    study.refresh_trials_csv()
    if final and n_complete:
        best = study.best_trial()
        assert best is not None
        dice = [0.7, 0.8, 0.9]
        metrics = {"hard_dice": float(np.mean(dice)), "hard_iou": 0.7, "soft_dice": 0.78, "loss": 0.2, "n_images": 3,
                   "per_image": {"hard_dice": dice, "hard_iou": [0.6, 0.7, 0.8], "stems": ["a", "b", "c"]},
                   "valid_score": best.score, "best_epoch": 2}
        atomic_write_json(study.final_dir / "test_metrics.json", metrics)
        atomic_write_json(study.final_dir / "final.json", {
            "trial": best.number, "values": best.values, "valid_score": best.score,
            "test": {k: metrics[k] for k in ("hard_dice", "hard_iou", "soft_dice", "loss", "n_images")}})
        if predictions:
            _panels(study.final_dir / "predictions", 3, nprng)
    return study


def report_figures(text: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="report-figures">(.*?)</script>', text, re.S)
    assert m, "figures JSON missing"
    return json.loads(m.group(1).replace("<\\/", "</"))


SECTION_IDS = ("summary", "history", "anytime", "parallel", "importance", "curves", "predictions", "failures", "final")
