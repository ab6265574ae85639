"""Tests for models.losses and models.metrics against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from models import (
    LOSSES,
    ForegroundHardDice,
    HardDice,
    HardIoU,
    PredictedForeground,
    SoftDice,
    UNetSpec,
    bce_dice_image_loss,
    bce_dice_loss,
    bce_iou_loss,
    bce_loss,
    build_model,
    dice_coef,
    dice_loss,
    get_loss,
    hard_dice_per_image,
    iou_coef,
    iou_per_image,
    soft_dice,
)

EPS = 1e-7


def _img(values: list[list[float]]) -> np.ndarray:
    """A [1, H, W, 1] float32 batch from a 2D list."""
    return np.asarray(values, dtype=np.float32)[None, :, :, None]


def _f(tensor: object) -> float:
    return float(np.asarray(tensor))


# y_true [[1,1],[0,0]], y_pred [[0.5,1],[0.5,0]]: Σtp = 1.5, Σt = 2, Σp = 2.
TRUE = _img([[1, 1], [0, 0]])
PRED = _img([[0.5, 1.0], [0.5, 0.0]])
BCE = (-math.log(0.5) - math.log(1 - EPS) - math.log(0.5) - math.log(1 - EPS)) / 4


# --- losses -------------------------------------------------------------------------------------------------


def test_dice_coef_hand_computed() -> None:
    assert _f(dice_coef(TRUE, PRED)) == pytest.approx((2 * 1.5 + 1) / (2 + 2 + 1))
    assert _f(dice_coef(TRUE, PRED, smooth=0.0)) == pytest.approx(0.75)
    assert _f(dice_loss(TRUE, PRED)) == pytest.approx(1 - 0.8)


def test_iou_coef_hand_computed() -> None:
    assert _f(iou_coef(TRUE, PRED)) == pytest.approx((1.5 + 1) / (2 + 2 - 1.5 + 1))


def test_bce_hand_computed() -> None:
    assert _f(bce_loss(TRUE, PRED)) == pytest.approx(BCE, rel=1e-5)
    # Confidently wrong predictions are clipped, not infinite.
    assert _f(bce_loss(_img([[1.0]]), _img([[0.0]]))) == pytest.approx(-math.log(EPS), rel=1e-4)


def test_combined_losses_hand_computed() -> None:
    assert _f(bce_dice_loss(TRUE, PRED)) == pytest.approx(0.5 * BCE + 0.5 * (1 - 0.8), rel=1e-5)
    assert _f(bce_iou_loss(TRUE, PRED)) == pytest.approx(0.5 * BCE + 0.5 * (1 - 2.5 / 3.5), rel=1e-5)


def test_dice_is_pooled_over_the_batch() -> None:
    y_true = np.concatenate([_img([[1, 1], [1, 1]]), _img([[0, 0], [0, 0]])])
    y_pred = np.concatenate([_img([[1, 1], [1, 1]]), _img([[1, 0], [0, 0]])])
    # Pooled: Σtp = 4, Σt = 4, Σp = 5 → 9/10; a per-image mean would be (1 + 1/2)/2.
    assert _f(dice_coef(y_true, y_pred)) == pytest.approx(0.9)


def test_empty_and_full_masks() -> None:
    empty = _img([[0, 0], [0, 0]])
    full = _img([[1, 1], [1, 1]])
    assert _f(dice_coef(empty, empty)) == pytest.approx(1.0)
    assert _f(iou_coef(empty, empty)) == pytest.approx(1.0)
    assert _f(dice_coef(full, full)) == pytest.approx(1.0)
    assert _f(dice_coef(empty, full)) == pytest.approx(1 / 5)
    assert _f(dice_coef(full, empty)) == pytest.approx(1 / 5)
    assert _f(bce_dice_loss(empty, empty)) == pytest.approx(0.5 * -math.log(1 - EPS), abs=1e-6)
    assert _f(bce_dice_loss(full, full)) == pytest.approx(0.0, abs=1e-6)


def test_losses_accept_uint8_and_missing_channel() -> None:
    y_true_3d = np.asarray([[[1, 1], [0, 0]]], dtype=np.uint8)
    for loss in (dice_coef, iou_coef, bce_loss, bce_dice_loss, bce_iou_loss):
        assert _f(loss(y_true_3d, PRED)) == pytest.approx(_f(loss(TRUE, PRED)), rel=1e-6)


def test_loss_gradient_is_finite() -> None:
    import tensorflow as tf

    y_pred = tf.Variable(np.concatenate([PRED, _img([[0.0, 1.0], [1.0, 0.0]])]))
    y_true = np.concatenate([TRUE, _img([[0, 0], [0, 0]])])
    for loss in LOSSES.values():
        with tf.GradientTape() as tape:
            value = loss(y_true, y_pred)
        grad = tape.gradient(value, y_pred).numpy()
        assert np.all(np.isfinite(grad))
        assert np.any(grad != 0)


# The losses with a BCE term, and that term's weight in each.
BCE_WEIGHT = {"bce_dice": 0.5, "bce_dice_image": 0.5, "bce": 1.0, "bce_iou": 0.5}


def _sigmoid_graph(loss: object, logits: np.ndarray, y_true: np.ndarray) -> tuple[float, np.ndarray]:
    """(loss, d loss / d logits) with the probabilities from Keras's sigmoid inside a tf.function, as in ``fit``."""
    import tensorflow as tf

    z = tf.Variable(logits)

    @tf.function
    def step() -> tuple[object, object]:
        with tf.GradientTape() as tape:
            value = loss(y_true, keras.activations.sigmoid(z))
        return value, tape.gradient(value, z)

    value, grad = step()
    return float(value), grad.numpy()


