"""``export`` (YAML, JSON, the reference INI) and the Optuna mirror behind ``dashboard``."""

from __future__ import annotations

import ast
import configparser
import json
from pathlib import Path
from typing import Any

import pytest
from fake_study import build_study

from search.cli import main
from search.config import load_config
from search.results import StudyDir
from search.tools.export import export_ini, export_json, export_yaml

INI_SECTIONS = ["model", "train", "eval", "test", "infer", "mask", "generator", "augmentor", "deformation",
                "distortion", "barrdistortion", "pincdistortion"]
CENTERS = [(0.3, 0.3), (0.7, 0.3), (0.5, 0.5), (0.3, 0.7), (0.7, 0.7)]




def parse_ini(text: str) -> dict[str, dict[str, Any]]:
    parser = configparser.ConfigParser()
    parser.read_string(text)
    return {s: {k: ast.literal_eval(v) for k, v in parser[s].items()} for s in parser.sections()}


def _same_values(exported: dict[str, Any], values: dict[str, Any]) -> bool:
    """Exported values equal the trial's, floats to the 6 significant digits of the export."""
    return exported.keys() == values.keys() and all(
        exported[k] == pytest.approx(v, rel=1e-5) if isinstance(v, float) else exported[k] == v for k, v in values.items())


def _best(study: StudyDir) -> Any:
    done = [r for r in study.trials() if r.status == "complete"]
    return max(done, key=lambda r: r.score)


# --------------------------------------------------------------------------------------------- yaml / json


def test_yaml_round_trips_through_load_config(tmp_path: Path) -> None:
    study = build_study(tmp_path)
    best = _best(study)
    assert best.status == "complete"  # the pruned trial (score 0.99) is never the one exported
    path = tmp_path / "best.yaml"
    path.write_text(export_yaml(study))
    cfg = load_config(path)
    assert cfg.sampled_params() == {}
    assert _same_values(cfg.fixed_values(), best.values)
    assert cfg.study.name == "tiny-best" and cfg.study.max_trials == 1
    assert cfg.data.image_size == 32 and cfg.train.max_epochs == 3


def test_json_has_best_trial_and_test_metrics(tmp_path: Path) -> None:
    study = build_study(tmp_path)
    best = _best(study)
    out = json.loads(export_json(study))
    assert out["trial"] == best.number and out["score"] == pytest.approx(best.score, rel=1e-5)
    assert _same_values(out["values"], best.values)
    assert out["study"] == "tiny" and out["objective"] == "val_hard_dice"
    assert out["test_metrics"]["hard_dice"] == pytest.approx(0.8) and out["test_metrics"]["n_images"] == 3
    assert out["final_trial"] == best.number
    assert out["baseline_trial"] == {"trial": 0, "score": pytest.approx(study.read_trial(0).score),  # type: ignore[union-attr]
                                     "status": "complete"}

    no_final = build_study(tmp_path, name="nofinal", final=False)
    assert json.loads(export_json(no_final))["test_metrics"] is None


# --------------------------------------------------------------------------------------------- ini


