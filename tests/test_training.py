"""Single-configuration training: it learns, it is repeatable, NaN is a failure, checkpoints resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data import AugmentSpec, synthetic_arrays
from models import UNetSpec
from search.errors import TrialFailed
from search.specs import TrainSpec, TrialSpecs
from search.training import Checkpoint, evaluate_model, train_model


def _data(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images, masks = synthetic_arrays(n=n, size=size, seed=seed)
    return images, masks


def _specs(*, size: int = 32, levels: int = 3, filters: int = 8, lr: float = 3e-3, epochs: int = 2,
           patience: int = 10, seed: int = 0) -> TrialSpecs:
    return TrialSpecs(
        model=UNetSpec(image_size=size, channels=1, base_filters=filters, base_kernels=3, num_layers=levels,
                       dilation=1, dropout_rate=0.0),
        augment=AugmentSpec.none(),
        train=TrainSpec(learning_rate=lr, batch_size=8, max_epochs=epochs, patience=patience, seed=seed,
                        reducer_patience=4),
    )


@pytest.mark.slow
def test_tiny_unet_learns_synthetic_shape() -> None:
    """A 64 px, 4-level UNet reaches validation hard dice ≥ 0.9 within 60 epochs."""
    ti, tm = _data(96, 64, seed=1)
    vi, vm = _data(16, 64, seed=2)
    specs = _specs(size=64, levels=4, filters=8, lr=3e-3, epochs=60, patience=12)
    result = train_model(specs, train_images=ti, train_masks=tm, valid_images=vi, valid_masks=vm)
    assert result.best_score >= 0.9, result.history[-1]
    # the returned model holds the best epoch's weights: re-evaluating gives the best score
    metrics = evaluate_model(result.model, vi, vm, batch_size=8, loss="bce_dice")
    assert metrics["hard_dice"] == pytest.approx(result.best_score, abs=1e-4)
    assert [h["epoch"] for h in result.history] == list(range(result.epochs_run))


def test_same_seed_same_history() -> None:
    ti, tm = _data(16, 32, seed=3)
    vi, vm = _data(8, 32, seed=4)
    runs = [train_model(_specs(seed=5), train_images=ti, train_masks=tm, valid_images=vi, valid_masks=vm)
            for _ in range(2)]
    a, b = ([(h["loss"], h["val_hard_dice"]) for h in r.history] for r in runs)
    assert a == b
    other = train_model(_specs(seed=6), train_images=ti, train_masks=tm, valid_images=vi, valid_masks=vm)
    assert [h["loss"] for h in other.history] != [x[0] for x in a]


def test_nan_loss_is_a_trial_failure() -> None:
    """A weight turning NaN mid-epoch (what a diverging run does) ends the run as TrialFailed."""
    import keras

    ti, tm = _data(16, 32, seed=3)
    vi, vm = _data(8, 32, seed=4)

    class Poison(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if batch == 0:
                # the sigmoid head: no fused ReLU after it (oneDNN's fused ReLU maps NaN to 0)
                w = self.model.get_layer("head").bias
                w.assign(w * float("nan"))

    with pytest.raises(TrialFailed, match=r"loss became nan at epoch 0"):
        train_model(_specs(epochs=4), train_images=ti, train_masks=tm, valid_images=vi, valid_masks=vm,
                    callbacks=[Poison()])


def test_checkpoint_resume_continues_from_last_epoch(tmp_path: Path) -> None:
    """3 epochs, then 'crash' and resume to 5 == 5 epochs straight (same history, same weights)."""
    ti, tm = _data(16, 32, seed=3)
    vi, vm = _data(8, 32, seed=4)
    straight = train_model(_specs(epochs=5, seed=9), train_images=ti, train_masks=tm, valid_images=vi,
                           valid_masks=vm)
    ckpt = Checkpoint(tmp_path / "ckpt")
    seen: list[int] = []

    class Crash(Exception):
        pass

    def crash_after_3(epoch: int, logs: dict) -> None:
        seen.append(epoch)
        if epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        train_model(_specs(epochs=5, seed=9), train_images=ti, train_masks=tm, valid_images=vi, valid_masks=vm,
                    checkpoint=ckpt, on_epoch=crash_after_3)
    resumed = train_model(_specs(epochs=5, seed=9), train_images=ti, train_masks=tm, valid_images=vi,
                          valid_masks=vm, checkpoint=ckpt, on_epoch=lambda e, logs: seen.append(e))
    assert seen == [0, 1, 2, 3, 4]  # epochs 0-2 before the crash, 3-4 after: none repeated
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([h["loss"] for h in resumed.history], [h["loss"] for h in straight.history],
                               rtol=1e-5)
    for w1, w2 in zip(resumed.model.get_weights(), straight.model.get_weights(), strict=True):
        np.testing.assert_allclose(w1, w2, rtol=1e-5, atol=1e-6)
