"""UNet 3+ (the reference tool's TensorflowUNet3Plus; Huang et al. 2020): its rules and cost.

Full-scale skip connections: every decoder level concatenates ``num_layers`` inputs of ``base_filters`` channels
each — the shallower encoder levels max-pooled down, the same-level encoder, the deeper decoder levels and the
bottleneck bilinearly upsampled, each through one convolution — and fuses them with one convolution of
``num_layers × base_filters`` channels. ``models/unet3plus.py`` builds it; :func:`cost` mirrors it layer by layer.
"""

from __future__ import annotations

from models.cost import CostCounter, ModelCost
from models.families.base import Family
from models.spec import UNetSpec


def validate(spec: UNetSpec) -> None:
    """The UNet's depth rules (odd kernel, ``image_size`` divisible by ``2**(num_layers-1)``, bottleneck >= 4 px);
    the encoder's second convolution drops out at ``2 × dropout_rate`` (as the reference) at every level, so that
    must stay below 1; ``deep_supervision`` is a bool."""
    spec.validate_geometry()  # the UNet's geometry without its per-level dropout schedule
    rate = spec.dropout_rate
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= 2 * rate < 1.0:
        raise ValueError(
            "Expected `dropout_rate` in [0, 0.5) (the encoder's second convolution drops out at twice the rate). "
            f"Received: dropout_rate={rate!r}"
        )
    value = spec.option("deep_supervision")
    if not isinstance(value, bool):
        raise ValueError(f"Expected `deep_supervision` to be a bool. Received: deep_supervision={value!r}")


def _conv(counter: CostCounter, spec: UNetSpec, pixels: int, c_in: int, c_out: int, kernel: int) -> None:
    """conv → dropout → [bn → activation] (without batch norm the activation is inside the convolution)."""
    counter.conv(pixels, c_in, c_out, kernel)
    counter.output(pixels, c_out)  # dropout
    if spec.batch_norm:
        counter.batch_norm(pixels, c_out)
        counter.output(pixels, c_out)


def _decoder(counter: CostCounter, spec: UNetSpec, level: int) -> None:
    """Decoder ``level``: one F0-channel conv per source (after pooling/upsampling it to this level), concat, fuse."""
    layers, f0 = spec.num_layers, spec.base_filters
    filters = spec.filters_schedule()
    pixels = (spec.image_size // 2**level) ** 2
    kernel = spec.kernel_schedule()[level]
    for source in range(layers):
        if source < level:
            channels = filters[source]
        elif source == level:
            channels = filters[level]
        else:
            channels = filters[-1] if source == layers - 1 else layers * f0
        if source != level:
            counter.output(pixels, channels)  # max pooling or bilinear upsampling
        _conv(counter, spec, pixels, channels, f0, kernel)
    counter.output(pixels, layers * f0)  # concat
    _conv(counter, spec, pixels, layers * f0, layers * f0, kernel)


def cost(spec: UNetSpec) -> ModelCost:
    """The cost of ``build_unet3plus(spec)``: exact parameters and convolution MACs (pooling, upsampling and BN
    are not counted as MACs); activation bytes = every layer's output, as Keras lists them."""
    counter = CostCounter()
    filters = spec.filters_schedule()
    kernels = spec.kernel_schedule()
    layers, size, c_in = spec.num_layers, spec.image_size, spec.channels
    for flag in (spec.rescale_input, spec.standardize_input):
        if flag:
            counter.output(size * size, c_in)
    for i in range(layers):
        if i > 0:
            size //= 2
            counter.output(size * size, c_in)  # pool
        _conv(counter, spec, size * size, c_in, filters[i], kernels[i])
        _conv(counter, spec, size * size, filters[i], filters[i], kernels[i])
        c_in = filters[i]
    for level in range(layers - 2, -1, -1):
        _decoder(counter, spec, level)
    pixels = spec.image_size**2
    head_in = layers * spec.base_filters
    if spec.option("deep_supervision"):
        for source in range(1, layers):
            channels = filters[-1] if source == layers - 1 else layers * spec.base_filters
            side = (spec.image_size // 2**source) ** 2
            counter.conv(side, channels, spec.num_classes, 3)
            counter.output(pixels, spec.num_classes)  # upsampled to the image
        head_in += (layers - 1) * spec.num_classes
        counter.output(pixels, head_in)  # concat
    counter.conv(pixels, head_in, spec.num_classes, 1)  # head
    return counter.cost()


FAMILY = Family(
    name="unet3plus",
    title="UNet 3+",
    reference_model="TensorflowUNet3Plus",
    uses=("base_filters", "base_kernels", "num_layers", "dilation", "dropout_rate"),
    options={"deep_supervision": False},  # the reference has no deep supervision
    validate=validate,
    cost=cost,
    time_per_mac=0.8,  # B14: step time ÷ MACs, relative to the UNet's, at matched parameters
    # The reference always builds 5 levels (its num_layers is unused) of 3×3 undilated convolutions with batch
    # norm; image size, filters and dropout from projects/TensorflowUNet3Plus/MultipleMyeloma/train_eval_infer.config.
    reference={
        "image_size": 256, "channels": 3, "num_classes": 1, "base_filters": 16, "num_layers": 5,
        "dropout_rate": 0.06, "base_kernels": 3, "dilation": 1, "batch_norm": True,
        "options": {"deep_supervision": False},
    },
)
