"""The EfficientNet-UNet builder (the reference tool's TensorflowEfficientUNet, default ``efficientnet = "B0"``).

Structure, as the reference: the ``keras.applications`` EfficientNet (without its top conv) as the encoder; a
residual double-conv block ("CBAR": conv3×3 → BN → act, twice, plus a 1×1 shortcut of the block input, added)
on the last stage's output; then five times: nearest ×2 upsampling, concatenation with the encoder's stage output
of that scale (strides 16, 8, 4, 2, then the input image) and a CBAR block as wide as that skip (the last one as
wide as the stride-2 skip); the shared head. Widths: models/families/efficient_unet.py.

Deliberate differences from the reference:

- The encoder is a nested model ``encoder`` (its multi-output feature extractor), so the top-level layer names are
  deterministic (Keras auto-names the EfficientNet's preprocessing layers per session).
- Skips are each stage's *output* (the last block's residual add); the reference taps ``block5c_drop``,
  ``block3b_drop`` and ``block2b_drop`` (the same blocks of B0, before their residual add) and always ``block5c``
  and ``block7a`` whatever the variant. Parameters are the same for B0.
- Input scaling: keras.applications' EfficientNet starts with its own ``Rescaling(1/255)`` and a
  ``Normalization`` (identity without pretrained weights; ImageNet's mean and variance with them). Every family
  starts with :func:`models.unet.image_input`, which already divides by 255 when ``rescale_input``; so the
  encoder's own rescaling is set to 1 and the model's input scaling is exactly ``image_input``'s: with
  ``rescale_input`` (the default) the encoder sees [0, 1] pixels as in the reference (which feeds raw pixels to
  the EfficientNet's own 1/255); without it, raw pixels. ImageNet weights need ``rescale_input`` and 3 channels.
- ``encoder_weights`` defaults to "none" (random init); "imagenet" downloads the pretrained encoder (the
  reference always does).
- Decoder BN and activation follow ``spec.batch_norm`` and ``spec.activation`` (the reference: BN, ReLU).
"""

from __future__ import annotations

from typing import Any

import keras

from models.families.efficient_unet import SKIP_STAGES, skip_channels, stage_output_layer, stage_table
from models.spec import UNetSpec
from models.unet import image_input, output_head

__all__ = ["build_efficient_unet", "build_encoder"]


def build_encoder(spec: UNetSpec) -> keras.Model:
    """The EfficientNet feature extractor ``encoder``: outputs the last stage's, then the stage-5, 3, 2 and 1
    outputs (strides 32, 16, 8, 4, 2), with its built-in 1/255 rescaling neutralised (module docstring)."""
    name = str(spec.option("efficientnet"))
    weights = None if spec.option("encoder_weights") == "none" else "imagenet"
    application = getattr(keras.applications, f"EfficientNet{name}")
    base = application(include_top=False, weights=weights,
                       input_shape=(spec.image_size, spec.image_size, spec.channels))
    rescaling = next(layer for layer in base.layers if isinstance(layer, keras.layers.Rescaling))
    rescaling.scale = 1.0  # image_input rescales (or not), once
    last = len(stage_table(name))
    outputs = [base.get_layer(stage_output_layer(name, stage)).output for stage in (last, *SKIP_STAGES)]
    return keras.Model(base.inputs, outputs, name="encoder")


def cbar_block(x: Any, filters: int, spec: UNetSpec, name: str) -> Any:
    """conv3×3 → [BN] → act, twice, plus a 1×1 conv shortcut of ``x``, added (the reference's CBAR block)."""
    shortcut = x
    for index in (1, 2):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv{index}")(x)
        if spec.batch_norm:
            x = keras.layers.BatchNormalization(name=f"{name}_bn{index}")(x)
        x = keras.layers.Activation(spec.activation, name=f"{name}_act{index}")(x)
    shortcut = keras.layers.Conv2D(filters, 1, name=f"{name}_shortcut")(shortcut)
    return keras.layers.Add(name=f"{name}_add")([x, shortcut])


def build_efficient_unet(spec: UNetSpec) -> keras.Model:
    """Build the EfficientNet-UNet described by ``spec`` (module docstring). Layers: ``encoder`` (nested),
    ``bottleneck_*``, ``dec{i}_up``, ``dec{i}_concat``, ``dec{i}_*`` for i = 4..0 (dec0 at full resolution),
    ``head``.

    Raises:
        ValueError: if ``spec.validate()`` fails.
    """
    spec.validate()
    inputs, x = image_input(spec)
    bottom, *features = build_encoder(spec)(x)
    skips = [*features, x]
    widths = skip_channels(spec)
    y = cbar_block(bottom, int(bottom.shape[-1]), spec, "bottleneck")
    for level, skip in enumerate(skips):
        index = len(skips) - 1 - level
        y = keras.layers.UpSampling2D(2, name=f"dec{index}_up")(y)
        y = keras.layers.Concatenate(axis=-1, name=f"dec{index}_concat")([y, skip])
        width = widths[level] if level < len(skips) - 1 else widths[-2]
        y = cbar_block(y, width, spec, f"dec{index}")
    return keras.Model(inputs, output_head(y, spec), name=spec.variant)
