"""DeepLabV3+ (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution"): its rules and cost.

The reference tool has no DeepLab model, so this family follows the paper, with a light convolutional encoder in
place of the pretrained Xception/ResNet backbone (nothing is downloaded): ``num_layers`` stages of two 3×3
convolutions of ``F_i = base_filters * 2**i`` filters, max-pooled between stages until the feature map reaches
``output_stride`` (8 or 16); the stages after that keep the resolution and dilate instead (rates 2, 4, …, as
DeepLab turns a backbone's last strides into atrous convolutions). ASPP on the encoder's output (a 1×1 branch,
one atrous 3×3 branch per rate of ``atrous_rates``, the image-pooling branch, concatenated and projected to
``aspp_filters``), then the decoder: the ASPP output upsampled bilinearly to stride 4 and concatenated with the
stride-4 encoder features projected to ``low_level_filters`` by a 1×1 convolution, two 3×3 convolutions,
bilinear upsampling ×4 and the shared head. ``separable`` makes the ASPP's and the decoder's 3×3 convolutions
depthwise-separable (depthwise → BN → act → pointwise → BN → act), as the paper.
"""

from __future__ import annotations

import math

from models.cost import CostCounter, ModelCost
from models.families.base import Family
from models.spec import UNetSpec

LOW_LEVEL_STRIDE = 4  # the decoder's low-level features (the paper's Conv2 of ResNet / Xception's stride 4)
OUTPUT_STRIDES = (8, 16)


def atrous_rates(spec: UNetSpec) -> tuple[int, ...]:
    """The ASPP's atrous rates: option ``atrous_rates`` as a comma-separated string ("6,12,18"), or an int ``r``
    for ``(r, 2r, 3r)``.

    Raises:
        ValueError: when the option is neither, or a rate is not a positive integer.
    """
    value = spec.option("atrous_rates")
    expected = 'Expected `atrous_rates` as positive integers "6,12,18" or one positive int r for (r, 2r, 3r).'
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{expected} Received: atrous_rates={value!r}")
    if isinstance(value, int):
        rates: tuple[int, ...] = (value, 2 * value, 3 * value)
    else:
        try:
            rates = tuple(int(part) for part in value.split(","))
        except ValueError:
            raise ValueError(f"{expected} Received: atrous_rates={value!r}") from None
    if not rates or min(rates) < 1:
        raise ValueError(f"{expected} Received: atrous_rates={value!r}")
    return rates


def downsamplings(spec: UNetSpec) -> int:
    """Max-poolings in the encoder: ``log2(output_stride)``."""
    return int(math.log2(spec.option("output_stride")))


def stage_dilation(spec: UNetSpec, stage: int) -> int:
    """Dilation of encoder ``stage``: 1 up to the output stride, then 2, 4, … for the stages past it."""
    return 2 ** max(stage - downsamplings(spec), 0)


