"""The per-family view of a study (issue 23): each family's best validation dice, its trials and its models' size,
in status and in the report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fake_study import build_study, report_figures

from models import estimate_cost
from search.config.specs import specs_from_values
from search.results import StudyDir, read_study_config
from search.tools.families import family_of, family_rows
from search.tools.report import build_report_html
from search.tools.status import status_text


def _two_families(tmp_path: Path) -> StudyDir:
    study = build_study(tmp_path, n_complete=4, n_pruned=0, n_failed=0)
    for rec in study.trials():
        if rec.number in (1, 3):
            values = {**rec.values, "variant": "attention_unet"}
            study.write_trial(dataclasses.replace(rec, values=values, score=0.5 + 0.01 * rec.number))
    study.refresh_trials_csv()
    return study


def test_family_rows_give_each_familys_best_and_its_cost(tmp_path: Path) -> None:
    study = _two_families(tmp_path)
    cfg = read_study_config(study)
    rows = {r.family: r for r in family_rows(cfg, study.trials())}
    assert set(rows) == {"unet", "attention_unet"}
    attention = rows["attention_unet"]
    assert attention.trials == attention.complete == 2 and attention.best is not None
    assert attention.best.number == 3 and attention.best.score == 0.53
    assert attention.best_cost == estimate_cost(specs_from_values(cfg, attention.best.values, seed=0).model)
    assert attention.best_cost.params != estimate_cost(  # the gates cost parameters: a different model
        specs_from_values(cfg, {**attention.best.values, "variant": "unet"}, seed=0).model).params
    assert rows["unet"].best is not None and family_of(rows["unet"].best) == "unet"


def test_status_and_the_report_compare_the_families(tmp_path: Path) -> None:
    study = _two_families(tmp_path)
    text = status_text(study)
    line = next(x for x in text.splitlines() if x.startswith("families: "))
    assert "unet best " in line and "attention_unet best 0.5300 (trial 3, " in line and "2 of 2 complete" in line
    html = build_report_html(study)
    assert "Model families" in html and "Attention UNet" in html
    traces = report_figures(html)["fig-families"]["data"]
    assert {t["name"] for t in traces} == {"UNet", "Attention UNet"}
    assert all(len(t["x"]) == len(t["y"]) == 2 for t in traces)


def test_a_one_family_study_says_so(tmp_path: Path) -> None:
    study = build_study(tmp_path)
    assert "families: " not in status_text(study)
    assert "One model family in this study (unet)" in build_report_html(study)


def test_the_exported_config_fixes_the_best_familys_values(tmp_path: Path) -> None:
    from search.config import load_config
    from search.tools.export import export_yaml

    study = _two_families(tmp_path)
    best = study.best_trial()
    assert best is not None and best.values["variant"] == "attention_unet"
    path = tmp_path / "best.yaml"
    path.write_text(export_yaml(study))
    cfg = load_config(path)
    fixed = cfg.fixed_values()
    assert cfg.sampled_params() == {} and set(fixed) == set(best.values)  # the family's values, no other's
    for name, value in best.values.items():  # the export writes 6 significant digits
        assert fixed[name] == (pytest.approx(value, rel=1e-5) if isinstance(value, float) else value), name
