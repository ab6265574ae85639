"""``status``: the table of a study's trials, and the tracebacks of failed trials with --debug."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_study import build_study
from tiny import set_final_result

from search.cli import main
from search.results import StudyDir, write_traceback
from search.results.layout import TRACEBACK_FILE


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


def test_an_interrupted_trial_shows_its_progress_so_far_and_says_interrupted(tmp_path: Path) -> None:
    """After Ctrl-C or a killed driver a trial stayed 'running' with empty columns (issue 19.16a)."""
    from search.study.folder import StudyLock
    from search.tools.status import status_text, trials_frame

    study = build_study(tmp_path, n_complete=1, n_pruned=0, n_failed=0, n_running=1, final=False, predictions=False)
    number = next(r.number for r in study.trials() if r.status == "running")
    history = study.read_history(number)
    assert history  # the epochs it finished before the driver died
    row = trials_frame(study).set_index("trial").loc[number]
    assert row["status"] == "interrupted"
    assert row["epochs"] == len(history)
    assert row["score"] == pytest.approx(max(h["val_hard_dice"] for h in history))
    text = status_text(study)
    assert f"interrupted: trial {number} (" in text and "run the same command again" in text.lower()
    assert "1 interrupted" in text.splitlines()[1]

    lock = StudyLock(study)  # a driver runs the study: the trial is running, not interrupted
    assert lock.try_acquire()
    try:
        assert trials_frame(study).set_index("trial").loc[number]["status"] == "running"
        assert f"running: trial {number} (" in status_text(study)
    finally:
        lock.release()


def test_status_leads_with_the_test_result_and_verdict_and_cautions_a_poor_final_model(tmp_path: Path) -> None:
    """`status` led with the search gain while the test said 'no detectable difference' at dice 0.09 (19.16c)."""
    from search.tools.status import status_text

    study = build_study(tmp_path, predictions=False)
    sentence = "no detectable difference between the chosen configuration and the reference configuration"
    set_final_result(study, dice=0.09, pred_fg=0.17, true_fg=0.01, sentence=sentence)
    lines = status_text(study).splitlines()
    first = {key: next(i for i, line in enumerate(lines) if line.startswith(key))
             for key in ("final model:", "verdict:", "caution:", "trials:", "best:", "baseline")}
    assert first["final model:"] < first["verdict:"] < first["caution:"] < first["trials:"] < first["best:"]
    assert "test hard dice 0.0900" in lines[first["final model:"]] and sentence in lines[first["verdict:"]]
    caution = lines[first["caution:"]]
    assert "0.090 is low" in caution and f"{0.17 / 0.01:.1f}× the true foreground area" in caution
    assert "search gain" not in "\n".join(lines)

    set_final_result(study, dice=0.85, pred_fg=0.011, true_fg=0.01, sentence=sentence)  # a good model: no caution
    assert not any(line.startswith("caution:") for line in status_text(study).splitlines())


def test_status_prints_floats_to_four_significant_digits(tmp_path: Path) -> None:
    """The best line printed learning_rate=0.0013795764907022507 (issue 19.16g)."""
    import re

    from search.tools.status import status_text

    study = build_study(tmp_path, predictions=False)
    text = status_text(study)
    best = study.best_trial()
    assert best is not None
    lr = best.values["learning_rate"]
    assert len(repr(lr)) > 10  # the sampled value has many digits
    assert f"learning_rate={lr:.4g}," in text
    assert not re.search(r"\d\.\d{7,}", text), text
