"""Tests for the DeepLabV3+ family (models/deeplabv3plus.py, models/families/deeplabv3plus.py)."""

from __future__ import annotations

from pathlib import Path

import keras
import pytest
from family_checks import (
    check_builds_trains_and_reloads,
    check_cost_matches_keras,
    keras_activation_bytes,
    keras_macs,
    with_head,
)

from models import UNetSpec, build_model, estimate_cost
from models.families.deeplabv3plus import FAMILY, atrous_rates

# Keras's count at FAMILY.reference (512×512×3, base_filters 16, num_layers 6, output stride 16, rates 6/12/18,
# 256-filter ASPP, 48 low-level filters, separable, batch norm). The reference tool has no DeepLab model to compare
# with; the paper's Xception-65 / ResNet-101 versions have ~41 M / ~59 M parameters, mostly in the backbone that
# this light encoder replaces.
REFERENCE_PARAMS = 5_890_145
REFERENCE_MACS = 11_400_511_488

# Small heads for small images: output stride 8 (a 4×4 ASPP map at 32²), rates below the map side.
SMALL = {"output_stride": 8, "atrous_rates": "1,2,3", "aspp_filters": 8, "low_level_filters": 4}


def _spec(**overrides: object) -> UNetSpec:
    values: dict[str, object] = {"num_layers": 4, "options": SMALL}
    values.update(overrides)
    return UNetSpec.tiny(variant="deeplabv3plus", **values)


# --- builds, trains, reloads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [1, 3])
@pytest.mark.parametrize("image_size", [32, 64])
def test_builds_trains_and_reloads(image_size: int, num_classes: int, tmp_path: Path) -> None:
    spec = _spec(image_size=image_size, num_classes=num_classes, batch_norm=num_classes == 3, dropout_rate=0.1,
                 options={**SMALL, "separable": image_size == 32})
    check_builds_trains_and_reloads(spec, tmp_path)


# --- cost ------------------------------------------------------------------------------------------------------

COST_SPECS = [
    _spec(),
    _spec(batch_norm=True),
    _spec(image_size=64, num_layers=5, channels=3, num_classes=3, batch_norm=True, standardize_input=True,
          options={**SMALL, "separable": False, "atrous_rates": 2}),
    _spec(image_size=128, num_layers=6, rescale_input=False,
          options={"aspp_filters": 16, "low_level_filters": 8, "atrous_rates": "1,3,5,7"}),
]


@pytest.mark.parametrize("spec", COST_SPECS, ids=range(len(COST_SPECS)))
def test_cost_matches_keras(spec: UNetSpec) -> None:
    check_cost_matches_keras(spec)  # params and MACs exact
    assert estimate_cost(spec).activation_bytes_per_image == keras_activation_bytes(build_model(spec))


def test_reference_parameter_count() -> None:
    spec = UNetSpec.from_dict({**FAMILY.reference, "variant": "deeplabv3plus"})
    assert spec.options == FAMILY.options  # the reference configuration is the family's defaults
    model = build_model(spec)
    assert model.count_params() == REFERENCE_PARAMS
    cost = estimate_cost(spec)
    assert cost.params == REFERENCE_PARAMS
    assert cost.forward_macs_per_image == keras_macs(model) == REFERENCE_MACS
    assert tuple(model.get_layer("aspp_concat").output.shape) == (None, 32, 32, 5 * 256)
    assert tuple(model.get_layer("dec_concat").output.shape) == (None, 128, 128, 256 + 48)
    assert FAMILY.reference_model is None
    assert FAMILY.uses == ("base_filters", "num_layers", "dropout_rate")


# --- rules -----------------------------------------------------------------------------------------------------


