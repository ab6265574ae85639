"""PLACEHOLDER (being written): swin_unet's rules and cost."""

from __future__ import annotations

from models.cost import unet_cost
from models.families.base import Family
from models.spec import UNetSpec


def validate(spec: UNetSpec) -> None:
    spec.validate_unet_geometry()


FAMILY = Family(name="swin_unet", title="swin_unet", reference_model=None, uses=("base_filters", "num_layers"), options={},
                validate=validate, cost=unet_cost)
