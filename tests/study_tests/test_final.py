"""The final stage's driver side (search/study/final.py) with a fake trial process: what the baseline is,
how it is tested, what final.json and the verdict say about it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import final_task_of, tiny_raw_config

from search.config import Config, config_from_dict
from search.config.space import baseline_deviations, baseline_values, complete_values
from search.config.specs import trial_seed
from search.results import StudyDir, TrialRecord, atomic_write_text, write_history_csv
from search.study.dataset import PreparedData
from search.study.final import run_final
from search.trial.final import FinalTask
from search.trial.task import TrialOutcome, TrialTask
from search.vocabulary import TrialState

CHOSEN = [0.80, 0.90, 0.70, 0.85, 0.75, 0.80, 0.82, 0.88]
BASELINE = [0.50, 0.55, 0.45, 0.52, 0.48, 0.50, 0.51, 0.53]


class FakeProcess:
    """Stands in for the trial process: records the task and writes the test metrics it would."""

    def __init__(self) -> None:
        self.tasks: list[TrialTask] = []

    def run(self, task: TrialTask, decide: Any) -> TrialOutcome:
        self.tasks.append(task)
        if not isinstance(task, FinalTask):  # a re-evaluation run: per-image validation dice by trial
            per_image = {f"v{i}": 0.5 + 0.05 * task.number for i in range(4)}
            atomic_write_text(Path(task.out_dir) / "scores.json", json.dumps({"per_image": per_image}))
            return TrialOutcome(status=TrialState.COMPLETE, score=0.5 + 0.05 * task.number, epochs_run=1)
        metrics: dict[str, Any] = {
            "hard_dice": sum(CHOSEN) / len(CHOSEN), "hard_iou": 0.6, "soft_dice": 0.7, "loss": 0.3,
            "n_images": len(CHOSEN), "per_image": {"hard_dice": CHOSEN, "stems": [f"t{i}" for i in range(8)]},
            "model_from": "retrained_train_valid" if task.fixed_epochs else "trial_weights",
        }
        if task.baseline is not None:
            metrics["baseline"] = {"label": task.baseline.label, "hard_dice": sum(BASELINE) / len(BASELINE),
                                   "hard_iou": 0.4, "per_image": BASELINE}
        metrics["candidates"] = [{"label": c.label, "hard_dice": 0.6, "per_image": CHOSEN} for c in task.candidates]
        atomic_write_text(Path(task.out_dir) / "test_metrics.json", json.dumps(metrics))
        return TrialOutcome(status=TrialState.COMPLETE, score=metrics["hard_dice"], epochs_run=task.fixed_epochs or 0)

    def close(self) -> None:
        pass


def _config(**final: Any) -> Config:
    raw = tiny_raw_config(Path("unused"), study={"name": "fin", "baselines": True}, final=final)
    raw["search_space"]["batch_norm"] = {"value": True}  # like the shipped space: the reference has none
    return config_from_dict(raw)


def _study(tmp_path: Path, cfg: Config, *, baseline_status: TrialState = TrialState.PRUNED,
           baseline_budget: int | None = None) -> StudyDir:
    study = StudyDir(tmp_path / cfg.study.name)
    study.root.mkdir(parents=True)
    atomic_write_text(study.study_yaml, cfg.to_yaml())
    pruned = baseline_status == TrialState.PRUNED
    base = TrialRecord(number=0, status=baseline_status, values=complete_values(cfg, baseline_values(cfg)), seed=0,
                       score=0.41, best_epoch=None if pruned else 2, epochs_run=4, baseline=True,
                       reason="collapsed: predicted no foreground" if pruned else "",
                       max_epochs=baseline_budget or cfg.train.max_epochs)
    chosen = TrialRecord(number=1, status=TrialState.COMPLETE, seed=1, score=0.7, best_epoch=2, epochs_run=3,
                         values=complete_values(cfg, {"base_filters": 4, "num_layers": 2, "learning_rate": 3e-3}),
                         max_epochs=cfg.train.max_epochs)
    for rec in (base, chosen):
        study.write_trial(rec)
        atomic_write_text(study.trial_dir(rec.number) / "best.weights.h5", "")  # model_source checks the file
    study.refresh_trials_csv()
    return study


def _final(study: StudyDir, cfg: Config, **kwargs: Any) -> tuple[dict[str, Any], FakeProcess]:
    process = FakeProcess()
    data = PreparedData(cache_path="", fingerprint={}, stems={"valid": tuple(f"v{i}" for i in range(4))})
    run_final(study, cfg=cfg, data=data, trial_process=process, **kwargs)  # type: ignore[arg-type]
    return json.loads((study.final_dir / "final.json").read_text()), process


def test_the_baseline_is_named_for_what_it_is_and_a_pruned_one_is_said_to_be(tmp_path: Path) -> None:
    """Review §12: with the shipped space trial 0 is reference + BatchNorm, values outside the space
    are snapped into it, and a pruned baseline is tested with its early best weights; the verdict
    called it "the reference configuration" and said none of this."""
    cfg = _config()
    final, _ = _final(_study(tmp_path, cfg), cfg)
    deviations = {d["hyperparameter"]: d for d in final["baseline"]["deviations"]}
    assert deviations["batch_norm"] == {"hyperparameter": "batch_norm", "reference": False, "value": True,
                                        "why": "fixed by the search space"}
    assert deviations["learning_rate"]["why"] == "snapped into the search space"  # 1e-4 below the space's 1e-3
    assert deviations["learning_rate"]["value"] == pytest.approx(1e-3)
    assert "base_filters" not in deviations or deviations["base_filters"]["why"] == "snapped into the search space"
    assert final["baseline"]["trial"] == 0 and final["baseline"]["status"] == "pruned"
    sentence = final["verdict"]["sentence"]
    assert "the reference configuration (trial 0)" not in sentence
    assert "the baseline (trial 0)" in sentence
    assert re.search(r"batch_norm=True[^()]*, augment\.\*=0\.0 \(fixed by the search space\)", sentence)
    assert re.search(r"learning_rate=0\.001 \(snapped into the search space\)", sentence)
    assert "pruned after 4 epochs" in sentence and "best weights" in sentence


def test_a_baseline_without_deviations_is_the_reference_and_a_shortened_one_is_said_to_be(tmp_path: Path) -> None:
    raw = tiny_raw_config(Path("unused"), study={"name": "ref", "baselines": True})
    raw["search_space"] = {"base_filters": {"type": "choice", "values": [8, 16]},
                           "learning_rate": {"type": "float", "min": 1e-5, "max": 1e-3, "log": True}}
    raw["data"]["image_size"] = 512  # the reference's 8 levels fit
    cfg = config_from_dict(raw)
    assert baseline_deviations(cfg, complete_values(cfg, baseline_values(cfg))) == []
    final, _ = _final(_study(tmp_path, cfg, baseline_status=TrialState.COMPLETE, baseline_budget=1), cfg)
    assert final["baseline"]["deviations"] == [] and final["baseline"]["shortened"]
    sentence = final["verdict"]["sentence"]
    assert "the baseline (trial 0) is the reference configuration;" in sentence
    assert f"epoch budget of 1 (train.max_epochs {cfg.train.max_epochs})" in sentence


def test_the_reference_values_are_the_specs_defaults_and_the_configs() -> None:
    """One source for the reference (UNetSpec, TrainSpec, AugmentSpec.reference()); the config's defaults
    for hyperparameters a space leaves out must not drift from it."""
    from data import AugmentSpec
    from models import UNetSpec
    from search.config import HYPERPARAMETER_DEFAULTS
    from search.config.space import REFERENCE_VALUES

    assert REFERENCE_VALUES == HYPERPARAMETER_DEFAULTS
    assert REFERENCE_VALUES["num_layers"] == UNetSpec().num_layers == 8
    assert REFERENCE_VALUES["augment.elastic"] == AugmentSpec.reference().elastic == 1.0


@pytest.mark.parametrize("baseline_status", [TrialState.COMPLETE, TrialState.PRUNED])
def test_train_on_valid_retrains_the_baseline_like_the_chosen_model(tmp_path: Path, baseline_status: TrialState) -> None:
    """Review §10b: the chosen model was retrained on train+valid but the baseline tested with its trial
    weights (train only), so "beats" partly measured the extra data."""
    cfg = _config(train_on_valid=True)
    study = _study(tmp_path, cfg, baseline_status=baseline_status)
    baseline_lrs = [1e-3, 1e-3, 3e-4, 9e-5]  # its reducer fired twice in its 4 epochs
    write_history_csv(study.trial_dir(0) / "history.csv",
                      [{"epoch": e, "val_hard_dice": 0.1 * e, "lr": lr} for e, lr in enumerate(baseline_lrs)])
    final, process = _final(study, cfg)
    task = process.tasks[0]
    assert task.fixed_epochs == 3  # the chosen trial's epochs up to its best (epoch 2)
    assert task.baseline is not None and task.baseline.weights == ()  # not its trial weights: retrained
    # the same rule for the baseline: up to its best epoch (2), or a pruned one's 4 epochs
    assert task.baseline_fixed_epochs == (3 if baseline_status == TrialState.COMPLETE else 4)
    assert task.baseline.specs.model.batch_norm and task.baseline.specs.train.seed == trial_seed(cfg.study.seed, 0)
    assert final["baseline"]["retrain_epochs"] == task.baseline_fixed_epochs
    assert f"retrained on train+valid, for {task.baseline_fixed_epochs} epochs" in final["verdict"]["sentence"]
    # and it replays its own trial's learning rates, as the chosen model replays its (review §10a)
    assert task.baseline_lr_schedule == tuple(baseline_lrs[: task.baseline_fixed_epochs])


def test_the_final_task_retrains_the_baseline_on_train_and_valid(tmp_path: Path) -> None:
    """The trial-process side: the baseline's specs trained for its epochs on train+valid, then tested."""
    from dataclasses import replace

    from tiny import holdout_task as _task
    from tiny import trial_data as _data

    from search.trial.task import ModelSource, run_task

    task = _task(tmp_path / "final")
    base_specs = replace(task.specs, train=replace(task.specs.train, seed=11))
    seen: list[dict[str, float]] = []
    outcome = run_task(final_task_of(task, fixed_epochs=1, baseline_fixed_epochs=2,
                               baseline=ModelSource(base_specs, (), label="the baseline (trial 0)")),
                       _data(), lambda epoch, logs: seen.append(logs))
    assert outcome.status == "complete", outcome.reason
    metrics = json.loads((tmp_path / "final" / "test_metrics.json").read_text())
    assert metrics["model_from"] == "retrained_train_valid" and outcome.epochs_run == 1
    base = metrics["baseline"]
    assert base["model_from"] == "retrained_train_valid" and base["epochs"] == 2
    assert len(base["per_image"]) == metrics["n_images"] == 8
    assert len(seen) == 1 + 2  # the driver hears the baseline's epochs too (progress, Ctrl-C)
    assert (tmp_path / "final" / "baseline_history.csv").read_text().count("\n") == 1 + 2
    assert (tmp_path / "final" / "history.csv").read_text().count("\n") == 1 + 1  # the chosen model's only


