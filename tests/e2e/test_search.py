"""End-to-end searches through the CLI, the results contract, failure injection, resume rules."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import tiny_raw_config

from search.cli import main
from search.config import config_from_dict
from search.results import StudyDir
from search.study.runner import run_study
from search.trial.process import TrialProcess
from search.trial.task import TrialOutcome, TrialTask

pytestmark = pytest.mark.slow


def _write_config(tmp_path: Path, raw: dict[str, Any], name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _rows(study: StudyDir) -> list[dict[str, str]]:
    with study.trials_csv.open() as f:
        return list(csv.DictReader(f))


def test_optuna_tpe_asha_end_to_end(tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture) -> None:
    raw = tiny_raw_config(
        synthetic_root,
        study={"name": "tpe", "strategy": "tpe", "pruner": "asha", "max_trials": 4, "baselines": True,
               "prune_warmup_epochs": 1},
        train={"max_epochs": 4, "patience": 4},
        final={"retrain": True},
    )
    results = tmp_path / "results"
    assert main(["--results", str(results), "run", "--config", str(_write_config(tmp_path, raw))]) == 0
    study = StudyDir(results / "tpe")
    # the contract
    for f in ("study.yaml", "environment.json", "data_fingerprint.json", "trials.csv", "report.html"):
        assert (study.root / f).is_file(), f
    assert (study.engine_dir / "optuna.journal").is_file()
    rows = _rows(study)
    assert [int(r["number"]) for r in rows] == [0, 1, 2, 3]
    assert {r["status"] for r in rows} <= {"complete", "pruned"}
    assert rows[0]["baseline"] == "1" and rows[0]["status"] == "complete"
    for r in study.trials():
        d = study.trial_dir(r.number)
        assert json.loads((d / "values.json").read_text()) == r.values
        hist = study.read_history(r.number)
        assert len(hist) == r.epochs_run and {"loss", "val_hard_dice", "lr"} <= set(hist[0])
        assert r.seed == study.trials()[0].seed + r.number  # seed derived from the study seed
        if r.status == "complete":
            assert r.score == pytest.approx(max(h["val_hard_dice"] for h in hist), abs=1e-6)
            assert r.best_epoch is not None and 0 <= r.best_epoch < r.epochs_run
            assert len(list((d / "predictions").glob("*.png"))) == 2
            assert (d / "best.weights.h5").is_file()
            assert not (d / "checkpoint").exists()  # dropped once the trial is recorded
    # the final stage
    final = study.final_dir
    metrics = json.loads((final / "test_metrics.json").read_text())
    assert metrics["hard_dice"] == pytest.approx(np.mean(metrics["per_image"]["hard_dice"])) and metrics["n_images"] == 6
    assert len(metrics["per_image"]["hard_dice"]) == 6
    assert (final / "model.keras").is_file() and (final / "best_config.yaml").is_file()
    best = study.best_trial()
    assert best is not None
    fixed = config_from_dict(yaml.safe_load((final / "best_config.yaml").read_text()))
    assert fixed.fixed_values() == best.values  # re-runnable: every hyperparameter fixed to the best
    # the final model is the best trial's own weights (a same-seed retrain would reproduce them):
    # its validation dice is that trial's score, and its test dice is what those weights score
    assert json.loads((final / "final.json").read_text())["model_from"] == metrics["model_from"] == "trial_weights"
    assert metrics["valid_score"] == pytest.approx(best.score, abs=1e-5)
    # status reads the contract
    capsys.readouterr()
    assert main(["--results", str(results), "status", "tpe"]) == 0
    out = capsys.readouterr().out
    assert "best: trial" in out and "final model" in out and "baseline" in out


def test_keras_tuner_random_end_to_end(tmp_path: Path, synthetic_root: Path) -> None:
    raw = tiny_raw_config(synthetic_root, study={"name": "kt", "strategy": "random", "max_trials": 3,
                                                 "baselines": True})
    results = tmp_path / "results"
    assert main(["--results", str(results), "run", "--config", str(_write_config(tmp_path, raw)), "--no-final"]) == 0
    study = StudyDir(results / "kt")
    rows = _rows(study)
    assert [r["number"] for r in rows] == ["0", "1", "2"] and {r["status"] for r in rows} == {"complete"}
    assert (study.engine_dir / "keras_tuner" / "oracle.json").is_file()
    assert study.trials()[0].baseline
    # resume with a larger budget keeps the three trials exactly and adds one
    before = {r.number: (r.values, r.finished_at) for r in study.trials()}
    assert main(["--results", str(results), "run", "--config", str(_write_config(tmp_path, raw)),
                 "--no-final", "--max-trials", "4"]) == 0
    after = study.trials()
    assert [r.number for r in after] == [0, 1, 2, 3]
    assert {r.number: (r.values, r.finished_at) for r in after[:3]} == before
    # a different search space is refused, naming the difference, and nothing changes
    raw["search_space"]["base_filters"] = {"type": "choice", "values": [4, 16]}
    code = main(["--results", str(results), "run", "--config", str(_write_config(tmp_path, raw, "other.yaml"))])
    assert code == 2
    assert [r.number for r in study.trials()] == [0, 1, 2, 3]


def test_keras_tuner_hyperband_baseline_trains_as_long_as_the_others_may(tmp_path: Path, synthetic_root: Path) -> None:
    """Review §9: the baseline kept its bracket's tuner/epochs (here 2 of 6; 2 of 100 by default)."""
    raw = tiny_raw_config(synthetic_root, study={"name": "hb", "strategy": "hyperband", "max_trials": 2,
                                                 "baselines": True, "hyperband_factor": 3},
                          train={"max_epochs": 6, "patience": 6, "collapse_epochs": 0})
    results = tmp_path / "results"
    assert main(["--results", str(results), "run", "--config", str(_write_config(tmp_path, raw)), "--no-final"]) == 0
    base, first = StudyDir(results / "hb").trials()
    assert base.baseline and base.max_epochs == 6 and base.epochs_run == 6
    assert not first.baseline and first.max_epochs == first.epochs_run == 2  # its bracket: ceil(6 / 3)


