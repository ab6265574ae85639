"""One definition of the best trial and of the baseline trial (search/results/records.py), read alike by the
final stage, status, export and the report (review §12, issue 19 item 6)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from fake_study import build_study

from search.results import StudyDir, chosen_trial
from search.study.reevaluation import top_candidates
from search.tools.export import export_json
from search.tools.report.context import ReportContext
from search.tools.status import status_text
from search.vocabulary import TrialState


def _study_with_a_pruned_baseline_and_a_nan_score(tmp_path: Path) -> StudyDir:
    study = build_study(tmp_path, n_complete=4, n_pruned=0, n_failed=1, final=False, predictions=False)
    base = study.read_trial(0)
    assert base is not None and base.baseline
    base.status, base.score, base.best_epoch, base.reason = TrialState.PRUNED, 0.31, 1, "collapsed: no foreground"
    study.write_trial(base)
    nan = study.read_trial(1)
    assert nan is not None
    nan.score = math.nan  # a complete trial whose score is not a number is never the best
    study.write_trial(nan)
    study.refresh_trials_csv()
    return study


def test_every_reader_takes_the_same_best_and_baseline_trial(tmp_path: Path) -> None:
    study = _study_with_a_pruned_baseline_and_a_nan_score(tmp_path)
    best, base = study.best_trial(), study.baseline_trial()
    assert best is not None and best.number == 3  # the highest finite score, not the NaN of trial 1
    assert base is not None and base.number == 0 and base.status == TrialState.PRUNED
    ctx = ReportContext.load(study)
    assert ctx.best is not None and ctx.best.number == best.number
    assert ctx.baseline is not None and ctx.baseline.number == base.number
    assert chosen_trial(study).number == best.number
    # the re-evaluation's candidates: the best two by the same ranking, then the baseline
    assert [r.number for r in top_candidates(study, 2)] == [3, 2, 0]
    exported = json.loads(export_json(study))
    assert exported["trial"] == best.number
    assert exported["baseline_trial"] is not None and exported["baseline_trial"]["trial"] == 0
    assert exported["baseline_trial"]["status"] == "pruned"
    text = status_text(study)
    line = next(x for x in text.splitlines() if x.startswith("baseline"))
    assert "trial 0" in line and "pruned" in line


def test_a_failed_baseline_is_no_baseline_for_any_reader(tmp_path: Path) -> None:
    study = build_study(tmp_path, n_complete=3, n_pruned=0, n_failed=1, final=False, predictions=False)
    base = study.read_trial(0)
    assert base is not None
    base.status, base.score = TrialState.FAILED, None
    study.write_trial(base)
    assert study.baseline_trial() is None
    assert ReportContext.load(study).baseline is None
    assert json.loads(export_json(study))["baseline_trial"] is None
    assert not any(x.startswith("baseline") for x in status_text(study).splitlines())
