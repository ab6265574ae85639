"""Analytic cost of a model spec (parameters, MACs, activation memory), computed without building it.

The search uses these numbers to reject infeasible trials before any TensorFlow graph exists and to plan
trials' times. Every family has its own cost function (the UNet's here, the others' beside their rules in
models/families/); :func:`estimate_cost` picks the spec's.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.spec import UNetSpec

__all__ = [
    "ACTIVATION_OVERHEAD",
    "BYTES_PER_VALUE",
    "CostCounter",
    "ModelCost",
    "estimate_cost",
    "estimate_training_memory_bytes",
    "train_work",
    "unet_cost",
]

BYTES_PER_VALUE = 4
"""float32."""

ACTIVATION_OVERHEAD = 2.0
"""Multiplier on stored activations for training: gradients w.r.t. activations, dropout masks and backend
workspace roughly double the forward activations kept for backprop."""

_WEIGHT_COPIES = 4
"""Weights, gradients and Adam's two moment slots."""


@dataclass(frozen=True)
class ModelCost:
    """Analytic cost of one model.

    Attributes:
        params: Total parameters, equal to ``keras.Model.count_params()`` (BN moving statistics included).
        forward_macs_per_image: Multiply-accumulates of all convolutions and transposed convolutions for one
            image (bias adds, activations, BN, pooling and dropout are not counted).
        activation_bytes_per_image: float32 bytes of every layer output for one image (the input excluded),
            an approximation of what the forward pass stores for backprop.
    """

    params: int
    forward_macs_per_image: int
    activation_bytes_per_image: int


class CostCounter:
    """Adds up a model's cost layer by layer, for the families' cost functions (``pixels`` = H × W of the
    layer's output; ``values`` = activation values stored per image)."""

    def __init__(self) -> None:
        self.params = 0
        self.macs = 0
        self.values = 0

    def conv(self, pixels: int, c_in: int, c_out: int, kernel: int, *, bias: bool = True) -> None:
        """A square ``kernel`` Conv2D (any stride or dilation) with ``pixels`` output pixels."""
        self.params += kernel * kernel * c_in * c_out + (c_out if bias else 0)
        self.macs += pixels * kernel * kernel * c_in * c_out
        self.values += pixels * c_out

    def depthwise(self, pixels: int, channels: int, kernel: int, *, bias: bool = True) -> None:
        self.params += kernel * kernel * channels + (channels if bias else 0)
        self.macs += pixels * kernel * kernel * channels
        self.values += pixels * channels

    def dense(self, tokens: int, c_in: int, c_out: int, *, bias: bool = True) -> None:
        """A Dense layer applied to each of ``tokens`` positions."""
        self.params += c_in * c_out + (c_out if bias else 0)
        self.macs += tokens * c_in * c_out
        self.values += tokens * c_out

    def batch_norm(self, pixels: int, channels: int) -> None:
        self.params += 4 * channels  # gamma, beta, moving mean, moving variance
        self.values += pixels * channels

    def output(self, pixels: int, channels: int) -> None:
        """A parameter-free layer's output (activation, pooling, concatenation, add, resize, dropout)."""
        self.values += pixels * channels

    def cost(self) -> ModelCost:
        return ModelCost(params=self.params, forward_macs_per_image=self.macs,
                         activation_bytes_per_image=self.values * BYTES_PER_VALUE)


def estimate_cost(spec: UNetSpec) -> ModelCost:
    """Compute the parameters, forward MACs and activation bytes of ``build_model(spec)`` analytically, with the
    cost function of the spec's family. Does not validate the spec (call ``spec.validate()`` first)."""
    from models.families import family  # the families import this module

    return family(spec.variant).cost(spec)


def train_work(spec: UNetSpec) -> float:
    """What a trial's training time is proportional to, across families: the forward MACs per image weighted by
    the family's time per MAC (``Family.time_per_mac``; 1 for the UNet)."""
    from models.families import family  # the families import this module

    return estimate_cost(spec).forward_macs_per_image * family(spec.variant).time_per_mac


def unet_cost(spec: UNetSpec) -> ModelCost:
    """The UNet's cost (``models.unet.build_unet``), mirrored layer by layer; a test checks every number against
    Keras."""
    filters = spec.filters_schedule()
    kernels = spec.kernel_schedule()
    params = 0
    macs = 0
    values = 0  # activation values per image

    def conv(pixels: int, c_in: int, c_out: int, kernel: int) -> None:
        nonlocal params, macs, values
        params += kernel * kernel * c_in * c_out + c_out
        macs += pixels * kernel * kernel * c_in * c_out
        values += pixels * c_out  # conv output
        if spec.batch_norm:
            params += 4 * c_out  # gamma, beta, moving mean, moving variance
            values += pixels * c_out

    def block(pixels: int, c_in: int, c_out: int, kernel: int) -> None:
        nonlocal values
        conv(pixels, c_in, c_out, kernel)
        values += pixels * c_out  # dropout output
        conv(pixels, c_out, c_out, kernel)

    size = spec.image_size
    c_in = spec.channels
    if spec.rescale_input:
        values += size * size * c_in
    if spec.standardize_input:
        values += size * size * c_in
    sizes: list[int] = []
    for i in range(spec.num_layers):
        sizes.append(size)
        block(size * size, c_in, filters[i], kernels[i])
        c_in = filters[i]
        if i < spec.num_layers - 1:
            size //= 2
            values += size * size * c_in  # pool output
    for f in range(spec.num_layers - 2, -1, -1):
        size = sizes[f]
        pixels = size * size
        # Transposed 2×2 stride-2 conv: every output pixel receives exactly one kernel tap per input channel.
        params += 4 * c_in * filters[f] + filters[f]
        macs += pixels * c_in * filters[f]
        values += pixels * filters[f] + pixels * 2 * filters[f]  # up + concat
        block(pixels, 2 * filters[f], filters[f], kernels[f])
        c_in = filters[f]
    pixels = spec.image_size * spec.image_size
    params += c_in * spec.num_classes + spec.num_classes
    macs += pixels * c_in * spec.num_classes
    values += pixels * spec.num_classes
    return ModelCost(
        params=params,
        forward_macs_per_image=macs,
        activation_bytes_per_image=values * BYTES_PER_VALUE,
    )


def estimate_training_memory_bytes(spec: UNetSpec, *, batch_size: int) -> int:
    """Estimate the peak memory of training ``spec`` with Adam at ``batch_size``.

    ``4 × params × 4 bytes`` (weights, gradients, two Adam slots) plus
    ``batch_size × activation_bytes_per_image × ACTIVATION_OVERHEAD``. A coarse upper-ish bound for
    feasibility checks, not an allocator model.

    Raises:
        ValueError: if ``batch_size`` is not a positive integer.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"Expected `batch_size` to be a positive integer. Received: batch_size={batch_size!r}"
        )
    cost = estimate_cost(spec)
    weights = _WEIGHT_COPIES * cost.params * BYTES_PER_VALUE
    activations = batch_size * cost.activation_bytes_per_image * ACTIVATION_OVERHEAD
    return int(weights + activations)
