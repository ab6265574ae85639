"""Config loading, validation errors with dotted key paths, --set precedence, space translation."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.config import (
    HYPERPARAMETER_DEFAULTS,
    ParamDef,
    config_from_dict,
    load_config,
    max_feasible_layers,
)
from search.errors import ConfigError
from search.space import baseline_values, complete_values, to_keras_tuner, to_optuna

REPO = Path(__file__).resolve().parents[1]


def test_repo_search_space_loads() -> None:
    cfg = load_config(REPO / "search_space.yaml")
    assert cfg.data.image_size == 512 and cfg.data.batch_size == 2
    # the epoch, warm-up, patience and trial length come from the run's budget (tests/test_budget.py);
    # without one they are the reference's
    assert cfg.train.max_epochs == cfg.train.patience == cfg.train.samples_per_epoch == "auto"
    assert cfg.rule("max_epochs") == 100 and cfg.rule("patience") == 10 and cfg.steps_per_epoch == 400
    assert cfg.train.reducer.factor == 0.3 and cfg.train.reducer.patience == 4
    assert set(cfg.sampled_params()) >= {"base_filters", "base_kernels", "num_layers", "learning_rate",
                                         "dropout_rate", "dilation", "augment.elastic", "augment.pincushion"}
    assert cfg.engine == "optuna" and cfg.pruner == "asha"


def test_precedence_defaults_file_extra_set(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("study: {max_trials: 7, seed: 3}\ndata: {batch_size: 4}\n")
    cfg = load_config(f, extra={"study": {"max_trials": 9}}, overrides=["study.max_trials=11"])
    assert cfg.study.max_trials == 11  # --set wins over extra (demo) and file
    assert cfg.study.seed == 3  # file wins over defaults
    assert cfg.data.batch_size == 4 and cfg.data.image_size == 512  # untouched keys keep defaults


def test_set_reaches_dotted_hyperparameter_names() -> None:
    cfg = load_config(None, overrides=["search_space.augment.rotation={type: float, min: 0, max: 0.5}",
                                       "search_space.augment.rotation.max=0.25"])
    assert cfg.search_space["augment.rotation"].max == 0.25


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"studdy": {}}, "unknown key 'studdy'"),
        ({"study": {"max_trial": 3}}, "study.max_trial: unknown key"),
        ({"study": {"max_trials": "many"}}, "study.max_trials: expected an integer"),
        ({"study": {"strategy": "grid"}}, "study.strategy: expected one of"),
        ({"data": {"channels": 2}}, "data.channels"),
        ({"search_space": {"learning_rate": {"type": "float", "min": 1e-2, "max": 1e-4}}}, "min (0.01) is greater than max"),
        ({"search_space": {"learning_rate": {"type": "float", "min": 0, "max": 1e-3, "log": True}}}, "log sampling needs min > 0"),
        ({"search_space": {"base_filters": {"type": "choice", "values": []}}}, "search_space.base_filters.values: expected a non-empty list"),
        ({"search_space": {"num_layers": {"type": "int", "min": 4, "max": 9}}}, "search_space.num_layers: [9] cannot fit image_size 512"),
        ({"search_space": {"widht": {"value": 3}}}, "search_space.widht: unknown hyperparameter"),
        ({"search_space": {"base_kernels": {"type": "choice", "values": [3, 4]}}}, "kernels must be odd"),
        ({"search_space": {"augment.elastic": {"type": "float", "min": 0, "max": 2}}}, "strengths are in [0, 1]"),
        ({"search_space": {"learning_rate": {"type": "floaty", "min": 0, "max": 1}}}, "search_space.learning_rate.type"),
        ({"study": {"strategy": "random", "pruner": "asha"}}, "cannot prune mid-training"),
        ({"study": {"strategy": "bayesian", "storage": "postgresql://x/y"}}, "study.storage is for Optuna strategies"),
        ({"search_space": {"learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "log": True, "step": 1e-4}}},
         "search_space.learning_rate: log sampling of a float range cannot have a step"),
        ({"data": {"mask_threshold": 0}}, "data.mask_threshold: expected 1..255"),
        ({"data": {"mask_threshold": 256}}, "data.mask_threshold: expected 1..255"),
    ],
)
def test_invalid_configs_name_the_key(raw: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, source="x.yaml")
    msg = str(e.value)
    assert fragment in msg, msg
    assert "\n" not in msg


def test_float_log_with_step_exits_2_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Optuna raises ValueError for a log float with a step; the config must refuse it (exit 2, one line)."""
    import yaml
    from conftest import tiny_raw_config

    from search.cli import EXIT_CONFIG, main

    raw = tiny_raw_config(tmp_path / "no-data")
    raw["search_space"]["learning_rate"] = {"type": "float", "min": 1e-3, "max": 1e-2, "log": True, "step": 1e-3}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["--results", str(tmp_path / "results"), "run", "--config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert "search_space.learning_rate" in err and "step" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "results").exists()


def test_positive_mask_thresholds_are_accepted() -> None:
    for threshold in (1, 128, 255):
        assert config_from_dict({"data": {"mask_threshold": threshold}}).data.mask_threshold == threshold


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: {name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, overrides=["study.seed"])


def test_max_feasible_layers() -> None:
    assert max_feasible_layers(512) == 8  # 512 / 2^7 = 4
    assert max_feasible_layers(64) == 5
    assert max_feasible_layers(32) == 4
    assert max_feasible_layers(48) == 4  # 48/8 = 6, 48/16 = 3 < 4


def test_translation_to_both_engines() -> None:
    cfg = config_from_dict({
        "data": {"image_size": 64},
        "search_space": {
            "base_filters": {"type": "pow2", "min": 8, "max": 64},
            "num_layers": {"type": "int", "min": 3, "max": 5},
            "learning_rate": {"type": "float", "min": 1e-5, "max": 1e-2, "log": True},
            "dropout_rate": {"type": "float", "min": 0.0, "max": 0.2, "step": 0.05},
            "dilation": {"value": 2},
        },
    })
    import optuna.distributions as od

    dists = to_optuna(cfg)
    assert set(dists) == {"base_filters", "num_layers", "learning_rate", "dropout_rate"}  # fixed ones not sampled
    assert isinstance(dists["base_filters"], od.CategoricalDistribution)
    assert list(dists["base_filters"].choices) == [8, 16, 32, 64]  # pow2 becomes a choice
    assert dists["learning_rate"].log and dists["learning_rate"].low == 1e-5
    assert dists["dropout_rate"].step == 0.05
    assert (dists["num_layers"].low, dists["num_layers"].high) == (3, 5)

    hp = to_keras_tuner(cfg)
    by_name = {p.name: p for p in hp.space}
    assert set(by_name) == set(dists)
    assert list(by_name["base_filters"].values) == [8, 16, 32, 64]
    assert by_name["learning_rate"].sampling == "log"
    assert (by_name["num_layers"].min_value, by_name["num_layers"].max_value) == (3, 5)

    values = complete_values(cfg, {"base_filters": 16, "num_layers": 4, "learning_rate": 1e-3, "dropout_rate": 0.1,
                                   "tuner/epochs": 3})
    assert values["dilation"] == 2 and "tuner/epochs" not in values
    assert set(values) == set(HYPERPARAMETER_DEFAULTS)


def test_baseline_is_reference_scaled_and_inside_space() -> None:
    cfg = config_from_dict({
        "data": {"image_size": 64},
        "search_space": {
            "base_filters": {"type": "choice", "values": [8, 32]},
            "base_kernels": {"type": "choice", "values": [3, 5, 7, 9]},
            "num_layers": {"type": "int", "min": 3, "max": 5},
            "learning_rate": {"type": "float", "min": 1e-3, "max": 1e-2, "log": True},
        },
    })
    b = baseline_values(cfg)
    assert b["base_kernels"] == 9  # the reference value when allowed
    assert b["num_layers"] == 5  # 8 levels cannot fit 64 px: deepest feasible
    assert b["learning_rate"] == 1e-3  # clipped into the range
    assert b["base_filters"] in (8, 32)  # nearest allowed to 16


def test_param_snap_and_contains() -> None:
    p = ParamDef(name="base_filters", type="pow2", min=8, max=32)
    assert p.choices() == (8, 16, 32) and p.contains(16) and not p.contains(12)
    assert p.snap(64) == 32


def test_num_layers_max_auto_fits_the_image_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="search.config"):
        cfg = load_config(overrides=["data.image_size=128", "search_space.num_layers={type: int, min: 3, max: auto}"])
    assert (cfg.search_space["num_layers"].min, cfg.search_space["num_layers"].max) == (3, 6)
    assert "max auto -> 6" in caplog.text
    assert load_config(overrides=["search_space.num_layers={type: int, min: 3, max: auto}"]).search_space[
        "num_layers"].max == 8  # 512 px: the reference depth, no deeper