def test_nan_trials_fail_and_consecutive_failures_stop_the_run(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture
) -> None:
    raw = tiny_raw_config(synthetic_root, study={"name": "nan", "max_trials": 5, "max_consecutive_failures": 2},
                          train={"clipvalue": 1.0e30})
    # a huge learning rate without gradient clipping diverges to NaN within two epochs
    raw["search_space"].update(learning_rate={"value": 1.0e6}, base_filters={"value": 8}, num_layers={"value": 2})
    code = main(["--results", str(tmp_path), "run", "--config", str(_write_config(tmp_path, raw))])
    assert code == 1
    assert "2 trials failed in a row" in capsys.readouterr().err
    recs = StudyDir(tmp_path / "nan").trials()
    assert [r.status for r in recs] == ["failed", "failed"]
    assert all("loss became" in r.reason or "score became" in r.reason for r in recs)


def test_infeasible_values_are_rejected_before_training(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UNET_SEARCH_GPU_MEMORY_GB", "0.000001")  # nothing fits this budget
    raw = tiny_raw_config(synthetic_root, study={"name": "oom", "max_trials": 4})
    code = main(["--results", str(tmp_path), "run", "--config", str(_write_config(tmp_path, raw))])
    assert code == 1  # no configuration can fit: the search stops at the first rejection (issue 19.14)
    assert "no configuration of the search space can be trained here" in capsys.readouterr().err
    recs = StudyDir(tmp_path / "oom").trials()
    assert [r.status for r in recs] == ["failed"]
    assert all(r.reason.startswith("infeasible: estimated training memory") and r.epochs_run == 0 for r in recs)


class KillingPool(TrialProcess):
    """Kills its worker process (SIGKILL, like the OOM killer) during the trials named."""

    def __init__(self, kill_numbers: set[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kill_numbers = kill_numbers

    def run(self, task: TrialTask, decide: Any) -> TrialOutcome:
        def killing(report: Any) -> str:
            if task.number in self.kill_numbers and self.pid is not None:
                os.kill(self.pid, signal.SIGKILL)
            return decide(report)

        return super().run(task, killing)


def test_killed_worker_becomes_failed_trial_and_search_continues(tmp_path: Path, synthetic_root: Path) -> None:
    cfg = config_from_dict(tiny_raw_config(synthetic_root, study={"name": "kill", "max_trials": 3}))
    pool = KillingPool({1}, recycle_after=10)
    try:
        summary = run_study(cfg, results_root=tmp_path, show_progress=False, trial_process=pool)
    finally:
        pool.close()
    recs = StudyDir(tmp_path / "kill").trials()
    assert [r.status for r in recs] == ["complete", "failed", "complete"]
    assert "SIGKILL" in recs[1].reason
    assert summary["best"] is not None
