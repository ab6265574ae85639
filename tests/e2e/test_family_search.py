"""A search over several model families end to end (issue 23): each trial builds its family, trials.csv and status
name it, the report compares the families, the final model of any family is tested, exported and predicts."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import write_config

from search.cli import main
from search.results import StudyDir

pytestmark = pytest.mark.slow

FAMILIES_AT_32 = ["unet", "attention_unet", "unet3plus", "multires_unet"]


def test_a_search_over_families_records_compares_and_exports_them(tmp_path: Path, synthetic_root: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(
        tmp_path / "c.yaml", synthetic_root, study={"name": "fam", "max_trials": 6, "seed": 3, "baselines": False},
        final={"retrain": True, "num_predictions": 1},
        search_space={"variant": {"type": "choice", "values": FAMILIES_AT_32},
                      "unet3plus.deep_supervision": {"type": "choice", "values": [True, False]}})
    results = tmp_path / "results"
    assert main(["--results", str(results), "run", "--config", str(config)]) == 0
    study = StudyDir(results / "fam")
    with study.trials_csv.open() as f:
        rows = list(csv.DictReader(f))
    families = {row["variant"] for row in rows}
    assert len(families) >= 2 and families <= set(FAMILIES_AT_32)
    for row in rows:  # a trial records its own family's options only
        assert (row.get("unet3plus.deep_supervision", "") != "") == (row["variant"] == "unet3plus")
    capsys.readouterr()
    assert main(["--results", str(results), "status", "fam"]) == 0
    out = capsys.readouterr().out
    assert "families: " in out and all(f"{family} best" in out for family in families)
    html = study.report_html.read_text()
    assert "Model families" in html and "fig-families" in html
    chosen = study.best_trial()
    assert chosen is not None
    ini = tmp_path / "best.ini"
    assert main(["--results", str(results), "export", "fam", "--format", "ini", "--out", str(ini)]) == 0
    reference = {"unet": "TensorflowUNet", "attention_unet": "TensorflowAttentionUNet",
                 "unet3plus": "TensorflowUNet3Plus", "multires_unet": "TensorflowMultiResUNet"}
    assert f'"{reference[chosen.values["variant"]]}"' in ini.read_text()
    out_dir = tmp_path / "pred"
    assert main(["--results", str(results), "predict", "fam", "--images", str(synthetic_root / "test" / "images"),
                 "--out", str(out_dir)]) == 0
    assert any(out_dir.glob("*.png"))
