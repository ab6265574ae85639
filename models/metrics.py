"""Segmentation metrics: Keras metrics for ``compile``/``fit`` and NumPy functions for evaluation (DESIGN §8).

Hard metrics binarise the truth at 0.5 and the prediction at ``threshold`` (``prob > threshold``), score each
image separately (an image with an empty mask and an empty prediction scores 1.0) and average over images.

Several classes (a softmax head of K > 1 channels; the truth holds class indices): a pixel's predicted class is
the argmax. The rule for a class that is absent (nnU-Net's): a foreground class with an empty truth **and** an
empty prediction on an image is not scored on that image (NaN in the per-class table); a class predicted where
the truth has none scores 0. An image's score is the mean over its scored foreground classes (1.0 when none is,
as for an empty binary mask predicted empty); a class's score over a split is the mean over the images that
score it. With one foreground class this is exactly the binary rule.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from models.losses import as_float_pair, dice_coef, foreground, num_channels

__all__ = [
    "ForegroundHardDice",
    "HardDice",
    "HardIoU",
    "PredictedForeground",
    "SoftDice",
    "hard_dice_per_class",
    "hard_dice_per_image",
    "image_means",
    "iou_per_class",
    "iou_per_image",
    "is_multiclass",
    "predicted_labels",
    "soft_dice",
]

_PACKAGE = "unet_search"


def hard_masks(y_true: Any, y_pred: Any, threshold: float) -> tuple[Any, Any]:
    """The hard truth and prediction masks a metric compares: thresholded (one sigmoid channel), or the one-hot
    truth and the one-hot argmax, foreground channels only (several classes)."""
    if num_channels(y_pred) > 1:
        pred = ops.one_hot(ops.argmax(y_pred, axis=-1), num_channels(y_pred), dtype="float32")
        return foreground(y_true), foreground(pred)
    return ops.cast(ops.greater(y_true, 0.5), "float32"), ops.cast(ops.greater(y_pred, threshold), "float32")


class _PerImageHardScore(keras.metrics.Metric):
    """Mean over images of a per-image score of thresholded masks; state is a (weighted) sum and count.

    ``foreground_only``: images whose truth is empty are left out of the mean (not scored 1.0).
    """

    foreground_only = False

    def __init__(self, threshold: float = 0.5, name: str = "hard_score", dtype: Any = None) -> None:
        super().__init__(name=name, dtype=dtype)
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"Expected `threshold` in [0, 1]. Received: threshold={threshold!r}")
        self.threshold = float(threshold)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="count")

    def _score(self, intersection: Any, sum_true: Any, sum_pred: Any) -> Any:
        raise NotImplementedError

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Add the per-image scores of one batch; ``sample_weight`` (per image or per pixel) weights images."""
        y_true, y_pred = as_float_pair(y_true, y_pred)
        truth, pred = hard_masks(y_true, y_pred, self.threshold)
        if num_channels(y_pred) > 1:  # per image and foreground class, then the mean over the scored classes
            class_axes = tuple(range(1, len(pred.shape) - 1))
            n_true, n_pred = ops.sum(truth, axis=class_axes), ops.sum(pred, axis=class_axes)
            scored = ops.cast(n_true + n_pred > 0, "float32")
            per_class = self._score(ops.sum(truth * pred, axis=class_axes), n_true, n_pred)
            count = ops.sum(scored, axis=-1)
            scores = ops.where(count > 0, ops.sum(per_class * scored, axis=-1) / ops.maximum(count, 1.0), 1.0)
        else:
            axes = tuple(range(1, len(pred.shape)))
            scores = self._score(
                ops.sum(truth * pred, axis=axes), ops.sum(truth, axis=axes), ops.sum(pred, axis=axes)
            )
        axes = tuple(range(1, len(pred.shape)))
        if sample_weight is None:
            weights = ops.ones_like(scores)
        else:
            weights = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
            if len(weights.shape) > 1:
                weights = ops.mean(weights, axis=tuple(range(1, len(weights.shape))))
            weights = ops.broadcast_to(weights, ops.shape(scores))
        if self.foreground_only:
            weights = weights * ops.cast(ops.sum(truth, axis=axes) > 0, "float32")
        self.total.assign_add(ops.sum(scores * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self) -> Any:
        return ops.divide_no_nan(self.total, self.count)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "threshold": self.threshold}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HardDice(_PerImageHardScore):
    """Per-image hard dice ``2·|T∩P| / (|T| + |P|)`` at ``threshold``, averaged over all images seen."""

    def __init__(self, threshold: float = 0.5, name: str = "hard_dice", dtype: Any = None) -> None:
        super().__init__(threshold=threshold, name=name, dtype=dtype)

    def _score(self, intersection: Any, sum_true: Any, sum_pred: Any) -> Any:
        denom = sum_true + sum_pred
        return ops.where(denom > 0, 2.0 * intersection / ops.maximum(denom, 1.0), 1.0)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ForegroundHardDice(HardDice):
    """Per-image hard dice averaged over the images whose truth has foreground (0.0 before one is seen).

    The per-image mean gives an image with an empty mask 1.0 when nothing is predicted, so a model
    that predicts nothing scores the share of empty images; this one scores 0 then. The training
    rules ask it whether the model has found any foreground yet (search/training.py).
    """

    foreground_only = True

    def __init__(self, threshold: float = 0.5, name: str = "fg_dice", dtype: Any = None) -> None:
        super().__init__(threshold=threshold, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HardIoU(_PerImageHardScore):
    """Per-image hard IoU ``|T∩P| / |T∪P|`` at ``threshold``, averaged over all images seen."""

    def __init__(self, threshold: float = 0.5, name: str = "hard_iou", dtype: Any = None) -> None:
        super().__init__(threshold=threshold, name=name, dtype=dtype)

    def _score(self, intersection: Any, sum_true: Any, sum_pred: Any) -> Any:
        union = sum_true + sum_pred - intersection
        return ops.where(union > 0, intersection / ops.maximum(union, 1.0), 1.0)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SoftDice(keras.metrics.Mean):
    """Reference soft dice (``dice_coef``, pooled over each batch), averaged over batches."""

    def __init__(self, smooth: float = 1.0, name: str = "dice_coef", dtype: Any = None) -> None:
        super().__init__(name=name, dtype=dtype)
        self.smooth = float(smooth)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Add one batch's soft dice (``sample_weight`` is ignored: the reference metric is unweighted)."""
        super().update_state(dice_coef(y_true, y_pred, smooth=self.smooth))

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PredictedForeground(keras.metrics.Mean):
    """Fraction of pixels predicted foreground (``prob > threshold``), averaged over batches.

    0.0 on the validation split means the model predicts background everywhere: the collapse that a
    dice objective cannot tell apart from a slow start (search/training.py detects it with this).
    """

    def __init__(self, threshold: float = 0.5, name: str = "pred_fg", dtype: Any = None) -> None:
        super().__init__(name=name, dtype=dtype)
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"Expected `threshold` in [0, 1]. Received: threshold={threshold!r}")
        self.threshold = float(threshold)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Add one batch's predicted-foreground fraction (``sample_weight`` is ignored)."""
        y_true, y_pred = as_float_pair(y_true, y_pred)
        _, pred = hard_masks(y_true, y_pred, self.threshold)
        super().update_state(ops.mean(ops.cast(ops.sum(pred, axis=-1) > 0, "float32")))

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "threshold": self.threshold}