def test_rates_beyond_the_aspp_map_are_allowed() -> None:
    """A rate at or past the ASPP map's side sees only its centre tap (a 1×1 convolution), as the paper's rates do
    on small images; refusing it would keep the default rates (6, 12, 18) off every image below 304 px."""
    _spec(options={**SMALL, "atrous_rates": "2,4"}).validate()  # a 4×4 map at 32², output stride 8
    _spec(num_layers=6).validate()  # encoder dilation 4 on that map
    _spec(image_size=128, num_layers=5, options={}).validate()  # the defaults at 128²: an 8×8 map


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"options": {**SMALL, "output_stride": 4}}, "output_stride=4"),
        ({"options": {**SMALL, "output_stride": True}}, "output_stride=True"),
        ({"options": {**SMALL, "atrous_rates": "1,x"}}, "atrous_rates='1,x'"),
        ({"options": {**SMALL, "atrous_rates": "0,1"}}, "atrous_rates='0,1'"),
        ({"options": {**SMALL, "atrous_rates": 1.5}}, "atrous_rates=1.5"),
        ({"options": {**SMALL, "aspp_filters": 0}}, "aspp_filters=0"),
        ({"options": {**SMALL, "low_level_filters": 2.0}}, "low_level_filters=2.0"),
        ({"options": {**SMALL, "separable": "yes"}}, "separable='yes'"),
        ({"num_layers": 3}, "num_layers=3 with output_stride=8"),
        ({"options": {**SMALL, "output_stride": 16}}, "num_layers=4 with output_stride=16"),
        ({"image_size": 36}, "image_size=36 with output_stride=8"),
        ({"dropout_rate": 1.0}, "dropout_rate=1.0"),
        ({"options": {"depth": 3}}, "Received: \\['depth'\\]"),
    ],
)
def test_validate_errors(overrides: dict[str, object], pattern: str) -> None:
    spec = _spec(**overrides)
    with pytest.raises(ValueError, match=pattern) as info:
        spec.validate()
    assert "Expected" in str(info.value)
    with pytest.raises(ValueError, match=pattern):
        build_model(spec)


def test_atrous_rates_forms() -> None:
    assert atrous_rates(UNetSpec(variant="deeplabv3plus")) == (6, 12, 18)
    assert atrous_rates(_spec(options={"atrous_rates": 3})) == (3, 6, 9)
    assert atrous_rates(_spec(options={"atrous_rates": "2, 4,8,16"})) == (2, 4, 8, 16)


def test_unused_fields_do_not_matter() -> None:
    """base_kernels and dilation are not read (not in ``uses``)."""
    other = _spec(base_kernels=4, dilation=3)
    other.validate()
    assert estimate_cost(other) == estimate_cost(_spec())


# --- structure -------------------------------------------------------------------------------------------------


def test_structure() -> None:
    spec = _spec(image_size=64, num_layers=5, batch_norm=True, options={**SMALL, "atrous_rates": "1,2,4"})
    model = build_model(spec)
    names = {layer.name for layer in model.layers}
    # Three max-pools reach stride 8; the stage past it dilates by 2.
    assert {"enc0_pool", "enc1_pool", "enc2_pool"} <= names and "enc3_pool" not in names
    assert tuple(model.get_layer("enc4_conv2").output.shape) == (None, 8, 8, 64)
    assert model.get_layer("enc4_conv1").dilation_rate == (2, 2)
    assert model.get_layer("enc3_conv1").dilation_rate == (1, 1)
    # ASPP: 1×1, one separable atrous branch per rate, the image pooling; projected.
    for j, rate in enumerate((1, 2, 4)):
        depthwise = model.get_layer(f"aspp_rate{j}_depthwise")
        assert isinstance(depthwise, keras.layers.DepthwiseConv2D) and depthwise.dilation_rate == (rate, rate)
    assert tuple(model.get_layer("aspp_pool").output.shape) == (None, 1, 1, 64)
    assert tuple(model.get_layer("aspp_concat").output.shape) == (None, 8, 8, 5 * 8)
    # Decoder: ASPP upsampled to stride 4 beside the projected stride-4 features of stage 2.
    inbound = [t._keras_history.operation.name for t in model.get_layer("dec_concat").input]
    assert inbound == ["dec_aspp_up", "dec_low_act"]
    low = model.get_layer("dec_low")
    assert low.input._keras_history.operation.name == "enc2_conv2_act"
    assert tuple(model.get_layer("dec_concat").output.shape) == (None, 16, 16, 8 + 4)
    assert model.get_layer("dec_up").interpolation == "bilinear"
    assert model.get_layer("aspp_drop").rate == spec.dropout_rate


def test_without_batch_norm_or_separable() -> None:
    model = build_model(with_head(_spec(activation="gelu", options={**SMALL, "separable": False}), 2))
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert not any(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in model.layers)
    assert model.get_layer("aspp_rate2").dilation_rate == (3, 3) and model.get_layer("aspp_rate2").use_bias
    assert model.get_layer("dec_conv1_act").activation is keras.activations.gelu
    assert model.get_layer("head").activation.__name__ == "softmax"


def test_layer_names_are_deterministic() -> None:
    spec = _spec(batch_norm=True)
    assert [layer.name for layer in build_model(spec).layers] == [layer.name for layer in build_model(spec).layers]
