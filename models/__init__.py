"""models: UNet specs, builders, analytic cost, losses and metrics (pure Keras, no I/O, no tuner).

The spec and the cost model import without Keras, so a process that only plans trials (the search
driver) never loads TensorFlow: the Keras-dependent names below load on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from models.cost import ModelCost, estimate_cost, estimate_training_memory_bytes, train_work
from models.spec import ACTIVATIONS, LOSS_NAMES, UNetSpec

if TYPE_CHECKING:
    from models.losses import (
        LOSSES,
        bce_dice_image_loss,
        bce_dice_loss,
        bce_iou_loss,
        bce_loss,
        dice_coef,
        dice_loss,
        get_loss,
        iou_coef,
    )
    from models.metrics import (
        ForegroundHardDice,
        HardDice,
        HardIoU,
        PredictedForeground,
        SoftDice,
        hard_dice_per_class,
        hard_dice_per_image,
        image_means,
        iou_per_class,
        iou_per_image,
        is_multiclass,
        predicted_labels,
        soft_dice,
    )
    from models.registry import VARIANTS, build_model
    from models.unet import build_unet

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "LOSS_NAMES",
    "VARIANTS",
    "ForegroundHardDice",
    "HardDice",
    "HardIoU",
    "ModelCost",
    "PredictedForeground",
    "SoftDice",
    "UNetSpec",
    "bce_dice_image_loss",
    "bce_dice_loss",
    "bce_iou_loss",
    "bce_loss",
    "build_model",
    "build_unet",
    "dice_coef",
    "dice_loss",
    "estimate_cost",
    "estimate_training_memory_bytes",
    "get_loss",
    "hard_dice_per_class",
    "hard_dice_per_image",
    "image_means",
    "iou_coef",
    "iou_per_class",
    "iou_per_image",
    "is_multiclass",
    "predicted_labels",
    "soft_dice",
    "train_work",
]

_LAZY = {
    **dict.fromkeys(("LOSSES", "bce_dice_image_loss", "bce_dice_loss", "bce_iou_loss", "bce_loss", "dice_coef",
                     "dice_loss", "get_loss", "iou_coef"), "models.losses"),
    **dict.fromkeys(("ForegroundHardDice", "HardDice", "HardIoU", "PredictedForeground", "SoftDice", "hard_dice_per_image",
                     "hard_dice_per_class", "image_means", "iou_per_class", "is_multiclass", "predicted_labels",
                     "iou_per_image", "soft_dice"), "models.metrics"),
    "VARIANTS": "models.registry",
    "build_model": "models.registry",
    "build_unet": "models.unet",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value
