"""The deadline inside a trial: it stops training at the next optimizer step, the partial epoch is
dropped, a judged trial is recorded with its best epoch and a reason that says "budget", a trial not yet
judged stays resumable and resumes exactly; Ctrl-C stops at the next step too; and a whole run, final
stage included, ends by its deadline (slow)."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import finish_process, spawn_search, step_counter, tiny_raw_config
from tiny import holdout_task as _task
from tiny import trial_data as _data

from data import AugmentSpec, synthetic_arrays
from models import UNetSpec
from search.config.specs import TrainSpec, TrialSpecs
from search.trial.stop import StepStop, StopSignal
from search.trial.training import Checkpoint, train_model

STEPS = 4  # optimizer steps per epoch in these tests


def _specs(*, epochs: int = 4, warmup_samples: int = 0) -> TrialSpecs:
    return TrialSpecs(
        model=UNetSpec(image_size=32, channels=1, base_filters=4, base_kernels=3, num_layers=2, dilation=1,
                       dropout_rate=0.0),
        augment=AugmentSpec.none(),
        train=TrainSpec(learning_rate=3e-3, batch_size=8, max_epochs=epochs, patience=epochs, seed=3,
                        steps_per_epoch=STEPS, warmup_samples=warmup_samples),
    )


def _arrays() -> dict[str, np.ndarray]:
    ti, tm = synthetic_arrays(n=16, size=32, seed=3)
    vi, vm = synthetic_arrays(n=8, size=32, seed=4)
    return {"train_images": ti, "train_masks": tm, "valid_images": vi, "valid_masks": vm}


def _after_checks(n: int) -> StopSignal:
    """A deadline on a fake clock that ticks once per check: the check at the start of each epoch, then
    one after every step. ``n`` = 2 * (STEPS + 1) + 2 stops after the 2nd step of the 3rd epoch."""
    return StopSignal(at=float(n), clock=itertools.count().__next__)


def test_the_deadline_stops_a_judged_trial_at_the_next_step_with_its_best_completed_epoch() -> None:
    count, counts = step_counter()
    result = train_model(_specs(), **_arrays(), stop=_after_checks(2 * (STEPS + 1) + 2), callbacks=[count])
    assert counts == [STEPS, STEPS, 2]  # stopped two steps into the third epoch, not at its end
    assert result.stop_reason == "budget"
    assert result.epochs_run == 2 and [h["epoch"] for h in result.history] == [0, 1]  # the partial epoch dropped
    best = max(range(2), key=lambda e: result.history[e]["val_hard_dice"])
    assert result.best_epoch == best
    # the model handed back holds the best completed epoch's weights, not the half-trained ones
    straight = train_model(_specs(epochs=2), **_arrays())
    for got, want in zip(result.model.get_weights(), straight.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_trial_not_yet_judged_stays_resumable_and_resumes_exactly(tmp_path: Path) -> None:
    warm = 5 * STEPS * 8  # judged after 5 epochs: the deadline in epoch 3 comes first
    ckpt = Checkpoint(tmp_path / "checkpoint")
    with pytest.raises(StepStop) as e:
        train_model(_specs(warmup_samples=warm), **_arrays(), checkpoint=ckpt, stop=_after_checks(2 * (STEPS + 1) + 2))
    assert e.value.reason == "budget"
    assert json.loads(ckpt.state_path.read_text())["epoch"] == 2  # the last completed epoch is what stays
    resumed = train_model(_specs(warmup_samples=warm), **_arrays(), checkpoint=ckpt)
    straight = train_model(_specs(warmup_samples=warm), **_arrays())
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    np.testing.assert_allclose([h["loss"] for h in resumed.history], [h["loss"] for h in straight.history], rtol=1e-5)
    # Ctrl-C (the user's stop) never finishes a trial, judged or not: it stays resumable
    flag = type("Flag", (), {"is_set": lambda self: True})()
    with pytest.raises(StepStop, match="user"):
        train_model(_specs(), **_arrays(), stop=StopSignal(flag=flag))


def test_a_judged_trial_stopped_by_the_budget_is_recorded_complete_with_its_weights(tmp_path: Path) -> None:
    from search.trial.task import run_task

    out = tmp_path / "t"
    task = _task(out, epochs=8)  # tiny_raw_config: one pass per epoch (16 images, 2 steps), no warm-up
    epochs: list[int] = []
    outcome = run_task(task, _data(), lambda e, logs: epochs.append(e), StopSignal(at=8.0, clock=itertools.count().__next__))
    # checks: epoch start + 2 steps = 3 per epoch; the 9th check is the 3rd epoch's second step
    assert outcome.status == "complete" and outcome.epochs_run == 2 and epochs == [0, 1]
    assert outcome.reason.startswith("budget: the deadline stopped it during epoch 2")
    assert outcome.metrics["stop_reason"] == "budget"
    assert (out / "best.weights.h5").is_file() and (out / "scores.json").is_file()
    assert not (out / "checkpoint").exists()
    scores = json.loads((out / "scores.json").read_text())["per_image"]
    assert np.mean(list(scores.values())) == pytest.approx(outcome.score, abs=1e-5)


def test_a_trial_stopped_before_its_first_judgement_is_reported_running_and_keeps_its_checkpoint(
    tmp_path: Path,
) -> None:
    import dataclasses

    from search.trial.task import run_task

    out = tmp_path / "t"
    task = _task(out, epochs=8)
    task = dataclasses.replace(task, specs=dataclasses.replace(
        task.specs, train=dataclasses.replace(task.specs.train, warmup_samples=5 * 16)))  # judged after 5 epochs
    outcome = run_task(task, _data(), lambda e, logs: None, StopSignal(at=8.0, clock=itertools.count().__next__))
    assert outcome.status == "running" and outcome.stopped_by == "budget" and outcome.epochs_run == 2
    assert outcome.reason.startswith("budget: the deadline came before its first judgement (after 2 epochs)")
    assert json.loads((out / "checkpoint" / "state.json").read_text())["epoch"] == 2
    assert not (out / "best.weights.h5").exists()
    # the next run continues it from there
    epochs: list[int] = []
    outcome = run_task(task, _data(), lambda e, logs: epochs.append(e))
    assert outcome.status == "complete" and epochs == list(range(2, outcome.epochs_run))


def test_the_executor_records_a_budget_stop_and_keeps_the_search_going_to_its_end(tmp_path: Path) -> None:
    from search.config import config_from_dict
    from search.errors import Interrupted
    from search.results import StudyDir
    from search.study.budget import Deadline
    from search.study.dataset import PreparedData
    from search.study.executor import TrialExecutor
    from search.study.progress import Progress
    from search.trial.task import TrialOutcome

    now = [100.0]
    deadline = Deadline(60.0, start=100.0, clock=lambda: now[0])
    deadline.reserve(10.0)
    seen: list[float | None] = []
    answer = {"outcome": TrialOutcome(status="running", stopped_by="budget", reason="budget: before its first judgement")}

    class Pool:
        stop_requested = 0

        def run(self, task: Any, decide: Any) -> TrialOutcome:
            seen.append(task.stop_at)
            return answer["outcome"]

    cfg = config_from_dict(tiny_raw_config(Path("unused")))
    study = StudyDir(tmp_path / "study")
    study.root.mkdir()
    execute = TrialExecutor(cfg, study, PreparedData(cache_path="", fingerprint={}), Pool(),  # type: ignore[arg-type]
                            Progress(total=3, enabled=False), deadline=deadline)
    values = {"base_filters": 4, "num_layers": 2, "learning_rate": 3e-3}
    rec = execute(0, values, baseline=False)
    assert seen == [150.0]  # the trial process is told when the search ends
    assert rec.status == "running" and rec.reason.startswith("budget")  # resumable, not an interruption
    assert study.read_trial(0).status == "running"  # type: ignore[union-attr]
    assert execute.budget_left()
    now[0] = 150.0
    assert not execute.budget_left()
    answer["outcome"] = TrialOutcome(status="running", stopped_by="user", reason="interrupted by the user (resumable)")
    with pytest.raises(Interrupted):
        execute(1, values, baseline=False)


@pytest.mark.slow
def test_the_first_ctrl_c_stops_a_long_epoch_at_the_next_step(tmp_path: Path) -> None:
    """The driver's Ctrl-C reaches the trial process through a shared event: it does not wait for the epoch."""
    import dataclasses
    import threading

    from data import write_synthetic_dataset
    from search.config import config_from_dict
    from search.study.dataset import prepare_data
    from search.trial.process import TrialProcess
    from search.vocabulary import EpochDecision

    root = tmp_path / "ds"
    write_synthetic_dataset(root, n=20, size=32, seed=0)
    cfg = config_from_dict(tiny_raw_config(root))
    data = prepare_data(cfg, tmp_path / "results")
    task = _task(tmp_path / "t", epochs=3)
    long = dataclasses.replace(task.specs.train, steps_per_epoch=4000)  # minutes per epoch on a CPU
    task = dataclasses.replace(task, specs=dataclasses.replace(task.specs, train=long), cache_path=data.cache_path)
    process = TrialProcess(recycle_after=1)
    pressed: list[float] = []

    def press() -> None:
        pressed.append(time.perf_counter())
        process.stop_requested += 1

    timer = threading.Timer(15.0, press)  # the process starts (TensorFlow import) and trains for a while
    try:
        timer.start()
        outcome = process.run(task, lambda epoch, logs: EpochDecision.CONTINUE)
        stopped = time.perf_counter()
    finally:
        timer.cancel()
        process.close()
    assert pressed, "the trial ended before Ctrl-C was pressed"
    assert outcome.status == "running" and outcome.stopped_by == "user", outcome.reason
    assert stopped - pressed[0] < 10.0  # a step, not the rest of a 4000-step epoch


