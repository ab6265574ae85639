"""EfficientNet-UNet (models/efficient_unet.py, models/families/efficient_unet.py): builds, trains, reloads; cost
equals Keras; the reference configuration's size; feasibility rules; structure and input scaling."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from family_checks import check_builds_trains_and_reloads, check_cost_matches_keras, keras_macs, with_head

from models import UNetSpec, build_model, estimate_cost
from models.families.efficient_unet import FAMILY, round_filters, stage_output_layer


def _spec(**overrides: object) -> UNetSpec:
    return UNetSpec.tiny(variant="efficient_unet", **overrides)


# Each takes ~30 s on 2 cores (tracing EfficientNet's ~240 layers for fit, predict and reload), so only one runs
# unmarked.
@pytest.mark.parametrize(
    ("size", "num_classes"),
    [(32, 1), pytest.param(32, 3, marks=pytest.mark.slow), pytest.param(64, 1, marks=pytest.mark.slow),
     pytest.param(64, 3, marks=pytest.mark.slow)],
)
def test_builds_trains_and_reloads(size: int, num_classes: int, tmp_path: Path) -> None:
    spec = with_head(_spec(image_size=size, channels=3 if size == 64 else 1, batch_norm=size == 64), num_classes)
    model = check_builds_trains_and_reloads(spec, tmp_path)
    assert model.get_layer("encoder").get_layer("stem_conv").kernel.shape == (3, 3, spec.channels, 32)


COST_SPECS = [
    _spec(),
    _spec(batch_norm=True, channels=3, num_classes=3),
    _spec(image_size=64, rescale_input=False, standardize_input=True, options={"efficientnet": "B1"}),
    _spec(image_size=64, channels=3, batch_norm=True, options={"efficientnet": "B3"}),
]


@pytest.mark.parametrize("spec", COST_SPECS, ids=range(len(COST_SPECS)))
def test_cost_matches_keras(spec: UNetSpec) -> None:
    check_cost_matches_keras(spec)  # params equal; MACs equal (tolerance 0): the encoder's block table is exact


def test_reference_parameter_count() -> None:
    spec = UNetSpec.from_dict({**FAMILY.reference, "variant": "efficient_unet"})
    model = build_model(spec)  # ~1 s
    # The reference's TensorflowEfficientUNet (B0, 512×512×3) has the same layers, so the same count (derived from
    # its source: the same Keras EfficientNetB0 layers up to block7a, the same CBAR decoder and sigmoid head).
    assert model.count_params() == 6_292_804
    assert estimate_cost(spec).params == 6_292_804
    assert estimate_cost(spec).forward_macs_per_image == keras_macs(model) == 5_630_751_232


@pytest.mark.slow
@pytest.mark.parametrize("name", ["B2", "B4", "B5", "B6", "B7"])
def test_larger_encoders_cost_matches_keras(name: str) -> None:
    check_cost_matches_keras(_spec(channels=3, batch_norm=True, options={"efficientnet": name}))


def test_width_rounding() -> None:
    assert [round_filters(32, w) for w in (1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0)] == [32, 32, 40, 48, 48, 56, 64]
    assert stage_output_layer("B0", 1) == "block1a_project_bn" and stage_output_layer("B0", 7) == "block7a_project_bn"
    assert stage_output_layer("B0", 5) == "block5c_add" and stage_output_layer("B3", 1) == "block1b_add"


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"image_size": 48}, "image_size=48"),
        ({"options": {"efficientnet": "B8"}}, "efficientnet='B8'"),
        ({"options": {"encoder_weights": None}}, "encoder_weights=None"),
        ({"options": {"encoder_weights": "imagenet"}}, "channels=1"),
        ({"channels": 3, "rescale_input": False, "options": {"encoder_weights": "imagenet"}}, "rescale_input=False"),
        ({"options": {"encoder": "B0"}}, "among"),
    ],
)
def test_validate_errors(overrides: dict[str, object], pattern: str) -> None:
    spec = _spec(**overrides)
    with pytest.raises(ValueError, match=pattern) as info:
        spec.validate()
    assert "Expected" in str(info.value)


def test_structure_and_input_scaling() -> None:
    model = build_model(_spec(image_size=64, batch_norm=True))
    encoder = model.get_layer("encoder")
    assert [tuple(t.shape) for t in encoder.outputs] == [
        (None, 2, 2, 320), (None, 4, 4, 112), (None, 8, 8, 40), (None, 16, 16, 24), (None, 32, 32, 16)]
    assert "top_conv" not in {layer.name for layer in encoder.layers}
    concat = model.get_layer("dec0_concat")
    assert [t._keras_history.operation.name for t in concat.input] == ["dec0_up", "rescale"]
    assert tuple(model.get_layer("dec0_add").output.shape) == (None, 64, 64, 16)
    assert tuple(model.get_layer("bottleneck_add").output.shape) == (None, 2, 2, 320)
    # image_input's rescale is the only 1/255: the encoder's own Rescaling passes pixels through.
    rescaling = next(layer for layer in encoder.layers if isinstance(layer, keras.layers.Rescaling))
    assert rescaling.get_config()["scale"] == 1.0
    pixels = np.full((1, 4, 4, 1), 200.0, dtype="float32")
    np.testing.assert_allclose(np.asarray(rescaling(pixels)), pixels)
