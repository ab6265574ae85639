"""The model families a search can choose between: each one's own hyperparameters, rules and cost (pure Python).

A :class:`Family` says which shared :class:`~models.spec.UNetSpec` fields the family reads (``uses``), its own
hyperparameters with their defaults (``options``: the reference tool's configuration), the rules a spec must meet
to be buildable (``validate``, feasibility) and its analytic cost (``cost``, which the memory rule and the time
plans use). The Keras builders are in models/<family>.py, registered in models/registry.py.
"""

from __future__ import annotations

from models.families import (
    attention_unet,
    deeplabv3plus,
    efficient_unet,
    multires_unet,
    swin_unet,
    unet,
    unet3plus,
)
from models.families.base import SHARED_FIELDS, Family
from models.spec import VARIANT_NAMES

__all__ = ["FAMILIES", "SHARED_FIELDS", "Family", "family"]

FAMILIES: dict[str, Family] = {
    m.FAMILY.name: m.FAMILY
    for m in (unet, attention_unet, unet3plus, multires_unet, swin_unet, efficient_unet, deeplabv3plus)
}
if tuple(FAMILIES) != VARIANT_NAMES:  # pragma: no cover - a programming error caught at import
    raise ImportError(f"models.families holds {tuple(FAMILIES)} but models.spec.VARIANT_NAMES is {VARIANT_NAMES}")


def family(name: str) -> Family:
    """The family called ``name``.

    Raises:
        ValueError: naming the known families.
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"Expected `variant` to be one of {list(FAMILIES)}. Received: variant={name!r}") from None
