"""``status``: the table of a study's trials, and the tracebacks of failed trials with --debug."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_study import build_study

from search.cli import main
from search.results import TRACEBACK_FILE, StudyDir, write_traceback


def _failed_with_traceback(results: Path) -> tuple[StudyDir, int]:
    study = build_study(results, n_complete=2, n_pruned=0, n_failed=2, final=False, predictions=False)
    failed = [r.number for r in study.trials() if r.status == "failed"]
    try:
        {}["missing_key_in_build_model"]
    except KeyError as e:
        write_traceback(study.trial_dir(failed[0]), e)
    return study, failed[0]


@pytest.mark.parametrize("argv", [["status", "tiny", "--debug"], ["--debug", "status", "tiny"]])
def test_status_debug_prints_the_traceback_of_failed_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    study, number = _failed_with_traceback(tmp_path)
    assert main(["--results", str(tmp_path), *argv]) == 0
    out = capsys.readouterr().out
    assert f"failed trial {number}: loss became nan at epoch 0" in out
    assert "Traceback (most recent call last):" in out
    assert "KeyError: 'missing_key_in_build_model'" in out
    assert out.count("Traceback (most recent call last):") == 1  # the other failed trial has none


def test_status_without_debug_points_at_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study, number = _failed_with_traceback(tmp_path)
    assert main(["--results", str(tmp_path), "status", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "Traceback (most recent call last)" not in out
    line = next(s for s in out.splitlines() if s.startswith(f"failed trial {number}:"))
    assert str(study.trial_dir(number) / TRACEBACK_FILE) in line and "--debug" in line
    other = next(s for s in out.splitlines() if s.startswith("failed trial") and s != line)
    assert TRACEBACK_FILE not in other
