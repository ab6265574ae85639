"""Creating a study: the claim on results/<study>/ is taken before the data is prepared (issue 11).

No training here: each case ends before a worker would start (a refusal, or a dataset that is missing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import yaml
from conftest import tiny_raw_config, write_config

from search.cli import EXIT_CONFIG, EXIT_DATA, main
from search.config import Config, config_from_dict
from search.errors import ConfigError
from search.results import StudyDir
from search.study.folder import StudyLock
from search.study.runner import run_study


def _config(tmp_path: Path, data_root: Path, name: str, strategy: str = "random-optuna", **train: object) -> Path:
    return write_config(tmp_path / f"{name}-{strategy}.yaml", data_root, study={"name": name, "strategy": strategy},
                        train=dict(train))


def _claim_without_study_yaml(results: Path, name: str) -> StudyLock:
    """Another driver has created the folder and holds its lock, but is still preparing the data."""
    study = StudyDir(results / name)
    study.root.mkdir(parents=True)
    lock = StudyLock(study)
    assert lock.try_acquire()
    return lock


@pytest.mark.parametrize("strategy", ["random-optuna", "random"])
def test_a_study_being_created_is_neither_deleted_nor_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], strategy: str
) -> None:
    results = tmp_path / "results"
    # A missing dataset: before the fix the second driver went on to prepare_data, failed, and deleted the folder.
    config = _config(tmp_path, tmp_path / "no-such-data", "busy", strategy)
    lock = _claim_without_study_yaml(results, "busy")
    try:
        assert main(["--results", str(results), "run", "--config", str(config)]) == EXIT_CONFIG
        study = StudyDir(results / "busy")
        assert study.lock_path.is_file() and lock.holder() != "?"
        assert not study.study_yaml.exists()
    finally:
        lock.release()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "being created by another driver" in errors[0], errors


def test_a_study_that_appears_while_the_lock_is_taken_is_checked_like_an_existing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other driver wrote study.yaml (and exited) between this one's existence check and its lock."""
    results = tmp_path / "results"
    theirs = config_from_dict(yaml.safe_load(_config(tmp_path, tmp_path / "data-a", "race", max_epochs=5).read_text()))
    mine = config_from_dict(yaml.safe_load(_config(tmp_path, tmp_path / "data-b", "race", max_epochs=9).read_text()))
    original = StudyLock.try_acquire

    def finished_meanwhile(self: StudyLock) -> bool:
        StudyDir(results / "race").study_yaml.write_text(theirs.to_yaml())
        return original(self)

    monkeypatch.setattr(StudyLock, "try_acquire", finished_meanwhile)
    with pytest.raises(ConfigError, match="train.max_epochs: 5 -> 9"):
        run_study(mine, results_root=results, show_progress=False)
    study = StudyDir(results / "race")
    assert config_from_dict(yaml.safe_load(study.study_yaml.read_text())).train.max_epochs == 5


def test_the_creator_removes_its_own_folder_when_the_data_is_missing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    config = _config(tmp_path, tmp_path / "no-such-data", "mine")
    assert main(["--results", str(results), "run", "--config", str(config)]) == EXIT_DATA
    assert not (results / "mine").exists()


def test_a_folder_left_by_a_dead_creator_is_claimed_again(tmp_path: Path) -> None:
    """No study.yaml and nobody holds the lock (the creator was killed while preparing the data)."""
    results = tmp_path / "results"
    (results / "stale").mkdir(parents=True)
    (results / "stale" / ".lock").write_text("99999\n")
    config = _config(tmp_path, tmp_path / "no-such-data", "stale")
    assert main(["--results", str(results), "run", "--config", str(config)]) == EXIT_DATA
    assert not (results / "stale").exists()


def _plan_config(strategy: str, workers: int) -> Config:
    return config_from_dict(tiny_raw_config(Path("unused"), study={"name": "p", "strategy": strategy,
                                                                   "workers": workers}))


@pytest.mark.parametrize(
    ("strategy", "workers", "role", "owner", "kt_env", "expected"),
    [
        # (kt_role, kt_local_chief, drivers, runs_final, writes_study_files for an existing study)
        ("tpe", 3, "main", True, None, (None, False, 3, True, True)),
        ("tpe", 3, "main", False, None, (None, False, 1, False, False)),  # the study runs: join it
        ("tpe", 3, "worker", False, None, (None, False, 1, False, False)),
        ("random", 3, "main", True, None, ("chief", True, 3, True, True)),  # KT chief of local workers
        ("random", 1, "main", True, None, (None, False, 1, True, True)),
        ("random", 1, "worker", False, "worker", ("worker", False, 1, False, False)),
        ("random", 1, "main", True, "worker", ("worker", False, 1, False, True)),  # a KT worker never runs final
    ],
)
def test_the_run_plan_is_decided_once_from_role_lock_and_environment(
    strategy: str, workers: int, role: Literal["main", "worker"], owner: bool, kt_env: Literal["chief", "worker"] | None,
    expected: tuple[object, ...],
) -> None:
    from search.study.runner import plan_run

    plan = plan_run(_plan_config(strategy, workers), role=role, owner=owner, existed=True, kt_env_role=kt_env,
                    worker_index=2)
    assert (plan.kt_role, plan.kt_local_chief, plan.drivers, plan.runs_final, plan.writes_study_files) == expected
    assert plan.seed_offset == (0 if owner else 2)
    assert plan_run(_plan_config(strategy, workers), role=role, owner=owner, existed=False,
                    kt_env_role=kt_env).writes_study_files  # a new local folder gets its study files


