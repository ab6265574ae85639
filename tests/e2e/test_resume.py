"""A study survives its driver: kill -9 of the whole process group mid-trial, Ctrl-C, then resume.

Each test runs ``python -m search run`` as a subprocess in its own session (so that killing the
process group also kills its worker process), watches the results folder, interrupts it once a
trial has at least one epoch in its history.csv, and runs the same command again.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import finish_process, spawn_search, write_config

from search.results import StudyDir

pytestmark = pytest.mark.slow

TIMEOUT_S = 240


def _config(tmp_path: Path, data_root: Path, name: str, strategy: str) -> Path:
    return write_config(tmp_path / f"{name}.yaml", data_root, study={"name": name, "strategy": strategy, "max_trials": 3},
                        train={"max_epochs": 6, "patience": 6})


def _start(results: Path, config: Path) -> subprocess.Popen[str]:
    return spawn_search("--results", str(results), "run", "--config", str(config), "--no-final")


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _wait_for_epoch(proc: subprocess.Popen[str], study: StudyDir, *, min_number: int = 1) -> tuple[int, str]:
    """Poll until a trial (number ≥ min_number) is running with ≥ 1 epoch in its history.csv;
    returns its number and that history's text."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the run ended (code {proc.returncode}) before it could be interrupted:\n{out[-3000:]}")
        for rec in study.trials():
            hist = study.trial_dir(rec.number) / "history.csv"
            if rec.number >= min_number and rec.status == "running" and hist.is_file():
                text = hist.read_text()
                if len(_rows(text)) >= 1:
                    return rec.number, text
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no trial reached its first epoch in time")


def _check_resumed_study(study: StudyDir, number: int, before: str, *, engine: str) -> None:
    """Every trial once and finished; the interrupted one continued, not restarted; best is right."""
    with study.trials_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    assert all(r["status"] in ("complete", "pruned", "failed") for r in rows), rows
    rec = study.read_trial(number)
    assert rec is not None and rec.status == "complete"
    history = study.read_history(number)
    assert [int(h["epoch"]) for h in history] == list(range(rec.epochs_run))  # each epoch exactly once
    # The epochs run before the interruption are kept as they were (a restart from epoch 0
    # would have rewritten them: same epochs, other timings and losses).
    old = _rows(before)
    for old_row, new_row in zip(old, study.read_history(number), strict=False):
        for key in ("epoch", "loss", "val_hard_dice", "epoch_s"):
            assert float(old_row[key]) == pytest.approx(float(new_row[key]), rel=1e-9), (key, old_row, new_row)
    assert not (study.trial_dir(number) / "checkpoint").exists()
    # the engine agrees
    if engine == "optuna":
        import optuna

        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(study.engine_dir / "optuna.journal")))
        trials = optuna.load_study(study_name=study.name, storage=storage).get_trials()
        assert sorted(t.number for t in trials) == [0, 1, 2]
        assert all(t.state.is_finished() for t in trials)
        assert [len(t.intermediate_values) for t in trials] == [study.read_trial(t.number).epochs_run for t in trials]
    else:
        oracle = json.loads((study.engine_dir / "keras_tuner" / "oracle.json").read_text())
        assert oracle["ongoing_trials"] == {} and sorted(map(int, oracle["end_order"])) == [0, 1, 2]
    best = study.best_trial()
    done = [r for r in study.trials() if r.status == "complete" and r.score is not None]
    assert best is not None and best.score == max(r.score for r in done)


@pytest.mark.parametrize("strategy,engine", [("random-optuna", "optuna"), ("random", "keras_tuner")])
def test_kill_9_mid_trial_then_resume_continues_from_the_last_epoch(
    tmp_path: Path, synthetic_root: Path, strategy: str, engine: str
) -> None:
    name = f"kill-{engine}"
    config, results = _config(tmp_path, synthetic_root, name, strategy), tmp_path / "results"
    study = StudyDir(results / name)
    proc = _start(results, config)
    number, before = _wait_for_epoch(proc, study)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker process, at once
    proc.wait(timeout=30)
    assert study.read_trial(number).status == "running"  # type: ignore[union-attr]

    code, out = finish_process(_start(results, config))
    assert code == 0, out[-3000:]
    _check_resumed_study(study, number, before, engine=engine)


def test_ctrl_c_exits_130_and_the_study_resumes(tmp_path: Path, synthetic_root: Path) -> None:
    name = "ctrl-c"
    config, results = _config(tmp_path, synthetic_root, name, "random-optuna"), tmp_path / "results"
    study = StudyDir(results / name)
    proc = _start(results, config)
    number, before = _wait_for_epoch(proc, study, min_number=0)
    proc.send_signal(signal.SIGINT)  # to the driver only: it finishes the epoch and stops
    code, out = finish_process(proc)
    assert code == 130, out[-3000:]
    assert "resum" in out
    rec = study.read_trial(number)
    assert rec is not None and rec.status == "running"
    assert (study.trial_dir(number) / "checkpoint" / "state.json").is_file()

    code, out = finish_process(_start(results, config))
    assert code == 0, out[-3000:]
    _check_resumed_study(study, number, before, engine="optuna")

