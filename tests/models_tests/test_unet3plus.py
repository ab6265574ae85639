"""Tests for the UNet 3+ family (models/unet3plus.py, models/families/unet3plus.py)."""

from __future__ import annotations

from pathlib import Path

import keras
import pytest
from family_checks import check_builds_trains_and_reloads, check_cost_matches_keras, keras_activation_bytes

from models import UNetSpec, build_model, estimate_cost
from models.families import family
from models.families.unet3plus import FAMILY

# The reference (TensorflowUNet3Plus at 5 levels, 16 filters, batch norm) has 1,693,537 parameters (its structure
# rebuilt in Keras; no printed summary of it was found): its last layer is a 3×3 convolution from 80 channels to 1
# (721 parameters) where ours is the shared 1×1 head (81), 640 fewer.
REFERENCE_PARAMS = 1_692_897


def _spec(deep_supervision: bool = False, **overrides: object) -> UNetSpec:
    return UNetSpec.tiny(variant="unet3plus", options={"deep_supervision": deep_supervision}, **overrides)


def _inbound(model: keras.Model, name: str) -> list[str]:
    inputs = model.get_layer(name).input
    inputs = inputs if isinstance(inputs, list) else [inputs]
    return [tensor._keras_history.operation.name for tensor in inputs]


@pytest.mark.parametrize(
    "spec",
    [
        _spec(num_classes=1),
        _spec(deep_supervision=True, image_size=64, num_layers=4, num_classes=3, batch_norm=True, channels=3),
    ],
    ids=["32-binary", "64-three-classes-bn-deep-supervision"],
)
def test_builds_trains_and_reloads(spec: UNetSpec, tmp_path: Path) -> None:
    check_builds_trains_and_reloads(spec, tmp_path)


@pytest.mark.parametrize(
    "spec",
    [
        _spec(),
        _spec(batch_norm=True, num_classes=3),
        _spec(channels=3, base_kernels=5, dilation=2, dropout_rate=0.2),
        _spec(deep_supervision=True, image_size=64, num_layers=4, batch_norm=True, standardize_input=True,
              num_classes=3, rescale_input=False),
    ],
    ids=["plain", "bn-3-classes", "rgb-k5-d2", "64-bn-deep-supervision"],
)
def test_cost_matches_keras(spec: UNetSpec) -> None:
    check_cost_matches_keras(spec, macs_tolerance=0.0)
    model = build_model(spec)
    assert estimate_cost(spec).activation_bytes_per_image == keras_activation_bytes(model)


def test_reference_parameter_count() -> None:
    spec = UNetSpec.from_dict({**FAMILY.reference, "variant": "unet3plus"})
    assert build_model(spec).count_params() == REFERENCE_PARAMS
    assert estimate_cost(spec).params == REFERENCE_PARAMS


def test_family_metadata() -> None:
    assert family("unet3plus") is FAMILY
    assert FAMILY.reference_model == "TensorflowUNet3Plus"
    assert FAMILY.uses == ("base_filters", "base_kernels", "num_layers", "dilation", "dropout_rate")
    assert FAMILY.options == {"deep_supervision": False}
    assert UNetSpec.tiny(variant="unet3plus").option("deep_supervision") is False


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"base_kernels": 4}, "base_kernels=4"),
        ({"num_layers": 1}, "num_layers=1"),
        ({"image_size": 30}, "image_size=30 with num_layers=3"),
        ({"image_size": 64, "num_layers": 6}, "num_layers=6 with image_size=64"),
        ({"dropout_rate": 0.5}, "dropout_rate=0.5"),
        ({"dropout_rate": -0.1}, "dropout_rate=-0.1"),
        ({"options": {"deep_supervision": "yes"}}, "deep_supervision='yes'"),
        ({"options": {"cgm": True}}, r"Received: \['cgm'\]"),
    ],
)
def test_validate_errors(overrides: dict[str, object], pattern: str) -> None:
    spec = UNetSpec.tiny(variant="unet3plus", **overrides)
    with pytest.raises(ValueError, match=pattern) as info:
        build_model(spec)
    assert "Expected" in str(info.value)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_full_scale_skips(batch_norm: bool) -> None:
    spec = _spec(image_size=64, num_layers=4, batch_norm=batch_norm)
    model = build_model(spec)
    out = "act" if batch_norm else "drop"
    layers = spec.num_layers
    for level in range(layers - 1):
        concat = model.get_layer(f"dec{level}_concat")
        assert _inbound(model, f"dec{level}_concat") == [f"dec{level}_in{s}_{out}" for s in range(layers)]
        assert concat.output.shape[-1] == layers * spec.base_filters
        for s in range(layers):
            if s < level:
                assert model.get_layer(f"dec{level}_in{s}_pool").pool_size == (2 ** (level - s),) * 2
                assert _inbound(model, f"dec{level}_in{s}_pool") == [f"enc{s}_{out}2"]
            elif s == level:
                assert _inbound(model, f"dec{level}_in{s}_conv") == [f"enc{s}_{out}2"]
            else:
                up = model.get_layer(f"dec{level}_in{s}_up")
                assert up.size == (2 ** (s - level),) * 2 and up.interpolation == "bilinear"
                source = f"enc{s}_{out}2" if s == layers - 1 else f"dec{s}_fuse_{out}"
                assert _inbound(model, f"dec{level}_in{s}_up") == [source]
    assert _inbound(model, "head") == [f"dec0_fuse_{out}"]
    assert model.get_layer("enc1_drop1").rate == 0.0 and not any(name.startswith("ds") for name in _names(model))
    assert _names(model) == _names(build_model(spec))


def _names(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers]


def test_encoder_dropout_doubles_on_second_conv() -> None:
    model = build_model(_spec(dropout_rate=0.2))
    assert model.get_layer("enc2_drop1").rate == pytest.approx(0.2)
    assert model.get_layer("enc2_drop2").rate == pytest.approx(0.4)
    assert model.get_layer("dec0_fuse_drop").rate == pytest.approx(0.2)


def test_deep_supervision_feeds_the_head() -> None:
    spec = _spec(deep_supervision=True, num_classes=3)
    model = build_model(spec)
    assert [output.name for output in model.outputs] == [model.get_layer("head").output.name]
    assert _inbound(model, "ds_concat") == ["dec0_fuse_drop", "ds1_up", "ds2_up"]
    assert _inbound(model, "ds1_conv") == ["dec1_fuse_drop"]
    assert _inbound(model, "ds2_conv") == ["enc2_drop2"]
    assert model.get_layer("ds2_up").size == (4, 4)
    assert model.get_layer("ds_concat").output.shape[-1] == 3 * spec.base_filters + 2 * 3
    assert _inbound(model, "head") == ["ds_concat"]
