"""Swin-UNet (models/swin_unet.py, models/families/swin_unet.py): builds, trains, reloads; cost equals Keras;
the reference configuration's size; feasibility rules; structure."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from family_checks import check_builds_trains_and_reloads, check_cost_matches_keras, keras_macs, with_head

from models import UNetSpec, build_model, estimate_cost
from models.families.swin_unet import FAMILY, attention_macs, level_heads, level_windows
from models.swin_unet import WindowAttention

SMALL = {"patch_size": 2, "num_mlp": 16, "num_heads": 2}


def _spec(**overrides: object) -> UNetSpec:
    options = {**SMALL, **overrides.pop("options", {})}  # type: ignore[dict-item]
    return UNetSpec.tiny(variant="swin_unet", options=options, **overrides)


@pytest.mark.parametrize("num_classes", [1, 3])
@pytest.mark.parametrize("size", [32, pytest.param(64, marks=pytest.mark.slow)])
def test_builds_trains_and_reloads(size: int, num_classes: int, tmp_path: Path) -> None:
    # Two levels and three blocks (one shifted) keep the graph small: tracing, not arithmetic, costs time here.
    spec = _spec(image_size=size, channels=3 if size == 64 else 1, num_layers=2, options={"stack_num_up": 1})
    check_builds_trains_and_reloads(with_head(spec, num_classes), tmp_path)


COST_SPECS = [
    _spec(),
    _spec(batch_norm=True, channels=3, num_classes=3),
    _spec(image_size=64, num_layers=4, options={"window_size": 2, "stack_num_down": 1, "stack_num_up": 3}),
    _spec(channels=3, rescale_input=False, standardize_input=True, options={"patch_size": 4, "shift_window": False,
                                                                              "window_size": 2, "num_heads": 1}),
]


@pytest.mark.parametrize("spec", COST_SPECS, ids=range(len(COST_SPECS)))
def test_cost_matches_keras(spec: UNetSpec) -> None:
    model = build_model(spec)
    cost = estimate_cost(spec)
    assert cost.params == model.count_params()
    # Keras's layer count misses only the attention matmuls, which the cost adds (exactly).
    assert cost.forward_macs_per_image == keras_macs(model) + attention_macs(spec)
    check_cost_matches_keras(spec, macs_tolerance=attention_macs(spec) / keras_macs(model) + 1e-9)


def test_reference_parameter_count() -> None:
    spec = UNetSpec.from_dict({**FAMILY.reference, "variant": "swin_unet"})
    spec.validate()
    assert level_windows(spec) == (4, 2, 2, 2) and level_heads(spec) == (4, 8, 8, 8)
    model = build_model(spec)  # ~1 s
    # The reference (Keras 2) would count 26,652,192 by the same layers: one less for its bias-free head, plus
    # 142,752 values of the tf.Variables it keeps for the relative-position indices (1,184) and the shifted-window
    # masks (141,568), which Keras 2 tracks as non-trainable weights and ours keeps as constants. (Derived from
    # its source; no printed summary of this configuration was found.)
    assert model.count_params() == 26_509_441
    assert estimate_cost(spec).params == 26_509_441
    assert estimate_cost(spec).forward_macs_per_image == keras_macs(model) + attention_macs(spec) == 9_234_808_832


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"image_size": 36}, "image_size=36 with patch_size=2, num_layers=3"),
        ({"num_layers": 1}, "num_layers=1"),
        ({"options": {"patch_size": 3}}, "patch_size"),
        ({"base_filters": 6, "options": {"patch_size": 4}}, "base_filters=6 with patch_size=4"),
        ({"options": {"window_size": 3}}, "window_size=3"),
        ({"options": {"window_size": 6}}, "window_size=6"),  # 6 does not divide the 16×16 grid
        ({"options": {"num_heads": 3}}, "num_heads=3"),
        ({"options": {"num_mlp": 0}}, "num_mlp=0"),
        ({"options": {"stack_num_up": 1.5}}, "stack_num_up=1.5"),
        ({"options": {"shift_window": "yes"}}, "shift_window='yes'"),
        ({"options": {"patch": 2}}, "among"),
    ],
)
def test_validate_errors(overrides: dict[str, object], pattern: str) -> None:
    spec = _spec(**overrides)
    with pytest.raises(ValueError, match=pattern) as info:
        spec.validate()
    assert "Expected" in str(info.value)


def test_windows_are_clipped_to_small_grids() -> None:
    """Swin's rule: a level whose grid is no larger than its window is one unshifted window (B14 sampled depth-6
    Swin-UNets at 128² whose 1×1 deepest grid had 2×2 windows: infeasible, until this)."""
    from models.families.swin_unet import level_grids

    spec = UNetSpec(image_size=128, channels=1, base_filters=8, num_layers=6, variant="swin_unet")
    assert level_grids(spec) == (32, 16, 8, 4, 2, 1) and level_windows(spec) == (4, 2, 2, 2, 2, 1)
    spec.validate()
    assert estimate_cost(spec).params == build_model(spec).count_params()


def test_structure() -> None:
    spec = _spec()  # 32 px, patch 2: grids 16, 8, 4; windows 4, 2, 2; heads 2, 4, 4
    model = build_model(spec)
    names = {layer.name for layer in model.layers}
    assert {"patch_embed", "pos_embed", "enc1_merge", "enc2_merge", "dec1_expand", "dec0_concat", "dec0_proj",
            "final_expand", "final_expand_d2s", "head"} <= names
    attn = {layer.name: layer for layer in model.layers if isinstance(layer, WindowAttention)}
    assert len(attn) == 2 * 3 + 2 * 2  # stack_num_down on 3 levels, stack_num_up on 2
    assert (attn["enc0_block0_attn"].shift, attn["enc0_block1_attn"].shift) == (0, 2)
    assert (attn["enc1_block1_attn"].window, attn["enc1_block1_attn"].shift) == (2, 1)
    assert attn["dec0_block0_attn"].num_heads == 2 and attn["enc2_block0_attn"].num_heads == 4
    assert tuple(model.get_layer("enc2_block1_add2").output.shape) == (None, 4, 4, 16)
    assert tuple(model.get_layer("dec0_concat").output.shape) == (None, 16, 16, 8)
    assert tuple(model.get_layer("final_expand_d2s").output.shape) == (None, 32, 32, 2)
    assert model.get_layer("enc0_block0_mlp1").activation is keras.activations.relu
    no_shift = build_model(_spec(options={"shift_window": False}))
    assert all(layer.shift == 0 for layer in no_shift.layers if isinstance(layer, WindowAttention))


def test_window_attention_stays_in_its_window() -> None:
    """Unshifted, a token only sees its own window; shifted, the mask keeps rolled-in tokens apart."""
    rng = np.random.default_rng(0)
    qkv = rng.normal(size=(1, 8, 8, 12)).astype("float32")
    changed = qkv.copy()
    changed[0, 0, 0] += 5.0  # a token of the top-left 4×4 window
    plain = WindowAttention(4, 2, 0)
    diff = np.abs(np.asarray(plain(changed)) - np.asarray(plain(qkv))).sum(axis=-1)[0]
    assert diff[:4, :4].max() > 0 and diff[4:, :].max() == 0 and diff[:, 4:].max() == 0
    shifted = WindowAttention(4, 2, 2)
    diff = np.abs(np.asarray(shifted(changed)) - np.asarray(shifted(qkv))).sum(axis=-1)[0]
    # Rolled by 2, token (0, 0) lands in the bottom-right window's corner region (rows/cols 6..7 of the roll),
    # i.e. it only mixes with the tokens (0..1, 0..1) it was rolled in with.
    assert diff[:2, :2].max() > 0
    diff[:2, :2] = 0
    assert diff.max() < 1e-6