def _flatten_pair(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return ``y_true`` and ``y_prob`` as float64 arrays ``[N, H·W·C]`` after checking their shapes (one channel)."""
    truth = np.asarray(y_true)
    prob = np.asarray(y_prob)
    for name, array in (("y_true", truth), ("y_prob", prob)):
        if array.ndim not in (3, 4):
            raise ValueError(
                f"Expected `{name}` shaped [N, H, W] or [N, H, W, C]. Received: {name}.shape={array.shape}"
            )
    if truth.ndim == 4 and prob.ndim == 3 and truth.shape[-1] == 1:
        truth = truth[..., 0]
    elif prob.ndim == 4 and truth.ndim == 3 and prob.shape[-1] == 1:
        prob = prob[..., 0]
    if truth.shape != prob.shape:
        raise ValueError(
            "Expected `y_true` and `y_prob` to have the same shape (a trailing channel of 1 may be omitted). "
            f"Received: y_true.shape={np.shape(y_true)}, y_prob.shape={np.shape(y_prob)}"
        )
    n = truth.shape[0]
    return truth.reshape(n, -1).astype(np.float64), prob.reshape(n, -1).astype(np.float64)


def is_multiclass(y_prob: Any) -> bool:
    """Whether ``y_prob`` ([N, H, W, K]) is a softmax output of K > 1 classes."""
    prob = np.asarray(y_prob)
    return prob.ndim == 4 and prob.shape[-1] > 1


def predicted_labels(y_prob: Any, *, threshold: float = 0.5) -> np.ndarray:
    """uint8 class indices [N, H, W]: the argmax of K > 1 channels, or ``prob > threshold`` of one channel."""
    prob = np.asarray(y_prob)
    if is_multiclass(prob):
        return np.argmax(prob, axis=-1).astype(np.uint8)
    if prob.ndim == 4:
        prob = prob[..., 0]
    return (prob > threshold).astype(np.uint8)


def _class_counts(y_true: Any, y_prob: Any, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image and foreground class: |T∩P|, |T|, |P| as [N, C] (C = 1 for one sigmoid channel)."""
    if not is_multiclass(y_prob):
        truth, prob = _flatten_pair(y_true, y_prob)
        t = truth > 0.5
        p = prob > threshold
        return (t & p).sum(axis=1)[:, None], t.sum(axis=1)[:, None], p.sum(axis=1)[:, None]
    prob = np.asarray(y_prob)
    truth = np.asarray(y_true)
    if truth.ndim == 4 and truth.shape[-1] == 1:
        truth = truth[..., 0]
    if truth.shape != prob.shape[:-1]:
        raise ValueError(f"Expected `y_true` class indices shaped {list(prob.shape[:-1])} for K={prob.shape[-1]} "
                         f"classes. Received: y_true.shape={np.shape(y_true)}, y_prob.shape={prob.shape}")
    n, k = len(prob), prob.shape[-1]
    t = truth.reshape(n, -1).astype(np.int64)
    p = predicted_labels(prob).reshape(n, -1).astype(np.int64)
    classes = np.arange(1, k)[None, :, None]
    t_hot, p_hot = t[:, None, :] == classes, p[:, None, :] == classes
    return (t_hot & p_hot).sum(axis=2), t_hot.sum(axis=2), p_hot.sum(axis=2)


def hard_dice_per_class(y_true: Any, y_prob: Any, *, threshold: float = 0.5) -> np.ndarray:
    """Hard dice of each image and foreground class (``[N, C]`` float64); NaN where both truth and prediction are
    empty (the class is not scored on that image; module docstring)."""
    inter, n_true, n_pred = _class_counts(y_true, y_prob, threshold)
    denom = n_true + n_pred
    return np.where(denom > 0, 2.0 * inter / np.maximum(denom, 1), np.nan)


def iou_per_class(y_true: Any, y_prob: Any, *, threshold: float = 0.5) -> np.ndarray:
    """Hard IoU of each image and foreground class (``[N, C]``); NaN where both are empty."""
    inter, n_true, n_pred = _class_counts(y_true, y_prob, threshold)
    union = n_true + n_pred - inter
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def image_means(per_class: np.ndarray) -> np.ndarray:
    """Each image's mean over its scored classes ([N]); 1.0 for an image where no class is scored."""
    per_class = np.asarray(per_class, dtype=np.float64)
    scored = ~np.isnan(per_class)
    total = np.where(scored, per_class, 0.0).sum(axis=1)
    count = scored.sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), 1.0)