def test_only_the_pick_is_tested_unless_the_candidates_test_scores_are_asked_for(tmp_path: Path) -> None:
    """Review §14: selection.json recorded every candidate's test dice, and README invited re-running
    `final` with another select rule: the pick became test-informed."""
    cfg = _config(reevaluate_top_k=1, seeds=1)
    study = _study(tmp_path, cfg, baseline_status=TrialState.COMPLETE)
    final, process = _final(study, cfg)
    selection = json.loads((study.final_dir / "selection.json").read_text())
    assert [c["trial"] for c in selection["candidates"]] == [1, 0]  # the best, then the baseline
    for record in (selection, final["selection"]):
        assert not any("test" in key for c in record["candidates"] for key in c) and "test_note" not in record
    assert isinstance(process.tasks[-1], FinalTask) and process.tasks[-1].candidates == ()  # nothing else tested
    assert not (study.final_dir / "candidate_test.json").exists()
    # asked for: tested after the pick, into a file of their own that says what reading it costs
    final, process = _final(study, cfg, show_candidate_test=True)
    assert [c.label for c in process.tasks[-1].candidates] == ["trial 1", "trial 0"]
    shown = json.loads((study.final_dir / "candidate_test.json").read_text())
    assert [(c["trial"], c["test_hard_dice"]) for c in shown["candidates"]] == [(1, 0.6), (0, 0.6)]
    assert "test-informed" in shown["note"]
    assert not any("test" in key for c in final["selection"]["candidates"] for key in c)
    # and a later final stage that does not ask removes the earlier file
    _final(study, cfg)
    assert not (study.final_dir / "candidate_test.json").exists()
    from search.tools.report import write_report

    assert "test (its weights)" not in write_report(study).read_text()


