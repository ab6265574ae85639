"""Many drivers on one PostgreSQL-backed study, a killed worker recovered by heartbeats, bad input.

The PostgreSQL tests need ``UNET_SEARCH_PG_URL`` (``.ci/run`` starts a private cluster and sets it);
each uses a study name of its own. The bad-input tests that need no server always run.
"""

from __future__ import annotations

import csv
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from conftest import finish_process, spawn_search, tiny_raw_config, write_config

from search.cli import main
from search.results import StudyDir

PG_URL = os.environ.get("UNET_SEARCH_PG_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="UNET_SEARCH_PG_URL is not set (.ci/run starts PostgreSQL and sets it)")
TIMEOUT_S = 300


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _config(tmp_path: Path, data_root: Path, name: str, *, max_trials: int, epochs: int = 3) -> Path:
    return write_config(tmp_path / f"{name}.yaml", data_root, study={"name": name, "max_trials": max_trials},
                        train={"max_epochs": epochs, "patience": epochs})


def _optuna_trials(name: str) -> list:
    import optuna

    from search.engines.optuna_engine import engine_url

    assert PG_URL
    return optuna.load_study(study_name=name, storage=engine_url(PG_URL)).get_trials()


@pytest.mark.slow
@pytest.mark.postgres
@needs_pg
def test_two_workers_share_a_postgres_study(tmp_path: Path, synthetic_root: Path) -> None:
    assert PG_URL
    name = _name("pg-two")
    config, results = _config(tmp_path, synthetic_root, name, max_trials=6), tmp_path / "results"
    code, out = finish_process(spawn_search("--results", str(results), "run", "--config", str(config), "--no-final",
                                "--storage", PG_URL, "--workers", "2"))
    assert code == 0, out[-3000:]
    trials = _optuna_trials(name)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(6))  # unique numbers, exactly the requested total
    assert all(t.state.name == "COMPLETE" for t in trials)
    drivers = {t.user_attrs["driver"] for t in trials}
    assert len(drivers) == 2, drivers  # both drivers ran trials
    with (results / name / "trials.csv").open() as f:
        assert [int(r["number"]) for r in csv.DictReader(f)] == list(range(6))


@pytest.mark.slow
@pytest.mark.postgres
@needs_pg
def test_killed_worker_is_failed_by_heartbeat_and_retried(tmp_path: Path, synthetic_root: Path) -> None:
    """Two machines (two results folders): the worker of one is killed mid-trial; the main driver
    fails that trial once its heartbeat is stale, runs the retry and completes the study."""
    assert PG_URL
    name = _name("pg-kill")
    config = _config(tmp_path, synthetic_root, name, max_trials=4, epochs=6)
    main_results, other_results = tmp_path / "machine-a", tmp_path / "machine-b"
    env = {"UNET_SEARCH_HEARTBEAT_S": "1"}  # stale after 4 s
    driver = spawn_search("--results", str(main_results), "run", "--config", str(config), "--no-final",
                     "--storage", PG_URL, env=env)
    deadline = time.monotonic() + TIMEOUT_S
    while not (main_results / name / "trials").is_dir():  # the study exists in the database
        assert driver.poll() is None and time.monotonic() < deadline, "the main driver did not start"
        time.sleep(0.2)
    # machine B has no study.yaml: the worker reads the config stored with the study
    worker = spawn_search("--results", str(other_results), "worker", name, "--storage", PG_URL, env=env)
    other = StudyDir(other_results / name)
    victim = None
    while victim is None:
        assert time.monotonic() < deadline, "the worker never reached its first epoch"
        if worker.poll() is not None:
            pytest.fail("the worker ended before it could be killed:\n" + (worker.stdout.read() if worker.stdout else ""))
        for rec in other.trials():
            hist = other.trial_dir(rec.number) / "history.csv"
            if rec.status == "running" and hist.is_file() and len(hist.read_text().splitlines()) >= 2:
                victim = rec.number
        time.sleep(0.05)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)

    code, out = finish_process(driver)
    assert code == 0, out[-3000:]
    trials = {t.number: t for t in _optuna_trials(name)}
    assert trials[victim].state.name == "FAIL"
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].params == trials[victim].params  # the same configuration, a new number
    assert sum(t.state.name == "COMPLETE" for t in trials.values()) == 4  # the budget, the lost one retried
    assert StudyDir(main_results / name).read_trial(retries[0].number).status == "complete"  # type: ignore[union-attr]

    # Machine B's record of the lost trial must not stay 'running': the next worker there fixes it.
    assert other.read_trial(victim).status == "running"  # type: ignore[union-attr]
    code, out = finish_process(spawn_search("--results", str(other_results), "worker", name, "--storage", PG_URL, env=env))
    assert code == 0, out[-3000:]
    rec = other.read_trial(victim)
    assert rec is not None and rec.status == "failed" and "heartbeat lost" in rec.reason


# --------------------------------------------------------------------------- bad input


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_unreachable_storage_is_one_line_exit_2_and_changes_nothing(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture
) -> None:
    name = _name("pg-bad")
    config = _config(tmp_path, synthetic_root, name, max_trials=1)
    url = "postgresql://someone:s3cret@127.0.0.1:9/nowhere"  # port 9 (discard): nothing listens
    results = tmp_path / "results"
    assert main(["--results", str(results), "run", "--config", str(config), "--storage", url]) == 2
    line = _one_line_error(capsys)
    assert "127.0.0.1:9/nowhere" in line and "s3cret" not in line and "cannot use this database" in line
    assert not (results / name).exists()
    assert main(["--results", str(results), "worker", name, "--storage", url]) == 2
    line = _one_line_error(capsys)
    assert "s3cret" not in line and "127.0.0.1:9" in line
    assert not (results / name).exists()


def test_unwritable_results_folder_is_one_line_exit_2(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    config = _config(tmp_path, synthetic_root, _name("ro"), max_trials=1)
    assert main(["--results", str(blocker / "results"), "run", "--config", str(config)]) == 2
    assert "not writable" in _one_line_error(capsys)


def test_worker_without_a_study_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--results", str(tmp_path), "worker", "nosuch"]) == 2
    assert "--storage" in _one_line_error(capsys)


@pytest.mark.postgres
@needs_pg
def test_wrong_credentials_and_other_config_are_refused(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture
) -> None:
    import optuna

    from search.config import config_from_dict
    from search.engines.optuna_engine import engine_url

    assert PG_URL
    name = _name("pg-other")
    results = tmp_path / "results"
    config = _config(tmp_path, synthetic_root, name, max_trials=2)
    # a role that does not exist: the server refuses the connection
    bad_user = PG_URL.replace("postgresql://postgres@", "postgresql://nosuchuser:pw@")
    assert bad_user != PG_URL
    assert main(["--results", str(results), "run", "--config", str(config), "--storage", bad_user]) == 2
    line = _one_line_error(capsys)
    assert "nosuchuser" in line and ":pw@" not in line
    assert not (results / name).exists()
    # the study exists in the database with another search space: refused, naming the difference
    other = tiny_raw_config(synthetic_root, study={"name": name, "max_trials": 2})
    other["search_space"]["base_filters"] = {"type": "choice", "values": [4, 16]}
    study = optuna.create_study(study_name=name, storage=engine_url(PG_URL), direction="maximize")
    study.set_user_attr("config", config_from_dict(other).to_dict())
    assert main(["--results", str(results), "run", "--config", str(config), "--storage", PG_URL]) == 2
    line = _one_line_error(capsys)
    assert "another configuration" in line and "base_filters" in line
    assert not (results / name).exists()
    assert len(study.get_trials()) == 0
