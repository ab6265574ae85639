"""The UNet (the reference tool's TensorflowSlightlyFlexibleUNet, DESIGN §7): its rules and cost."""

from __future__ import annotations

from models.cost import unet_cost
from models.families.base import Family
from models.spec import UNetSpec


def validate(spec: UNetSpec) -> None:
    spec.validate_unet_geometry()


FAMILY = Family(
    name="unet",
    title="UNet",
    reference_model="TensorflowUNet",
    uses=("base_filters", "base_kernels", "num_layers", "dilation", "dropout_rate"),
    options={},
    validate=validate,
    cost=unet_cost,
    reference={},  # UNetSpec()'s defaults are the reference configuration (124,996,849 parameters)
)
