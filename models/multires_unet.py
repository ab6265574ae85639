"""The MultiResUNet builder (the reference tool's TensorflowMultiResUNet)."""

from __future__ import annotations

import keras

from models.families.multires_unet import branch_widths, res_path_length
from models.spec import UNetSpec
from models.unet import image_input, output_head

__all__ = ["build_multires_unet"]


def _conv_unit(x: keras.KerasTensor, spec: UNetSpec, filters: int, kernel: int, *, act: bool,
               name: str) -> keras.KerasTensor:
    """``{name}`` conv → ``{name}_bn`` → ``{name}_act`` (the reference's conv_block). The conv has no bias when a
    batch norm follows (as the reference), a bias without one."""
    x = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=not spec.batch_norm, name=name)(x)
    if spec.batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    if act:
        x = keras.layers.Activation(spec.activation, name=f"{name}_act")(x)
    return x


def _merge(x: keras.KerasTensor, shortcut: keras.KerasTensor, spec: UNetSpec, name: str) -> keras.KerasTensor:
    """``activation(x + shortcut)`` then a batch norm (the reference's residual merge)."""
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    x = keras.layers.Activation(spec.activation, name=f"{name}_act")(x)
    if spec.batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return x


def _multires_block(x: keras.KerasTensor, spec: UNetSpec, filters: int, name: str) -> keras.KerasTensor:
    """Three chained 3×3 conv units (``{name}_conv3x3``, ``_conv5x5``, ``_conv7x7``: their receptive fields)
    concatenated (``{name}_branches`` [→ ``_branches_bn``]), added to a 1×1 ``{name}_shortcut`` and merged."""
    branches = []
    out = x
    for width, field in zip(branch_widths(filters, spec.option("alpha")), (3, 5, 7), strict=True):
        out = _conv_unit(out, spec, width, 3, act=True, name=f"{name}_conv{field}x{field}")
        branches.append(out)
    cat = keras.layers.Concatenate(axis=-1, name=f"{name}_branches")(branches)
    if spec.batch_norm:
        cat = keras.layers.BatchNormalization(name=f"{name}_branches_bn")(cat)
    shortcut = _conv_unit(x, spec, cat.shape[-1], 1, act=False, name=f"{name}_shortcut")
    return _merge(cat, shortcut, spec, name)


def _res_path(x: keras.KerasTensor, spec: UNetSpec, filters: int, length: int, name: str) -> keras.KerasTensor:
    """``length`` residual units ``{name}{j}``: a 3×3 conv plus a 1×1 shortcut, merged."""
    for j in range(length):
        conv = _conv_unit(x, spec, filters, 3, act=False, name=f"{name}{j}_conv")
        shortcut = _conv_unit(x, spec, filters, 1, act=False, name=f"{name}{j}_shortcut")
        x = _merge(conv, shortcut, spec, f"{name}{j}")
    return x


def build_multires_unet(spec: UNetSpec) -> keras.Model:
    """Build the MultiResUNet described by ``spec``, following the reference's TensorflowMultiResUNet.

    Level ``i`` (``F_i = base_filters * 2**i``) is a MultiRes block ``enc{i}`` (option ``alpha`` = 1.67 sets its
    width ``W = alpha * F_i``, split 0.167/0.333/0.5 over the 3×3/5×5/7×7 convolutions); encoder levels send
    their block's output through a residual path ``enc{i}_respath`` of ``num_layers - i`` units of ``F_i``
    filters to the decoder and max-pool it (``enc{i}_pool``); the deepest level is the bridge. Decoder level
    ``f``: ``dec{f}_up`` (2×2 stride-2 transposed conv to ``F_f``), ``dec{f}_concat`` with the skip, MultiRes block
    ``dec{f}``. Then the shared ``head``.

    Deliberate differences from the reference: ``spec.activation`` replaces its fixed ReLU, ``spec.batch_norm``
    = False drops every batch norm (and gives the convolutions a bias; the reference configuration sets it True),
    and the head is the shared head (softmax for several classes). Dropout, kernels and dilation are not used
    (the reference has none).

    Raises:
        ValueError: if ``spec.validate()`` fails.
    """
    spec.validate()
    filters = spec.filters_schedule()
    inputs, x = image_input(spec)
    skips: list[keras.KerasTensor] = []
    for i in range(spec.num_layers):
        x = _multires_block(x, spec, filters[i], f"enc{i}")
        if i < spec.num_layers - 1:
            skips.append(_res_path(x, spec, filters[i], res_path_length(spec, i), f"enc{i}_respath"))
            x = keras.layers.MaxPooling2D(pool_size=2, name=f"enc{i}_pool")(x)
    for f in range(spec.num_layers - 2, -1, -1):
        x = keras.layers.Conv2DTranspose(filters[f], 2, strides=2, padding="same", name=f"dec{f}_up")(x)
        x = keras.layers.Concatenate(axis=-1, name=f"dec{f}_concat")([x, skips[f]])
        x = _multires_block(x, spec, filters[f], f"dec{f}")
    return keras.Model(inputs, output_head(x, spec), name=spec.variant)
