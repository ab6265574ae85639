"""The final stage: the chosen trial's model tested on the test split (or retrained on train+valid first).

The driver side: choose the trial (the search's best, or the pick of the top-k re-evaluation in
``search/study/reevaluation.py``), write ``final/best_config.yaml``, run the task in a trial process and
write ``final/final.json``. The trial process side (load the weights or retrain, test, save
``final/model.keras``) is ``search/trial/final.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from search.config import AUGMENTATIONS, Config, best_config
from search.config.space import baseline_deviations
from search.config.specs import specs_from_values, trial_seed
from search.errors import ConfigError, Interrupted, SearchAborted
from search.evaluation import Units, paired_verdict
from search.results import (
    StudyDir,
    TrialRecord,
    atomic_write_json,
    atomic_write_text,
    read_json,
    read_study_config,
)
from search.results.layout import (
    BEST_CONFIG_YAML,
    BEST_WEIGHTS,
    CANDIDATE_TEST_FILE,
    SELECTION_FILE,
    fold_dir,
)
from search.study.budget import BudgetEnded, Deadline
from search.study.dataset import PreparedData, fold_plan, prepare_data, study_units
from search.study.reevaluation import reevaluate
from search.trial.final import FinalTask
from search.trial.process import TrialProcess
from search.trial.runtime import trial_runtime
from search.trial.stop import stopped_by_budget
from search.trial.task import ModelSource, TrialOutcome, TrialOutputs
from search.trial.training import lr_schedule_from_history
from search.vocabulary import EpochDecision, TrialState

__all__ = ["baseline_label", "describe_baseline", "fidelity_words", "model_source", "run_final",
           "trial_fidelity"]

logger = logging.getLogger(__name__)

CANDIDATE_TEST_NOTE = ("each re-evaluated candidate's test dice, measured after the pick; a pick made again "
                       "after reading these (e.g. another final.select) is test-informed and its test score "
                       "is no longer an unbiased estimate")


def run_final(
    study: StudyDir,
    *,
    cfg: Config | None = None,
    data: PreparedData | None = None,
    trial_process: TrialProcess | None = None,
    verbose: int = 0,
    results_root: Path | None = None,
    show_candidate_test: bool = False,
    deadline: Deadline | None = None,
) -> dict[str, Any]:
    """Pick the final configuration (the search's best, or after re-evaluation) and test its model.

    With ``final.reevaluate_top_k`` the top-k trials and the baseline are first trained again with
    fresh seeds (search/study/reevaluation.py) and the pick is made on those scores. The chosen model and
    the baseline's are tested on the same test images for the verdict. The other candidates are not
    tested: their test scores would invite re-running the pick with another ``final.select`` rule,
    which makes it test-informed. ``show_candidate_test`` tests them anyway, after the pick, into
    ``final/candidate_test.json`` (never into selection.json or final.json).

    ``deadline``: the run's end (search/study/budget.py). Training here (a retrain, fresh runs) stops at it;
    a re-evaluation it cuts short is dropped (the search's best is tested), a retrain keeps its last
    completed epoch.
    """
    if cfg is None:
        cfg = read_study_config(study)
    best = study.best_trial()
    if best is None:
        raise ConfigError(f"study {study.name!r} has no completed trial yet; nothing to retrain")
    if data is None:
        data = prepare_data(cfg, results_root or study.root.parent)
    units = study_units(cfg, data)  # before any training: a study.groups that does not fit fails here
    study.final_dir.mkdir(parents=True, exist_ok=True)
    own = trial_process is None
    process = trial_process or TrialProcess(recycle_after=max(1, cfg.study.recycle_after), runtime=trial_runtime(cfg))
    stop_at = deadline.ends_at if deadline is not None else None
    try:
        for earlier in (SELECTION_FILE, CANDIDATE_TEST_FILE):  # of an earlier final stage
            (study.final_dir / earlier).unlink(missing_ok=True)
        best, selection = _pick(study, cfg, data, process, best, stop_at=stop_at)
        task = _final_task(study, cfg, data, best, selection if show_candidate_test else None, verbose)
        task.stop_at = stop_at
        logger.info("final: %s trial %d (validation score %.4f)", "retraining on train+valid" if task.fixed_epochs
                    else "testing the weights of", best.number, best.score or 0)
        outcome = process.run(task, lambda report: EpochDecision.CONTINUE)
    finally:
        if own:
            process.close()
    _check_final_outcome(outcome, study, best)
    return _record_final(study, cfg, best, selection, outcome, units=units, show_candidate_test=show_candidate_test)


def _pick(study: StudyDir, cfg: Config, data: PreparedData, process: TrialProcess, best: TrialRecord, *,
          stop_at: float | None) -> tuple[TrialRecord, dict[str, Any] | None]:
    """The trial to test: the search's best, or the re-evaluation's pick (``final.reevaluate_top_k``)."""
    if cfg.final.reevaluate_top_k <= 0:
        return best, None
    try:
        selection = reevaluate(study, cfg, data, process, fold_plan(cfg, data, study.root), stop_at=stop_at)
    except BudgetEnded as e:
        logger.warning("final: %s; testing the search's best, trial %d, instead", e, best.number)
        return best, None
    if selection is None:
        return best, None
    chosen = study.read_trial(int(selection["chosen"]))
    assert chosen is not None
    return chosen, selection


def _check_final_outcome(outcome: TrialOutcome, study: StudyDir, best: TrialRecord) -> None:
    if outcome.interrupted and outcome.stopped_by == "budget":
        raise SearchAborted("the budget ended before the final retrain finished one epoch; run "
                            f"`python -m search final {study.name}` to redo it")
    if outcome.interrupted:
        raise Interrupted("final retrain interrupted; run `python -m search final NAME` to redo it")
    if outcome.status != TrialState.COMPLETE:
        raise SearchAborted(f"final retrain of trial {best.number} failed: {outcome.reason}")


def _record_final(study: StudyDir, cfg: Config, best: TrialRecord, selection: dict[str, Any] | None,
                  outcome: TrialOutcome, *, units: Units, show_candidate_test: bool) -> dict[str, Any]:
    """The verdict against the baseline, final.json, and the run's summary of the final stage."""
    metrics = read_json(study.test_metrics_json)
    metrics_summary = {k: metrics[k] for k in ("hard_dice", "hard_iou", "soft_dice", "loss", "n_images")}
    if "class_dice" in metrics:  # several classes: each foreground class's test dice (the mean is hard_dice)
        metrics_summary["class_dice"] = metrics["class_dice"]
    baseline_rec = study.baseline_trial()
    baseline = describe_baseline(cfg, baseline_rec) if baseline_rec is not None else None
    verdict = _verdict(metrics, best, baseline_rec, cfg.study.seed, units=units)
    fidelity = {"chosen": trial_fidelity(best), "baseline": trial_fidelity(baseline_rec) if baseline_rec else None}
    if baseline is not None and verdict["outcome"] != "not_available":
        verdict["sentence"] += f"; {baseline['sentence']}"
        if baseline_rec is not None and baseline_rec.number != best.number:
            verdict["sentence"] += f"; {fidelity_words(fidelity)}"
    if selection is not None and show_candidate_test:
        _write_candidate_test(study.final_dir, selection, metrics)
    logger.info("final: %s", verdict["sentence"])
    atomic_write_json(
        study.final_json,
        {"trial": best.number, "values": best.values, "valid_score": best.score, "valid_score_se": best.score_se,
         "evaluation": cfg.study.evaluation, "test": metrics_summary, "verdict": verdict, "baseline": baseline,
         "selection": selection,
         "train_on_valid": cfg.final.train_on_valid, "model_from": metrics.get("model_from"),
         "epochs_run": outcome.epochs_run, "fidelity": fidelity,
         "duration_s": outcome.duration_s},
    )
    logger.info(
        "final: test hard dice %.4f, IoU %.4f (trial %d)", metrics["hard_dice"], metrics["hard_iou"], best.number
    )
    return {"trial": best.number, **metrics_summary, "verdict": verdict["sentence"]}


def trial_fidelity(rec: TrialRecord) -> dict[str, Any]:
    """What a trial trained at: its image side, training samples, epochs and seconds, and whether the
    budget cut it short (final.json ``fidelity``; the verdict states it for both sides)."""
    return {"trial": rec.number, "image_size": rec.image_size, "train_samples": rec.train_samples,
            "epochs": rec.epochs_run, "train_s": round(rec.train_s, 1), "status": str(rec.status),
            "stopped_by_budget": stopped_by_budget(rec.reason)}


def fidelity_words(fidelity: dict[str, Any]) -> str:
    """``trained at 128²: the chosen configuration 560 samples, 35 epochs; the baseline 480 samples,
    28 epochs, pruned``."""
    def side(f: dict[str, Any]) -> str:
        samples = f"{f['train_samples']} samples, " if f.get("train_samples") is not None else ""
        notes = [n for n, on in (("pruned", f["status"] == "pruned"), ("cut by the budget", f["stopped_by_budget"]))
                 if on]
        return f"{samples}{f['epochs']} epochs" + "".join(f", {n}" for n in notes)

    chosen, base = fidelity["chosen"], fidelity["baseline"]
    sizes = sorted({f["image_size"] for f in (chosen, base) if f is not None and f.get("image_size")})
    at = " at " + " and ".join(f"{s}²" for s in sizes) if sizes else ""
    return f"trained{at}: the chosen configuration {side(chosen)}; the baseline {side(base)}"


def _final_task(study: StudyDir, cfg: Config, data: PreparedData, best: TrialRecord,
                selection: dict[str, Any] | None, verbose: int) -> FinalTask:
    """The trial process's task: the chosen model (or a retrain), the baseline, the re-evaluated candidates."""
    final_dir = study.final_dir
    atomic_write_text(final_dir / BEST_CONFIG_YAML, best_config(cfg, best.values).to_yaml())
    fixed = retrain_epochs(best) if cfg.final.train_on_valid else None
    chosen = model_source(study, cfg, best, label=f"trial {best.number}")
    if fixed is None and chosen is None:
        raise SearchAborted(
            f"trial {best.number}'s weights in {study.trial_dir(best.number)} are missing; "
            f"set final.train_on_valid=true to retrain"
        )
    baseline_rec = study.baseline_trial()
    baseline, baseline_epochs = None, None
    if baseline_rec is not None and baseline_rec.number != best.number:
        if fixed is not None:  # retrained like the chosen model, or the verdict measures the extra data too
            baseline_epochs = retrain_epochs(baseline_rec)
            baseline = ModelSource(specs=specs_from_values(cfg, baseline_rec.values,
                                                           seed=trial_seed(cfg.study.seed, baseline_rec.number)),
                                   weights=(), label=baseline_label(baseline_rec))
        else:
            baseline = model_source(study, cfg, baseline_rec, label=baseline_label(baseline_rec))
    candidates: list[ModelSource] = []
    for cand in (selection or {}).get("candidates", []):
        rec = study.read_trial(int(cand["trial"]))
        source = model_source(study, cfg, rec, label=f"trial {rec.number}") if rec is not None else None
        if source is not None:
            candidates.append(source)
    return FinalTask(
        number=best.number,
        specs=specs_from_values(cfg, best.values, seed=trial_seed(cfg.study.seed, best.number)),
        out_dir=str(final_dir),
        cache_path=data.cache_path,
        outputs=TrialOutputs(predictions=cfg.final.num_predictions, checkpoint=False),
        fixed_epochs=fixed,
        # the chosen trial's learning rates, reductions included (the retrain has no reducer to fire)
        lr_schedule=lr_schedule_from_history(study.read_history(best.number), epochs=fixed) if fixed else None,
        model=chosen if fixed is None else None,
        baseline=baseline,
        baseline_fixed_epochs=baseline_epochs,
        baseline_lr_schedule=(lr_schedule_from_history(study.read_history(baseline_rec.number), epochs=baseline_epochs)
                              if baseline_epochs and baseline_rec is not None else None),
        candidates=tuple(candidates),
        verbose=verbose,
    )


def retrain_epochs(rec: TrialRecord) -> int:
    """A ``train_on_valid`` retrain's epochs: the trial's up to its best one (a pruned trial's: the epochs it ran)."""
    return rec.best_epoch + 1 if rec.best_epoch is not None else max(rec.epochs_run, 1)


def _write_candidate_test(final_dir: Path, selection: dict[str, Any], metrics: dict[str, Any]) -> None:
    """``final/candidate_test.json``: each re-evaluated candidate's test dice (its trial's own weights),
    measured after the pick and only on request (``final --show-candidate-test``)."""
    tested = {c["label"]: c["hard_dice"] for c in metrics.get("candidates", [])}
    atomic_write_json(final_dir / CANDIDATE_TEST_FILE, {
        "note": CANDIDATE_TEST_NOTE, "chosen": selection["chosen"], "rule": selection["rule"],
        "candidates": [{"trial": c["trial"], "baseline": c["baseline"], "test_hard_dice": tested.get(f"trial {c['trial']}")}
                       for c in selection["candidates"]],
    })
    logger.warning("final: %s (%s)", CANDIDATE_TEST_NOTE, final_dir / CANDIDATE_TEST_FILE)


def model_source(study: StudyDir, cfg: Config, rec: TrialRecord, *, label: str) -> ModelSource | None:
    """A trial's trained model: its best weights, or (k-fold) the weights of each finished fold."""
    trial_dir = study.trial_dir(rec.number)
    if cfg.study.evaluation == "kfold":
        weights = [fold_dir(trial_dir, f) / BEST_WEIGHTS for f in range(cfg.study.folds)]
        weights = [w for w in weights if w.is_file()]
    else:
        weights = [w for w in [trial_dir / BEST_WEIGHTS] if w.is_file()]
    if not weights:
        return None
    specs = specs_from_values(cfg, rec.values, seed=trial_seed(cfg.study.seed, rec.number))
    return ModelSource(specs=specs, weights=tuple(str(w) for w in weights), label=label)


def baseline_label(rec: TrialRecord) -> str:
    """What the verdict calls the baseline: it is the reference placed inside the space, not the reference."""
    return f"the baseline (trial {rec.number})"


def describe_baseline(cfg: Config, rec: TrialRecord) -> dict[str, Any]:
    """final.json's ``baseline``: where its values differ from the reference configuration and why
    (search/config/space.py), whether it was pruned (then its best weights of a cut-short run are what is
    tested) or trained under a smaller epoch budget than ``train.max_epochs``, and one sentence."""
    deviations = baseline_deviations(cfg, rec.values)
    pruned = rec.status == TrialState.PRUNED
    max_epochs = int(cfg.rule("max_epochs"))
    shortened = rec.max_epochs is not None and rec.max_epochs < max_epochs
    groups: dict[str, list[str]] = {}
    for d in deviations:
        groups.setdefault(d["why"], []).append(f"{d['hyperparameter']}={d['value']!r}")
    for names in groups.values():  # nine equal augmentation strengths in one
        augment = [n for n in names if n.startswith("augment.")]
        if len(augment) == len(AUGMENTATIONS) and len({n.split("=")[1] for n in augment}) == 1:
            names[names.index(augment[0])] = "augment.*=" + augment[0].split("=")[1]
            names[:] = [n for n in names if n not in augment]
    what = "the reference configuration"
    if groups:
        what += " except " + "; ".join(f"{', '.join(names)} ({why})" for why, names in groups.items())
    notes = []
    if pruned:
        notes.append(f"it was pruned after {rec.epochs_run} epochs, so its best weights from those epochs are "
                     f"what it is tested with")
    if shortened:
        notes.append(f"it trained under an epoch budget of {rec.max_epochs} (train.max_epochs {max_epochs})")
    if cfg.final.train_on_valid:
        notes.append(f"like the chosen configuration it was retrained on train+valid, for {retrain_epochs(rec)} epochs")
    sentence = f"{baseline_label(rec)} is {what}" + "".join(f"; {n}" for n in notes)
    return {"trial": rec.number, "status": str(rec.status), "label": baseline_label(rec), "deviations": deviations,
            "pruned": pruned, "reason": rec.reason, "shortened": shortened, "epochs_run": rec.epochs_run,
            "max_epochs": rec.max_epochs,
            "retrain_epochs": retrain_epochs(rec) if cfg.final.train_on_valid else None, "sentence": sentence}


def _verdict(metrics: dict[str, Any], best: TrialRecord, baseline: TrialRecord | None, seed: int, *,
             units: Units) -> dict[str, Any]:
    """The paired test-set comparison of the chosen model and the baseline (search/evaluation/verdict.py), with the
    test images' patients as the units when the study knows them."""
    if baseline is None:
        return {"outcome": "not_available", "sentence": "no verdict: the study has no trained baseline trial "
                "(study.baselines: false, or the baseline trial failed)"}
    if baseline.number == best.number:
        return {"outcome": "baseline_chosen", "sentence": f"the search chose the baseline itself "
                f"(trial {best.number}); test dice {metrics['hard_dice']:.3f}"}
    if "baseline" not in metrics:
        return {"outcome": "not_available",
                "sentence": f"no verdict: the baseline's trial {baseline.number} has no saved weights"}
    stems = metrics["per_image"].get("stems")
    v = paired_verdict(metrics["per_image"]["hard_dice"], metrics["baseline"]["per_image"], seed=seed,
                       units=units.labels(stems) if stems else None, grouping=units.grouping,
                       best_label=f"the chosen configuration (trial {best.number})",
                       baseline_label=baseline_label(baseline))
    out = v.to_dict()
    if "class_dice" in metrics and "class_dice" in metrics["baseline"]:
        # Several classes: the verdict is on the mean foreground dice per image; beside it, each class's test
        # dice for both models (descriptive: a test per class on a handful of images would be noise).
        out["class_dice"] = {name: {"chosen": dice, "baseline": metrics["baseline"]["class_dice"].get(name)}
                             for name, dice in metrics["class_dice"].items()}
    return out
