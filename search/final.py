"""The final stage: the chosen trial's model tested on the test split (or retrained on train+valid first).

The driver side: choose the trial (the search's best, or the pick of the top-k re-evaluation in
``search/reevaluation.py``), write ``final/best_config.yaml``, run the task in a trial process and
write ``final/final.json``. The trial process side (load the weights or retrain, test, save
``final/model.keras``) is ``search/final_task.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from search.budget import BudgetEnded, Deadline
from search.config import Config, best_config, config_from_dict
from search.errors import ConfigError, Interrupted, SearchAborted
from search.reevaluation import SELECTION_FILE, reevaluate
from search.results import StudyDir, TrialRecord, atomic_write_json, atomic_write_text, read_json
from search.runtime import trial_runtime
from search.specs import specs_from_values, trial_seed
from search.study_data import PreparedData, fold_plan, prepare_data
from search.trial import ModelSource, TrialOutputs, TrialTask
from search.trial_process import TrialProcess
from search.verdict import paired_verdict
from search.vocabulary import EpochDecision, TrialState

__all__ = ["model_source", "run_final"]

logger = logging.getLogger(__name__)


def run_final(
    study: StudyDir,
    *,
    cfg: Config | None = None,
    data: PreparedData | None = None,
    trial_process: TrialProcess | None = None,
    verbose: int = 0,
    results_root: Path | None = None,
    deadline: Deadline | None = None,
) -> dict[str, Any]:
    """Pick the final configuration (the search's best, or after re-evaluation) and test its model.

    With ``final.reevaluate_top_k`` the top-k trials and the baseline are first trained again with
    fresh seeds (search/reevaluation.py) and the pick is made on those scores. The chosen model and
    the baseline's are tested on the same test images for the verdict.

    ``deadline``: the run's end (search/budget.py). Training here (a retrain, fresh runs) stops at it;
    a re-evaluation it cuts short is dropped (the search's best is tested), a retrain keeps its last
    completed epoch.
    """
    if cfg is None:
        cfg = config_from_dict(yaml.safe_load(study.study_yaml.read_text()), source=str(study.study_yaml))
    best = study.best_trial()
    if best is None:
        raise ConfigError(f"study {study.name!r} has no completed trial yet; nothing to retrain")
    if data is None:
        data = prepare_data(cfg, results_root or study.root.parent)
    final_dir = study.final_dir
    final_dir.mkdir(parents=True, exist_ok=True)
    own = trial_process is None
    process = trial_process or TrialProcess(recycle_after=max(1, cfg.study.recycle_after), runtime=trial_runtime(cfg))
    try:
        selection = None
        (final_dir / SELECTION_FILE).unlink(missing_ok=True)  # a pick of an earlier final stage
        stop_at = deadline.ends_at if deadline is not None else None
        if cfg.final.reevaluate_top_k > 0:
            try:
                selection = reevaluate(study, cfg, data, process, fold_plan(cfg, data, study.root), stop_at=stop_at)
            except BudgetEnded as e:
                logger.warning("final: %s; testing the search's best, trial %d, instead", e, best.number)
            if selection is not None:
                chosen_rec = study.read_trial(int(selection["chosen"]))
                assert chosen_rec is not None
                best = chosen_rec
        task = _final_task(study, cfg, data, best, selection, verbose)
        task.stop_at = stop_at
        logger.info("final: %s trial %d (validation score %.4f)", "retraining on train+valid" if task.fixed_epochs
                    else "testing the weights of", best.number, best.score or 0)
        outcome = process.run(task, lambda epoch, logs: EpochDecision.CONTINUE)
    finally:
        if own:
            process.close()
    if outcome.interrupted and outcome.stopped_by == "budget":
        raise SearchAborted("the budget ended before the final retrain finished one epoch; run "
                            f"`python -m search final {study.name}` to redo it")
    if outcome.interrupted:
        raise Interrupted("final retrain interrupted; run `python -m search final NAME` to redo it")
    if outcome.status != TrialState.COMPLETE:
        raise SearchAborted(f"final retrain of trial {best.number} failed: {outcome.reason}")
    metrics = read_json(final_dir / "test_metrics.json")
    metrics_summary = {k: metrics[k] for k in ("hard_dice", "hard_iou", "soft_dice", "loss", "n_images")}
    verdict = _verdict(metrics, best, study.baseline_trial(), cfg.study.seed)
    if selection is not None:
        _attach_test_scores(selection, metrics)
        atomic_write_json(final_dir / SELECTION_FILE, selection)
    logger.info("final: %s", verdict["sentence"])
    atomic_write_json(
        final_dir / "final.json",
        {"trial": best.number, "values": best.values, "valid_score": best.score, "valid_score_se": best.score_se,
         "evaluation": cfg.study.evaluation, "test": metrics_summary, "verdict": verdict, "selection": selection,
         "train_on_valid": cfg.final.train_on_valid, "model_from": metrics.get("model_from"),
         "epochs_run": outcome.epochs_run,
         "duration_s": outcome.duration_s},
    )
    logger.info(
        "final: test hard dice %.4f, IoU %.4f (trial %d)", metrics["hard_dice"], metrics["hard_iou"], best.number
    )
    return {"trial": best.number, **metrics_summary, "verdict": verdict["sentence"]}


def _final_task(study: StudyDir, cfg: Config, data: PreparedData, best: TrialRecord,
                selection: dict[str, Any] | None, verbose: int) -> TrialTask:
    """The trial process's task: the chosen model (or a retrain), the baseline, the re-evaluated candidates."""
    final_dir = study.final_dir
    atomic_write_text(final_dir / "best_config.yaml", best_config(cfg, best.values).to_yaml())
    # A retrain runs the chosen trial's epochs up to its best one (a pruned baseline's: the epochs it ran).
    epochs = best.best_epoch + 1 if best.best_epoch is not None else max(best.epochs_run, 1)
    fixed = epochs if cfg.final.train_on_valid else None
    chosen = model_source(study, cfg, best, label=f"trial {best.number}")
    if fixed is None and chosen is None:
        raise SearchAborted(
            f"trial {best.number}'s weights in {study.trial_dir(best.number)} are missing; "
            f"set final.train_on_valid=true to retrain"
        )
    baseline_rec = study.baseline_trial()
    baseline = None
    if baseline_rec is not None and baseline_rec.number != best.number:
        baseline = model_source(study, cfg, baseline_rec, label=f"the reference configuration (trial {baseline_rec.number})")
    candidates: list[ModelSource] = []
    for cand in (selection or {}).get("candidates", []):
        rec = study.read_trial(int(cand["trial"]))
        source = model_source(study, cfg, rec, label=f"trial {rec.number}") if rec is not None else None
        if source is not None:
            candidates.append(source)
    return TrialTask(
        number=best.number,
        specs=specs_from_values(cfg, best.values, seed=trial_seed(cfg.study.seed, best.number)),
        out_dir=str(final_dir),
        cache_path=data.cache_path,
        kind="final",
        outputs=TrialOutputs(predictions=cfg.final.num_predictions, checkpoint=False),
        fixed_epochs=fixed,
        model=chosen if fixed is None else None,
        baseline=baseline,
        candidates=tuple(candidates),
        verbose=verbose,
    )


def _attach_test_scores(selection: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Each candidate's test dice (its trial's own weights), recorded after the pick and not used by it."""
    tested = {c["label"]: c["hard_dice"] for c in metrics.get("candidates", [])}
    for cand in selection["candidates"]:
        cand["test_hard_dice"] = tested.get(f"trial {cand['trial']}")
    selection["test_note"] = ("test_hard_dice: each candidate's own trial weights on the test split, measured "
                              "after the pick for the record; the pick used the fresh validation scores only")


def model_source(study: StudyDir, cfg: Config, rec: TrialRecord, *, label: str) -> ModelSource | None:
    """A trial's trained model: its best weights, or (k-fold) the weights of each finished fold."""
    trial_dir = study.trial_dir(rec.number)
    if cfg.study.evaluation == "kfold":
        weights = [trial_dir / f"fold{f}" / "best.weights.h5" for f in range(cfg.study.folds)]
        weights = [w for w in weights if w.is_file()]
    else:
        weights = [w for w in [trial_dir / "best.weights.h5"] if w.is_file()]
    if not weights:
        return None
    specs = specs_from_values(cfg, rec.values, seed=trial_seed(cfg.study.seed, rec.number))
    return ModelSource(specs=specs, weights=tuple(str(w) for w in weights), label=label)


def _verdict(metrics: dict[str, Any], best: TrialRecord, baseline: TrialRecord | None, seed: int) -> dict[str, Any]:
    """The paired test-set comparison of the chosen model and the baseline (search/verdict.py)."""
    if baseline is None:
        return {"outcome": "not_available", "sentence": "no verdict: the study has no trained baseline trial "
                "(study.baselines: false, or the reference configuration failed)"}
    if baseline.number == best.number:
        return {"outcome": "baseline_chosen", "sentence": f"the search chose the reference configuration itself "
                f"(trial {best.number}); test dice {metrics['hard_dice']:.3f}"}
    if "baseline" not in metrics:
        return {"outcome": "not_available",
                "sentence": f"no verdict: the reference configuration's trial {baseline.number} has no saved weights"}
    v = paired_verdict(metrics["per_image"]["hard_dice"], metrics["baseline"]["per_image"], seed=seed,
                       best_label=f"the chosen configuration (trial {best.number})",
                       baseline_label=f"the reference configuration (trial {baseline.number})")
    return v.to_dict()
