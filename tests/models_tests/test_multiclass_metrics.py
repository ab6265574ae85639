"""Several classes (issue 22): the softmax head, the K-class losses and the per-class hard metrics with the
absent-class rule, by hand and Keras against NumPy."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from models import (
    ForegroundHardDice,
    HardDice,
    HardIoU,
    PredictedForeground,
    SoftDice,
    UNetSpec,
    bce_loss,
    build_model,
    dice_coef,
    get_loss,
    hard_dice_per_class,
    hard_dice_per_image,
    iou_per_image,
    soft_dice,
)


def _one_hot_prob(labels: np.ndarray, k: int, *, confidence: float = 0.9) -> np.ndarray:
    """[N, H, W, K] probabilities whose argmax is ``labels``."""
    prob = np.full((*labels.shape, k), (1 - confidence) / (k - 1), np.float32)
    np.put_along_axis(prob, labels[..., None].astype(np.int64), confidence, axis=-1)
    return prob


def test_per_class_dice_by_hand_with_the_absent_class_rule() -> None:
    truth = np.zeros((2, 4, 4), np.uint8)
    truth[0, :2, :2] = 1  # 4 pixels of class 1
    truth[0, 2:, 2:] = 2  # 4 pixels of class 2
    truth[1, :2, :] = 1  # image 1: class 1 only
    pred = truth.copy()
    pred[0, 0, 0] = 0  # image 0: class 1 misses one pixel → 2·3/(4+3)
    pred[1, 3, 3] = 3  # image 1: class 3 predicted where the truth has none → 0 for class 3
    table = hard_dice_per_class(truth, _one_hot_prob(pred, 4))
    assert table.shape == (2, 3)
    assert table[0, 0] == pytest.approx(6 / 7) and table[0, 1] == 1.0
    assert np.isnan(table[0, 2])  # class 3: empty truth and empty prediction → not scored
    assert table[1, 0] == 1.0 and np.isnan(table[1, 1]) and table[1, 2] == 0.0
    np.testing.assert_allclose(hard_dice_per_image(truth, _one_hot_prob(pred, 4)), [(6 / 7 + 1) / 2, 0.5])


def test_an_image_without_any_class_scores_one_and_one_foreground_class_is_the_binary_rule() -> None:
    truth = np.zeros((1, 4, 4), np.uint8)
    assert hard_dice_per_image(truth, _one_hot_prob(truth, 3)) == pytest.approx([1.0])
    rng = np.random.default_rng(0)
    labels = (rng.random((5, 8, 8)) > 0.6).astype(np.uint8)
    pred = (rng.random((5, 8, 8)) > 0.5).astype(np.uint8)
    pred[0] = labels[0] = 0  # an empty image, predicted empty
    two_class = hard_dice_per_image(labels, _one_hot_prob(pred, 2))
    binary = hard_dice_per_image(labels.astype(np.float32), pred.astype(np.float32) * 0.9 + 0.05)
    np.testing.assert_allclose(two_class, binary)
    np.testing.assert_allclose(iou_per_image(labels, _one_hot_prob(pred, 2)),
                               iou_per_image(labels.astype(np.float32), pred.astype(np.float32) * 0.9 + 0.05))


@pytest.mark.parametrize("metric_cls", [HardDice, HardIoU])
def test_keras_hard_metrics_equal_numpy_for_several_classes(metric_cls: type) -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, (6, 8, 8)).astype(np.uint8)
    truth[2] = 0  # no class at all
    truth[3][truth[3] == 3] = 0  # class 3 absent from this image
    prob = rng.dirichlet(np.ones(4), (6, 8, 8)).astype(np.float32)
    prob[2] = _one_hot_prob(np.zeros((8, 8), np.uint8), 4)  # predicted empty: scores 1.0
    metric = metric_cls()
    for start in (0, 3):  # two batches
        metric.update_state(truth[start:start + 3, ..., None].astype(np.float32), prob[start:start + 3])
    numpy_fn = hard_dice_per_image if metric_cls is HardDice else iou_per_image
    assert float(metric.result()) == pytest.approx(float(np.mean(numpy_fn(truth, prob))), abs=1e-6)


def test_foreground_dice_and_predicted_foreground_for_several_classes() -> None:
    truth = np.zeros((2, 4, 4, 1), np.float32)
    truth[0, :2, :2] = 2
    pred = np.zeros((2, 4, 4), np.uint8)
    pred[0, :2, :2] = 2
    pred[1, 0, 0] = 1  # image 1: empty truth, one pixel predicted
    fg = ForegroundHardDice()
    fg.update_state(truth, _one_hot_prob(pred, 3))
    assert float(fg.result()) == pytest.approx(1.0)  # only image 0 has foreground
    pf = PredictedForeground()
    pf.update_state(truth, _one_hot_prob(pred, 3))
    assert float(pf.result()) == pytest.approx(5 / 32)


def test_the_cross_entropy_of_several_classes_is_the_categorical_one() -> None:
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, (2, 4, 4, 1)).astype(np.float32)
    prob = rng.dirichlet(np.ones(3), (2, 4, 4)).astype(np.float32)
    hot = np.eye(3)[truth[..., 0].astype(int)]
    expected = -np.mean(np.sum(hot * np.log(np.clip(prob, 1e-7, 1)), axis=-1))
    assert float(bce_loss(truth, prob)) == pytest.approx(expected, rel=1e-4)


def test_the_soft_dice_of_several_classes_is_the_mean_over_the_foreground_classes() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, (2, 4, 4, 1)).astype(np.float32)
    prob = rng.dirichlet(np.ones(3), (2, 4, 4)).astype(np.float32)
    hot = np.eye(3)[truth[..., 0].astype(int)]
    per_class = [(2 * np.sum(hot[..., k] * prob[..., k]) + 1) / (hot[..., k].sum() + prob[..., k].sum() + 1)
                 for k in (1, 2)]  # the background (class 0) left out
    assert float(dice_coef(truth, prob)) == pytest.approx(np.mean(per_class), rel=1e-5)
    assert soft_dice(truth[..., 0], prob) == pytest.approx(np.mean(per_class), rel=1e-5)
    soft = SoftDice()
    soft.update_state(truth, prob)
    assert float(soft.result()) == pytest.approx(np.mean(per_class), rel=1e-5)


@pytest.mark.parametrize("name", ["bce_dice", "bce_dice_image", "dice", "bce", "bce_iou"])
def test_every_loss_trains_a_softmax_head_and_the_model_saves_and_reloads(name: str, tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    spec = UNetSpec.tiny(num_classes=4, num_layers=2)
    model = build_model(spec)
    assert model.get_layer("head").activation.__name__ == "softmax"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (4, 32, 32, 1)).astype(np.float32)
    y = rng.integers(0, 4, (4, 32, 32, 1)).astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=get_loss(name), metrics=[HardDice()])
    losses = model.fit(x, y, epochs=4, batch_size=4, verbose=0).history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(again(x[:1])), np.asarray(model(x[:1])), rtol=1e-5, atol=1e-6)


def test_an_untrained_softmax_head_predicts_the_background() -> None:
    """The background prior of the head's bias: an untrained model of several classes scores no chance dice (its
    training starts from "no score yet"); a one-channel head keeps the reference's zero bias."""
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 1)).astype(np.float32)
    prob = np.asarray(build_model(UNetSpec.tiny(num_classes=8))(x))
    assert (prob.argmax(axis=-1) == 0).all() and prob[..., 0].mean() > 0.5
    binary = build_model(UNetSpec.tiny())
    assert not np.asarray(binary.get_layer("head").bias).any()
