"""The Attention UNet (the reference tool's TensorflowAttentionUNet): its rules and cost.

The UNet's encoder-decoder with an additive attention gate on every skip connection (Oktay et al. 2018, as the
reference builds it after nikhilroxtomar's Semantic-Segmentation-Architecture): each decoder level upsamples the
deeper features bilinearly (no transposed convolution), gates the skip with them, concatenates both and applies a
double convolution. ``models/attention_unet.py`` builds it; :func:`cost` mirrors it layer by layer.
"""

from __future__ import annotations

from models.cost import CostCounter, ModelCost
from models.families.base import Family
from models.spec import UNetSpec


def validate(spec: UNetSpec) -> None:
    """The UNet's depth rules (odd kernel, ``image_size`` divisible by ``2**(num_layers-1)``, bottleneck >= 4 px);
    the dropout rate is the same at every level (as in the reference), so it only has to lie in [0, 1)."""
    spec.validate_geometry()  # the UNet's geometry without its per-level dropout schedule
    rate = spec.dropout_rate
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate < 1.0:
        raise ValueError(f"Expected `dropout_rate` in [0, 1). Received: dropout_rate={rate!r}")


def _conv(counter: CostCounter, spec: UNetSpec, pixels: int, c_in: int, c_out: int, kernel: int) -> None:
    """A convolution, then (with batch norm) its BatchNormalization and separate activation."""
    counter.conv(pixels, c_in, c_out, kernel)
    if spec.batch_norm:
        counter.batch_norm(pixels, c_out)
        counter.output(pixels, c_out)


def _block(counter: CostCounter, spec: UNetSpec, pixels: int, c_in: int, c_out: int, kernel: int) -> None:
    """conv1 → [bn1 → act1] → conv2 → dropout → [bn2 → act2]."""
    _conv(counter, spec, pixels, c_in, c_out, kernel)
    counter.conv(pixels, c_out, c_out, kernel)
    counter.output(pixels, c_out)  # dropout
    if spec.batch_norm:
        counter.batch_norm(pixels, c_out)
        counter.output(pixels, c_out)


def _gate(counter: CostCounter, spec: UNetSpec, pixels: int, c_gate: int, filters: int) -> None:
    """The attention gate on a skip of ``filters`` channels, gated by upsampled features of ``c_gate`` channels:
    W_g (1×1) [→ bn], W_s (1×1) → dropout [→ bn], add, activation, ψ (1×1, sigmoid), multiply."""
    counter.conv(pixels, c_gate, filters, 1)
    if spec.batch_norm:
        counter.batch_norm(pixels, filters)
    counter.conv(pixels, filters, filters, 1)
    counter.output(pixels, filters)  # dropout
    if spec.batch_norm:
        counter.batch_norm(pixels, filters)
    counter.output(pixels, filters)  # add
    counter.output(pixels, filters)  # activation
    counter.conv(pixels, filters, filters, 1)
    counter.output(pixels, filters)  # multiply


def cost(spec: UNetSpec) -> ModelCost:
    """The cost of ``build_attention_unet(spec)``: exact parameters and convolution MACs (upsampling, gating
    products and BN are not counted as MACs); activation bytes = every layer's output, as Keras lists them."""
    counter = CostCounter()
    filters = spec.filters_schedule()
    kernels = spec.kernel_schedule()
    size, c_in = spec.image_size, spec.channels
    for flag in (spec.rescale_input, spec.standardize_input):
        if flag:
            counter.output(size * size, c_in)
    sizes: list[int] = []
    for i in range(spec.num_layers):
        sizes.append(size)
        _block(counter, spec, size * size, c_in, filters[i], kernels[i])
        c_in = filters[i]
        if i < spec.num_layers - 1:
            size //= 2
            counter.output(size * size, c_in)  # pool
    for f in range(spec.num_layers - 2, -1, -1):
        pixels = sizes[f] ** 2
        counter.output(pixels, c_in)  # bilinear upsampling of the deeper features
        _gate(counter, spec, pixels, c_in, filters[f])
        counter.output(pixels, c_in + filters[f])  # concat
        _block(counter, spec, pixels, c_in + filters[f], filters[f], kernels[f])
        c_in = filters[f]
    counter.conv(spec.image_size**2, c_in, spec.num_classes, 1)  # head
    return counter.cost()


FAMILY = Family(
    name="attention_unet",
    title="Attention UNet",
    reference_model="TensorflowAttentionUNet",
    uses=("base_filters", "base_kernels", "num_layers", "dilation", "dropout_rate"),
    options={},
    validate=validate,
    cost=cost,
    # projects/TensorflowAttentionUNet/MultipleMyeloma/train_eval_infer.config; the reference's convolutions are
    # 3×3 undilated with batch norm after each.
    reference={
        "image_size": 512, "channels": 3, "num_classes": 1, "base_filters": 16, "num_layers": 6,
        "dropout_rate": 0.2, "base_kernels": 3, "dilation": 1, "batch_norm": True, "options": {},
    },
)