@pytest.mark.parametrize("name", sorted(BCE_WEIGHT))
def test_saturated_wrong_pixels_keep_the_bce_gradient(name: str) -> None:
    """Logits ±20 on the wrong labels: the BCE term's gradient wrt the logits is (p − y)·w / N, as with
    Keras's binary_crossentropy; clipped probabilities gave it 0 (review §7)."""
    logits = np.asarray([20.0, -20.0], np.float32).reshape(1, 1, 2, 1)
    y_true = np.asarray([0.0, 1.0], np.float32).reshape(1, 1, 2, 1)
    value, grad = _sigmoid_graph(LOSSES[name], logits, y_true)
    w = BCE_WEIGHT[name]
    np.testing.assert_allclose(grad.ravel(), [w / 2, -w / 2], atol=1e-3)  # the dice/IoU term adds ~σ'(20) ≈ 2e-9
    assert value >= w * 20.0 - 1e-3  # the unclipped BCE (clipped: -log(1e-7) = 16.1)


@pytest.mark.parametrize("name", sorted(BCE_WEIGHT))
def test_bce_from_logits_equals_the_clipped_formula_inside_the_clip(name: str) -> None:
    """Inside the clip the logits path (fit) and the probability path (NumPy, evaluation) agree in value."""
    rng = np.random.default_rng(0)
    logits = rng.uniform(-8, 8, (2, 4, 4, 1)).astype(np.float32)
    y_true = (rng.random((2, 4, 4, 1)) > 0.5).astype(np.float32)
    value, _ = _sigmoid_graph(LOSSES[name], logits, y_true)
    prob = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    bce = -np.mean(y_true * np.log(prob) + (1 - y_true) * np.log(1 - prob))
    assert value == pytest.approx(_f(LOSSES[name](y_true, prob.astype(np.float32))), rel=1e-5)
    if name == "bce_dice":  # the reference: (binary_crossentropy + 1 − dice_coef) / 2
        dice = (2 * np.sum(y_true * prob) + 1) / (y_true.sum() + prob.sum() + 1)
        assert value == pytest.approx(0.5 * bce + 0.5 * (1 - dice), rel=1e-5)


def test_fit_moves_a_saturated_head_towards_the_labels() -> None:
    """Through the model's sigmoid head and Keras's training step: a head stuck at p ≈ 1 on background
    labels gets a gradient (one SGD step lowers its bias); with clipped BCE it did not move."""
    model = build_model(UNetSpec.tiny())
    head = model.get_layer("head")
    head.kernel.assign(np.zeros(head.kernel.shape, np.float32))
    head.bias.assign(np.full(head.bias.shape, 30.0, np.float32))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss=get_loss("bce_dice"))
    images = np.zeros((2, 32, 32, 1), np.uint8)
    model.train_on_batch(images, np.zeros((2, 32, 32, 1), np.float32))
    # d(0.5 · mean BCE)/d bias = 0.5 · mean(p − y) = 0.5: the bias drops by the learning rate × 0.5
    assert float(head.bias.numpy()[0]) == pytest.approx(29.5, abs=1e-3)


