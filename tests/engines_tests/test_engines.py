"""The engines in-process with a fake executor (no training): what each engine is told about a trial,
and what it asks for (Keras Tuner's hyperband baseline, pruned trials' values, a chief's records)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_raw_config

from search.config import Config, config_from_dict
from search.config.space import complete_values
from search.results import TrialRecord
from search.vocabulary import PruneHook, TrialState


@dataclass
class FakeExecutor:
    """Implements search.engines.Executor; ``outcome(number)`` gives each trial's (status, score, reports)."""

    cfg: Config
    outcome: Any
    baselines: bool = True
    calls: list[dict[str, Any]] = field(default_factory=list)
    external: list[dict[str, Any]] = field(default_factory=list)
    stop_requested: int = 0

    def __call__(self, number: int, sampled: dict[str, Any], *, baseline: bool, max_epochs: int | None = None,
                 should_prune: PruneHook | None = None) -> TrialRecord:
        self.calls.append({"number": number, "sampled": sampled, "baseline": baseline, "max_epochs": max_epochs})
        status, score, reports = self.outcome(number)
        for epoch, value in enumerate(reports):
            if should_prune is not None:
                should_prune(epoch, value, False)
        return TrialRecord(number=number, status=status, values=complete_values(self.cfg, sampled), seed=number,
                           score=score, baseline=baseline, reason="pruned after epoch 1" if status == "pruned" else "")

    def budget_left(self) -> bool:
        return True

    def owns_stale_trial(self, number: int) -> bool:
        return False

    def mark_lost(self, number: int, reason: str, *, force: bool = False) -> None:
        raise AssertionError("no trial is lost here")

    def record_external(self, number: int, sampled: dict[str, Any], *, status: TrialState, score: float | None,
                        reason: str, baseline: bool) -> None:
        self.external.append({"number": number, "status": status, "score": score, "baseline": baseline})


def _cfg(strategy: str, *, max_trials: int, max_epochs: int = 9, pruner: str = "none") -> Config:
    return config_from_dict(tiny_raw_config(
        Path("unused"), study={"name": "eng", "strategy": strategy, "pruner": pruner, "max_trials": max_trials,
                               "baselines": True, "hyperband_factor": 3},
        train={"max_epochs": max_epochs, "patience": max_epochs}))


def test_keras_tuner_hyperband_trains_the_baseline_for_the_full_epoch_budget_outside_the_brackets(
    tmp_path: Path,
) -> None:
    """Review §9: trial 0 used to keep its bracket's tuner/epochs (1 of 9 here, 2 of 100 by default)."""
    from search.engines.kt_engine import run_keras_tuner

    cfg = _cfg("hyperband", max_trials=4)
    executor = FakeExecutor(cfg, lambda n: (TrialState.COMPLETE, 0.5 + 0.01 * n, []))
    run_keras_tuner(cfg, executor=executor, engine_dir=tmp_path / "engine")
    calls = executor.calls
    assert [c["number"] for c in calls] == [0, 1, 2, 3]
    assert calls[0]["baseline"] and calls[0]["max_epochs"] in (None, cfg.train.max_epochs)
    # the brackets themselves are Hyperband's: the first bracket starts at ceil(9 / 3**2) = 1 epoch
    assert [c["max_epochs"] for c in calls[1:]] == [1, 1, 1]
    assert not any(c["baseline"] for c in calls[1:])


