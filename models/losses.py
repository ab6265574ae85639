"""Segmentation losses (DESIGN §8), written with ``keras.ops`` so they run on any backend.

All functions take ``y_true`` (masks in {0, 1}, any numeric dtype) and ``y_pred`` (sigmoid probabilities) of
shape ``[B, H, W, C]``; a ``[B, H, W]`` mask next to ``[B, H, W, 1]`` predictions is expanded. They return
scalars pooled over the whole batch, computed in float32.

Several classes (a softmax head of K > 1 channels, class 0 the background): ``y_true`` holds class indices
``[B, H, W, 1]`` (or ``[B, H, W]``) and is one-hot encoded to K channels. Then the cross-entropy is the categorical
one (over all K classes, logits recovered from the softmax as for the sigmoid), and the dice and IoU are taken per
foreground class (1..K-1) and averaged over those classes, so the background, which covers most pixels, does not
drown the structures (nnU-Net's "CE + dice over the foreground classes").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from models.spec import LOSS_NAMES

__all__ = [
    "LOSSES",
    "as_float_pair",
    "bce_dice_image_loss",
    "bce_dice_loss",
    "bce_iou_loss",
    "bce_loss",
    "dice_coef",
    "dice_loss",
    "get_loss",
    "iou_coef",
]

_PACKAGE = "unet_search"


def as_float_pair(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    """Cast both to float32 and give ``y_true`` the channel axis of ``y_pred`` if it lacks one.

    Shared by the losses and the metrics (models/metrics.py), so both see the same tensors.
    """
    y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    y_true = ops.cast(ops.convert_to_tensor(y_true), "float32")
    if len(y_true.shape) == len(y_pred.shape) - 1:
        y_true = ops.expand_dims(y_true, -1)
    k = num_channels(y_pred)
    if k > 1 and y_true.shape[-1] == 1:  # class indices → one-hot
        y_true = ops.one_hot(ops.cast(ops.squeeze(y_true, -1), "int32"), k, dtype="float32")
    return y_true, y_pred


def num_channels(y_pred: Any) -> int:
    """The output channels: 1 for a sigmoid head, K for a softmax head of K classes."""
    k = y_pred.shape[-1]
    return 1 if k is None else int(k)


def foreground(y: Any) -> Any:
    """Channels 1..K-1 of a K-class tensor (all of a one-channel one)."""
    return y[..., 1:] if num_channels(y) > 1 else y


def _per_class_ratio(intersection: Any, sum_true: Any, sum_pred: Any, smooth: float, *, iou: bool) -> Any:
    denominator = sum_true + sum_pred - intersection if iou else sum_true + sum_pred
    numerator = intersection if iou else 2.0 * intersection
    return (numerator + smooth) / (denominator + smooth)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def dice_coef(y_true: Any, y_pred: Any, smooth: float = 1.0) -> Any:
    """Reference soft dice pooled over the whole batch: ``(2·Σ t·p + s) / (Σ t + Σ p + s)``."""
    y_true, y_pred = as_float_pair(y_true, y_pred)
    if num_channels(y_pred) > 1:  # per foreground class, pooled over the batch, then the mean over classes
        t, p = foreground(y_true), foreground(y_pred)
        axes = tuple(range(len(p.shape) - 1))
        return ops.mean(_per_class_ratio(ops.sum(t * p, axis=axes), ops.sum(t, axis=axes), ops.sum(p, axis=axes),
                                         smooth, iou=False))
    intersection = ops.sum(y_true * y_pred)
    return (2.0 * intersection + smooth) / (ops.sum(y_true) + ops.sum(y_pred) + smooth)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def iou_coef(y_true: Any, y_pred: Any, smooth: float = 1.0) -> Any:
    """Soft IoU (Jaccard) pooled over the whole batch: ``(Σ t·p + s) / (Σ t + Σ p − Σ t·p + s)``.

    Smoothed like ``dice_coef`` (s = 1), unlike the reference tool's ``jacard_similarity`` (s = 0):
    unsmoothed, a batch without foreground (common with empty slices at batch 2) scores ``0 / Σ p``,
    a constant with no gradient, and ``0 / 0`` (NaN) once every prediction underflows to 0.
    """
    y_true, y_pred = as_float_pair(y_true, y_pred)
    if num_channels(y_pred) > 1:
        t, p = foreground(y_true), foreground(y_pred)
        axes = tuple(range(len(p.shape) - 1))
        return ops.mean(_per_class_ratio(ops.sum(t * p, axis=axes), ops.sum(t, axis=axes), ops.sum(p, axis=axes),
                                         smooth, iou=True))
    intersection = ops.sum(y_true * y_pred)
    union = ops.sum(y_true) + ops.sum(y_pred) - intersection
    return (intersection + smooth) / (union + smooth)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def bce_loss(y_true: Any, y_pred: Any) -> Any:
    """Mean pixel binary cross-entropy, computed as the reference's Keras ``binary_crossentropy`` is.

    ``ops.binary_crossentropy`` recovers the logits of a sigmoid output (on TensorFlow, inside
    ``fit``: the model's ``head``) and computes the loss from them, so a confidently wrong pixel keeps
    its gradient ``p − y``; clipping the probabilities instead gives it none. Probabilities without
    their logits (NumPy arrays, an ensemble's mean, eager tensors) are clipped to ``[ε, 1 − ε]``
    (``keras.config.epsilon()``). Both agree in value wherever p lies inside the clip.
    """
    y_true, y_pred = as_float_pair(y_true, y_pred)  # a float32 tensor passes as the same object
    if num_channels(y_pred) > 1:  # several classes: the categorical cross-entropy (logits of the softmax)
        return ops.mean(ops.categorical_crossentropy(y_true, y_pred))
    return ops.mean(ops.binary_crossentropy(y_true, y_pred))


@keras.saving.register_keras_serializable(package=_PACKAGE)
def dice_loss(y_true: Any, y_pred: Any) -> Any:
    """``1 − dice_coef``."""
    return 1.0 - dice_coef(y_true, y_pred)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def bce_dice_loss(y_true: Any, y_pred: Any) -> Any:
    """Reference loss: ``0.5 · bce + 0.5 · (1 − dice_coef)``."""
    return 0.5 * bce_loss(y_true, y_pred) + 0.5 * (1.0 - dice_coef(y_true, y_pred))


@keras.saving.register_keras_serializable(package=_PACKAGE)
def bce_iou_loss(y_true: Any, y_pred: Any) -> Any:
    """``0.5 · bce + 0.5 · (1 − iou_coef)``."""
    return 0.5 * bce_loss(y_true, y_pred) + 0.5 * (1.0 - iou_coef(y_true, y_pred))


@keras.saving.register_keras_serializable(package=_PACKAGE)
def dice_per_image(y_true: Any, y_pred: Any, smooth: float = 1.0) -> Any:
    """Soft dice of each image ``[B]``: ``(2·Σ t·p + s) / (Σ t + Σ p + s)`` over that image's pixels (several
    classes: per foreground class, then the mean over those classes)."""
    y_true, y_pred = as_float_pair(y_true, y_pred)
    if num_channels(y_pred) > 1:
        t, p = foreground(y_true), foreground(y_pred)
        axes = tuple(range(1, len(p.shape) - 1))
        return ops.mean(_per_class_ratio(ops.sum(t * p, axis=axes), ops.sum(t, axis=axes), ops.sum(p, axis=axes),
                                         smooth, iou=False), axis=-1)
    axes = tuple(range(1, len(y_pred.shape)))
    intersection = ops.sum(y_true * y_pred, axis=axes)
    return (2.0 * intersection + smooth) / (ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes) + smooth)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def bce_dice_image_loss(y_true: Any, y_pred: Any) -> Any:
    """``0.5 · bce + 0.5 · mean over images of (1 − per-image soft dice)``.

    The per-image dice weighs every image's structure equally, like the per-image hard dice the
    search scores; the reference's batch-pooled dice lets large structures dominate small ones.
    """
    return 0.5 * bce_loss(y_true, y_pred) + 0.5 * ops.mean(1.0 - dice_per_image(y_true, y_pred))


LOSSES: dict[str, Callable[[Any, Any], Any]] = {
    "bce_dice": bce_dice_loss,
    "bce_dice_image": bce_dice_image_loss,
    "dice": dice_loss,
    "bce": bce_loss,
    "bce_iou": bce_iou_loss,
}
if tuple(LOSSES) != LOSS_NAMES:  # pragma: no cover - a programming error caught at import
    raise ImportError(f"models.losses registers {tuple(LOSSES)} but models.spec.LOSS_NAMES is {LOSS_NAMES}")


def get_loss(name: str) -> Callable[[Any, Any], Any]:
    """Return the loss registered under ``name``.

    Raises:
        ValueError: if the name is unknown (the message lists valid names).
    """
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"Expected `loss` to be one of {sorted(LOSSES)}. Received: loss={name!r}") from None
