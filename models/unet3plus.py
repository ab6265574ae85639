"""The UNet 3+ builder (the reference tool's TensorflowUNet3Plus, after hamidriasat's UNet-3-Plus).

Structure, as the reference at its default configuration (``FAMILY.reference``: 5 levels, 16 base filters, batch
norm, 3×3 convolutions), generalised to ``num_layers`` levels (the reference always builds 5):

* every convolution is ``conv → dropout → [bn → activation]`` (without batch norm the activation is inside the
  convolution); encoder level ``i`` (``F0·2**i`` filters, max pooled from the level above) has two, dropping out
  at ``rate`` and ``2·rate`` as the reference;
* decoder level ``l`` (deepest first) takes every level ``s``: shallower encoder levels max pooled by
  ``2**(l-s)``, encoder ``l`` itself, deeper decoder levels and the bottleneck bilinearly upsampled by
  ``2**(s-l)``, each through a ``F0``-channel convolution; it concatenates them and fuses them with a convolution
  of ``num_layers·F0`` channels;
* the shared 1×1 ``head`` on decoder level 0.

Deliberate differences from the reference: its last layer is a 3×3 convolution to one channel and a sigmoid; here
it is the shared 1×1 ``head`` (640 fewer parameters at the reference configuration). The reference's L2 kernel
regulariser (1e-4) is not used (the training loss is the search's). Kernels and dilations follow the shared
schedules (the reference's fixed 3×3 is ``base_kernels=3, dilation=1``), batch norm follows ``spec.batch_norm``,
activations ``spec.activation``; the reference has no input rescaling (``rescale_input`` is the shared switch).

``deep_supervision`` (default False, as the reference, which has none): UNet 3+'s side outputs — a 3×3
convolution to ``num_classes`` logits from each deeper decoder level and the bottleneck, bilinearly upsampled to
the image — are concatenated to decoder level 0's features before the head, so the single ``head`` output learns a
weighted sum of the multi-scale logits and each decoder level gets a short gradient path from the loss. The paper
supervises each side output with its own loss; a model trained with one output ``head`` cannot, so this option
keeps the side outputs' multi-scale signal and gradient path without extra outputs or losses.
"""

from __future__ import annotations

import keras

from models.spec import UNetSpec
from models.unet import image_input, output_head

__all__ = ["build_unet3plus"]


def _conv(x: keras.KerasTensor, spec: UNetSpec, filters: int, level: int, rate: float, prefix: str,
          suffix: str = "") -> keras.KerasTensor:
    """``{prefix}_conv{suffix}`` → ``_drop`` → [``_bn`` → ``_act``] with the level's kernel and dilation."""
    x = keras.layers.Conv2D(filters, spec.kernel_schedule()[level], dilation_rate=spec.dilation_schedule()[level],
                            padding="same", kernel_initializer="he_normal",
                            activation=None if spec.batch_norm else spec.activation, name=f"{prefix}_conv{suffix}")(x)
    x = keras.layers.Dropout(rate, name=f"{prefix}_drop{suffix}")(x)
    if spec.batch_norm:
        x = keras.layers.BatchNormalization(name=f"{prefix}_bn{suffix}")(x)
        x = keras.layers.Activation(spec.activation, name=f"{prefix}_act{suffix}")(x)
    return x


def _decoder(spec: UNetSpec, level: int, sources: list[keras.KerasTensor]) -> keras.KerasTensor:
    """Decoder ``level`` from ``sources[s]`` (encoder ``s`` for ``s <= level``, else the decoder or bottleneck)."""
    parts = []
    for s, x in enumerate(sources):
        name = f"dec{level}_in{s}"
        if s < level:
            x = keras.layers.MaxPooling2D(pool_size=2 ** (level - s), name=f"{name}_pool")(x)
        elif s > level:
            x = keras.layers.UpSampling2D(size=2 ** (s - level), interpolation="bilinear", name=f"{name}_up")(x)
        parts.append(_conv(x, spec, spec.base_filters, level, spec.dropout_rate, name))
    x = keras.layers.Concatenate(axis=-1, name=f"dec{level}_concat")(parts)
    return _conv(x, spec, spec.num_layers * spec.base_filters, level, spec.dropout_rate, f"dec{level}_fuse")


def _deep_supervision(x: keras.KerasTensor, spec: UNetSpec, deeper: list[keras.KerasTensor]) -> keras.KerasTensor:
    """Concatenate to ``x`` the side logits of ``deeper[s - 1]`` (level ``s``), upsampled to the image."""
    sides = [x]
    for s, feature in enumerate(deeper, start=1):
        side = keras.layers.Conv2D(spec.num_classes, 3, padding="same", name=f"ds{s}_conv")(feature)
        sides.append(keras.layers.UpSampling2D(size=2**s, interpolation="bilinear", name=f"ds{s}_up")(side))
    return keras.layers.Concatenate(axis=-1, name="ds_concat")(sides)


def build_unet3plus(spec: UNetSpec) -> keras.Model:
    """Build the UNet 3+ described by ``spec`` (input ``image``, output ``head`` as :func:`build_unet`).

    Raises:
        ValueError: if ``spec.validate()`` fails.
    """
    spec.validate()
    filters = spec.filters_schedule()
    inputs, x = image_input(spec)
    encoders: list[keras.KerasTensor] = []
    for i in range(spec.num_layers):
        if i > 0:
            x = keras.layers.MaxPooling2D(pool_size=2, name=f"enc{i}_pool")(x)
        x = _conv(x, spec, filters[i], i, spec.dropout_rate, f"enc{i}", "1")
        x = _conv(x, spec, filters[i], i, 2 * spec.dropout_rate, f"enc{i}", "2")
        encoders.append(x)
    decoders = {spec.num_layers - 1: encoders[-1]}  # the bottleneck feeds every decoder level as the deepest one
    for level in range(spec.num_layers - 2, -1, -1):
        sources = encoders[: level + 1] + [decoders[s] for s in range(level + 1, spec.num_layers)]
        decoders[level] = _decoder(spec, level, sources)
    x = decoders[0]
    if spec.option("deep_supervision"):
        x = _deep_supervision(x, spec, [decoders[s] for s in range(1, spec.num_layers)])
    return keras.Model(inputs, output_head(x, spec), name=spec.variant)
