"""Segmentation metrics: Keras metrics for ``compile``/``fit`` and NumPy functions for evaluation (DESIGN §8).

Hard metrics binarise the truth at 0.5 and the prediction at ``threshold`` (``prob > threshold``), score each
image separately (an image with an empty mask and an empty prediction scores 1.0) and average over images.
With several classes an image's channels are pooled into one score.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from models.losses import as_float_pair, dice_coef

__all__ = [
    "ForegroundHardDice",
    "HardDice",
    "HardIoU",
    "PredictedForeground",
    "SoftDice",
    "hard_dice_per_image",
    "iou_per_image",
    "soft_dice",
]

_PACKAGE = "unet_search"


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
        truth = ops.cast(ops.greater(y_true, 0.5), "float32")
        pred = ops.cast(ops.greater(y_pred, self.threshold), "float32")
        axes = tuple(range(1, len(pred.shape)))
        scores = self._score(
            ops.sum(truth * pred, axis=axes), ops.sum(truth, axis=axes), ops.sum(pred, axis=axes)
        )
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
        _, y_pred = as_float_pair(y_true, y_pred)
        super().update_state(ops.mean(ops.cast(ops.greater(y_pred, self.threshold), "float32")))

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "threshold": self.threshold}


def _flatten_pair(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return ``y_true`` and ``y_prob`` as float64 arrays ``[N, H·W·C]`` after checking their shapes."""
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


def _hard_counts(y_true: Any, y_prob: Any, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    truth, prob = _flatten_pair(y_true, y_prob)
    t = truth > 0.5
    p = prob > threshold
    return (t & p).sum(axis=1), t.sum(axis=1), p.sum(axis=1)


def hard_dice_per_image(y_true: Any, y_prob: Any, *, threshold: float = 0.5) -> np.ndarray:
    """Hard dice of each image (``[N]`` float64); empty truth with empty prediction scores 1.0."""
    inter, n_true, n_pred = _hard_counts(y_true, y_prob, threshold)
    denom = n_true + n_pred
    return np.where(denom > 0, 2.0 * inter / np.maximum(denom, 1), 1.0)


def iou_per_image(y_true: Any, y_prob: Any, *, threshold: float = 0.5) -> np.ndarray:
    """Hard IoU of each image (``[N]`` float64); empty truth with empty prediction scores 1.0."""
    inter, n_true, n_pred = _hard_counts(y_true, y_prob, threshold)
    union = n_true + n_pred - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def soft_dice(y_true: Any, y_prob: Any, smooth: float = 1.0, *, batch_size: int | None = None) -> float:
    """Reference soft dice ``(2·Σ t·p + s) / (Σ t + Σ p + s)``, pooled over all images.

    With ``batch_size``: pooled over each run of ``batch_size`` consecutive images, then averaged
    over those batches, which is what :class:`SoftDice` (``dice_coef``) logs during training.
    """
    truth, prob = _flatten_pair(y_true, y_prob)
    if batch_size is None:
        return _pooled_soft_dice(truth, prob, smooth)
    if batch_size < 1:
        raise ValueError(f"Expected `batch_size` >= 1 or None. Received: batch_size={batch_size!r}")
    return float(np.mean([_pooled_soft_dice(truth[i : i + batch_size], prob[i : i + batch_size], smooth)
                          for i in range(0, len(truth), batch_size)]))


def _pooled_soft_dice(truth: np.ndarray, prob: np.ndarray, smooth: float) -> float:
    return float((2.0 * np.sum(truth * prob) + smooth) / (truth.sum() + prob.sum() + smooth))