def test_the_shipped_space_fits_a_small_image() -> None:
    """The default search_space.yaml used to fail at 128 px ('num_layers: [8] cannot fit image_size 128')."""
    cfg = load_config(REPO / "search_space.yaml", overrides=["data.image_size=128"])
    assert cfg.search_space["num_layers"].max == 6


def test_an_omitted_num_layers_is_fitted_and_an_explicit_one_that_cannot_fit_is_an_error() -> None:
    cfg = load_config(overrides=["data.image_size=64"])  # no search space: the reference depth 8 is too deep
    assert cfg.fixed_values()["num_layers"] == 5
    with pytest.raises(ConfigError, match=r"search_space.num_layers: \[8\] cannot fit image_size 64"):
        load_config(overrides=["data.image_size=64", "search_space.num_layers={type: int, min: 4, max: 8}"])
    with pytest.raises(ConfigError, match=r"num_layers: min 6 cannot fit image_size 64"):
        load_config(overrides=["data.image_size=64", "search_space.num_layers={type: int, min: 6, max: auto}"])
    with pytest.raises(ConfigError, match=r"search_space.base_filters.max: 'auto' is accepted only for num_layers"):
        load_config(overrides=["search_space.base_filters={type: int, min: 8, max: auto}"])


def test_an_epoch_is_a_sample_count_and_the_warm_up_follows_it() -> None:
    cfg = load_config()
    assert cfg.steps_per_epoch == 400 and cfg.prune_warmup == 5  # 800 samples at batch 2; 4000-sample warm-up
    cfg = load_config(overrides=["train.steps_per_epoch=50"])
    assert cfg.steps_per_epoch == 50 and cfg.prune_warmup == 40
    cfg = load_config(overrides=["train.samples_per_epoch=null", "train.max_epochs=30"])
    assert cfg.steps_per_epoch is None and cfg.prune_warmup == 3  # one pass: the old epoch-based default
    assert cfg.warmup_epochs(n_train=100) == 40
    with pytest.raises(ConfigError, match="train.steps_per_epoch: expected an integer ≥ 1, got 0"):
        load_config(overrides=["train.steps_per_epoch=0"])
