"""Tests for the Attention UNet family (models/attention_unet.py, models/families/attention_unet.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import pytest
from family_checks import check_builds_trains_and_reloads, check_cost_matches_keras, keras_activation_bytes

from models import UNetSpec, build_model, estimate_cost
from models.families import family
from models.families.attention_unet import FAMILY

# The reference's own summary of this configuration (Tensorflow-Image-Segmentation-API, the Attention-UNET
# appendix of a project README, 16 filters, 6 levels, batch norm, 3×3): "Total params: 8,229,073" — the same.
REFERENCE_PARAMS = 8_229_073


def _spec(**overrides: object) -> UNetSpec:
    return UNetSpec.tiny(variant="attention_unet", **overrides)


def _inbound(model: keras.Model, name: str) -> list[str]:
    inputs = model.get_layer(name).input
    inputs = inputs if isinstance(inputs, list) else [inputs]
    return [tensor._keras_history.operation.name for tensor in inputs]


@pytest.mark.parametrize(
    "overrides",
    [{"num_classes": 1}, {"image_size": 64, "num_layers": 4, "num_classes": 3, "batch_norm": True, "channels": 3}],
    ids=["32-binary", "64-three-classes-bn"],
)
def test_builds_trains_and_reloads(overrides: dict[str, object], tmp_path: Path) -> None:
    check_builds_trains_and_reloads(_spec(**overrides), tmp_path)


@pytest.mark.parametrize(
    "spec",
    [
        _spec(),
        _spec(batch_norm=True, num_classes=3),
        _spec(channels=3, base_kernels=5, dilation=2, dropout_rate=0.3),
        _spec(image_size=64, num_layers=4, batch_norm=True, standardize_input=True, rescale_input=False),
    ],
    ids=["plain", "bn-3-classes", "rgb-k5-d2", "64-bn-standardize"],
)
def test_cost_matches_keras(spec: UNetSpec) -> None:
    check_cost_matches_keras(spec, macs_tolerance=0.0)
    model = build_model(spec)
    assert estimate_cost(spec).activation_bytes_per_image == keras_activation_bytes(model)


def test_reference_parameter_count() -> None:
    spec = UNetSpec.from_dict({**FAMILY.reference, "variant": "attention_unet"})
    assert build_model(spec).count_params() == REFERENCE_PARAMS
    assert estimate_cost(spec).params == REFERENCE_PARAMS


def test_family_metadata() -> None:
    assert family("attention_unet") is FAMILY
    assert FAMILY.reference_model == "TensorflowAttentionUNet"
    assert FAMILY.uses == ("base_filters", "base_kernels", "num_layers", "dilation", "dropout_rate")
    assert FAMILY.options == {}


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"base_kernels": 4}, "base_kernels=4"),
        ({"num_layers": 1}, "num_layers=1"),
        ({"image_size": 30}, "image_size=30 with num_layers=3"),
        ({"image_size": 64, "num_layers": 6}, "num_layers=6 with image_size=64"),
        ({"dropout_rate": 1.0}, "dropout_rate=1.0"),
        ({"dropout_rate": -0.1}, "dropout_rate=-0.1"),
        ({"options": {"gate": 1}}, r"Received: \['gate'\]"),
    ],
)
def test_validate_errors(overrides: dict[str, object], pattern: str) -> None:
    spec = _spec(**overrides)
    with pytest.raises(ValueError, match=pattern) as info:
        build_model(spec)
    assert "Expected" in str(info.value)


def test_constant_dropout_rate() -> None:
    # The reference drops out at the same rate at every level, so the UNet's rate * level limit does not apply.
    spec = _spec(dropout_rate=0.5)
    spec.validate()
    model = build_model(spec)
    rates = {layer.name: layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)}
    assert set(rates) >= {"enc0_drop", "enc2_drop", "dec0_drop", "dec1_gate_ws_drop"}
    assert set(rates.values()) == {0.5}


@pytest.mark.parametrize("batch_norm", [False, True])
def test_every_skip_is_gated(batch_norm: bool) -> None:
    spec = _spec(image_size=64, num_layers=4, batch_norm=batch_norm)
    model = build_model(spec)
    assert not any(isinstance(layer, keras.layers.Conv2DTranspose) for layer in model.layers)
    skip = "act2" if batch_norm else "drop"
    for f in range(spec.num_layers - 1):
        assert model.get_layer(f"dec{f}_up").interpolation == "bilinear"
        assert _inbound(model, f"dec{f}_gate_mul") == [f"dec{f}_gate_psi", f"enc{f}_{skip}"]
        assert _inbound(model, f"dec{f}_gate_ws") == [f"enc{f}_{skip}"]
        assert _inbound(model, f"dec{f}_gate_wg") == [f"dec{f}_up"]
        assert _inbound(model, f"dec{f}_concat") == [f"dec{f}_up", f"dec{f}_gate_mul"]
        assert model.get_layer(f"dec{f}_gate_psi").activation is keras.activations.sigmoid
        assert model.get_layer(f"dec{f}_gate_psi").filters == spec.filters_schedule()[f]
    assert _inbound(model, "head") == [f"dec0_{skip}"]
    names = [layer.name for layer in model.layers]
    assert names == [layer.name for layer in build_model(spec).layers]
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) is batch_norm


def test_kernel_and_dilation_schedules() -> None:
    spec = dataclasses.replace(_spec(image_size=64, num_layers=4), base_kernels=7, dilation=2)
    model = build_model(spec)
    assert model.get_layer("enc0_conv1").kernel_size == (7, 7)
    assert model.get_layer("enc0_conv1").dilation_rate == (2, 2)
    assert model.get_layer("dec1_conv2").kernel_size == (5, 5)
    assert model.get_layer("dec1_conv2").dilation_rate == (1, 1)
    assert model.get_layer("dec0_gate_wg").kernel_size == (1, 1)
