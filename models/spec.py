"""The UNet model spec: a frozen, validated description of one architecture."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Activations accepted by name; all resolve through ``keras.activations.get``.
ACTIVATIONS: tuple[str, ...] = (
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "swish",
    "mish",
    "tanh",
    "sigmoid",
)

# The families (models/families/, pure rules and cost) and their builders (models/registry.py); both check that
# they hold exactly these. Named here so that validating a spec needs no Keras, and the imports go one way only.
VARIANT_NAMES: tuple[str, ...] = (
    "unet", "attention_unet", "unet3plus", "multires_unet", "swin_unet", "efficient_unet", "deeplabv3plus",
)

# The losses registered in models/losses.py (which checks that it registers exactly these), named here
# so that a config can be checked without Keras.
LOSS_NAMES: tuple[str, ...] = ("bce_dice", "bce_dice_image", "dice", "bce", "bce_iou")

# The smallest bottleneck (in pixels per side) the search accepts; see DESIGN §4.
MIN_BOTTLENECK_SIZE = 4

_POSITIVE_INT_FIELDS: tuple[str, ...] = (
    "image_size",
    "channels",
    "num_classes",
    "base_filters",
    "base_kernels",
    "num_layers",
    "dilation",
)


@dataclass(frozen=True)
class UNetSpec:
    """Hyperparameters of a TensorflowSlightlyFlexibleUNet-style model (DESIGN §7).

    Defaults reproduce the reference ALCAPA configuration (124,996,849 parameters). Building a spec never
    validates it, so invalid specs can still be reported; builders call :meth:`validate` first.

    Attributes:
        image_size: Side of the square input image in pixels.
        channels: Image channels (1 grey, 3 RGB, or any positive count).
        num_classes: Output channels of the head: 1 (sigmoid) for binary masks, else K classes, the background
            included (softmax).
        base_filters: Filters ``F0`` of level 0; level ``i`` has ``F0 * 2**i``.
        base_kernels: Square kernel ``k0`` of level 0; level ``i`` uses ``max(k0 - 2i, 3)``.
        num_layers: Encoder levels including the bottleneck (``L``).
        dilation: Dilation ``d0`` of level 0; level ``i`` uses ``max(d0 - i, 1)``.
        dropout_rate: Base rate ``r``; level ``i`` uses ``Dropout(r * i)``.
        batch_norm: BatchNormalization after each convolution.
        activation: Activation inside every convolution (except the sigmoid head).
        rescale_input: Rescale raw 0..255 pixels by 1/255 inside the model; False feeds raw pixels (reference).
        standardize_input: Give each image zero mean and unit variance inside the model (after any
            rescaling), so patients scanned or windowed at other intensities look alike to the network.
        variant: The model family, a name in ``models.VARIANTS`` (``unet`` is the reference tool's
            TensorflowSlightlyFlexibleUNet; models/families/ describes the others).
        options: The family's own hyperparameters (``models.families.FAMILIES[variant].options`` names them
            and gives their defaults); a family reads the shared fields above that it lists in ``uses``.
    """

    image_size: int = 512
    channels: int = 3
    num_classes: int = 1
    base_filters: int = 16
    base_kernels: int = 9
    num_layers: int = 8
    dilation: int = 3
    dropout_rate: float = 0.05
    batch_norm: bool = False
    activation: str = "relu"
    rescale_input: bool = True
    standardize_input: bool = False
    variant: str = "unet"
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def tiny(cls, **overrides: Any) -> UNetSpec:
        """Return a tiny spec for tests (32×32×1, 4 filters, kernel 3, 3 levels), with overrides."""
        values: dict[str, Any] = {
            "image_size": 32,
            "channels": 1,
            "base_filters": 4,
            "base_kernels": 3,
            "num_layers": 3,
            "dilation": 1,
            "dropout_rate": 0.0,
        }
        values.update(overrides)
        return cls.from_dict(values)

    @property
    def bottleneck_size(self) -> int:
        """Side of the bottleneck feature map: ``image_size / 2**(num_layers - 1)`` (floor)."""
        return self.image_size // 2 ** (self.num_layers - 1)

    def filters_schedule(self) -> tuple[int, ...]:
        """Filters of each level, ``F0 * 2**i`` for ``i = 0..L-1``."""
        return tuple(self.base_filters * 2**i for i in range(self.num_layers))

    def kernel_schedule(self) -> tuple[int, ...]:
        """Kernel side of each level, ``max(k0 - 2i, 3)`` (never larger than ``k0``, so ``k0 = 1`` stays 1)."""
        floor = min(self.base_kernels, 3)
        return tuple(max(self.base_kernels - 2 * i, floor) for i in range(self.num_layers))

    def dilation_schedule(self) -> tuple[int, ...]:
        """Dilation of each level, ``max(d0 - i, 1)``."""
        return tuple(max(self.dilation - i, 1) for i in range(self.num_layers))

    def dropout_schedule(self) -> tuple[float, ...]:
        """Dropout rate of each level, ``r * i``."""
        return tuple(self.dropout_rate * i for i in range(self.num_layers))

    def option(self, name: str) -> Any:
        """The family option ``name``: the spec's value, else the family's default (its reference setting)."""
        from models.families import family  # the families import this module

        defaults = family(self.variant).options
        if name not in defaults:
            raise KeyError(f"{self.variant} has no option {name!r}; its options are {sorted(defaults)}")
        return self.options.get(name, defaults[name])

    def validate(self) -> None:
        """Check that the spec describes a buildable model: the shared fields, then the family's own rules.

        Raises:
            ValueError: naming the first invalid field, the received value and what is expected.
        """
        self._validate_types()
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"Expected `activation` to be one of {list(ACTIVATIONS)}. Received: activation={self.activation!r}"
            )
        if self.variant not in VARIANT_NAMES:
            raise ValueError(
                f"Expected `variant` to be one of {list(VARIANT_NAMES)}. Received: variant={self.variant!r}"
            )
        from models.families import family  # the families import this module

        rules = family(self.variant)
        unknown = sorted(set(self.options) - set(rules.options))
        if unknown:
            raise ValueError(
                f"Expected options of {self.variant} among {sorted(rules.options)}. Received: {unknown}"
            )
        rules.validate(self)

    def validate_unet_geometry(self) -> None:
        """The UNet's depth rules (:meth:`validate_geometry`) and its dropout schedule (rate × level < 1)."""
        self.validate_geometry()
        self._validate_dropout()

    def _validate_types(self) -> None:
        for name in _POSITIVE_INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected `{name}` to be a positive integer. Received: {name}={value!r}")
        for name in ("batch_norm", "rescale_input", "standardize_input"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"Expected `{name}` to be a bool. Received: {name}={value!r}")

    def validate_geometry(self) -> None:
        """Odd kernels, at least two levels, an image side divisible by 2**(L-1) and a bottleneck of at least
        MIN_BOTTLENECK_SIZE pixels: the encoder-decoder families that halve the image L-1 times share these."""
        if self.base_kernels % 2 == 0:
            raise ValueError(
                "Expected `base_kernels` to be odd (1, 3, 5, …) so 'same' padding stays centred. "
                f"Received: base_kernels={self.base_kernels}"
            )
        if self.num_layers < 2:
            raise ValueError(
                "Expected `num_layers` >= 2 (at least one encoder level and the bottleneck). "
                f"Received: num_layers={self.num_layers}"
            )
        factor = 2 ** (self.num_layers - 1)
        if self.image_size % factor != 0:
            raise ValueError(
                f"Expected `image_size` divisible by 2**(num_layers-1) = {factor}. "
                f"Received: image_size={self.image_size} with num_layers={self.num_layers}"
            )
        if self.bottleneck_size < MIN_BOTTLENECK_SIZE:
            raise ValueError(
                f"Expected a bottleneck of at least {MIN_BOTTLENECK_SIZE}×{MIN_BOTTLENECK_SIZE} pixels "
                f"(image_size / 2**(num_layers-1)); use fewer layers or a larger image. "
                f"Received: num_layers={self.num_layers} with image_size={self.image_size} "
                f"(bottleneck {self.bottleneck_size})"
            )

    def _validate_dropout(self) -> None:
        rate = self.dropout_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate < 1.0:
            raise ValueError(f"Expected `dropout_rate` in [0, 1). Received: dropout_rate={rate!r}")
        if rate * (self.num_layers - 1) >= 1.0:
            raise ValueError(
                "Expected `dropout_rate * (num_layers - 1)` < 1 (the deepest level uses Dropout(rate * level)). "
                f"Received: dropout_rate={rate} with num_layers={self.num_layers}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict (JSON/YAML friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> UNetSpec:
        """Build a spec from a dict; missing fields take defaults. Does not validate.

        Raises:
            ValueError: if the dict has keys that are not spec fields.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"Expected only UNetSpec fields {sorted(known)}. Received unknown keys: {unknown}"
            )
        return cls(**values)
