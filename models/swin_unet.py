"""PLACEHOLDER (being written): the swin_unet builder."""

from __future__ import annotations

import keras

from models.spec import UNetSpec
from models.unet import build_unet


def build_swin_unet(spec: UNetSpec) -> keras.Model:
    return build_unet(spec)
