"""models: UNet specs, builders, analytic cost, losses and metrics (pure Keras, no I/O, no tuner)."""

from __future__ import annotations

from models.cost import ModelCost, estimate_cost, estimate_training_memory_bytes
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
    HardDice,
    HardIoU,
    PredictedForeground,
    SoftDice,
    hard_dice_per_image,
    iou_per_image,
    soft_dice,
)
from models.registry import VARIANTS, build_model
from models.spec import UNetSpec
from models.unet import build_unet

__all__ = [
    "LOSSES",
    "VARIANTS",
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
    "hard_dice_per_image",
    "iou_coef",
    "iou_per_image",
    "soft_dice",
]