def test_the_verdict_states_the_fidelity_at_which_both_sides_trained(tmp_path: Path) -> None:
    """Issue 20.4: final.json and the verdict sentence say what the chosen model and the baseline trained at."""
    cfg = _config()
    study = _study(tmp_path, cfg)
    for number, samples, reason in ((0, 96, "collapsed: predicted no foreground"), (1, 72, "budget: the deadline")):
        rec = study.read_trial(number)
        assert rec is not None
        rec.image_size, rec.train_samples, rec.reason, rec.train_s = 32, samples, reason, 12.34
        study.write_trial(rec)
    final, _ = _final(study, cfg)
    fidelity = final["fidelity"]
    assert fidelity["chosen"] == {"trial": 1, "image_size": 32, "train_samples": 72, "epochs": 3, "train_s": 12.3,
                                  "status": "complete", "stopped_by_budget": True}
    assert fidelity["baseline"]["train_samples"] == 96 and fidelity["baseline"]["status"] == "pruned"
    assert final["verdict"]["sentence"].endswith(
        "trained at 32²: the chosen configuration 72 samples, 3 epochs, cut by the budget; "
        "the baseline 96 samples, 4 epochs, pruned")


class FakeMulticlassProcess(FakeProcess):
    """The fake's test metrics with each class's dice, as a model of several classes reports them."""

    def run(self, task: TrialTask, decide: Any) -> TrialOutcome:
        outcome = super().run(task, decide)
        if isinstance(task, FinalTask):
            path = Path(task.out_dir) / "test_metrics.json"
            metrics = json.loads(path.read_text())
            metrics["class_dice"] = {"lv": 0.8, "aorta": None}
            metrics["baseline"]["class_dice"] = {"lv": 0.5, "aorta": 0.2}
            atomic_write_text(path, json.dumps(metrics))
        return outcome


def test_final_json_and_the_verdict_carry_each_classs_test_dice(tmp_path: Path) -> None:
    """Issue 22.3: the verdict is on the mean foreground dice per image; each class's test dice of both models
    stands beside it (None: a class no test image scores)."""
    cfg = _config()
    study = _study(tmp_path, cfg)
    data = PreparedData(cache_path="", fingerprint={}, stems={"valid": tuple(f"v{i}" for i in range(4))})
    run_final(study, cfg=cfg, data=data, trial_process=FakeMulticlassProcess())  # type: ignore[arg-type]
    final = json.loads((study.final_dir / "final.json").read_text())
    assert final["test"]["class_dice"] == {"lv": 0.8, "aorta": None}
    assert final["verdict"]["class_dice"] == {"lv": {"chosen": 0.8, "baseline": 0.5},
                                              "aorta": {"chosen": None, "baseline": 0.2}}
    assert final["verdict"]["outcome"] not in ("not_available", "baseline_chosen")