def test_ini_reference_strengths_give_the_reference_settings(tmp_path: Path) -> None:
    study = build_study(tmp_path, strengths=dict.fromkeys(
        ("hflip", "vflip", "rotation", "shrink", "shear", "elastic", "distortion", "barrel", "pincushion"), 1.0),
        data_root="/data/ALCAPA")
    best = _best(study)
    ini = parse_ini(export_ini(study))
    assert list(ini) == INI_SECTIONS
    m = ini["model"]
    assert list(m) == ["model", "generator", "image_width", "image_height", "image_channels", "num_classes",
                       "base_filters", "base_kernels", "num_layers", "dropout_rate", "dilation", "learning_rate",
                       "clipvalue", "loss", "metrics", "normalization", "input_normalize"]
    assert m["model"] == "TensorflowUNet" and m["generator"] is True
    assert (m["image_width"], m["image_height"], m["image_channels"], m["num_classes"]) == (32, 32, 1, 1)
    assert m["base_filters"] == best.values["base_filters"] and m["num_layers"] == best.values["num_layers"]
    assert m["base_kernels"] == (3, 3) and m["dilation"] == (1, 1)
    assert m["dropout_rate"] == pytest.approx(best.values["dropout_rate"], rel=1e-5)
    assert m["learning_rate"] == pytest.approx(best.values["learning_rate"], rel=1e-5)
    assert m["clipvalue"] == 0.5 and m["loss"] == "bce_dice_loss" and m["metrics"] == ["dice_coef"]
    assert m["normalization"] is False and m["input_normalize"] is True
    t = ini["train"]
    assert (t["epochs"], t["batch_size"], t["patience"]) == (3, 8, 3)
    assert t["learning_rate_reducer"] is True and t["reducer_factor"] == 0.3 and t["reducer_patience"] == 4
    assert t["image_datapath"] == "/data/ALCAPA/train/images/" and t["mask_datapath"] == "/data/ALCAPA/train/masks/"
    assert {"model_dir", "eval_dir"} <= set(t)
    assert ini["eval"] == {"image_datapath": "/data/ALCAPA/valid/images/", "mask_datapath": "/data/ALCAPA/valid/masks/"}
    assert ini["test"] == {"image_datapath": "/data/ALCAPA/test/images/", "mask_datapath": "/data/ALCAPA/test/masks/"}
    assert ini["infer"]["images_dir"] == "/data/ALCAPA/test/images/" and "output_dir" in ini["infer"]
    a = ini["augmentor"]
    assert all(a[k] is True for k in ("vflip", "hflip", "rotation", "deformation", "distortion", "barrdistortion",
                                      "pincdistortion"))
    assert a["angles"] == [90, 180, 270] and a["shrinks"] == [0.8] and a["shears"] == [0.1]
    assert ini["deformation"] == {"alpah": 1300, "sigmoids": [8.0]}
    assert ini["distortion"] == {"gaussian_filter_rsigma": 40, "gaussian_filter_sigma": 0.5, "distortions": [0.02]}
    assert ini["barrdistortion"] == {"radius": 0.3, "amount": 0.3, "centers": CENTERS}
    assert ini["pincdistortion"] == {"radius": 0.3, "amount": -0.3, "centers": CENTERS}
    assert ini["generator"]["augmentation"] is True and ini["mask"]["threshold"] == 128


def test_ini_maps_strengths_and_counts(tmp_path: Path) -> None:
    strengths = {"hflip": 1.0, "vflip": 0.0, "rotation": 0.0, "shrink": 0.5, "shear": 0.25, "elastic": 0.5,
                 "distortion": 0.5, "barrel": 0.5, "pincushion": 0.0}
    study = build_study(tmp_path, strengths=strengths)
    (study.root / "data_fingerprint.json").write_text(json.dumps(
        {"splits": {"train": {"count": 401}, "valid": {"count": 17}, "test": {"count": 9}}}))
    ini = parse_ini(export_ini(study))
    a = ini["augmentor"]
    assert (a["hflip"], a["vflip"], a["rotation"], a["pincdistortion"]) == (True, False, False, False)
    assert a["angles"] == [] and a["shrinks"] == [0.9] and a["shears"] == [0.025]
    assert ini["deformation"]["alpah"] == 650
    assert ini["distortion"]["distortions"] == [0.01]
    assert ini["barrdistortion"]["amount"] == 0.15 and ini["pincdistortion"]["amount"] == 0.0
    assert ini["train"]["steps_per_epoch"] == 51 and ini["train"]["validation_steps"] == 3  # ceil(401/8), ceil(17/8)
    assert ini["train"]["image_datapath"] == f"{Path.cwd()}/dataset/tiny/train/images/"  # absolute: where it ran


# --------------------------------------------------------------------------------------------- CLI and errors


