"""Several drivers on one study: ``run --workers N``, a second ``run`` that joins, Keras Tuner's
chief/worker mode on 127.0.0.1, and the refusals."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import finish_process, spawn_search, write_config

from search.cli import main
from search.config import config_from_dict
from search.results import StudyDir
from search.study.folder import StudyLock
from search.study.parallel import DriverSlot, ExtraDrivers, free_port, plan_slots


def _config(tmp_path: Path, data_root: Path, name: str, strategy: str = "random-optuna", **study: Any) -> Path:
    return write_config(tmp_path / f"{name}.yaml", data_root, study={"name": name, "strategy": strategy, **study},
                        train={"max_epochs": 2, "patience": 2})


def _numbers(study: StudyDir) -> list[int]:
    with study.trials_csv.open() as f:
        return [int(r["number"]) for r in csv.DictReader(f)]


def _hold_lock(tmp_path: Path, config: Path, results: Path) -> StudyLock:
    """Pretend a driver runs the study: its folder exists and someone holds its lock."""
    cfg = config_from_dict(yaml.safe_load(config.read_text()))
    study = StudyDir(results / cfg.study.name)
    study.root.mkdir(parents=True)
    study.study_yaml.write_text(cfg.to_yaml())
    lock = StudyLock(study)
    assert lock.try_acquire()
    return lock


def test_plan_slots_one_gpu_each_or_a_share_of_the_threads() -> None:
    gpu = plan_slots(3, gpus=["0", "1"])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in gpu] == ["0", "1", "0"] and all(s.threads is None for s in gpu)
    cpu = plan_slots(2, gpus=[], cpus=8)
    assert [s.threads for s in cpu] == [4, 4] and all(not s.env for s in cpu)
    assert plan_slots(4, gpus=[], cpus=2)[0].threads == 1


def test_second_run_on_a_running_keras_tuner_study_is_refused(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture
) -> None:
    config, results = _config(tmp_path, synthetic_root, "kt-busy", "random", max_trials=2), tmp_path / "results"
    lock = _hold_lock(tmp_path, config, results)
    try:
        assert main(["--results", str(results), "run", "--config", str(config)]) == 2
    finally:
        lock.release()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "already running" in errors[0] and "chief/worker" in errors[0]
    assert not (results / "kt-busy" / "trials").exists()


@pytest.mark.parametrize(("level", "verbose", "flags"), [
    (logging.INFO, 0, []), (logging.INFO, 1, ["-v"]), (logging.DEBUG, 0, ["--debug"]), (logging.DEBUG, 2, ["-v", "-v"]),
])
def test_extra_drivers_get_the_drivers_verbosity_and_debug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, level: int, verbose: int, flags: list[str]
) -> None:
    started: list[list[str]] = []

    class _Proc:
        pid = 4242

        def __init__(self, cmd: list[str], **kwargs: Any) -> None:
            started.append(cmd)

    monkeypatch.setattr("search.study.parallel.subprocess.Popen", _Proc)
    search_logger = logging.getLogger("search")
    saved = search_logger.level
    search_logger.setLevel(level)
    try:
        extras = ExtraDrivers(study_name="s", results_root=tmp_path, log_dir=tmp_path / "logs", verbose=verbose)
        extras.start([DriverSlot(1, threads=1)])
        extras.close()
    finally:
        search_logger.setLevel(saved)
    (cmd,) = started
    assert cmd[cmd.index("--results") + 2:cmd.index("worker")] == flags


@pytest.mark.slow
def test_second_run_on_a_running_optuna_study_joins_as_a_worker(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture
) -> None:
    config, results = _config(tmp_path, synthetic_root, "joined", max_trials=2), tmp_path / "results"
    lock = _hold_lock(tmp_path, config, results)
    try:
        assert main(["--results", str(results), "run", "--config", str(config)]) == 0
    finally:
        lock.release()
    study = StudyDir(results / "joined")
    assert _numbers(study) == [0, 1] and {r.status for r in study.trials()} == {"complete"}
    assert not study.final_dir.exists()  # the final stage belongs to the driver that holds the study


@pytest.mark.slow
@pytest.mark.parametrize("evaluation", ["holdout", "kfold"])
def test_run_with_two_workers_shares_the_journal(tmp_path: Path, synthetic_root: Path, evaluation: str) -> None:
    config = _config(tmp_path, synthetic_root, "two", max_trials=5, evaluation=evaluation, folds=2)
    results = tmp_path / "results"
    code, out = finish_process(spawn_search("--results", str(results), "run", "--config", str(config), "--no-final",
                                "--workers", "2"))
    assert code == 0, out[-3000:]
    study = StudyDir(results / "two")
    assert _numbers(study) == [0, 1, 2, 3, 4] and {r.status for r in study.trials()} == {"complete"}
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study.engine_dir / "optuna.journal")))
    trials = optuna.load_study(study_name="two", storage=storage).get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4]
    assert len({t.user_attrs["driver"] for t in trials}) == 2, "both drivers should have run trials"
    assert (study.engine_dir / "workers" / "worker-1.log").is_file()
    if evaluation == "kfold":  # both drivers trained on the study's one set of folds, every fold of every trial
        import json

        folds = json.loads((study.root / "folds.json").read_text())["folds"]
        for rec in study.trials():
            scored = json.loads((study.trial_dir(rec.number) / "scores.json").read_text())["per_image"]
            assert sorted(scored) == sorted(s for f in folds for s in f)
            assert all((study.trial_dir(rec.number) / f"fold{f}" / "fold.json").is_file() for f in range(2))


@pytest.mark.slow
def test_keras_tuner_chief_and_one_worker_on_localhost(tmp_path: Path, synthetic_root: Path) -> None:
    """Keras Tuner's own chief/worker mode, two results folders as on two machines."""
    config = _config(tmp_path, synthetic_root, "kt-dist", "random", max_trials=3)
    chief_results, worker_results = tmp_path / "chief", tmp_path / "worker"
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port())}
    chief = spawn_search("--results", str(chief_results), "run", "--config", str(config), "--no-final",
                    env={**env, "KERASTUNER_TUNER_ID": "chief"})
    worker = spawn_search("--results", str(worker_results), "worker", "kt-dist", "--config", str(config),
                     env={**env, "KERASTUNER_TUNER_ID": "tuner0"})
    code, out = finish_process(worker)
    assert code == 0, out[-3000:]
    code, out = finish_process(chief)
    assert code == 0, out[-3000:]
    on_worker, on_chief = StudyDir(worker_results / "kt-dist"), StudyDir(chief_results / "kt-dist")
    assert _numbers(on_worker) == [0, 1, 2] and all(r.epochs_run == 2 for r in on_worker.trials())
    # the chief trained nothing but records every trial the worker ended (values, status, score)
    assert _numbers(on_chief) == [0, 1, 2]
    for a, b in zip(on_worker.trials(), on_chief.trials(), strict=True):
        assert (a.values, a.status, a.score) == (b.values, b.status, pytest.approx(b.score))
    assert not list(on_chief.trials_dir.glob("*/history.csv"))
