"""The final stage: the best trial's model tested on the test split (or retrained on train+valid first).

The driver side: choose the best trial, write ``final/best_config.yaml``, run the task in a trial
process and write ``final/final.json``. The trial process side (load the weights or retrain, test,
save ``final/model.keras``) is ``search/trial.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from search.config import Config, best_config, config_from_dict
from search.errors import ConfigError, Interrupted, SearchAborted
from search.results import StudyDir, atomic_write_json, atomic_write_text, read_json
from search.runtime import trial_runtime
from search.specs import trial_seed
from search.study_data import PreparedData, prepare_data
from search.trial import TrialTask
from search.trial_process import TrialProcess
from search.vocabulary import EpochDecision, TrialState

__all__ = ["run_final"]

logger = logging.getLogger(__name__)


def run_final(
    study: StudyDir,
    *,
    cfg: Config | None = None,
    data: PreparedData | None = None,
    trial_process: TrialProcess | None = None,
    verbose: int = 0,
    results_root: Path | None = None,
) -> dict[str, Any]:
    """Retrain the best trial's values from scratch and evaluate them on the test split."""
    if cfg is None:
        cfg = config_from_dict(yaml.safe_load(study.study_yaml.read_text()), source=str(study.study_yaml))
    best = study.best_trial()
    if best is None:
        raise ConfigError(f"study {study.name!r} has no completed trial yet; nothing to retrain")
    if data is None:
        data = prepare_data(cfg, results_root or study.root.parent)
    final_dir = study.final_dir
    final_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(final_dir / "best_config.yaml", best_config(cfg, best.values).to_yaml())
    fixed = (best.best_epoch or 0) + 1 if cfg.final.train_on_valid else None
    weights = study.trial_dir(best.number) / "best.weights.h5"
    if fixed is None and not weights.is_file():
        raise SearchAborted(
            f"trial {best.number}'s weights {weights} are missing; set final.train_on_valid=true to retrain"
        )
    task = TrialTask(
        number=best.number,
        values=best.values,
        seed=trial_seed(cfg.study.seed, best.number),
        out_dir=str(final_dir),
        config=cfg.to_dict(),
        cache_path=data.cache_path,
        kind="final",
        fixed_epochs=fixed,
        weights_path=None if fixed is not None else str(weights),
        verbose=verbose,
    )
    own = trial_process is None
    process = trial_process or TrialProcess(recycle_after=1, runtime=trial_runtime(cfg))
    logger.info("final: %s trial %d (validation score %.4f)",
                "retraining on train+valid" if fixed else "testing the weights of", best.number, best.score or 0)
    try:
        outcome = process.run(task, lambda epoch, logs: EpochDecision.CONTINUE)
    finally:
        if own:
            process.close()
    if outcome.interrupted:
        raise Interrupted("final retrain interrupted; run `python -m search final NAME` to redo it")
    if outcome.status != TrialState.COMPLETE:
        raise SearchAborted(f"final retrain of trial {best.number} failed: {outcome.reason}")
    metrics = read_json(final_dir / "test_metrics.json")
    metrics_summary = {k: metrics[k] for k in ("hard_dice", "hard_iou", "soft_dice", "loss", "n_images")}
    atomic_write_json(
        final_dir / "final.json",
        {"trial": best.number, "values": best.values, "valid_score": best.score, "test": metrics_summary,
         "train_on_valid": cfg.final.train_on_valid, "model_from": metrics.get("model_from"),
         "epochs_run": outcome.epochs_run,
         "duration_s": outcome.duration_s},
    )
    logger.info(
        "final: test hard dice %.4f, IoU %.4f (trial %d)", metrics["hard_dice"], metrics["hard_iou"], best.number
    )
    return {"trial": best.number, **metrics_summary}
