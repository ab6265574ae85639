"""The EfficientNet-UNet (the reference tool's TensorflowEfficientUNet, after he44/EfficientNet-UNet): its rules
and cost.

The encoder is ``keras.applications.EfficientNet{B0..B7}`` (include_top=False, so without its top conv); its cost
is computed here from EfficientNet's block table and compound scaling (Keras's own rounding), so it equals
Keras's count exactly for any channel count. The decoder: a residual double-conv block (the reference's
"CBAR": conv3×3 → [BN] → act, twice, plus a 1×1 shortcut conv of the block input, added) at the bottleneck and
after each of five nearest ×2 upsamplings, concatenated with the encoder's stage output at that scale (strides
16, 8, 4, 2) and finally with the input image; each block as wide as its skip, the bottleneck's as wide as the
encoder's last stage.
"""

from __future__ import annotations

import math
from typing import Any

from models.cost import CostCounter, ModelCost
from models.families.base import Family
from models.spec import UNetSpec

ENCODERS: dict[str, tuple[float, float]] = {  # (width, depth) coefficients of keras.applications.EfficientNetBx
    "B0": (1.0, 1.0),
    "B1": (1.0, 1.1),
    "B2": (1.1, 1.2),
    "B3": (1.2, 1.4),
    "B4": (1.4, 1.8),
    "B5": (1.6, 2.2),
    "B6": (1.8, 2.6),
    "B7": (2.0, 3.1),
}
WEIGHTS: tuple[str, ...] = ("none", "imagenet")
DOWNSAMPLING = 32  # the encoder's total stride
# EfficientNet's stages: (kernel, repeats, filters_in, filters_out, expand_ratio, stride); SE ratio 0.25.
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)
SKIP_STAGES: tuple[int, ...] = (5, 3, 2, 1)  # 1-based stages whose outputs feed the decoder (strides 16, 8, 4, 2)
STEM_FILTERS = 32

OPTIONS: dict[str, Any] = {
    "efficientnet": "B0",  # the reference INI's key (TensorflowEfficientUNet reads [model] efficientnet, "B0")
    "encoder_weights": "none",
}


def round_filters(filters: int, width: float) -> int:
    """Keras's EfficientNet width rounding (to a multiple of 8, never more than 10 % down)."""
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def stage_table(name: str) -> list[tuple[int, int, int, int, int, int]]:
    """The encoder's stages scaled: (kernel, repeats, filters_in, filters_out, expand_ratio, stride)."""
    width, depth = ENCODERS[name]
    return [(k, round_repeats(r, depth), round_filters(fi, width), round_filters(fo, width), e, s)
            for k, r, fi, fo, e, s in STAGES]


def stage_output_layer(name: str, stage: int) -> str:
    """Keras's name of the last layer of 1-based ``stage``: its last block's residual add, else its BN."""
    _, repeats, filters_in, filters_out, _, stride = stage_table(name)[stage - 1]
    letter = chr(ord("a") + repeats - 1)
    residual = repeats > 1 or (stride == 1 and filters_in == filters_out)
    return f"block{stage}{letter}_{'add' if residual else 'project_bn'}"


def skip_channels(spec: UNetSpec) -> tuple[int, ...]:
    """Channels of the decoder's skips, deepest first: the stage outputs, then the input image."""
    table = stage_table(str(spec.option("efficientnet")))
    return (*(table[s - 1][3] for s in SKIP_STAGES), spec.channels)


def validate(spec: UNetSpec) -> None:
    name, weights = spec.option("efficientnet"), spec.option("encoder_weights")
    if name not in ENCODERS:
        raise ValueError(f"Expected `efficientnet` to be one of {list(ENCODERS)}. Received: efficientnet={name!r}")
    if weights not in WEIGHTS:
        raise ValueError(
            f"Expected `encoder_weights` to be one of {list(WEIGHTS)}. Received: encoder_weights={weights!r}"
        )
    if weights == "imagenet" and spec.channels != 3:
        raise ValueError(
            "Expected `channels` = 3 with encoder_weights='imagenet' (the pretrained stem takes RGB). "
            f"Received: channels={spec.channels}"
        )
    if weights == "imagenet" and not spec.rescale_input:
        raise ValueError(
            "Expected `rescale_input` = True with encoder_weights='imagenet' (its ImageNet normalisation expects "
            f"pixels in [0, 1]). Received: rescale_input={spec.rescale_input}"
        )
    if spec.image_size % DOWNSAMPLING != 0:
        raise ValueError(
            f"Expected `image_size` divisible by {DOWNSAMPLING} (the EfficientNet encoder's total stride). "
            f"Received: image_size={spec.image_size}"
        )


def _bn(counter: CostCounter, pixels: int, channels: int) -> None:
    counter.batch_norm(pixels, channels)