def test_a_pruned_keras_tuner_trial_reports_its_score_and_a_chief_records_it_pruned(tmp_path: Path) -> None:
    """Review §13: a pruned (collapsed) trial was a FailedTrialError, so the oracle never learnt from it,
    and a chief recorded it failed while its worker recorded it pruned."""
    from keras_tuner.engine.trial import Trial

    from search.engines.kt_engine import StudyTuner, make_oracle

    cfg = _cfg("bayesian", max_trials=3)
    outcomes = {0: (TrialState.COMPLETE, 0.6, []), 1: (TrialState.PRUNED, 0.25, []), 2: (TrialState.FAILED, None, [])}
    executor = FakeExecutor(cfg, outcomes.__getitem__)
    oracle = make_oracle(cfg, executor=executor, chief=True)  # the chief's oracle, driven in-process
    StudyTuner(oracle, executor=executor, directory=tmp_path / "engine").search(verbose=0)
    kt_trials = {int(k): t for k, t in oracle.trials.items()}
    assert kt_trials[1].status == "COMPLETED" and kt_trials[1].score == pytest.approx(0.25)  # the oracle learns
    assert kt_trials[2].status == "FAILED"
    assert {e["number"]: (e["status"], e["score"]) for e in executor.external} == {
        0: (TrialState.COMPLETE, pytest.approx(0.6)), 1: (TrialState.PRUNED, pytest.approx(0.25)),
        2: (TrialState.FAILED, None)}
    # what a worker sends the chief over gRPC (Trial protos) still says it was pruned
    from search.engines.kt_engine import kt_trial_state

    assert kt_trial_state(Trial.from_proto(kt_trials[1].to_proto())) == TrialState.PRUNED


@pytest.mark.parametrize("reports", [[0.7, 0.7], []], ids=["fold0-reports", "no-reports"])
def test_a_pruned_optuna_trial_has_its_trials_csv_score_as_its_value(tmp_path: Path, reports: list[float]) -> None:
    """Review §13: a fold-pruned k-fold trial reports fold 0's running best (0.7) but its score is the
    mean over the folds it finished (0.55); Optuna used to keep the last report as its value."""
    import optuna

    from search.engines.optuna_engine import run_optuna

    cfg = _cfg("random-optuna", max_trials=2)
    outcomes = {0: (TrialState.COMPLETE, 0.6, [0.5, 0.6]), 1: (TrialState.PRUNED, 0.55, reports)}
    executor = FakeExecutor(cfg, outcomes.__getitem__)
    study = run_optuna(cfg, executor=executor, engine_dir=tmp_path / "engine")
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert trials[0].value == pytest.approx(0.6)
    assert trials[1].value == pytest.approx(0.55)


@pytest.mark.parametrize("strategy", ["random", "bayesian", "hyperband", "tpe"])
def test_every_engine_samples_model_families_with_their_own_options(tmp_path: Path, strategy: str) -> None:
    """Issue 23: variant first, then only what the chosen family reads (Keras Tuner's conditional scopes, Optuna's
    define-by-run); the trial's values hold its family's options and no other's."""
    from search.config import is_active, option_family

    raw = tiny_raw_config(Path("unused"), study={"name": "eng", "strategy": strategy, "max_trials": 12,
                                                  "baselines": True, "seed": 4, "pruner": "none"},
                          train={"max_epochs": 9, "patience": 9})
    raw["search_space"].update({"variant": {"type": "choice", "values": ["unet", "unet3plus", "multires_unet"]},
                                "base_kernels": {"type": "choice", "values": [3, 5]},
                                "unet3plus.deep_supervision": {"type": "choice", "values": [True, False]},
                                "multires_unet.alpha": {"type": "float", "min": 1.0, "max": 2.0}})
    cfg = config_from_dict(raw)
    executor = FakeExecutor(cfg, lambda n: (TrialState.COMPLETE, 0.5 + 0.01 * (n % 5), []))
    if strategy == "tpe":
        from search.engines.optuna_engine import run_optuna

        run_optuna(cfg, executor=executor, engine_dir=tmp_path / "engine")
    else:
        from search.engines.kt_engine import run_keras_tuner

        run_keras_tuner(cfg, executor=executor, engine_dir=tmp_path / "engine")
    seen = set()
    for call in executor.calls:
        values = complete_values(cfg, call["sampled"])
        variant = values["variant"]
        seen.add(variant)
        assert {k for k in values if option_family(k)} == {k for k in cfg.search_space if option_family(k) == variant}
        assert all(is_active(k, variant) for k in values)
    assert executor.calls[0]["baseline"] and complete_values(cfg, executor.calls[0]["sampled"])["variant"] == "unet"
    if strategy == "tpe":  # Optuna opens every other family once, right after the baseline
        assert [c["sampled"]["variant"] for c in executor.calls[1:3]] == ["unet3plus", "multires_unet"]
        assert seen == {"unet", "unet3plus", "multires_unet"}
    assert len(seen) >= 2, seen