@pytest.mark.parametrize("fmt", ["yaml", "json", "ini"])
def test_export_cli_writes_file_atomically(tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    build_study(tmp_path / "results")
    out = tmp_path / "out" / f"best.{fmt}"
    assert main(["--results", str(tmp_path / "results"), "export", "tiny", "--format", fmt, "-o", str(out)]) == 0
    assert out.is_file() and [p.name for p in out.parent.iterdir()] == [out.name]
    assert main(["--results", str(tmp_path / "results"), "export", "tiny", "--format", fmt]) == 0
    assert capsys.readouterr().out == out.read_text()


def test_export_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = str(tmp_path)
    build_study(tmp_path, name="nothing", n_complete=0, n_pruned=1, n_failed=2, final=False)
    for fmt in ("yaml", "json", "ini"):
        assert main(["--results", results, "export", "nothing", "--format", fmt]) == 2
        err = capsys.readouterr().err
        assert "study 'nothing' has no completed trial; nothing to export" in err
        assert len(err.strip().splitlines()) == 1
    assert main(["--results", results, "export", "missing"]) == 2
    assert "no study 'missing'" in capsys.readouterr().err
    build_study(tmp_path, name="ok")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["--results", results, "export", "ok", "-o", str(blocker / "best.yaml")]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert main(["--results", results, "export", "ok", "--format", "xml"]) == 2


# --------------------------------------------------------------------------------------------- dashboard mirror


def test_mirror_to_optuna(tmp_path: Path) -> None:
    import optuna

    from search.results.layout import DASHBOARD_JOURNAL
    from search.tools.dashboard import dashboard_storage, mirror_to_optuna

    study = build_study(tmp_path, strategy="random", n_complete=3, n_pruned=1, n_failed=1, n_running=1)
    records = study.trials()
    storage = mirror_to_optuna(study)
    assert (study.engine_dir / DASHBOARD_JOURNAL).is_file()
    assert not list(study.engine_dir.glob(".*.tmp"))
    mirrored = optuna.load_study(study_name="tiny", storage=storage)
    trials = mirrored.get_trials(deepcopy=False)
    assert len(trials) == len(records) == 6
    S = optuna.trial.TrialState
    assert [t.state for t in trials] == [S.COMPLETE] * 3 + [S.PRUNED, S.FAIL, S.RUNNING]
    for t, r in zip(trials, records, strict=True):
        assert t.user_attrs["trial_number"] == r.number
        assert set(t.params) == {"base_filters", "num_layers", "learning_rate", "dropout_rate"}
        assert all(t.params[k] == pytest.approx(r.values[k]) for k in t.params)
        if r.status == "complete":
            assert t.value == pytest.approx(r.score)
            assert t.intermediate_values == {0: pytest.approx(0.2 + 0.04 * r.number),
                                             1: pytest.approx(0.25 + 0.04 * r.number),
                                             2: pytest.approx(0.3 + 0.04 * r.number)}
        else:
            assert t.value is None
    assert trials[4].user_attrs["reason"] == "loss became nan at epoch 0"
    assert mirrored.best_trial.user_attrs["trial_number"] == 2

    # rebuilt, not appended, on the next call
    mirror_to_optuna(study)
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 6

    # a Keras Tuner study is always mirrored; an Optuna study uses its own journal when there is one
    _, what = dashboard_storage(study)
    assert "mirror" in what
    opt = build_study(tmp_path, name="opt", strategy="tpe")
    _, what = dashboard_storage(opt)
    assert "mirror" in what  # no journal yet
    journal = opt.engine_dir / "optuna.journal"
    from optuna.storages.journal import JournalFileBackend

    optuna.create_study(study_name="opt", storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))))
    _, what = dashboard_storage(opt)
    assert what == f"Optuna journal {journal}"
    _, what = dashboard_storage(opt, mirror=True)
    assert "mirror" in what


def test_dashboard_cli_unknown_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--results", str(tmp_path), "dashboard", "nope"]) == 2
    assert "no study 'nope'" in capsys.readouterr().err


def test_exports_write_short_floats_that_still_reproduce_the_trial(tmp_path: Path) -> None:
    """learning_rate 0.0013795764907022507 and score 0.42000000000000004 were exported digit for digit (19.16g)."""
    study = build_study(tmp_path, strengths={"elastic": 0.123456789012})
    best = _best(study)
    lr = best.values["learning_rate"]
    assert len(repr(lr)) > 12
    texts = {"yaml": export_yaml(study), "json": export_json(study), "ini": export_ini(study)}
    for fmt, text in texts.items():
        assert repr(lr) not in text, fmt
        assert repr(float(f"{lr:.6g}")) in text, fmt
    assert "0.42000000000000004" not in texts["json"] and "0.7999999999999999" not in texts["json"]
    path = tmp_path / "best.yaml"
    path.write_text(texts["yaml"])
    assert load_config(path).fixed_values()["learning_rate"] == pytest.approx(lr, rel=1e-5)


def test_the_yaml_export_has_an_absolute_data_root_resolved_where_the_study_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The YAML stored the relative data.root, which breaks when run from another folder (19.16h)."""
    from search.results import atomic_write_json

    study = build_study(tmp_path, data_root="dataset/tiny")
    ran_in = tmp_path / "where-it-ran"
    atomic_write_json(study.fingerprint_json, {"root": str(ran_in / "dataset" / "tiny"), "content_hash": "x"})
    monkeypatch.chdir(tmp_path)  # elsewhere than where it ran
    path = tmp_path / "best.yaml"
    path.write_text(export_yaml(study))
    assert load_config(path).data.root == str(ran_in / "dataset" / "tiny")
    assert f'"{ran_in}/dataset/tiny/train/images/"' in export_ini(study)

    study.fingerprint_json.unlink()  # no record of where it ran: the current folder
    path.write_text(export_yaml(study))
    assert load_config(path).data.root == str(tmp_path / "dataset" / "tiny")
