"""The first rung at a reduced image size (issue 20 item 2): a trial's warm-up trains at a smaller side, is judged
there, and a trial the pruner keeps continues at the full size with its weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_raw_config

from data import AugmentSpec, synthetic_arrays
from models import UNetSpec
from search.config import config_from_dict
from search.config.specs import TrainSpec, TrialSpecs, first_rung_size, specs_from_values
from search.errors import ConfigError, TrialPruned
from search.trial.training import Checkpoint, FirstRung, train_model

STEPS = 3


def _specs(*, epochs: int = 4, first: int | None = 32, warmup_epochs: int = 2) -> TrialSpecs:
    return TrialSpecs(
        model=UNetSpec(image_size=64, channels=1, base_filters=4, base_kernels=3, num_layers=3, dilation=1,
                       dropout_rate=0.0),
        augment=AugmentSpec.none(),
        train=TrainSpec(learning_rate=3e-3, batch_size=4, max_epochs=epochs, patience=epochs, seed=5,
                        steps_per_epoch=STEPS, warmup_samples=warmup_epochs * STEPS * 4, first_rung_size=first),
    )


def _arrays() -> dict[str, np.ndarray]:
    ti, tm = synthetic_arrays(n=12, size=64, seed=1)
    vi, vm = synthetic_arrays(n=6, size=64, seed=2)
    return {"train_images": ti, "train_masks": tm, "valid_images": vi, "valid_masks": vm}


def test_the_warm_up_trains_at_the_first_rung_and_the_rest_at_the_full_size_with_its_weights() -> None:
    seen: list[tuple[int, Any]] = []
    result = train_model(_specs(), **_arrays(), on_epoch=lambda e, logs: seen.append((e, logs["image_size"])))
    assert [int(s) for _, s in seen] == [32, 32, 64, 64]  # two warm-up epochs at 32², then 64²
    assert result.model.input_shape[1:3] == (64, 64)
    # the score, best epoch and early stopping are the full size's: the bests start again at the switch
    assert result.best_epoch >= 2
    assert result.best_score == max(h["val_hard_dice"] for h in result.history[2:])


def test_the_full_size_model_continues_from_the_first_rung_s_weights_not_from_scratch() -> None:
    """After the switch the model starts where the first rung left it: its first full-size epoch scores far
    better than a fresh model's first epoch at the full size."""
    arrays = _arrays()
    ramp = train_model(_specs(epochs=3, warmup_epochs=2), **arrays)
    fresh = train_model(_specs(epochs=1, first=None, warmup_epochs=1), **arrays)
    assert ramp.history[2]["val_loss"] < fresh.history[0]["val_loss"]


def test_a_trial_pruned_at_the_first_rung_hands_back_a_full_size_model() -> None:
    def prune(epoch: int, logs: dict[str, float]) -> None:
        if epoch == 1:
            raise TrialPruned("pruned at the first rung")

    with pytest.raises(TrialPruned) as info:
        train_model(_specs(), **_arrays(), on_epoch=prune)
    model = info.value.model
    assert model is not None and model.input_shape[1:3] == (64, 64)
    assert model.predict(_arrays()["valid_images"], verbose=0).shape == (6, 64, 64, 1)


def test_a_trial_resumed_across_the_switch_continues_at_the_full_size_with_fresh_bests(tmp_path: Path) -> None:
    arrays = _arrays()
    ckpt = Checkpoint(tmp_path / "ckpt")

    def stop_after_first_rung(epoch: int, logs: dict[str, float]) -> None:
        if epoch == 1:
            raise KeyboardInterrupt  # a killed driver: the checkpoint holds epoch 1 (the last at 32²)

    with pytest.raises(KeyboardInterrupt):
        train_model(_specs(), **arrays, checkpoint=ckpt, on_epoch=stop_after_first_rung)
    resumed = train_model(_specs(), **arrays, checkpoint=ckpt)
    assert [int(h["image_size"]) for h in resumed.history] == [32, 32, 64, 64]
    assert resumed.best_epoch >= 2  # the bests of the first rung were dropped at the switch