def test_iou_smoothing_keeps_a_gradient_on_batches_without_foreground() -> None:
    """Why iou_coef is smoothed (the reference's jacard_similarity is not): on an empty batch the
    unsmoothed IoU is 0 whatever the prediction (no gradient) or NaN (all zero); smoothed, it pushes p down."""
    import tensorflow as tf

    empty = np.zeros((2, 4, 4, 1), np.float32)
    p = tf.Variable(np.full((2, 4, 4, 1), 0.2, np.float32))
    for smooth, expect_grad in ((0.0, False), (1.0, True)):
        with tf.GradientTape() as tape:
            iou = iou_coef(empty, p, smooth=smooth)
        grad = tape.gradient(iou, p).numpy()
        assert bool(np.any(grad != 0)) is expect_grad
    assert math.isnan(_f(iou_coef(empty, np.zeros_like(empty), smooth=0.0)))
    assert _f(iou_coef(empty, np.zeros_like(empty))) == pytest.approx(1.0)


def test_loss_registry() -> None:
    assert LOSSES == {"bce_dice": bce_dice_loss, "bce_dice_image": bce_dice_image_loss, "dice": dice_loss,
                      "bce": bce_loss, "bce_iou": bce_iou_loss}
    for name, loss in LOSSES.items():
        assert get_loss(name) is loss
    with pytest.raises(
        ValueError, match=r"\['bce', 'bce_dice', 'bce_dice_image', 'bce_iou', 'dice'\]. Received: loss='bce-dice'"
    ):
        get_loss("bce-dice")


# --- NumPy metrics -------------------------------------------------------------------------------------------

