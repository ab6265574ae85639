"""The 2D UNet builder (TensorflowSlightlyFlexibleUNet, DESIGN §7)."""

from __future__ import annotations

import math

import keras

from models.spec import UNetSpec

__all__ = ["PerImageStandardization", "build_unet", "conv_block", "head_activation", "image_input", "output_head"]


@keras.saving.register_keras_serializable(package="unet_search")
class PerImageStandardization(keras.layers.Layer):
    """``(x − mean) / max(std, ε)`` over each image's pixels and channels (like tf.image.per_image_standardization)."""

    def __init__(self, epsilon: float = 1e-3, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
        ops = keras.ops
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        std = ops.sqrt(ops.mean(ops.square(x - mean), axis=(1, 2, 3), keepdims=True))
        return (x - mean) / ops.maximum(std, self.epsilon)

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "epsilon": self.epsilon}


def conv_block(
    x: keras.KerasTensor,
    *,
    filters: int,
    kernel: int,
    dilation: int,
    dropout_rate: float,
    batch_norm: bool,
    activation: str,
    name: str,
) -> keras.KerasTensor:
    """Two convolutions with a dropout between them: ``{name}_conv1 → [bn1] → drop → conv2 → [bn2]``.

    The dropout layer is always created (rate 0 is a no-op) so layer names do not depend on the rate.
    """

    def conv(inputs: keras.KerasTensor, index: int) -> keras.KerasTensor:
        out = keras.layers.Conv2D(
            filters,
            kernel,
            dilation_rate=dilation,
            padding="same",
            activation=activation,
            kernel_initializer="he_normal",
            name=f"{name}_conv{index}",
        )(inputs)
        if batch_norm:
            out = keras.layers.BatchNormalization(name=f"{name}_bn{index}")(out)
        return out

    x = conv(x, 1)
    x = keras.layers.Dropout(dropout_rate, name=f"{name}_drop")(x)
    return conv(x, 2)


def head_activation(spec: UNetSpec) -> str:
    """Sigmoid for one output channel, softmax for several classes."""
    return "sigmoid" if spec.num_classes == 1 else "softmax"


BACKGROUND_PRIOR = 0.9  # several classes: the background probability of an untrained model's head


def head_bias(spec: UNetSpec) -> keras.initializers.Initializer:
    """The head's bias at initialisation: zeros for one sigmoid channel (as the reference); for several classes, a
    background prior (RetinaNet's prior initialisation): softmax(bias) gives the background ``BACKGROUND_PRIOR``
    and each other class an equal share. Without it an untrained softmax head paints every pixel some class,
    which scores a chance dice (≈ 0.02 on 7 heart structures) that a model learning the background first falls
    below for many epochs, so early stopping took that chance score for the best."""
    k = spec.num_classes
    if k == 1:
        return keras.initializers.Zeros()
    background = math.log(BACKGROUND_PRIOR * (k - 1) / (1.0 - BACKGROUND_PRIOR))
    return keras.initializers.Constant([background] + [0.0] * (k - 1))


def image_input(spec: UNetSpec) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The input ``image`` (raw pixels, H × W × C) and what every family's first layer reads: rescaled by 1/255
    when ``spec.rescale_input``, then standardised per image when ``spec.standardize_input``."""
    inputs = keras.Input(
        shape=(spec.image_size, spec.image_size, spec.channels), dtype="float32", name="image"
    )
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs) if spec.rescale_input else inputs
    if spec.standardize_input:
        x = PerImageStandardization(name="standardize")(x)
    return inputs, x


def output_head(x: keras.KerasTensor, spec: UNetSpec) -> keras.KerasTensor:
    """Every family's output ``head``: a 1×1 convolution to ``spec.num_classes`` float32 probabilities (sigmoid for
    one channel, softmax for several, the bias at :func:`head_bias`)."""
    return keras.layers.Conv2D(spec.num_classes, 1, activation=head_activation(spec), dtype="float32",
                               bias_initializer=head_bias(spec), name="head")(x)


def build_unet(spec: UNetSpec) -> keras.Model:
    """Build the UNet described by ``spec``.

    Input ``image`` takes raw pixels (H, W, C), any numeric dtype (uint8 is cast to float32 by Keras); output
    ``head`` is float32 probabilities (H, W, num_classes), also under mixed precision: sigmoid for one channel
    (binary masks), softmax over the channels for several classes (class 0 the background).

    Raises:
        ValueError: if ``spec.validate()`` fails.
    """
    spec.validate()
    filters = spec.filters_schedule()
    kernels = spec.kernel_schedule()
    dilations = spec.dilation_schedule()
    rates = spec.dropout_schedule()

    inputs, x = image_input(spec)
    skips: list[keras.KerasTensor] = []
    last = spec.num_layers - 1
    for i in range(spec.num_layers):
        x = conv_block(
            x,
            filters=filters[i],
            kernel=kernels[i],
            dilation=dilations[i],
            dropout_rate=rates[i],
            batch_norm=spec.batch_norm,
            activation=spec.activation,
            name=f"enc{i}",
        )
        if i < last:
            skips.append(x)
            x = keras.layers.MaxPooling2D(pool_size=2, name=f"enc{i}_pool")(x)

    for f in range(spec.num_layers - 2, -1, -1):
        x = keras.layers.Conv2DTranspose(filters[f], 2, strides=2, padding="same", name=f"dec{f}_up")(x)
        x = keras.layers.Concatenate(axis=-1, name=f"dec{f}_concat")([x, skips[f]])
        x = conv_block(
            x,
            filters=filters[f],
            kernel=kernels[f],
            dilation=dilations[f],
            dropout_rate=rates[f],
            batch_norm=spec.batch_norm,
            activation=spec.activation,
            name=f"dec{f}",
        )

    return keras.Model(inputs, output_head(x, spec), name=spec.variant)