def _mbconv(counter: CostCounter, size_in: int, kernel: int, c_in: int, c_out: int, expand: int,
            stride: int) -> int:
    """One EfficientNet inverted-residual block (expand 1×1, depthwise, squeeze-excite, project 1×1); returns
    its output side."""
    size = size_in // stride
    filters = c_in * expand
    if expand != 1:
        counter.conv(size_in * size_in, c_in, filters, 1, bias=False)
        _bn(counter, size_in * size_in, filters)
        counter.output(size_in * size_in, filters)  # activation
    if stride == 2:
        counter.output((size_in + 1) ** 2, filters)  # zero padding (approximate)
    counter.depthwise(size * size, filters, kernel, bias=False)
    _bn(counter, size * size, filters)
    counter.output(size * size, filters)  # activation
    squeeze = max(1, int(c_in * 0.25))
    counter.conv(1, filters, squeeze, 1)
    counter.conv(1, squeeze, filters, 1)
    counter.output(size * size, filters)  # excite
    counter.conv(size * size, filters, c_out, 1, bias=False)
    _bn(counter, size * size, c_out)
    if stride == 1 and c_in == c_out:
        counter.output(size * size, 2 * c_out)  # drop, add
    return size


def encoder_cost(counter: CostCounter, spec: UNetSpec) -> None:
    """The encoder: stem (rescaling, normalization, 3×3/2 conv, BN) and every block through the last stage."""
    name = str(spec.option("efficientnet"))
    width, _ = ENCODERS[name]
    size, channels = spec.image_size, spec.channels
    counter.output(2 * size * size, channels)  # rescaling, normalization
    counter.params += 2 * channels + 1  # normalization: mean, variance, count
    if spec.option("encoder_weights") == "imagenet":
        counter.output(size * size, channels)  # the ImageNet std rescaling
    stem = round_filters(STEM_FILTERS, width)
    counter.output((size + 1) ** 2, channels)  # stem padding (approximate)
    size //= 2
    counter.conv(size * size, channels, stem, 3, bias=False)
    _bn(counter, size * size, stem)
    counter.output(size * size, stem)
    for kernel, repeats, c_in, c_out, expand, stride in stage_table(name):
        for j in range(repeats):
            size = _mbconv(counter, size, kernel, c_in if j == 0 else c_out, c_out, expand, stride if j == 0 else 1)


def _cbar(counter: CostCounter, spec: UNetSpec, pixels: int, c_in: int, c_out: int) -> None:
    """The decoder block: conv3×3 → [BN] → act, twice, plus a 1×1 shortcut, added."""
    for c in (c_in, c_out):
        counter.conv(pixels, c, c_out, 3)
        if spec.batch_norm:
            _bn(counter, pixels, c_out)
        counter.output(pixels, c_out)  # activation
    counter.conv(pixels, c_in, c_out, 1)
    counter.output(pixels, c_out)  # add


def cost(spec: UNetSpec) -> ModelCost:
    """The cost of ``models.efficient_unet.build_efficient_unet(spec)``: params and conv MACs exact (equal to
    Keras's layer count); activation values approximate (paddings, every layer output once)."""
    counter = CostCounter()
    size = spec.image_size
    if spec.rescale_input:
        counter.output(size * size, spec.channels)
    if spec.standardize_input:
        counter.output(size * size, spec.channels)
    encoder_cost(counter, spec)
    bottom = stage_table(str(spec.option("efficientnet")))[-1][3]
    side = size // DOWNSAMPLING
    _cbar(counter, spec, side * side, bottom, bottom)
    c_in = bottom
    skips = skip_channels(spec)
    for level, skip in enumerate(skips):
        side *= 2
        pixels = side * side
        c_out = skip if level < len(skips) - 1 else skips[-2]  # the last block keeps the stride-2 skip's width
        counter.output(pixels, c_in + skip)  # upsampling, concat (approximate)
        _cbar(counter, spec, pixels, c_in + skip, c_out)
        c_in = c_out
    counter.conv(size * size, c_in, spec.num_classes, 1)  # head
    return counter.cost()


FAMILY = Family(
    name="efficient_unet",
    title="EfficientNet-UNet",
    reference_model="TensorflowEfficientUNet",
    uses=(),
    options=OPTIONS,
    validate=validate,
    cost=cost,
    time_per_mac=3.6,  # B14: step time ÷ MACs, relative to the UNet's, at matched parameters
    # The reference's configuration: EfficientNetB0 on 512×512×3 (the reference tool's image size), its decoder
    # blocks with batch normalisation and ReLU. (It loads ImageNet weights; the count does not depend on them.)
    reference={"image_size": 512, "channels": 3, "batch_norm": True, "activation": "relu", "options": {}},
)
