"""Model variants by name: the only place a spec's ``variant`` is turned into a builder."""

from __future__ import annotations

from collections.abc import Callable

import keras

from models.attention_unet import build_attention_unet
from models.deeplabv3plus import build_deeplabv3plus
from models.efficient_unet import build_efficient_unet
from models.multires_unet import build_multires_unet
from models.spec import VARIANT_NAMES, UNetSpec
from models.swin_unet import build_swin_unet
from models.unet import build_unet
from models.unet3plus import build_unet3plus

__all__ = ["VARIANTS", "build_model"]

VARIANTS: dict[str, Callable[[UNetSpec], keras.Model]] = {
    "unet": build_unet,
    "attention_unet": build_attention_unet,
    "unet3plus": build_unet3plus,
    "multires_unet": build_multires_unet,
    "swin_unet": build_swin_unet,
    "efficient_unet": build_efficient_unet,
    "deeplabv3plus": build_deeplabv3plus,
}
if tuple(VARIANTS) != VARIANT_NAMES:  # pragma: no cover - a programming error caught at import
    raise ImportError(f"models.registry builds {tuple(VARIANTS)} but models.spec.VARIANT_NAMES is {VARIANT_NAMES}")


def build_model(spec: UNetSpec) -> keras.Model:
    """Build the model for ``spec`` with the builder registered under ``spec.variant``.

    Raises:
        ValueError: if the variant is unknown (the message lists valid names) or the spec is invalid.
    """
    try:
        builder = VARIANTS[spec.variant]
    except KeyError:
        raise ValueError(
            f"Expected `variant` to be one of {list(VARIANTS)}. Received: variant={spec.variant!r}"
        ) from None
    return builder(spec)
