"""What a model family is (:class:`Family`); the families are listed in models/families/__init__.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.cost import ModelCost
from models.spec import UNetSpec

__all__ = ["SHARED_FIELDS", "Family"]

# The shared spec fields a search samples, which a family may read (``Family.uses``).
SHARED_FIELDS: tuple[str, ...] = ("base_filters", "base_kernels", "num_layers", "dilation", "dropout_rate")


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: The spec's ``variant``.
        title: A readable name ("Attention UNet").
        reference_model: The reference tool's model class for the INI's ``[model] model`` (None: it has none).
        uses: The :data:`SHARED_FIELDS` the builder reads; the others do not change the model, so a search does
            not sample them for this family.
        options: The family's own hyperparameters and their defaults; a search space names them
            ``<family>.<option>``.
        validate: Raises ValueError naming the field when a spec of this family cannot be built.
        cost: The analytic cost of a spec of this family.
        reference: Spec fields and options of the reference tool's default configuration of this family (the
            parameter count at it is asserted in tests).
        reference_keys: The reference INI's ``[model]`` keys that describe a spec's architecture, where the
            reference names or shapes them otherwise (None: the shared fields in ``uses`` and the options by name).
        time_per_mac: Train-step seconds per forward MAC relative to the UNet's: depthwise convolutions, attention,
            reshapes and many thin layers do fewer MACs per second than the UNet's wide convolutions, so MACs alone
            mispredict a trial's time. Measured side by side at matched parameters (BENCHMARKS.md B14, 2 CPU cores,
            128²); a study's own trials then calibrate the speed of all of them together.
    """

    name: str
    title: str
    reference_model: str | None
    uses: tuple[str, ...]
    options: dict[str, Any]
    validate: Callable[[UNetSpec], None]
    cost: Callable[[UNetSpec], ModelCost]
    reference: dict[str, Any] = field(default_factory=dict)
    reference_keys: Callable[[UNetSpec], list[tuple[str, Any]]] | None = None
    time_per_mac: float = 1.0
