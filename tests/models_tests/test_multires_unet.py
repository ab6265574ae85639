"""Tests for the MultiResUNet family (models/multires_unet.py, models/families/multires_unet.py)."""

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
from models.families.multires_unet import FAMILY, branch_widths

# Keras's count at the reference configuration (256×256×3, base_filters 16, num_layers 7, batch norm, alpha
# 1.67). The reference repo prints no summary for it; a literal transcription of TensorflowMultiResUNet.create
# (ReLU, BN, Lambda rescale, sigmoid head) built with Keras 3 counts the same 32,716,455.
REFERENCE_PARAMS = 32_716_455
REFERENCE_MACS = 7_816_218_208


def _spec(**overrides: object) -> UNetSpec:
    return UNetSpec.tiny(variant="multires_unet", **overrides)


def _reference_spec() -> UNetSpec:
    return UNetSpec.from_dict({**FAMILY.reference, "variant": "multires_unet"})


# --- builds, trains, reloads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [1, 3])
@pytest.mark.parametrize("image_size", [32, 64])
def test_builds_trains_and_reloads(image_size: int, num_classes: int, tmp_path: Path) -> None:
    # Two levels (an encoder level with its residual path, the bridge, one decoder level) keep the graph small.
    spec = _spec(image_size=image_size, num_layers=2, num_classes=num_classes, batch_norm=num_classes == 3)
    check_builds_trains_and_reloads(spec, tmp_path)


# --- cost ------------------------------------------------------------------------------------------------------

COST_SPECS = [
    _spec(),
    _spec(batch_norm=True),
    _spec(channels=3, num_classes=3, batch_norm=True, standardize_input=True),
    _spec(image_size=64, num_layers=4, base_filters=6, rescale_input=False, options={"alpha": 2.5}),
]


@pytest.mark.parametrize("spec", COST_SPECS, ids=range(len(COST_SPECS)))
def test_cost_matches_keras(spec: UNetSpec) -> None:
    check_cost_matches_keras(spec)  # params and MACs exact
    assert estimate_cost(spec).activation_bytes_per_image == keras_activation_bytes(build_model(spec))


def test_reference_parameter_count() -> None:
    spec = _reference_spec()
    spec.validate()
    model = build_model(spec)
    assert model.count_params() == REFERENCE_PARAMS
    cost = estimate_cost(spec)
    assert cost.params == REFERENCE_PARAMS
    assert cost.forward_macs_per_image == keras_macs(model) == REFERENCE_MACS
    assert FAMILY.reference_model == "TensorflowMultiResUNet"
    assert FAMILY.options == {"alpha": 1.67}
    assert FAMILY.uses == ("base_filters", "num_layers")


# --- rules -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"options": {"alpha": 0}}, "alpha=0"),
        ({"options": {"alpha": -1.0}}, r"alpha=-1\.0"),
        ({"options": {"alpha": True}}, "alpha=True"),
        ({"options": {"alpha": "big"}}, "alpha='big'"),
        ({"base_filters": 2}, "base_filters=2 with alpha=1.67"),
        ({"base_filters": 4, "options": {"alpha": 1.0}}, "base_filters=4 with alpha=1.0"),
        ({"num_layers": 1}, "num_layers=1"),
        ({"image_size": 34}, "image_size=34 with num_layers=3"),
        ({"image_size": 32, "num_layers": 5}, r"num_layers=5 with image_size=32 \(bridge 2\)"),
        ({"options": {"width": 2}}, r"among \['alpha'\]"),
    ],
)
def test_validate_errors(overrides: dict[str, object], pattern: str) -> None:
    spec = _spec(**overrides)
    with pytest.raises(ValueError, match=pattern) as info:
        spec.validate()
    assert "Expected" in str(info.value)
    with pytest.raises(ValueError, match=pattern):
        build_model(spec)


def test_unused_fields_do_not_matter() -> None:
    """base_kernels, dilation and dropout_rate are not read (not in ``uses``): an even kernel is no error."""
    base = _spec()
    other = _spec(base_kernels=4, dilation=3, dropout_rate=0.3)
    other.validate()
    assert estimate_cost(other) == estimate_cost(base)


# --- structure -------------------------------------------------------------------------------------------------


def test_branch_widths_follow_the_reference() -> None:
    assert branch_widths(16, 1.67) == (4, 8, 13)  # int(26.72 * 0.167), int(26.72 * 0.333), int(26.72 * 0.5)
    assert branch_widths(32, 1.67) == (8, 17, 26)
    assert branch_widths(4, 1.67) == (1, 2, 3)


def test_structure() -> None:
    model = build_model(_spec(batch_norm=True, num_layers=3))
    names = {layer.name for layer in model.layers}
    # Every level is a MultiRes block of three chained 3×3 convolutions and a 1×1 shortcut.
    for block, filters in (("enc0", 4), ("enc1", 8), ("enc2", 16), ("dec1", 8), ("dec0", 4)):
        widths = branch_widths(filters, 1.67)
        for field, width in zip((3, 5, 7), widths, strict=True):
            layer = model.get_layer(f"{block}_conv{field}x{field}")
            assert layer.kernel_size == (3, 3) and layer.filters == width and not layer.use_bias
        assert model.get_layer(f"{block}_shortcut").kernel_size == (1, 1)
        assert model.get_layer(f"{block}_branches").output.shape[-1] == sum(widths)
    # Residual paths of num_layers - i units on the skips, none on the bridge.
    assert f"enc0_respath{2}_bn" in names and "enc0_respath3_add" not in names
    assert "enc1_respath1_bn" in names and "enc1_respath2_add" not in names
    assert not any(name.startswith("enc2_respath") for name in names)
    inbound = [t._keras_history.operation.name for t in model.get_layer("dec0_concat").input]
    assert inbound == ["dec0_up", "enc0_respath2_bn"]
    assert model.get_layer("dec0_concat").output.shape[-1] == 8
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)


def test_without_batch_norm_convolutions_have_bias() -> None:
    model = build_model(with_head(_spec(activation="elu"), 2))
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert model.get_layer("enc0_conv3x3").use_bias
    assert model.get_layer("enc0_conv3x3_act").activation is keras.activations.elu
    assert model.get_layer("head").activation.__name__ == "softmax"


def test_layer_names_are_deterministic() -> None:
    spec = _spec(batch_norm=True)
    assert [layer.name for layer in build_model(spec).layers] == [layer.name for layer in build_model(spec).layers]
