"""Model families in the search space (issue 23): ``variant`` and ``<family>.<option>`` hyperparameters, sampled
define-by-run (Optuna) and under conditional scopes (Keras Tuner), recorded per family, refused when they cannot
mean anything (exit 2 naming the key and the choices)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_raw_config, write_config

from models.families import FAMILIES, SHARED_FIELDS
from search.cli import EXIT_CONFIG, main
from search.config import HYPERPARAMETER_DEFAULTS, VARIANT, config_from_dict, is_active, option_family
from search.config.space import baseline_values, complete_values, conditions, suggest_optuna, to_keras_tuner
from search.config.specs import specs_from_values
from search.errors import ConfigError, TrialFailed
from search.tools.reference_ini import reference_ini_sections

ALL = list(FAMILIES)


def _cfg(tmp_path: Path, space: dict[str, Any], **data: Any) -> Any:
    raw = tiny_raw_config(tmp_path, data={"image_size": 64, **data})
    raw["search_space"].update({"num_layers": {"type": "int", "min": 2, "max": 5}, **space})
    return config_from_dict(raw)


def _option_space() -> dict[str, Any]:
    """Every family's options as choices of their default (so the space holds every family's keys)."""
    return {f"{f.name}.{o}": {"type": "choice", "values": [v]} for f in FAMILIES.values() for o, v in f.options.items()}


def test_optuna_samples_only_what_the_chosen_family_reads(tmp_path: Path) -> None:
    import optuna

    cfg = _cfg(tmp_path, {VARIANT: {"type": "choice", "values": ALL}, "base_kernels": {"type": "choice",
               "values": [3, 5]}, "dilation": {"type": "choice", "values": [1, 2]}, **_option_space()})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        values = suggest_optuna(trial, cfg)
        variant = values[VARIANT]
        seen.add(variant)
        expected = {k for k in cfg.sampled_params() if is_active(k, variant)}
        assert set(trial.params) == set(values) == expected, variant
        assert not any(option_family(k) not in (None, variant) for k in values)
        study.tell(trial, 0.5)
    assert seen == set(ALL)


def test_keras_tuner_puts_each_familys_hyperparameters_under_a_condition_on_variant(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, {VARIANT: {"type": "choice", "values": ALL}, "base_kernels": {"type": "choice",
               "values": [3, 5]}, **_option_space()})
    hp = to_keras_tuner(cfg)
    by_name = {p.name: p for p in hp.space}
    assert set(by_name) == set(cfg.sampled_params())
    for family in ALL:
        hp.values[VARIANT] = family
        for name, p in by_name.items():
            assert hp.is_active(p) == is_active(name, family), (family, name)


def test_conditions_name_the_families_that_read_each_hyperparameter(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, {VARIANT: {"type": "choice", "values": ["unet", "unet3plus"]}, "unet3plus.deep_supervision":
               {"type": "choice", "values": [True, False]}})
    got = conditions(cfg)
    assert list(got)[0] == VARIANT and got["unet3plus.deep_supervision"] == ("unet3plus",)
    assert got["base_filters"] is None  # both read it


def test_a_trial_records_only_what_its_family_reads_and_its_spec_carries_the_options(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, {VARIANT: {"type": "choice", "values": ALL}, **_option_space()})
    for name, family in FAMILIES.items():
        built = []
        for layers in (2, 3, 4, 5):  # the families' depths differ (DeepLabV3+ reaches its output stride first)
            values = complete_values(cfg, {VARIANT: name, "base_filters": 8, "num_layers": layers,
                                           "learning_rate": 1e-3})
            assert values[VARIANT] == name
            assert {k for k in values if option_family(k)} == {f"{name}.{o}" for o in family.options}
            assert not [k for k in SHARED_FIELDS if k in values and k not in family.uses]
            try:
                spec = specs_from_values(cfg, values, seed=0).model
            except TrialFailed:
                continue
            assert spec.variant == name and spec.options == family.options
            built.append(layers)
        assert built, name


def test_the_baseline_is_the_reference_unet_and_carries_no_other_familys_options(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, {VARIANT: {"type": "choice", "values": ALL}, **_option_space()})
    base = baseline_values(cfg)
    assert base[VARIANT] == "unet" and not [k for k in base if option_family(k)]


def test_old_trials_without_a_variant_are_unets(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, {})
    values = {k: v for k, v in complete_values(cfg, {"num_layers": 3}).items() if k != VARIANT}
    assert specs_from_values(cfg, values, seed=0).model.variant == "unet"
    assert HYPERPARAMETER_DEFAULTS[VARIANT] == "unet"


@pytest.mark.parametrize(("space", "message"), [
    ({VARIANT: {"type": "choice", "values": ["unet", "resunet"]}},
     "search_space.variant.values: unknown model family 'resunet'; expected one of ['unet', 'attention_unet'"),
    ({VARIANT: "transunet"}, "unknown model family 'transunet'"),
    ({"unet3plus.deep_supervision": {"value": True}},
     "search_space.unet3plus.deep_supervision: an option of model family unet3plus, which search_space.variant "
     "never chooses (its choices: ['unet'])"),
    ({VARIANT: {"type": "choice", "values": ["unet", "unet3plus"]}, "unet3plus.depth": {"value": 3}},
     "unknown option of model family unet3plus; expected one of ['unet3plus.deep_supervision']"),
    ({"resunet.depth": {"value": 3}}, "unknown model family 'resunet'"),
    ({VARIANT: {"type": "choice", "values": ["unet", "unet3plus"]}, "unet3plus.deep_supervision": {"value": "yes"}},
     "unet3plus.deep_supervision expects true/false"),
])
def test_bad_family_keys_are_refused_when_the_config_is_read(tmp_path: Path, space: dict[str, Any],
                                                              message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _cfg(tmp_path, space)
    assert message in str(info.value)


def test_the_cli_refuses_an_unknown_family_with_exit_2_before_a_study_exists(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "ds", search_space={VARIANT: {"value": "resunet"}})
    results = tmp_path / "results"
    assert main(["--results", str(results), "run", "--config", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "unknown model family 'resunet'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not results.exists() or not any(results.iterdir())


def test_the_reference_ini_names_the_familys_model_class_and_its_options(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, {VARIANT: {"type": "choice", "values": ["unet", "unet3plus"]}})
    values = complete_values(cfg, {VARIANT: "unet3plus", "unet3plus.deep_supervision": True})
    model = dict(reference_ini_sections(cfg, values)["model"])
    assert model["model"] == "TensorflowUNet3Plus" and model["deep_supervision"] is True
    unet = dict(reference_ini_sections(cfg, complete_values(cfg, {VARIANT: "unet"}))["model"])
    assert unet["model"] == "TensorflowUNet" and "deep_supervision" not in unet


def test_set_reaches_a_family_option(tmp_path: Path) -> None:
    from conftest import REPO

    from search.config import load_config

    cfg = load_config(REPO / "search_space.yaml", overrides=[
        "data.image_size=128", "search_space.variant={type: choice, values: [unet, unet3plus]}",
        "search_space.unet3plus.deep_supervision={type: choice, values: [true, false]}"])
    assert cfg.search_space["unet3plus.deep_supervision"].choices() == (True, False)


def test_the_swin_unets_ini_keys_are_the_references(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, {VARIANT: {"type": "choice", "values": ["unet", "swin_unet"]}}, image_size=128)
    values = complete_values(cfg, {VARIANT: "swin_unet", "base_filters": 16, "num_layers": 3})
    model = dict(reference_ini_sections(cfg, values)["model"])
    assert model["model"] == "TensorflowSwinUNet" and model["filter_num_begin"] == 16 and model["depth"] == 3
    assert model["patch_size"] == (4, 4) and model["window_size"] == [4, 2, 2] and model["num_heads"] == [4, 8, 8]
    assert "base_filters" not in model


def test_every_family_is_opened_once_after_the_baseline(tmp_path: Path) -> None:
    from search.config.space import family_openers

    space = {VARIANT: {"type": "choice", "values": ["unet", "unet3plus", "multires_unet"]}}
    cfg = _cfg(tmp_path, space)  # the tests' tiny config has no baseline: every family opens
    assert family_openers(cfg) == [{VARIANT: "unet"}, {VARIANT: "unet3plus"}, {VARIANT: "multires_unet"}]
    with_baseline = dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, baselines=True))
    assert family_openers(with_baseline) == [{VARIANT: "unet3plus"}, {VARIANT: "multires_unet"}]  # the unet is
    assert family_openers(_cfg(tmp_path, {})) == []  # one family: nothing to open