def _budget_config(tmp_path: Path, data_root: Path, name: str, strategy: str) -> Path:
    raw = tiny_raw_config(data_root, study={"name": name, "strategy": strategy, "max_trials": 40, "baselines": True},
                          final={"retrain": True})
    for key in ("samples_per_epoch", "warmup_samples", "patience", "max_epochs"):
        raw["train"].pop(key)  # auto: from the budget
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["random-optuna", "random"])
def test_a_whole_run_with_its_final_stage_ends_by_its_deadline_and_a_larger_budget_continues_it(
    tmp_path: Path, synthetic_root: Path, strategy: str
) -> None:
    from search.results import StudyDir

    name = f"budget-{strategy}"
    config, results = _budget_config(tmp_path, synthetic_root, name, strategy), tmp_path / "results"
    study = StudyDir(results / name)
    budget = 60.0
    t0 = time.perf_counter()
    code, out = finish_process(spawn_search("--results", str(results), "run", "--config", str(config),
                                            "--timeout", str(budget)))
    wall = time.perf_counter() - t0
    assert code in (0, 1), out[-3000:]  # 1: the budget ended before any trial completed (a slow machine)
    assert wall <= budget + max(60.0, 0.05 * budget), out[-3000:]
    assert "plan: 60 s: search ≈" in out and "first judgement after ≈" in out
    runs = json.loads((study.root / "budget.json").read_text())["runs"]
    assert runs[-1]["ended_by"] == "the budget" and runs[-1]["wall_s"] <= budget + 5, (runs[-1], out[-4000:])
    if code == 0:
        assert (study.final_dir / "final.json").is_file()
    first = {r.number: r for r in study.trials()}
    assert first and all(r.started_at >= runs[-1]["started_at"] for r in first.values())

    code, out = finish_process(spawn_search("--results", str(results), "run", "--config", str(config),
                                            "--timeout", str(2 * budget)))
    assert code == 0, out[-3000:]
    assert "this study's rules" in out  # the epoch, warm-up and patience it was created with
    second = {r.number: r for r in study.trials()}
    for number, rec in first.items():  # every trial of the first run kept; a resumable one went on
        again = second[number]
        if rec.status == "running":
            assert again.status != "running" and again.epochs_run >= rec.epochs_run
        else:
            assert (again.status, again.score) == (rec.status, rec.score)
    assert len(second) > len(first)
    assert json.loads((study.root / "budget.json").read_text())["runs"][-1]["budget_s"] == 2 * budget


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf", ""])
def test_a_timeout_that_is_not_a_positive_number_exits_2_in_one_line(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from search.cli import main

    code = main(["--results", str(tmp_path), "run", "--demo", "--timeout", value])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "--timeout" in err and "positive number of seconds" in err
    assert not (tmp_path / "demo").exists()
    if value:  # the same through the config (an empty value is null there: no budget)
        code = main(["--results", str(tmp_path), "run", "--demo", "--set", f"study.timeout_s={value}"])
        assert code == 2 and "study.timeout_s: expected a" in capsys.readouterr().err


@pytest.mark.slow
def test_a_budget_below_one_judged_trial_exits_2_naming_the_minimum_and_leaves_no_study(
    tmp_path: Path, synthetic_root: Path
) -> None:
    config, results = _budget_config(tmp_path, synthetic_root, "small", "random-optuna"), tmp_path / "results"
    code, out = finish_process(spawn_search("--results", str(results), "run", "--config", str(config), "--timeout", "4"))
    assert code == 2, out[-3000:]
    line = next(ln for ln in out.splitlines() if ln.startswith("error:"))
    assert "--timeout 4: too small" in line and "use --timeout" in line and "or more" in line
    assert "Traceback" not in out
    assert not (results / "small").exists()  # never a half-written study
    # --dry-run prints the plan for a budget that fits, and creates no study either
    minimum = int(line.rsplit("use --timeout ", 1)[1].split()[0])
    code, out = finish_process(spawn_search("--results", str(results), "run", "--config", str(config),
                                            "--timeout", str(minimum + 60), "--dry-run"))
    assert code == 0, out[-3000:]
    assert f"{minimum + 60} s: search ≈" in out and "first judgement after ≈" in out
    assert not (results / "small").exists()
