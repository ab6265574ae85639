"""The Attention UNet builder (the reference tool's TensorflowAttentionUNet).

Structure, as the reference at its default configuration (``FAMILY.reference``: 512², 16 base filters, 6 levels,
dropout 0.2, batch norm, 3×3 convolutions):

* encoder level ``i`` (``F0·2**i`` filters): ``conv1 → [bn1 → act1] → conv2 → dropout → [bn2 → act2]``, then a 2×2
  max pooling except at the bottleneck;
* decoder level ``f``: bilinear 2× upsampling of the deeper features (no transposed convolution), an additive
  attention gate on the skip ``s``: ``W_g·g`` (1×1) [bn] + ``W_s·s`` (1×1, dropout) [bn] → activation → ψ (1×1 with
  ``F_f`` channels, sigmoid) → ``ψ ⊙ s``; then ``concat([up, gated skip])`` and the double convolution;
* the shared 1×1 ``head``.

Deliberate differences from the reference: the kernel and dilation of each level follow the shared schedules
(``base_kernels``/``dilation``; the reference's fixed 3×3 is ``base_kernels=3, dilation=1``); batch norm follows
``spec.batch_norm`` (the reference always uses it, hence ``batch_norm=True`` in the reference configuration);
activations follow ``spec.activation`` (the reference: relu). The dropout rate is the same at every level, as in
the reference (not the UNet's ``rate·level`` schedule).
"""

from __future__ import annotations

import keras

from models.spec import UNetSpec
from models.unet import image_input, output_head

__all__ = ["build_attention_unet"]


def _conv(x: keras.KerasTensor, spec: UNetSpec, level: int, name: str, index: int) -> keras.KerasTensor:
    """``{name}_conv{index}`` [→ ``{name}_drop`` after conv2] → with batch norm: bn → activation (BN before the
    activation, as the reference); without: the activation inside the convolution."""
    x = keras.layers.Conv2D(spec.filters_schedule()[level], spec.kernel_schedule()[level],
                            dilation_rate=spec.dilation_schedule()[level], padding="same",
                            kernel_initializer="he_normal", activation=None if spec.batch_norm else spec.activation,
                            name=f"{name}_conv{index}")(x)
    if index == 2:
        x = keras.layers.Dropout(spec.dropout_rate, name=f"{name}_drop")(x)
    if spec.batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn{index}")(x)
        x = keras.layers.Activation(spec.activation, name=f"{name}_act{index}")(x)
    return x


def _block(x: keras.KerasTensor, spec: UNetSpec, level: int, name: str) -> keras.KerasTensor:
    """The double convolution of ``level``: conv1 → [bn1 → act1] → conv2 → dropout → [bn2 → act2]."""
    return _conv(_conv(x, spec, level, name, 1), spec, level, name, 2)


def _attention_gate(g: keras.KerasTensor, s: keras.KerasTensor, spec: UNetSpec, filters: int,
                    name: str) -> keras.KerasTensor:
    """``s ⊙ sigmoid(ψ(act(W_g g + W_s s)))`` with ``filters``-channel 1×1 convolutions."""
    wg = keras.layers.Conv2D(filters, 1, name=f"{name}_wg")(g)
    if spec.batch_norm:
        wg = keras.layers.BatchNormalization(name=f"{name}_wg_bn")(wg)
    ws = keras.layers.Conv2D(filters, 1, name=f"{name}_ws")(s)
    ws = keras.layers.Dropout(spec.dropout_rate, name=f"{name}_ws_drop")(ws)
    if spec.batch_norm:
        ws = keras.layers.BatchNormalization(name=f"{name}_ws_bn")(ws)
    a = keras.layers.Add(name=f"{name}_add")([wg, ws])
    a = keras.layers.Activation(spec.activation, name=f"{name}_act")(a)
    psi = keras.layers.Conv2D(filters, 1, activation="sigmoid", name=f"{name}_psi")(a)
    return keras.layers.Multiply(name=f"{name}_mul")([psi, s])


def build_attention_unet(spec: UNetSpec) -> keras.Model:
    """Build the Attention UNet described by ``spec`` (input ``image``, output ``head`` as :func:`build_unet`).

    Raises:
        ValueError: if ``spec.validate()`` fails.
    """
    spec.validate()
    filters = spec.filters_schedule()
    inputs, x = image_input(spec)
    skips: list[keras.KerasTensor] = []
    for i in range(spec.num_layers):
        x = _block(x, spec, i, f"enc{i}")
        if i < spec.num_layers - 1:
            skips.append(x)
            x = keras.layers.MaxPooling2D(pool_size=2, name=f"enc{i}_pool")(x)
    for f in range(spec.num_layers - 2, -1, -1):
        x = keras.layers.UpSampling2D(interpolation="bilinear", name=f"dec{f}_up")(x)
        gated = _attention_gate(x, skips[f], spec, filters[f], f"dec{f}_gate")
        x = keras.layers.Concatenate(axis=-1, name=f"dec{f}_concat")([x, gated])
        x = _block(x, spec, f, f"dec{f}")
    return keras.Model(inputs, output_head(x, spec), name=spec.variant)
