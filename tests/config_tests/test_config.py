"""Config loading, validation errors with dotted key paths, --set precedence, space translation."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from search.config import (
    HYPERPARAMETER_DEFAULTS,
    ParamDef,
    config_from_dict,
    load_config,
    max_feasible_layers,
    option_family,
)
from search.config.space import baseline_values, complete_values, to_keras_tuner, to_optuna
from search.errors import ConfigError


def test_repo_search_space_loads() -> None:
    cfg = load_config(REPO / "search_space.yaml")
    assert cfg.data.image_size == 512 and cfg.data.batch_size == 2
    # the epoch, warm-up, patience and trial length come from the run's budget (tests/study_tests/test_budget.py);
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
        ({"data": {"channels": True}}, "data.channels"),
        ({"data": {"channels": "grey"}}, "data.channels"),
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
    assert set(values) == {k for k in HYPERPARAMETER_DEFAULTS if option_family(k) is None}  # unet's: no options


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


@pytest.mark.parametrize(
    ("item", "key", "choice"),
    [
        ("train.activation=rellu", "train.activation", "'relu'"),
        ("search_space.loss={value: dicee}", "search_space.loss", "'bce_dice'"),
        ("search_space.loss={type: choice, values: [dice, bcee]}", "search_space.loss", "'bce_iou'"),
        ("study.strategy=tpee", "study.strategy", "'tpe'"),
        ("study.pruner=ashaa", "study.pruner", "'asha'"),
        ("search_space.augment.rotate={value: 0.5}", "search_space.augment.rotate", "'augment.rotation'"),
    ],
)
def test_an_unknown_name_exits_2_naming_the_key_and_the_choices_before_any_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], item: str, key: str, choice: str
) -> None:
    """A typo in a name is a config error, not a study whose every trial is rejected as infeasible (issue 19.14)."""
    import yaml
    from conftest import tiny_raw_config

    from search.cli import EXIT_CONFIG, main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_raw_config(tmp_path / "no-data")))
    results = tmp_path / "results"
    assert main(["--results", str(results), "run", "--config", str(path), "--set", item]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert key in err and choice in err and len(err.splitlines()) == 1, err
    assert not results.exists()


def test_the_names_a_config_accepts_are_the_registries_that_implement_them() -> None:
    """Losses, activations and augmentations come from models/ and data/; strategies and pruners are the engines'."""
    import typing

    import optuna

    import data.augment
    import models
    from search.config import ACTIVATIONS, AUGMENTATIONS, LOSS_NAMES, OPTUNA_STRATEGIES, PRUNERS, STRATEGIES
    from search.config.schema import StudyConfig
    from search.engines.optuna_engine import make_pruner, make_sampler

    assert LOSS_NAMES == tuple(models.LOSSES)
    assert ACTIVATIONS is models.spec.ACTIVATIONS and AUGMENTATIONS is data.augment.AUGMENTATIONS
    hints = typing.get_type_hints(StudyConfig)
    assert typing.get_args(hints["strategy"]) == STRATEGIES and typing.get_args(hints["pruner"]) == PRUNERS
    for strategy in OPTUNA_STRATEGIES:
        cfg = config_from_dict({"study": {"strategy": strategy}})
        try:
            assert isinstance(make_sampler(cfg), optuna.samplers.BaseSampler)
        except ConfigError as e:  # gp without torch installed: refused by name, not unknown
            assert strategy == "gp" and "torch" in str(e)
    for pruner in PRUNERS:
        made = make_pruner(config_from_dict({"study": {"pruner": pruner}}))
        assert isinstance(made, optuna.pruners.NopPruner) == (pruner == "none")


@pytest.mark.slow
def test_the_keras_tuner_strategies_are_the_oracles_it_builds() -> None:
    import keras_tuner as kt

    from search.config import KT_STRATEGIES
    from search.engines.kt_engine import _oracle_class

    oracles = [_oracle_class(config_from_dict({"study": {"strategy": s}})) for s in KT_STRATEGIES]
    assert all(issubclass(o, kt.Oracle) for o in oracles) and len(set(oracles)) == len(KT_STRATEGIES)


