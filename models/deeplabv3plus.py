"""The DeepLabV3+ builder (Chen et al. 2018; the reference tool has no DeepLab model)."""

from __future__ import annotations

import keras

from models.families.deeplabv3plus import LOW_LEVEL_STRIDE, atrous_rates, downsamplings, stage_dilation
from models.spec import UNetSpec
from models.unet import image_input, output_head

__all__ = ["build_deeplabv3plus"]


def _conv_unit(x: keras.KerasTensor, spec: UNetSpec, filters: int, kernel: int, *, name: str,
               dilation: int = 1) -> keras.KerasTensor:
    """``{name}`` conv → ``{name}_bn`` → ``{name}_act``; the conv has a bias only without batch norm."""
    x = keras.layers.Conv2D(filters, kernel, padding="same", dilation_rate=dilation, use_bias=not spec.batch_norm,
                            kernel_initializer="he_normal", name=name)(x)
    if spec.batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.Activation(spec.activation, name=f"{name}_act")(x)


def _unit3x3(x: keras.KerasTensor, spec: UNetSpec, filters: int, *, name: str, dilation: int = 1) -> keras.KerasTensor:
    """A 3×3 unit of the ASPP or the decoder: with option ``separable``, ``{name}_depthwise`` (dilated) → BN →
    act → ``{name}_pointwise`` 1×1 → BN → act (the paper's atrous separable convolution); else one conv unit."""
    if not spec.option("separable"):
        return _conv_unit(x, spec, filters, 3, dilation=dilation, name=name)
    x = keras.layers.DepthwiseConv2D(3, padding="same", dilation_rate=dilation, use_bias=not spec.batch_norm,
                                     name=f"{name}_depthwise")(x)
    if spec.batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_depthwise_bn")(x)
    x = keras.layers.Activation(spec.activation, name=f"{name}_depthwise_act")(x)
    return _conv_unit(x, spec, filters, 1, name=f"{name}_pointwise")


def _encoder(x: keras.KerasTensor, spec: UNetSpec) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Stages ``enc{i}`` (two 3×3 conv units), max-pooled (``enc{i}_pool``) until the output stride, dilated
    after it. Returns the output and the stride-4 features (stage 2's, before its pool)."""
    low_level = x
    for i, filters in enumerate(spec.filters_schedule()):
        dilation = stage_dilation(spec, i)
        x = _conv_unit(x, spec, filters, 3, dilation=dilation, name=f"enc{i}_conv1")
        x = _conv_unit(x, spec, filters, 3, dilation=dilation, name=f"enc{i}_conv2")
        if 2**i == LOW_LEVEL_STRIDE:
            low_level = x
        if i < downsamplings(spec):
            x = keras.layers.MaxPooling2D(pool_size=2, name=f"enc{i}_pool")(x)
    return x, low_level


def _aspp(x: keras.KerasTensor, spec: UNetSpec) -> keras.KerasTensor:
    """Atrous spatial pyramid pooling: ``aspp_1x1``, ``aspp_rate{j}`` (one per atrous rate), the image pooling
    ``aspp_pool`` (global average → 1×1 conv unit → upsampled), concatenated, projected, dropout."""
    width = spec.option("aspp_filters")
    side = x.shape[1]
    branches = [_conv_unit(x, spec, width, 1, name="aspp_1x1")]
    for j, rate in enumerate(atrous_rates(spec)):
        branches.append(_unit3x3(x, spec, width, dilation=rate, name=f"aspp_rate{j}"))
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
    pooled = _conv_unit(pooled, spec, width, 1, name="aspp_pool_conv")
    branches.append(keras.layers.UpSampling2D(side, interpolation="bilinear", name="aspp_pool_up")(pooled))
    x = keras.layers.Concatenate(axis=-1, name="aspp_concat")(branches)
    x = _conv_unit(x, spec, width, 1, name="aspp_project")
    return keras.layers.Dropout(spec.dropout_rate, name="aspp_drop")(x)


def build_deeplabv3plus(spec: UNetSpec) -> keras.Model:
    """Build the DeepLabV3+ described by ``spec`` (the published design: Chen et al. 2018; the reference tool has
    none, see models/families/deeplabv3plus.py).

    A light encoder replaces the pretrained backbone: stage ``i`` (``enc{i}``) is two 3×3 conv units of
    ``base_filters * 2**i`` filters; the first ``log2(output_stride)`` stages end in a max-pool, later ones dilate
    (2, 4, …). ASPP (``aspp_*``, rates from option ``atrous_rates``, width ``aspp_filters``, ``dropout_rate``
    after its projection) on the encoder output; the decoder upsamples it bilinearly to stride 4 (``dec_aspp_up``),
    concatenates (``dec_concat``) the stride-4 encoder features reduced to ``low_level_filters`` (``dec_low``),
    refines with two 3×3 units (``dec_conv1``, ``dec_conv2``), upsamples bilinearly ×4 (``dec_up``) and ends in
    the shared ``head``.

    Deliberate differences from the paper: no pretrained backbone (a plain conv encoder, so the model trains from
    scratch on one-channel medical images of any size); the 1×1 classifier is applied after the final
    upsampling (the shared head), not before, so the output is computed at full resolution from the decoder's
    features; ``spec.activation`` replaces ReLU and ``spec.batch_norm`` = False drops the batch norms (the
    convolutions then get biases).

    Raises:
        ValueError: if ``spec.validate()`` fails.
    """
    spec.validate()
    width = spec.option("aspp_filters")
    inputs, x = image_input(spec)
    x, low_level = _encoder(x, spec)
    x = _aspp(x, spec)
    scale = spec.option("output_stride") // LOW_LEVEL_STRIDE
    x = keras.layers.UpSampling2D(scale, interpolation="bilinear", name="dec_aspp_up")(x)
    low_level = _conv_unit(low_level, spec, spec.option("low_level_filters"), 1, name="dec_low")
    x = keras.layers.Concatenate(axis=-1, name="dec_concat")([x, low_level])
    x = _unit3x3(x, spec, width, name="dec_conv1")
    x = _unit3x3(x, spec, width, name="dec_conv2")
    x = keras.layers.UpSampling2D(LOW_LEVEL_STRIDE, interpolation="bilinear", name="dec_up")(x)
    return keras.Model(inputs, output_head(x, spec), name=spec.variant)
