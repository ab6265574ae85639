"""PLACEHOLDER (being written): the unet3plus builder."""

from __future__ import annotations

import keras

from models.spec import UNetSpec
from models.unet import build_unet


def build_unet3plus(spec: UNetSpec) -> keras.Model:
    return build_unet(spec)
