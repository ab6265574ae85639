"""Checks every model family's tests share: it builds at 32² and 64², trains one step with the binary and the
multi-class head, saves and reloads to the same predictions, and its analytic cost agrees with Keras."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import keras
import numpy as np

from models import UNetSpec, build_model, estimate_cost, get_loss


def keras_macs(model: keras.Model) -> int:
    """MACs of the convolutions and dense layers, counted from the built layers (nested models included)."""
    total = 0
    for layer in _layers(model):
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, h, w, _ = layer.input.shape
            total += h * w * math.prod(layer.kernel.shape)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, _ = layer.output.shape
            total += h * w * math.prod(layer.kernel.shape)
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, _ = layer.output.shape
            total += h * w * math.prod(layer.kernel.shape)
        elif isinstance(layer, keras.layers.Dense):
            tokens = math.prod(layer.output.shape[1:-1]) if len(layer.output.shape) > 2 else 1
            total += tokens * math.prod(layer.kernel.shape)
    return total


def _layers(model: keras.Model) -> list[keras.layers.Layer]:
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_layers(layer))
        else:
            out.append(layer)
    return out


def check_builds_trains_and_reloads(spec: UNetSpec, tmp_path: Path) -> keras.Model:
    """Build ``spec``, train one step on random data, save and reload; the reloaded model predicts the same."""
    model = build_model(spec)
    assert model.input_shape == (None, spec.image_size, spec.image_size, spec.channels)
    assert model.output_shape == (None, spec.image_size, spec.image_size, spec.num_classes)
    assert model.get_layer("head").activation.__name__ == ("sigmoid" if spec.num_classes == 1 else "softmax")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, spec.image_size, spec.image_size, spec.channels)).astype("float32")
    if spec.num_classes == 1:
        masks = (rng.random((2, spec.image_size, spec.image_size, 1)) > 0.7).astype("float32")
    else:
        labels = rng.integers(0, spec.num_classes, (2, spec.image_size, spec.image_size))
        masks = np.eye(spec.num_classes, dtype="float32")[labels]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss("bce_dice"))
    history = model.fit(images, masks, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    before = model.predict(images, verbose=0)
    assert np.all(np.isfinite(before)) and before.shape == masks.shape
    path = tmp_path / f"{spec.variant}-{spec.image_size}-{spec.num_classes}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), before, rtol=1e-5, atol=1e-5)
    return model


def check_cost_matches_keras(spec: UNetSpec, *, macs_tolerance: float = 0.0) -> None:
    """The analytic parameter count equals Keras's; the MACs agree within ``macs_tolerance`` (relative)."""
    model = build_model(spec)
    cost = estimate_cost(spec)
    assert cost.params == model.count_params(), (cost.params, model.count_params())
    macs = keras_macs(model)
    assert abs(cost.forward_macs_per_image - macs) <= macs_tolerance * macs, (cost.forward_macs_per_image, macs)
    assert cost.activation_bytes_per_image > 0


def with_head(spec: UNetSpec, num_classes: int) -> UNetSpec:
    return dataclasses.replace(spec, num_classes=num_classes)


def keras_activation_bytes(model: keras.Model) -> int:
    """float32 bytes of every layer's output (the input excluded), as the analytic costs count them."""
    return 4 * sum(
        math.prod(layer.output.shape[1:])
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    )
