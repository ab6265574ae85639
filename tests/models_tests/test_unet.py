"""Tests for models.spec, models.unet, models.registry and models.cost."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from family_checks import keras_activation_bytes, keras_macs

from models import (
    VARIANTS,
    ModelCost,
    UNetSpec,
    build_model,
    build_unet,
    estimate_cost,
    estimate_training_memory_bytes,
)
from models.cost import ACTIVATION_OVERHEAD
from models.families import FAMILIES
from models.spec import VARIANT_NAMES

REFERENCE_PARAMS = 124_996_849
REFERENCE_MACS = 57_831_063_552


def _layer(model: keras.Model, name: str) -> keras.layers.Layer:
    return model.get_layer(name)


@pytest.fixture(scope="module")
def reference_model() -> keras.Model:
    return build_unet(UNetSpec())


# --- the reference model ----------------------------------------------------------------------------------


def test_reference_parameter_count(reference_model: keras.Model) -> None:
    assert reference_model.count_params() == REFERENCE_PARAMS
    assert estimate_cost(UNetSpec()).params == REFERENCE_PARAMS


def test_reference_shapes_and_schedules(reference_model: keras.Model) -> None:
    spec = UNetSpec()
    assert spec.kernel_schedule() == (9, 7, 5, 3, 3, 3, 3, 3)
    assert spec.dilation_schedule() == (3, 2, 1, 1, 1, 1, 1, 1)
    assert spec.bottleneck_size == 4
    expected = {
        "enc0_conv1": ((9, 9), (3, 3)),
        "enc1_conv2": ((7, 7), (2, 2)),
        "enc2_conv1": ((5, 5), (1, 1)),
        "enc3_conv1": ((3, 3), (1, 1)),
        "dec0_conv1": ((9, 9), (3, 3)),
        "dec1_conv2": ((7, 7), (2, 2)),
        "dec3_conv1": ((3, 3), (1, 1)),
    }
    for name, (kernel, dilation) in expected.items():
        layer = _layer(reference_model, name)
        assert layer.kernel_size == kernel, name
        assert layer.dilation_rate == dilation, name
    assert tuple(_layer(reference_model, "enc7_conv2").output.shape) == (None, 4, 4, 2048)
    assert tuple(_layer(reference_model, "dec6_up").output.shape) == (None, 8, 8, 1024)
    assert tuple(_layer(reference_model, "dec0_concat").output.shape) == (None, 512, 512, 32)
    assert tuple(reference_model.output.shape) == (None, 512, 512, 1)
    assert _layer(reference_model, "enc3_drop").rate == pytest.approx(0.15)
    assert _layer(reference_model, "dec5_drop").rate == pytest.approx(0.25)
    assert _layer(reference_model, "enc0_conv1").activation is keras.activations.relu
    assert _layer(reference_model, "head").activation is keras.activations.sigmoid
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in reference_model.layers)


def test_reference_cost(reference_model: keras.Model) -> None:
    cost = estimate_cost(UNetSpec())
    assert cost.forward_macs_per_image == REFERENCE_MACS == keras_macs(reference_model)
    assert cost.activation_bytes_per_image == keras_activation_bytes(reference_model)


# --- cost ---------------------------------------------------------------------------------------------------

COST_SPECS = [
    UNetSpec.tiny(),
    UNetSpec.tiny(batch_norm=True),
    UNetSpec.tiny(num_classes=3, channels=3),
    UNetSpec.tiny(image_size=64, num_layers=4, base_kernels=7, dilation=3, base_filters=6, dropout_rate=0.1),
    UNetSpec.tiny(
        image_size=64, num_layers=2, base_kernels=5, batch_norm=True, num_classes=2, rescale_input=False
    ),
    UNetSpec.tiny(base_kernels=1),
]


@pytest.mark.parametrize("spec", COST_SPECS, ids=lambda s: f"{s.image_size}-{s.num_layers}-{s.base_kernels}")
def test_estimate_cost_matches_keras(spec: UNetSpec) -> None:
    model = build_model(spec)
    cost = estimate_cost(spec)
    assert isinstance(cost, ModelCost)
    assert cost.params == model.count_params()
    assert cost.forward_macs_per_image == keras_macs(model)
    assert cost.activation_bytes_per_image == keras_activation_bytes(model)


def test_estimate_training_memory() -> None:
    spec = UNetSpec()
    cost = estimate_cost(spec)
    one = estimate_training_memory_bytes(spec, batch_size=1)
    two = estimate_training_memory_bytes(spec, batch_size=2)
    assert one == int(16 * cost.params + ACTIVATION_OVERHEAD * cost.activation_bytes_per_image)
    assert two - one == pytest.approx(ACTIVATION_OVERHEAD * cost.activation_bytes_per_image, abs=1)
    assert 2 * 2**30 < two < 4 * 2**30  # reference at batch 2: ~3 GiB by this estimate


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_estimate_training_memory_rejects_bad_batch(batch_size: object) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        estimate_training_memory_bytes(UNetSpec.tiny(), batch_size=batch_size)  # type: ignore[arg-type]


# --- shapes, names, dtypes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"channels": 3},
        {"channels": 3, "num_classes": 2},
        {"image_size": 64, "num_layers": 4, "batch_norm": True},
        {"image_size": 16, "num_layers": 2, "num_classes": 4, "rescale_input": False},
        {"image_size": 48, "num_layers": 3, "activation": "elu", "dropout_rate": 0.2},
    ],
)
def test_output_shape(overrides: dict[str, object]) -> None:
    spec = UNetSpec.tiny(**overrides)
    model = build_model(spec)
    size, channels, classes = spec.image_size, spec.channels, spec.num_classes
    assert tuple(model.input.shape) == (None, size, size, channels)
    x = np.random.default_rng(0).integers(0, 256, size=(2, size, size, channels)).astype("float32")
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, size, size, classes)
    assert y.dtype == np.float32
    # The output is the sigmoid (one channel) or the softmax over the classes (several) of a 1×1 convolution of
    # the last decoder features, computed here by hand.
    head = _layer(model, "head")
    features = np.asarray(keras.Model(model.input, head.input)(x, training=False), dtype=np.float64)
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in head.get_weights())
    logits = features @ kernel[0, 0] + bias
    if classes == 1:
        expected = 1.0 / (1.0 + np.exp(-logits))
    else:
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        expected = shifted / shifted.sum(axis=-1, keepdims=True)
        np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-6)


def test_layer_names_are_deterministic() -> None:
    spec = UNetSpec.tiny(batch_norm=True)
    names = [layer.name for layer in build_unet(spec).layers]
    assert names == [layer.name for layer in build_unet(spec).layers]
    assert names == [
        "image", "rescale",
        "enc0_conv1", "enc0_bn1", "enc0_drop", "enc0_conv2", "enc0_bn2", "enc0_pool",
        "enc1_conv1", "enc1_bn1", "enc1_drop", "enc1_conv2", "enc1_bn2", "enc1_pool",
        "enc2_conv1", "enc2_bn1", "enc2_drop", "enc2_conv2", "enc2_bn2",
        "dec1_up", "dec1_concat", "dec1_conv1", "dec1_bn1", "dec1_drop", "dec1_conv2", "dec1_bn2",
        "dec0_up", "dec0_concat", "dec0_conv1", "dec0_bn1", "dec0_drop", "dec0_conv2", "dec0_bn2",
        "head",
    ]  # fmt: skip


def test_no_rescale_layer_when_disabled() -> None:
    names = [layer.name for layer in build_unet(UNetSpec.tiny(rescale_input=False)).layers]
    assert "rescale" not in names
    assert names[:2] == ["image", "enc0_conv1"]


def test_decoder_concatenates_upsampled_then_skip() -> None:
    model = build_unet(UNetSpec.tiny())
    concat = _layer(model, "dec1_concat")
    inbound = [tensor._keras_history.operation.name for tensor in concat.input]
    assert inbound == ["dec1_up", "enc1_conv2"]


@pytest.mark.parametrize("rescale_input", [True, False])
def test_uint8_input(rescale_input: bool) -> None:
    import tensorflow as tf

    model = build_unet(UNetSpec.tiny(channels=3, rescale_input=rescale_input))
    raw = np.random.default_rng(1).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    expected = np.asarray(model(raw.astype("float32"), training=False))
    from_tensor = np.asarray(model(tf.constant(raw), training=False))
    from_predict = model.predict(raw, verbose=0)
    np.testing.assert_allclose(from_tensor, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(from_predict, expected, rtol=1e-5, atol=1e-6)


def test_rescale_divides_by_255() -> None:
    model = build_unet(UNetSpec.tiny())
    rescale = keras.Model(model.input, _layer(model, "rescale").output)
    out = np.asarray(rescale(np.full((1, 32, 32, 1), 255, dtype=np.uint8)))
    np.testing.assert_allclose(out, 1.0)


def test_head_is_float32_under_mixed_precision() -> None:
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_unet(UNetSpec.tiny())
    finally:
        keras.config.set_dtype_policy(previous)
    assert _layer(model, "enc0_conv1").compute_dtype == "float16"
    assert _layer(model, "head").compute_dtype == "float32"
    assert model.output.dtype == "float32"


# --- spec ------------------------------------------------------------------------------------------------------


def test_spec_defaults_are_reference() -> None:
    spec = UNetSpec()
    assert (spec.image_size, spec.channels, spec.num_classes) == (512, 3, 1)
    assert (spec.base_filters, spec.base_kernels, spec.num_layers, spec.dilation) == (16, 9, 8, 3)
    assert spec.dropout_rate == 0.05 and spec.batch_norm is False and spec.activation == "relu"
    assert spec.rescale_input is True and spec.variant == "unet"
    spec.validate()


def test_tiny_spec() -> None:
    spec = UNetSpec.tiny(num_classes=2)
    assert (spec.image_size, spec.channels, spec.base_filters, spec.base_kernels) == (32, 1, 4, 3)
    assert (spec.num_layers, spec.dilation, spec.dropout_rate, spec.num_classes) == (3, 1, 0.0, 2)
    assert spec.bottleneck_size == 8
    spec.validate()


def test_schedules() -> None:
    spec = UNetSpec.tiny(base_kernels=7, dilation=2, num_layers=3, dropout_rate=0.1, base_filters=8)
    assert spec.kernel_schedule() == (7, 5, 3)
    assert spec.dilation_schedule() == (2, 1, 1)
    assert spec.filters_schedule() == (8, 16, 32)
    assert spec.dropout_schedule() == pytest.approx((0.0, 0.1, 0.2))
    assert UNetSpec.tiny(base_kernels=1).kernel_schedule() == (1, 1, 1)


def test_dict_round_trip() -> None:
    spec = UNetSpec.tiny(batch_norm=True, activation="gelu")
    values = spec.to_dict()
    assert values["batch_norm"] is True and values["variant"] == "unet"
    assert UNetSpec.from_dict(values) == spec
    assert UNetSpec.from_dict({}) == UNetSpec()


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown keys: \['base_filter'\]"):
        UNetSpec.from_dict({"base_filter": 8})


def test_spec_is_frozen() -> None:
    spec = UNetSpec.tiny()
    with pytest.raises(AttributeError):
        spec.num_layers = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"image_size": 0}, "image_size=0"),
        ({"channels": -1}, "channels=-1"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"base_filters": 2.5}, "base_filters=2.5"),
        ({"base_kernels": 4}, "base_kernels=4"),
        ({"dilation": 0}, "dilation=0"),
        ({"num_layers": 1}, "num_layers=1"),
        ({"num_layers": True}, "num_layers=True"),
        ({"image_size": 30}, "image_size=30 with num_layers=3"),
        ({"image_size": 64, "num_layers": 6}, "num_layers=6 with image_size=64"),
        ({"dropout_rate": -0.1}, "dropout_rate=-0.1"),
        ({"dropout_rate": 1.0}, "dropout_rate=1.0"),
        ({"dropout_rate": 0.5}, "dropout_rate=0.5 with num_layers=3"),
        ({"activation": "relux"}, "activation='relux'"),
        ({"batch_norm": "yes"}, "batch_norm='yes'"),
        ({"variant": "resunet"}, r"'unet', 'attention_unet'.*Received: variant='resunet'"),
    ],
)
def test_validate_errors(overrides: dict[str, object], pattern: str) -> None:
    spec = UNetSpec.tiny(**overrides)  # building an invalid spec is allowed (for reporting)
    with pytest.raises(ValueError, match=pattern) as info:
        spec.validate()
    assert "Expected" in str(info.value)
    with pytest.raises(ValueError, match=pattern):
        build_model(spec)


def test_reference_geometry_limit() -> None:
    UNetSpec(image_size=512, num_layers=8).validate()  # bottleneck 4
    with pytest.raises(ValueError, match="bottleneck 2"):
        UNetSpec(image_size=256, num_layers=8).validate()


# --- registry -----------------------------------------------------------------------------------------------


def test_registry() -> None:
    assert VARIANTS["unet"] is build_unet and tuple(VARIANTS) == VARIANT_NAMES == tuple(FAMILIES)
    model = build_model(UNetSpec.tiny())
    assert isinstance(model, keras.Model)
    assert model.name == "unet"


def test_build_model_unknown_variant() -> None:
    with pytest.raises(ValueError, match=r"one of \['unet', 'attention_unet', .*\]. Received: variant='nope'"):
        build_model(UNetSpec.tiny(variant="nope"))