def hard_dice_per_image(y_true: Any, y_prob: Any, *, threshold: float = 0.5) -> np.ndarray:
    """Hard dice of each image (``[N]`` float64); empty truth with empty prediction scores 1.0 (several classes:
    the mean over the image's scored foreground classes)."""
    return image_means(hard_dice_per_class(y_true, y_prob, threshold=threshold))


def iou_per_image(y_true: Any, y_prob: Any, *, threshold: float = 0.5) -> np.ndarray:
    """Hard IoU of each image (``[N]`` float64); empty truth with empty prediction scores 1.0."""
    return image_means(iou_per_class(y_true, y_prob, threshold=threshold))


def soft_dice(y_true: Any, y_prob: Any, smooth: float = 1.0, *, batch_size: int | None = None) -> float:
    """Reference soft dice ``(2·Σ t·p + s) / (Σ t + Σ p + s)``, pooled over all images (several classes: per
    foreground class, then the mean over those classes, as ``dice_coef``).

    With ``batch_size``: pooled over each run of ``batch_size`` consecutive images, then averaged
    over those batches, which is what :class:`SoftDice` (``dice_coef``) logs during training.
    """
    if is_multiclass(y_prob):
        truth, prob = _foreground_one_hot(y_true, y_prob)
    else:
        truth, prob = _flatten_pair(y_true, y_prob)
    if batch_size is None:
        return _pooled_soft_dice(truth, prob, smooth)
    if batch_size < 1:
        raise ValueError(f"Expected `batch_size` >= 1 or None. Received: batch_size={batch_size!r}")
    return float(np.mean([_pooled_soft_dice(truth[i : i + batch_size], prob[i : i + batch_size], smooth)
                          for i in range(0, len(truth), batch_size)]))


def _pooled_soft_dice(truth: np.ndarray, prob: np.ndarray, smooth: float) -> float:
    if truth.ndim == 3:  # [N, pixels, C] foreground classes: per class, then the mean (models/losses.py)
        per_class = (2.0 * np.sum(truth * prob, axis=(0, 1)) + smooth) / (
            truth.sum(axis=(0, 1)) + prob.sum(axis=(0, 1)) + smooth)
        return float(np.mean(per_class))
    return float((2.0 * np.sum(truth * prob) + smooth) / (truth.sum() + prob.sum() + smooth))


def _foreground_one_hot(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Class indices and K-class probabilities → one-hot truth and probabilities of classes 1..K-1, [N, pixels, C]."""
    prob = np.asarray(y_prob, dtype=np.float64)
    truth = np.asarray(y_true)
    if truth.ndim == 4:
        truth = truth[..., 0]
    n, k = len(prob), prob.shape[-1]
    hot = (truth.reshape(n, -1, 1).astype(np.int64) == np.arange(1, k)[None, None, :]).astype(np.float64)
    return hot, prob.reshape(n, -1, k)[..., 1:]