@pytest.mark.parametrize(("role", "owner", "kt_env"), [("worker", False, None), ("main", False, None)])
def test_a_keras_tuner_study_refuses_a_second_driver_outside_chief_worker_mode(
    role: Literal["main", "worker"], owner: bool, kt_env: Literal["chief", "worker"] | None
) -> None:
    from search.study.runner import plan_run

    with pytest.raises(ConfigError, match="Keras Tuner"):
        plan_run(_plan_config("random", 1), role=role, owner=owner, existed=True, kt_env_role=kt_env)


def _executor(tmp_path: Path, raw: dict[str, object], *, memory_budget: int | None) -> object:
    """A TrialExecutor whose trial process must never run (every trial here is rejected before training)."""
    from search.study.dataset import PreparedData
    from search.study.executor import TrialExecutor
    from search.study.progress import Progress

    class NoProcess:
        stop_requested = 0

        def run(self, task: object, decide: object) -> object:
            raise AssertionError("a rejected trial must not reach the trial process")

    study = StudyDir(tmp_path / "study")
    study.root.mkdir()
    execute = TrialExecutor(config_from_dict(raw), study, PreparedData(cache_path="", fingerprint={}),
                            NoProcess(), Progress(total=1, enabled=False), deadline=None)  # type: ignore[arg-type]
    execute.memory_budget = memory_budget
    return execute


def test_a_space_whose_every_configuration_is_infeasible_stops_at_the_first_rejection(tmp_path: Path) -> None:
    """Rejected trials do not count as failures, so without this check they spent study.max_trials (issue 19.14)."""
    from search.errors import SearchAborted

    raw = tiny_raw_config(Path("unused"), study={"max_trials": 60})
    execute = _executor(tmp_path, raw, memory_budget=1)  # nothing fits one byte
    with pytest.raises(SearchAborted, match="no configuration of the search space can be trained here.*"
                                            "estimated training memory"):
        execute(0, {"base_filters": 4, "num_layers": 2, "learning_rate": 3e-3}, baseline=False)  # type: ignore[operator]
    assert [r.status for r in execute.study.trials()] == ["failed"]  # type: ignore[attr-defined]


def test_a_space_with_feasible_configurations_goes_on_after_rejections(tmp_path: Path) -> None:
    from models import UNetSpec, estimate_training_memory_bytes

    raw = tiny_raw_config(Path("unused"), study={"max_trials": 60, "max_consecutive_failures": 1})
    small = UNetSpec(image_size=32, channels=1, base_filters=4, base_kernels=3, num_layers=2, dilation=1)
    large = UNetSpec(image_size=32, channels=1, base_filters=8, base_kernels=3, num_layers=3, dilation=1)
    budget = estimate_training_memory_bytes(small, batch_size=8)
    assert estimate_training_memory_bytes(large, batch_size=8) > budget  # the large one is rejected, the small fits
    execute = _executor(tmp_path, raw, memory_budget=budget)
    for number in range(3):  # more rejections in a row than max_consecutive_failures, and no abort
        rec = execute(number, {"base_filters": 8, "num_layers": 3, "learning_rate": 3e-3},  # type: ignore[operator]
                      baseline=False)
        assert rec.status == "failed" and rec.reason.startswith("infeasible")


@pytest.mark.parametrize(("role", "owner", "says"), [("main", False, True), ("main", True, False), ("worker", False, False)])
def test_a_second_run_on_a_running_study_says_it_joins(
    caplog: pytest.LogCaptureFixture, role: Literal["main", "worker"], owner: bool, says: bool
) -> None:
    """A second `run` on a running Optuna study joined it silently (issue 19.16b); a `worker` joins by design."""
    import logging

    from search.study.runner import plan_run

    with caplog.at_level(logging.INFO, logger="search"):
        plan_run(_plan_config("tpe", 1), role=role, owner=owner, existed=True, kt_env_role=None, holder="4242")
    joined = [r for r in caplog.records if "joining it as a second driver" in r.getMessage()]
    assert bool(joined) == says
    if says:
        assert joined[0].levelno >= logging.WARNING and "'p'" in joined[0].getMessage()
        assert "pid 4242" in joined[0].getMessage()
