"""MultiResUNet (the reference tool's TensorflowMultiResUNet, after Ibtehaz & Rahman 2020): its rules and cost.

Each level is a MultiRes block: three chained 3×3 convolutions (receptive fields 3×3, 5×5 and 7×7, a factorised
Inception) of ``int(W·0.167)``, ``int(W·0.333)`` and ``int(W·0.5)`` filters, ``W = alpha · F_i``, concatenated and
added to a 1×1 shortcut. Each encoder level's skip goes through a residual path of ``num_layers - i`` (3×3 + 1×1
shortcut) units of ``F_i`` filters, as the reference does (the paper uses ``num_layers - 1 - i``).
"""

from __future__ import annotations

from models.cost import CostCounter, ModelCost
from models.families.base import Family
from models.spec import MIN_BOTTLENECK_SIZE, UNetSpec

# The MultiRes block's three branch shares of W (the reference's and the paper's).
BRANCH_SHARES: tuple[float, float, float] = (0.167, 0.333, 0.5)


def branch_widths(filters: int, alpha: float) -> tuple[int, int, int]:
    """Filters of the MultiRes block's 3×3, 5×5 and 7×7 (chained 3×3) convolutions for ``filters`` = ``F_i``,
    computed as the reference does (``int(W * share)``, ``W = filters * alpha``)."""
    width = filters * alpha
    first, second, third = (int(width * share) for share in BRANCH_SHARES)
    return first, second, third


def res_path_length(spec: UNetSpec, level: int) -> int:
    """Residual units on the skip of encoder ``level``: ``num_layers - level`` (the reference's count)."""
    return spec.num_layers - level


def validate(spec: UNetSpec) -> None:
    alpha = spec.option("alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0:
        raise ValueError(f"Expected `alpha` (multires_unet's width multiplier) > 0. Received: alpha={alpha!r}")
    if min(branch_widths(spec.base_filters, alpha)) < 1:
        raise ValueError(
            "Expected `base_filters * alpha * 0.167` >= 1 (the MultiRes block's narrowest convolution needs a "
            f"filter). Received: base_filters={spec.base_filters} with alpha={alpha}"
        )
    if spec.num_layers < 2:
        raise ValueError(
            f"Expected `num_layers` >= 2 (an encoder level and the bridge). Received: num_layers={spec.num_layers}"
        )
    factor = 2 ** (spec.num_layers - 1)
    if spec.image_size % factor != 0:
        raise ValueError(
            f"Expected `image_size` divisible by 2**(num_layers-1) = {factor}. "
            f"Received: image_size={spec.image_size} with num_layers={spec.num_layers}"
        )
    if spec.bottleneck_size < MIN_BOTTLENECK_SIZE:
        raise ValueError(
            f"Expected a bridge of at least {MIN_BOTTLENECK_SIZE}×{MIN_BOTTLENECK_SIZE} pixels "
            "(image_size / 2**(num_layers-1)); use fewer layers or a larger image. "
            f"Received: num_layers={spec.num_layers} with image_size={spec.image_size} "
            f"(bridge {spec.bottleneck_size})"
        )


def _conv_unit(counter: CostCounter, spec: UNetSpec, pixels: int, c_in: int, c_out: int, kernel: int,
               *, act: bool) -> None:
    """Conv (bias only without batch norm) → [BN] → [activation], as ``models.multires_unet._conv_unit``."""
    counter.conv(pixels, c_in, c_out, kernel, bias=not spec.batch_norm)
    if spec.batch_norm:
        counter.batch_norm(pixels, c_out)
    if act:
        counter.output(pixels, c_out)


def _multires_block(counter: CostCounter, spec: UNetSpec, pixels: int, c_in: int, filters: int) -> int:
    widths = branch_widths(filters, spec.option("alpha"))
    total = sum(widths)
    previous = c_in
    for width in widths:
        _conv_unit(counter, spec, pixels, previous, width, 3, act=True)
        previous = width
    counter.output(pixels, total)  # concat
    if spec.batch_norm:
        counter.batch_norm(pixels, total)
    _conv_unit(counter, spec, pixels, c_in, total, 1, act=False)  # shortcut
    counter.output(pixels, 2 * total)  # add, activation
    if spec.batch_norm:
        counter.batch_norm(pixels, total)
    return total


def _res_path(counter: CostCounter, spec: UNetSpec, pixels: int, c_in: int, filters: int, length: int) -> None:
    for _ in range(length):
        _conv_unit(counter, spec, pixels, c_in, filters, 3, act=False)
        _conv_unit(counter, spec, pixels, c_in, filters, 1, act=False)
        counter.output(pixels, 2 * filters)  # add, activation
        if spec.batch_norm:
            counter.batch_norm(pixels, filters)
        c_in = filters


def cost(spec: UNetSpec) -> ModelCost:
    """The cost of ``models.multires_unet.build_multires_unet(spec)``, layer by layer: params and conv MACs exact
    (tests compare them with Keras), activation values = the sum of every layer's output."""
    counter = CostCounter()
    filters = spec.filters_schedule()
    size = spec.image_size
    c_in = spec.channels
    for flag in (spec.rescale_input, spec.standardize_input):
        if flag:
            counter.output(size * size, c_in)
    sizes: list[int] = []
    for i in range(spec.num_layers):
        sizes.append(size)
        width = _multires_block(counter, spec, size * size, c_in, filters[i])
        if i < spec.num_layers - 1:
            _res_path(counter, spec, size * size, width, filters[i], res_path_length(spec, i))
            size //= 2
            counter.output(size * size, width)  # pool
        c_in = width
    for f in range(spec.num_layers - 2, -1, -1):
        pixels = sizes[f] ** 2
        # Transposed 2×2 stride-2 conv: each output pixel gets one kernel tap per input channel.
        counter.params += 4 * c_in * filters[f] + filters[f]
        counter.macs += pixels * c_in * filters[f]
        counter.output(pixels, 3 * filters[f])  # up, concat with the skip
        c_in = _multires_block(counter, spec, pixels, 2 * filters[f], filters[f])
    counter.conv(spec.image_size**2, c_in, spec.num_classes, 1)  # head
    return counter.cost()


FAMILY = Family(
    name="multires_unet",
    title="MultiResUNet",
    reference_model="TensorflowMultiResUNet",
    uses=("base_filters", "num_layers"),
    options={"alpha": 1.67},
    validate=validate,
    cost=cost,
    time_per_mac=1.7,  # B14: step time ÷ MACs, relative to the UNet's, at matched parameters
    # projects/TensorflowMultiResUNet/*/train_eval_infer.config (Brain-Tumor, Cervical-Cancer): 256×256×3, one
    # sigmoid class, base_filters 16, num_layers 7; its blocks always batch-normalise.
    reference={"image_size": 256, "channels": 3, "num_classes": 1, "base_filters": 16, "num_layers": 7,
               "batch_norm": True, "options": {"alpha": 1.67}},
)
