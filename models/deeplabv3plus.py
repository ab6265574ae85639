"""PLACEHOLDER (being written): the deeplabv3plus builder."""

from __future__ import annotations

import keras

from models.spec import UNetSpec
from models.unet import build_unet


def build_deeplabv3plus(spec: UNetSpec) -> keras.Model:
    return build_unet(spec)