def _validate_options(spec: UNetSpec) -> None:
    stride = spec.option("output_stride")
    if stride not in OUTPUT_STRIDES or isinstance(stride, bool):
        raise ValueError(f"Expected `output_stride` in {OUTPUT_STRIDES}. Received: output_stride={stride!r}")
    for name in ("aspp_filters", "low_level_filters"):
        value = spec.option(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected `{name}` to be a positive integer. Received: {name}={value!r}")
    if not isinstance(spec.option("separable"), bool):
        raise ValueError(f"Expected `separable` to be a bool. Received: separable={spec.option('separable')!r}")
    rate = spec.dropout_rate
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate < 1.0:
        raise ValueError(f"Expected `dropout_rate` in [0, 1). Received: dropout_rate={rate!r}")


def validate(spec: UNetSpec) -> None:
    _validate_options(spec)
    stride = spec.option("output_stride")
    needed = downsamplings(spec) + 1
    if spec.num_layers < needed:
        raise ValueError(
            f"Expected `num_layers` >= log2(output_stride) + 1 = {needed} (the encoder reaches the output stride). "
            f"Received: num_layers={spec.num_layers} with output_stride={stride}"
        )
    if spec.image_size % stride != 0:
        raise ValueError(
            f"Expected `image_size` divisible by output_stride = {stride}. "
            f"Received: image_size={spec.image_size} with output_stride={stride}"
        )
    atrous_rates(spec)  # parses, or names the option
    # A rate (or an encoder dilation) at or beyond the ASPP's map side (image_size / output_stride) is allowed: that
    # branch then sees only its centre tap, a 1×1 convolution, as the paper's rates do on small inputs. Refusing it
    # would keep DeepLabV3+ at its default rates off every image below 304 px.


def _unit(counter: CostCounter, spec: UNetSpec, pixels: int, c_in: int, c_out: int, kernel: int) -> None:
    """Conv → [BN] → act (``models.deeplabv3plus._conv_unit``)."""
    counter.conv(pixels, c_in, c_out, kernel, bias=not spec.batch_norm)
    if spec.batch_norm:
        counter.batch_norm(pixels, c_out)
    counter.output(pixels, c_out)


def _unit3x3(counter: CostCounter, spec: UNetSpec, pixels: int, c_in: int, c_out: int) -> None:
    """A 3×3 unit of the ASPP or the decoder: depthwise-separable when ``separable``."""
    if not spec.option("separable"):
        _unit(counter, spec, pixels, c_in, c_out, 3)
        return
    counter.depthwise(pixels, c_in, 3, bias=not spec.batch_norm)
    if spec.batch_norm:
        counter.batch_norm(pixels, c_in)
    counter.output(pixels, c_in)
    _unit(counter, spec, pixels, c_in, c_out, 1)


def _encoder(counter: CostCounter, spec: UNetSpec) -> None:
    size = spec.image_size
    c_in = spec.channels
    for i, filters in enumerate(spec.filters_schedule()):
        _unit(counter, spec, size * size, c_in, filters, 3)
        _unit(counter, spec, size * size, filters, filters, 3)
        c_in = filters
        if i < downsamplings(spec):
            size //= 2
            counter.output(size * size, filters)  # pool


def _aspp(counter: CostCounter, spec: UNetSpec, pixels: int, c_in: int) -> None:
    width = spec.option("aspp_filters")
    rates = atrous_rates(spec)
    _unit(counter, spec, pixels, c_in, width, 1)
    for _ in rates:
        _unit3x3(counter, spec, pixels, c_in, width)
    counter.output(1, c_in)  # global average pool
    _unit(counter, spec, 1, c_in, width, 1)
    counter.output(pixels, width)  # pooled branch upsampled
    counter.output(pixels, (len(rates) + 2) * width)  # concat
    _unit(counter, spec, pixels, (len(rates) + 2) * width, width, 1)
    counter.output(pixels, width)  # dropout


def cost(spec: UNetSpec) -> ModelCost:
    """The cost of ``models.deeplabv3plus.build_deeplabv3plus(spec)``, layer by layer: params and conv MACs exact
    (tests compare them with Keras), activation values = the sum of every layer's output."""
    counter = CostCounter()
    size = spec.image_size
    for flag in (spec.rescale_input, spec.standardize_input):
        if flag:
            counter.output(size * size, spec.channels)
    _encoder(counter, spec)
    filters = spec.filters_schedule()
    _aspp(counter, spec, (size // spec.option("output_stride")) ** 2, filters[-1])
    width = spec.option("aspp_filters")
    low = spec.option("low_level_filters")
    pixels = (size // LOW_LEVEL_STRIDE) ** 2
    counter.output(pixels, width)  # ASPP upsampled to stride 4
    _unit(counter, spec, pixels, filters[2], low, 1)
    counter.output(pixels, width + low)  # concat
    _unit3x3(counter, spec, pixels, width + low, width)
    _unit3x3(counter, spec, pixels, width, width)
    counter.output(size * size, width)  # upsampled ×4
    counter.conv(size * size, width, spec.num_classes, 1)  # head
    return counter.cost()


FAMILY = Family(
    name="deeplabv3plus",
    title="DeepLabV3+",
    reference_model=None,
    uses=("base_filters", "num_layers", "dropout_rate"),
    options={
        "output_stride": 16,
        "atrous_rates": "6,12,18",
        "aspp_filters": 256,
        "low_level_filters": 48,
        "separable": True,
    },
    validate=validate,
    cost=cost,
    time_per_mac=1.5,  # B14: step time ÷ MACs, relative to the UNet's, at matched parameters
    # No reference tool model: the paper's head (output stride 16, rates 6/12/18, 256-filter ASPP and decoder,
    # 48 low-level filters, separable convolutions) on the project's 512×512×3 images, with a six-stage encoder
    # (16 … 256 filters to stride 16, then a dilated 512-filter stage, like a backbone's atrous exit block).
    reference={"image_size": 512, "channels": 3, "num_classes": 1, "base_filters": 16, "num_layers": 6,
               "batch_norm": True, "dropout_rate": 0.1,
               "options": {"output_stride": 16, "atrous_rates": "6,12,18", "aspp_filters": 256,
                           "low_level_filters": 48, "separable": True}},
)
