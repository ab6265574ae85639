"""Model variants by name: the only place a spec's ``variant`` is turned into a builder."""

from __future__ import annotations

from collections.abc import Callable

import keras

from models.spec import VARIANT_NAMES, UNetSpec
from models.unet import build_unet

__all__ = ["VARIANTS", "build_model"]

VARIANTS: dict[str, Callable[[UNetSpec], keras.Model]] = {"unet": build_unet}
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
            f"Expected `variant` to be one of {sorted(VARIANTS)}. Received: variant={spec.variant!r}"
        ) from None
    return builder(spec)