@pytest.mark.parametrize(
    ("args", "source"),
    [
        (["--timeout", "-5"], "python -m search run: argument --timeout: expected a positive number of seconds"),
        (["--max-trials", "0"], "--max-trials: study.max_trials: expected an integer ≥ 1"),
        (["--set", "study.timeout_s=-5"], "--set study.timeout_s=-5: study.timeout_s: expected a positive number"),
        (["--set", "search_space.learning_rate.min=-1"], "--set search_space.learning_rate.min=-1: "
                                                         "search_space.learning_rate"),
    ],
)
def test_an_error_names_the_flag_or_set_that_gave_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], source: str
) -> None:
    """`--timeout -5` blamed the config file, although the value came from the flag (issue 19.16f)."""
    import yaml
    from conftest import tiny_raw_config

    from search.cli import EXIT_CONFIG, main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_raw_config(tmp_path / "no-data")))
    assert main(["--results", str(tmp_path / "results"), "run", "--config", str(path), *args]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {source}"), err
    assert str(path) not in err


def test_an_error_in_the_file_still_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("study: {timeout_s: -5}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: study.timeout_s: expected a positive number"):
        load_config(path, overrides=[("--max-trials", "study.max_trials=3"), "study.seed=2"])


def test_a_string_flag_is_not_read_as_yaml(tmp_path: Path) -> None:
    import argparse

    from search.cli.run_cmd import resolve_config

    args = argparse.Namespace(results=str(tmp_path), config=None, demo=False, set=[], study="2024", data="a: b",
                              strategy=None, max_trials=None, timeout=None, workers=None, storage=None, no_final=True)
    cfg = resolve_config(args)
    assert cfg.study.name == "2024" and cfg.data.root == "a: b" and cfg.final.retrain is False


@pytest.mark.parametrize(
    "config", [None, REPO / "search_space.yaml"], ids=["num_layers left out", "num_layers max auto"]
)
def test_an_image_too_small_for_the_reference_depth_warns_what_and_why(
    caplog: pytest.LogCaptureFixture, config: Path | None
) -> None:
    """`--set data.image_size=100` made a 3-level UNet, said only at INFO (issue 19.16e)."""
    import logging

    with caplog.at_level(logging.INFO, logger="search.config"):
        cfg = load_config(config, overrides=["data.image_size=100"])
    assert cfg.search_space["num_layers"].bounds_values()[-1] == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert "data.image_size 100" in warnings[0] and "3" in warnings[0]
    assert "halves the image evenly" in warnings[0] and "96 px fits 5" in warnings[0]


def test_channels_and_mask_threshold_default_to_the_data() -> None:
    """channels: auto (1 for a greyscale dataset, else 3) and mask_threshold: null (the dataset's mask rule)."""
    cfg = load_config(None)
    assert cfg.data.channels == "auto" and cfg.data.mask_threshold is None
    explicit = load_config(None, overrides=["data.channels=1", "data.mask_threshold=200"])
    assert (explicit.data.channels, explicit.data.mask_threshold) == (1, 200)
    assert load_config(None, overrides=["data.channels=auto"]).data.channels == "auto"


def test_classes_default_to_the_datasets_labels_json_and_a_map_sets_the_models_head() -> None:
    from search.config.specs import specs_from_values

    assert load_config(None).data.classes == "auto" and load_config(None).data.num_classes == 2
    cfg = config_from_dict({"data": {"channels": 1, "image_size": 64,
                                     "classes": {"background": 0, "lv": 1, "rv": 2, "aorta": 5}}})
    classes = cfg.data.class_map()
    assert classes is not None and classes.names == ("background", "lv", "rv", "aorta") and cfg.data.num_classes == 4
    values = {**cfg.fixed_values(), "base_filters": 4, "num_layers": 3}
    assert specs_from_values(cfg, values, seed=0).model.num_classes == 4  # a softmax head of 4 channels
    two = config_from_dict({"data": {"channels": 1, "image_size": 64, "classes": {"background": 0, "aorta": 5}}})
    assert specs_from_values(two, values, seed=0).model.num_classes == 1  # one structure: the binary head
    assert config_from_dict({"data": {"classes": "binary"}}).data.class_map() is None


@pytest.mark.parametrize(("classes", "fragment"), [
    ({"bg": [0, 0, 0], "a": [9, 9, 9], "b": [9, 9, 9]}, "classes 'a' and 'b' have one colour [9, 9, 9]"),
    ({"bg": 0}, "expected 2..255 classes"),
    ("several", "expected a mapping"),
    ({"bg": 0, "a": "red"}, "class 'a' has value 'red'"),
])
def test_a_bad_class_map_is_refused_when_the_config_is_read(classes: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"data": {"classes": classes}})
    assert fragment in str(err.value) and "data.classes" in str(err.value) and "auto" in str(err.value)