def test_without_a_validation_split_or_for_a_fixed_epoch_retrain_there_is_no_first_rung() -> None:
    arrays = _arrays()
    result = train_model(_specs(epochs=2), **{**arrays, "valid_images": arrays["valid_images"][:0],
                                               "valid_masks": arrays["valid_masks"][:0]})
    assert {int(h["image_size"]) for h in result.history} == {64}
    retrain = train_model(_specs(epochs=2), **arrays, fixed_epochs=2)
    assert {int(h["image_size"]) for h in retrain.history} == {64}


def test_a_configuration_too_deep_for_the_first_rung_starts_at_the_smallest_size_that_fits_it() -> None:
    spec = UNetSpec(image_size=128, channels=1, base_filters=4, base_kernels=3, num_layers=3)
    assert first_rung_size(spec, 64) == 64
    deep = dataclasses.replace(spec, num_layers=6)  # needs a side divisible by 32 and a bottleneck ≥ the minimum
    size = first_rung_size(deep, 32)
    assert size is None or (size > 32 and size % 32 == 0)
    assert first_rung_size(spec, None) is None
    assert FirstRung.of(TrialSpecs(model=spec, augment=AugmentSpec.none(), train=TrainSpec(first_rung_size=None)),
                        until=2) is None


def test_the_first_rung_is_off_by_default_and_auto_puts_it_at_half_the_size_from_128_up() -> None:
    def cfg(size: int, **train: Any) -> Any:
        return config_from_dict(tiny_raw_config(Path("d"), data={"image_size": size}, train=train))

    assert config_from_dict({"data": {"image_size": 128}}).first_rung_size is None  # off unless asked for (B12)
    assert cfg(128, first_rung_size="auto").first_rung_size == 64
    assert cfg(512, first_rung_size="auto").first_rung_size == 256
    assert cfg(64, first_rung_size="auto").first_rung_size is None  # small images: no reduced rung
    assert cfg(128, first_rung_size=None).first_rung_size is None
    assert cfg(128, first_rung_size=32).first_rung_size == 32
    specs = specs_from_values(cfg(128, first_rung_size="auto"),
                              {"base_filters": 4, "num_layers": 3, "learning_rate": 1e-3} | _fixed(), seed=0)
    assert specs.train.first_rung_size == 64


def _fixed() -> dict[str, Any]:
    from search.config import AUGMENTATIONS

    return {"base_kernels": 3, "dropout_rate": 0.0, "dilation": 1, "batch_norm": True, "standardize_input": True,
            "loss": "bce_dice", **{f"augment.{a}": 0.0 for a in AUGMENTATIONS}}


@pytest.mark.parametrize("bad", [4, 128, 200])
def test_a_first_rung_size_outside_8_to_the_image_size_is_exit_2_naming_the_key(bad: int) -> None:
    with pytest.raises(ConfigError, match=r"train.first_rung_size: expected 8 ≤ size < data.image_size \(128\)"):
        config_from_dict(tiny_raw_config(Path("d"), data={"image_size": 128}, train={"first_rung_size": bad}))


def test_the_plan_judges_at_the_first_rung_for_about_a_quarter_of_the_cost() -> None:
    from tiny import AUTO_RULES, CHD, CPU

    from search.study.budget import plan_budget

    def plan(first: int | None) -> Any:
        return plan_budget(budget_s=600.0, spent_s=10.0, throughput=CPU, sizes=CHD, image_size=128,
                           requested=AUTO_RULES, first_rung_size=first)

    full, ramp = plan(None), plan(64)
    assert full.rules == ramp.rules  # the rules are the full size's
    assert [r.image_size for r in ramp.rungs] == [64, 128]
    startup = CPU.startup_s
    assert ramp.first_judgement_s(1.0) - startup < 0.3 * (full.first_judgement_s(1.0) - startup)
    assert "first rung at 64²" in ramp.describe() and "first rung" not in full.describe()
    assert ramp.summary()["first_rung"]["image_size"] == 64
