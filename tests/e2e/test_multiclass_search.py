"""Several classes end to end (issue 22): a colour-mask dataset with a labels.json searched, scored per class,
tested, predicted, reported and exported; bad class maps and colours refused before a study exists."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_config
from tiny import MULTICLASS_COLOURS, write_multiclass_dataset

from search.cli import EXIT_CONFIG, EXIT_DATA, main
from search.results import StudyDir

pytestmark = pytest.mark.slow
CLASSES = list(MULTICLASS_COLOURS)[1:]


def test_a_colour_mask_dataset_is_searched_and_scored_per_class(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = write_multiclass_dataset(tmp_path / "ds", counts=(12, 4, 4))
    config = write_config(tmp_path / "c.yaml", root, study={"name": "mc", "baselines": True, "max_trials": 2},
                          final={"retrain": True, "num_predictions": 2})
    results = tmp_path / "results"
    assert main(["--results", str(results), "run", "--config", str(config)]) == 0
    study = StudyDir(results / "mc")
    # the class map the study was run with is recorded, resolved from labels.json
    assert "background" in (study.root / "study.yaml").read_text()
    with study.trials_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert all(f"dice_{c}" in rows[0] for c in CLASSES)
    scores = json.loads((study.trial_dir(0) / "scores.json").read_text())
    assert scores["classes"] == CLASSES and set(scores["class_dice"]) == set(CLASSES)
    assert all(len(v) == len(CLASSES) for v in scores["per_class"].values())
    # the image's score is the mean of its scored classes
    for stem, per_class in scores["per_class"].items():
        scored = [x for x in per_class if x is not None]
        assert scores["per_image"][stem] == pytest.approx(np.mean(scored) if scored else 1.0)
    metrics = json.loads(study.test_metrics_json.read_text())
    assert list(metrics["class_dice"]) == CLASSES and len(metrics["per_class"]["per_image_hard_dice"]) == 4
    final = json.loads(study.final_json.read_text())
    assert set(final["test"]["class_dice"]) == set(CLASSES)  # (the verdict's per-class table: test_final.py)
    # the panels draw each class in its colour
    panel = cv2.imread(str(next((study.final_dir / "predictions").glob("*.png"))))
    truth = panel[:, panel.shape[1] // 3: 2 * panel.shape[1] // 3]
    colours = {tuple(int(c) for c in bgr[::-1]) for bgr in np.unique(truth.reshape(-1, 3), axis=0)}
    assert colours <= {tuple(v) for v in MULTICLASS_COLOURS.values()} and len(colours) > 2

    # predict: index masks, colour masks, overlays
    out = tmp_path / "pred"
    assert main(["--results", str(results), "predict", "mc", "--images", str(root / "test" / "images"),
                 "--out", str(out), "--overlay"]) == 0
    index = cv2.imread(str(out / "test_000.png"), cv2.IMREAD_UNCHANGED)
    colour = cv2.imread(str(out / "test_000_colour.png"))
    assert index.ndim == 2 and int(index.max()) <= 3 and (out / "test_000_overlay.png").is_file()
    palette = np.array(list(MULTICLASS_COLOURS.values()), np.uint8)
    np.testing.assert_array_equal(colour[:, :, ::-1], palette[index])

    # status names each class's test dice
    capsys.readouterr()
    assert main(["--results", str(results), "status", "mc"]) == 0
    assert "test dice per class: ring " in capsys.readouterr().out

    # the report's legend and per-class table; the INI's class map
    html = study.report_html.read_text()
    assert "Per class (test)" in html and all(c in html for c in CLASSES)
    ini = tmp_path / "best.ini"
    assert main(["--results", str(results), "export", "mc", "--format", "ini", "--out", str(ini)]) == 0
    text = ini.read_text()
    assert "num_classes     = 4" in text and "rgb_map" in text and "(255, 0, 0): 1" in text

    # a resume whose labels.json now says something else is refused
    renamed = {("outer_ring" if name == "ring" else name): v for name, v in MULTICLASS_COLOURS.items()}
    (root / "labels.json").write_text(json.dumps({"labels": renamed}))
    assert main(["--results", str(results), "run", "--config", str(config), "--max-trials", "3"]) == EXIT_CONFIG
    assert "the class map" in capsys.readouterr().err and len(study.trials()) == 2


def test_a_colour_outside_the_map_stops_the_run_before_a_study_exists(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = write_multiclass_dataset(tmp_path / "ds", counts=(4, 2, 2))
    bad = root / "train" / "masks" / "train_002.png"
    mask = cv2.imread(str(bad))
    mask[5, 5] = (1, 2, 3)
    cv2.imwrite(str(bad), mask)
    config = write_config(tmp_path / "c.yaml", root, study={"name": "bad"})
    results = tmp_path / "results"
    code = main(["--results", str(results), "run", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == EXIT_DATA and str(bad) in err and "(3, 2, 1)" in err
    assert not (results / "bad").exists()


def test_a_bad_class_map_in_the_config_is_a_config_error_naming_the_key(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = write_multiclass_dataset(tmp_path / "ds", counts=(4, 2, 2))
    config = write_config(tmp_path / "c.yaml", root, data={"classes": {"bg": [0, 0, 0], "a": [1, 2, 3], "b": [1, 2, 3]}})
    code = main(["--results", str(tmp_path / "results"), "run", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG and "data.classes" in err and "classes 'a' and 'b' have one colour [1, 2, 3]" in err


def test_k_fold_scores_each_class_out_of_fold(tmp_path: Path) -> None:
    root = write_multiclass_dataset(tmp_path / "ds", counts=(8, 4, 4))
    config = write_config(tmp_path / "c.yaml", root, study={"name": "kf", "max_trials": 1, "evaluation": "kfold",
                                                           "folds": 2, "groups": "none"},
                          final={"retrain": False})
    results = tmp_path / "results"
    assert main(["--results", str(results), "run", "--config", str(config)]) == 0
    study = StudyDir(results / "kf")
    scores = json.loads((study.trial_dir(0) / "scores.json").read_text())
    assert scores["classes"] == CLASSES and len(scores["per_class"]) == 12  # every train+valid image, out of fold
    record = study.trials()[0]
    for c in CLASSES:
        scored = [row[CLASSES.index(c)] for row in scores["per_class"].values() if row[CLASSES.index(c)] is not None]
        assert scored, f"class {c} is in every other image, so some fold scores it"
        assert record.metrics[f"dice_{c}"] == pytest.approx(np.mean(scored))