# Four flattened 2×2 images: partial overlap, empty/empty, empty truth with a false positive, full/full.
HARD_TRUE = np.asarray([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=np.float32).reshape(
    4, 2, 2
)
HARD_PROB = np.asarray(
    [[0.9, 0.2, 0.7, 0.1], [0.1, 0.2, 0.3, 0.5], [0.0, 0.6, 0.0, 0.0], [0.6, 0.7, 0.8, 1.0]], dtype=np.float32
).reshape(4, 2, 2)


def test_hard_dice_per_image_hand_computed() -> None:
    # Image 1: P = [1,0,1,0], |T∩P| = 1, |T| = |P| = 2. Image 2: 0.5 is not above the threshold → empty/empty.
    np.testing.assert_allclose(hard_dice_per_image(HARD_TRUE, HARD_PROB), [0.5, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(iou_per_image(HARD_TRUE, HARD_PROB), [1 / 3, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(
        hard_dice_per_image(HARD_TRUE, HARD_PROB, threshold=0.15), [4 / 5, 0.0, 0.0, 1.0]
    )


def test_numpy_metrics_accept_channel_axis() -> None:
    expected = hard_dice_per_image(HARD_TRUE, HARD_PROB)
    np.testing.assert_allclose(hard_dice_per_image(HARD_TRUE[..., None], HARD_PROB), expected)
    np.testing.assert_allclose(hard_dice_per_image(HARD_TRUE, HARD_PROB[..., None]), expected)
    np.testing.assert_allclose(
        iou_per_image(HARD_TRUE[..., None], HARD_PROB[..., None]), [1 / 3, 1.0, 0.0, 1.0]
    )
    masks_255 = (HARD_TRUE * 255).astype(np.uint8)
    np.testing.assert_allclose(hard_dice_per_image(masks_255, HARD_PROB), expected)


@pytest.mark.parametrize(
    ("y_true", "y_prob", "pattern"),
    [
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), "same shape"),
        (np.zeros((2, 4, 4, 2)), np.zeros((2, 4, 4)), "same shape"),
        (np.zeros((4, 4)), np.zeros((4, 4)), r"y_true.shape=\(4, 4\)"),
    ],
)
def test_numpy_metrics_reject_bad_shapes(y_true: np.ndarray, y_prob: np.ndarray, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        hard_dice_per_image(y_true, y_prob)


def test_soft_dice_numpy_matches_keras() -> None:
    assert soft_dice(TRUE, PRED) == pytest.approx(0.8)
    rng = np.random.default_rng(0)
    y_true = (rng.random((3, 8, 8, 1)) > 0.6).astype(np.float32)
    y_prob = rng.random((3, 8, 8, 1)).astype(np.float32)
    assert soft_dice(y_true, y_prob) == pytest.approx(_f(dice_coef(y_true, y_prob)), rel=1e-5)
    assert soft_dice(y_true[..., 0], y_prob) == pytest.approx(soft_dice(y_true, y_prob))


# --- Keras metrics -------------------------------------------------------------------------------------------


def _batches() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    batches = []
    for size in (3, 2, 4):
        y_true = (rng.random((size, 8, 8, 1)) > 0.7).astype(np.float32)
        y_prob = rng.random((size, 8, 8, 1)).astype(np.float32)
        batches.append((y_true, y_prob))
    # Edge cases: empty/empty, empty truth with a prediction, full/full.
    y_true = np.zeros((3, 8, 8, 1), np.float32)
    y_prob = np.zeros((3, 8, 8, 1), np.float32)
    y_prob[1, 0, 0, 0] = 0.9
    y_true[2] = 1.0
    y_prob[2] = 0.8
    batches.append((y_true, y_prob))
    return batches


@pytest.mark.parametrize(
    ("metric_cls", "numpy_fn"), [(HardDice, hard_dice_per_image), (HardIoU, iou_per_image)]
)
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_hard_metric_equals_numpy_over_batches(metric_cls: type, numpy_fn: object, threshold: float) -> None:
    metric = metric_cls(threshold=threshold)
    batches = _batches()
    for y_true, y_prob in batches:
        metric.update_state(y_true, y_prob)
    y_true_all = np.concatenate([b[0] for b in batches])
    y_prob_all = np.concatenate([b[1] for b in batches])
    expected = numpy_fn(y_true_all, y_prob_all, threshold=threshold)  # type: ignore[operator]
    assert len(expected) == 12
    assert _f(metric.result()) == pytest.approx(float(np.mean(expected)), rel=1e-6)
    metric.reset_state()
    assert _f(metric.result()) == 0.0


def test_hard_dice_metric_edge_cases_and_names() -> None:
    metric = HardDice()
    assert metric.name == "hard_dice"
    assert HardIoU().name == "hard_iou"
    assert SoftDice().name == "dice_coef"
    metric.update_state(HARD_TRUE[..., None], HARD_PROB[..., None])
    assert _f(metric.result()) == pytest.approx((0.5 + 1.0 + 0.0 + 1.0) / 4)


def test_hard_dice_metric_sample_weight() -> None:
    metric = HardDice()
    metric.update_state(HARD_TRUE[..., None], HARD_PROB[..., None], sample_weight=np.asarray([1, 0, 0, 1]))
    assert _f(metric.result()) == pytest.approx((0.5 + 1.0) / 2)


def test_foreground_dice_leaves_out_the_images_with_an_empty_mask() -> None:
    """The mean hard dice over the images whose truth has foreground: a model that predicts nothing
    scores 0 on a split with empty masks, where the per-image mean gives it the share of empty images."""
    metric = ForegroundHardDice()
    assert metric.name == "fg_dice"
    batches = _batches()
    for y_true, y_prob in batches:
        metric.update_state(y_true, y_prob)
    y_true_all = np.concatenate([b[0] for b in batches])
    y_prob_all = np.concatenate([b[1] for b in batches])
    has_fg = y_true_all.reshape(len(y_true_all), -1).any(axis=1)
    assert 0 < has_fg.sum() < len(has_fg)
    expected = hard_dice_per_image(y_true_all, y_prob_all)[has_fg].mean()
    assert _f(metric.result()) == pytest.approx(float(expected), rel=1e-6)

    nothing = np.zeros_like(HARD_PROB[..., None])  # images 1, 2 of HARD_TRUE are empty
    metric.reset_state()
    metric.update_state(HARD_TRUE[..., None], nothing)
    assert _f(metric.result()) == 0.0
    hard = HardDice()
    hard.update_state(HARD_TRUE[..., None], nothing)
    assert _f(hard.result()) == pytest.approx(0.5)
    assert ForegroundHardDice.from_config(ForegroundHardDice(threshold=0.3).get_config()).threshold == 0.3


def test_hard_metric_config_round_trip() -> None:
    metric = HardDice(threshold=0.3, name="val_score")
    clone = HardDice.from_config(metric.get_config())
    assert (clone.threshold, clone.name) == (0.3, "val_score")
    with pytest.raises(ValueError, match="threshold=1.5"):
        HardDice(threshold=1.5)


def test_soft_dice_metric_is_mean_of_batch_dice() -> None:
    metric = SoftDice()
    batches = _batches()
    for y_true, y_prob in batches:
        metric.update_state(y_true, y_prob)
    expected = np.mean([soft_dice(y_true, y_prob) for y_true, y_prob in batches])
    assert _f(metric.result()) == pytest.approx(expected, rel=1e-5)
    assert SoftDice.from_config(SoftDice(smooth=2.0).get_config()).smooth == 2.0


def test_soft_dice_per_batch_is_what_the_metric_logs() -> None:
    rng = np.random.default_rng(5)
    y_true = (rng.random((5, 8, 8, 1)) > 0.8).astype(np.float32)
    y_true[:2] = 0.0
    y_prob = rng.random((5, 8, 8, 1)).astype(np.float32)
    metric = SoftDice()
    for i in range(0, 5, 2):
        metric.update_state(y_true[i : i + 2], y_prob[i : i + 2])
    assert soft_dice(y_true, y_prob, batch_size=2) == pytest.approx(_f(metric.result()), rel=1e-5)
    assert soft_dice(y_true, y_prob, batch_size=5) == pytest.approx(soft_dice(y_true, y_prob))
    with pytest.raises(ValueError, match="batch_size"):
        soft_dice(y_true, y_prob, batch_size=0)


def test_compile_fit_save_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(4, 32, 32, 1), dtype=np.uint8)
    masks = (rng.random((4, 32, 32, 1)) > 0.8).astype(np.float32)
    model = build_model(UNetSpec.tiny())
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3, clipvalue=0.5),
        loss=get_loss("bce_dice"),
        metrics=[HardDice(), HardIoU(), SoftDice()],
    )
    history = model.fit(images, masks, batch_size=2, epochs=1, verbose=0)
    assert {"loss", "hard_dice", "hard_iou", "dice_coef"} <= set(history.history)
    assert all(np.isfinite(v[0]) for v in history.history.values())

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    evaluated = loaded.evaluate(images, masks, batch_size=4, verbose=0, return_dict=True)
    expected = hard_dice_per_image(masks, model.predict(images, verbose=0)).mean()
    assert evaluated["hard_dice"] == pytest.approx(expected, rel=1e-5)


def test_per_image_dice_loss_weighs_each_image_equally() -> None:
    """A perfect large structure and a missed small one: the batch dice hides the miss, per-image does not."""
    truth = np.zeros((2, 16, 16, 1), np.float32)
    truth[0, :12, :12] = 1.0  # 144 px, predicted exactly
    truth[1, :2, :2] = 1.0  # 4 px, missed
    pred = truth.copy()
    pred[1] = 0.0
    bce = float(bce_loss(truth, pred))
    batch = float(bce_dice_loss(truth, pred))
    image = float(bce_dice_image_loss(truth, pred))
    # batch dice (2*144 + 1) / (148 + 144 + 1) = 0.9863; per image (1.0 + 1/5) / 2 = 0.6
    assert batch == pytest.approx(0.5 * bce + 0.5 * (1 - 289 / 293), abs=1e-5)
    assert image == pytest.approx(0.5 * bce + 0.5 * (1 - 0.6), abs=1e-5)


def test_predicted_foreground_is_the_fraction_of_pixels_over_the_threshold() -> None:
    metric = PredictedForeground()
    pred = np.zeros((2, 4, 4, 1), np.float32)
    pred[0, 0, :3] = 0.9  # 3 of 32 pixels over 0.5
    pred[1, 0, 0] = 0.4  # under the threshold
    metric.update_state(np.zeros_like(pred), pred)
    assert float(metric.result()) == pytest.approx(3 / 32)
