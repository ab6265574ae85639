"""The reference tool's ``train_eval_infer.config`` (DESIGN §10) for one trial's values.

Our augmentation strengths are mapped back to its augmentation parameters (the inverse of the table in
``data/augment.py``); values are rendered as the Python literals the tool evaluates.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.families import FAMILIES
from search.config import AUGMENTATIONS, HYPERPARAMETER_DEFAULTS, VARIANT, Config
from search.config.specs import head_channels, specs_from_values

__all__ = ["LOSS_TO_REFERENCE", "reference_data_dir", "reference_ini_sections", "render_ini"]

logger = logging.getLogger(__name__)

# Our loss names → the reference tool's loss functions (it resolves the name in its own losses module).
LOSS_TO_REFERENCE: dict[str, str] = {
    "bce_dice": "bce_dice_loss",
    "dice": "dice_loss",
    "bce": "binary_crossentropy",
    "bce_iou": "bce_iou_loss",
}
# The reference tool's fixed augmentation settings (DESIGN §9, §10) that our strengths scale.
REF_ANGLES = [90, 180, 270]
REF_SHRINK = 0.2  # shrinks = [1 - 0.2·s]   (reference 0.8)
REF_SHEAR = 0.1  # shears = [0.1·s]         (reference 0.1)
REF_ALPHA = 1300  # alpah = 1300·s
REF_SIGMOIDS = [8.0]
REF_RSIGMA = 40
REF_SIGMA = 0.5
REF_DISTORTION = 0.02  # distortions = [0.02·s]
REF_LENS_RADIUS = 0.3
REF_LENS_AMOUNT = 0.3  # barrel +0.3·s, pincushion −0.3·s
REF_LENS_CENTERS = [(0.3, 0.3), (0.7, 0.3), (0.5, 0.5), (0.3, 0.7), (0.7, 0.7)]


def reference_ini_sections(
    cfg: Config, values: dict[str, Any], *, counts: dict[str, int] | None = None
) -> dict[str, list[tuple[str, Any]]]:
    """The reference tool's INI sections for one trial's values (Python values, rendered later).

    Args:
        counts: images per split (train/valid/test), used for steps_per_epoch and validation_steps
            when ``train.steps_per_epoch`` is not set.
    """
    v = {**HYPERPARAMETER_DEFAULTS, **values}
    d, t = cfg.data, cfg.train
    s = {name: float(v[f"augment.{name}"]) for name in AUGMENTATIONS}
    loss = str(v["loss"])
    ref_loss = LOSS_TO_REFERENCE.get(loss, loss)
    if loss != "bce_dice":
        logger.info("loss %r exported as %r; check that your copy of the reference tool defines it", loss, ref_loss)
    if t.activation != "relu":
        logger.warning("activation %r has no key in the reference INI (it always uses relu)", t.activation)
    root = d.root.rstrip("/\\") or "."
    train = _train_section(cfg, counts or {}, root)
    return {
        "model": [
            *_model_keys(cfg, v),
            ("learning_rate", float(v["learning_rate"])),
            ("clipvalue", t.clipvalue),
            ("loss", ref_loss),
            ("metrics", ["dice_coef"]),
            ("normalization", bool(v["batch_norm"])),
            ("input_normalize", t.rescale_input),
        ],
        "train": train,
        "eval": [
            ("image_datapath", reference_data_dir(root, "valid", "images")),
            ("mask_datapath", reference_data_dir(root, "valid", "masks")),
        ],
        "test": [
            ("image_datapath", reference_data_dir(root, "test", "images")),
            ("mask_datapath", reference_data_dir(root, "test", "masks")),
        ],
        "infer": [("images_dir", reference_data_dir(root, "test", "images")), ("output_dir", "./test_output")],
        # data.mask_threshold null (our per-dataset mask rule, data_fingerprint.json) has no INI form: the reference's 128
        "mask": _mask_section(cfg),
        "generator": [("debug", False), ("augmentation", any(x > 0 for x in s.values()))],
        **_augmentation_sections(s),
    }


def _model_keys(cfg: Config, v: dict[str, Any]) -> list[tuple[str, Any]]:
    """The ``[model]`` keys that describe the architecture: the reference tool's model class for the family (our
    family name where it has none), the image, the shared fields the family reads and the family's own options
    under their names."""
    d, fam = cfg.data, FAMILIES[str(v[VARIANT])]
    if fam.reference_model is None:
        logger.warning("model family %r has no model class in the reference tool; the INI names ours", fam.name)
    head = [
        ("model", fam.reference_model or fam.name),
        ("generator", True),
        ("image_width", d.image_size),
        ("image_height", d.image_size),
        ("image_channels", d.channels),
        ("num_classes", head_channels(d.num_classes)),
    ]
    if fam.reference_keys is not None and isinstance(d.channels, int):
        return head + fam.reference_keys(specs_from_values(cfg, v, seed=0).model)
    kernels, dilation = int(v["base_kernels"]), int(v["dilation"])
    shared: dict[str, Any] = {
        "base_filters": int(v["base_filters"]),
        "base_kernels": (kernels, kernels),
        "num_layers": int(v["num_layers"]),
        "dropout_rate": float(v["dropout_rate"]),
        "dilation": (dilation, dilation),
    }
    return [
        *head,
        *((k, value) for k, value in shared.items() if k in fam.uses),
        *((option, v[f"{fam.name}.{option}"]) for option in fam.options),
    ]


def _mask_section(cfg: Config) -> list[tuple[str, Any]]:
    """Binary: the reference's binarisation. Several classes: the class map as the reference tool's multi-class
    (TensorFlowFlexUNet) projects give it, an ``rgb_map`` of colour → class index (index maps: grey level → index)."""
    d, classes = cfg.data, cfg.data.class_map()
    if classes is None or classes.num_classes <= 2:
        # data.mask_threshold null (our per-dataset mask rule, data_fingerprint.json) has no INI form: the reference's 128
        return [("blur", False), ("binarize", True), ("threshold", 128 if d.mask_threshold is None else d.mask_threshold)]
    key = "rgb_map" if classes.kind == "colour" else "index_map"
    return [("blur", False), ("binarize", False), ("class_names", list(classes.names)),
            (key, {v: i for i, v in enumerate(classes.values)})]


def _train_section(cfg: Config, counts: dict[str, int], root: str) -> list[tuple[str, Any]]:
    t, batch = cfg.train, cfg.data.batch_size
    train: list[tuple[str, Any]] = [("epochs", cfg.rule("max_epochs")), ("batch_size", batch)]
    steps = t.steps_per_epoch or (math.ceil(counts["train"] / batch) if counts.get("train") else None)
    if steps:
        train.append(("steps_per_epoch", int(steps)))
    if counts.get("valid"):
        train.append(("validation_steps", math.ceil(counts["valid"] / batch)))
    return train + [
        ("patience", cfg.rule("patience")),
        ("learning_rate_reducer", True),
        ("reducer_factor", t.reducer.factor),
        ("reducer_patience", t.reducer.patience),
        ("image_datapath", reference_data_dir(root, "train", "images")),
        ("mask_datapath", reference_data_dir(root, "train", "masks")),
        ("model_dir", "./models"),
        ("eval_dir", "./eval"),
    ]


def _augmentation_sections(s: dict[str, float]) -> dict[str, list[tuple[str, Any]]]:
    """Our augmentation strengths as the reference tool's augmentor parameters (module docstring)."""
    return {
        "augmentor": [
            ("vflip", s["vflip"] > 0),
            ("hflip", s["hflip"] > 0),
            ("rotation", s["rotation"] > 0),
            ("angles", list(REF_ANGLES) if s["rotation"] > 0 else []),
            ("shrinks", [_round(1.0 - REF_SHRINK * s["shrink"])] if s["shrink"] > 0 else []),
            ("shears", [_round(REF_SHEAR * s["shear"])] if s["shear"] > 0 else []),
            ("deformation", s["elastic"] > 0),
            ("distortion", s["distortion"] > 0),
            ("barrdistortion", s["barrel"] > 0),
            ("pincdistortion", s["pincushion"] > 0),
        ],
        "deformation": [("alpah", int(round(REF_ALPHA * s["elastic"]))), ("sigmoids", list(REF_SIGMOIDS))],
        "distortion": [
            ("gaussian_filter_rsigma", REF_RSIGMA),
            ("gaussian_filter_sigma", REF_SIGMA),
            ("distortions", [_round(REF_DISTORTION * s["distortion"])]),
        ],
        "barrdistortion": [
            ("radius", REF_LENS_RADIUS),
            ("amount", _round(REF_LENS_AMOUNT * s["barrel"])),
            ("centers", list(REF_LENS_CENTERS)),
        ],
        "pincdistortion": [
            ("radius", REF_LENS_RADIUS),
            ("amount", _round(-REF_LENS_AMOUNT * s["pincushion"])),
            ("centers", list(REF_LENS_CENTERS)),
        ],
    }


def render_ini(sections: dict[str, list[tuple[str, Any]]], *, header: Sequence[str] = ()) -> str:
    """INI text whose values are Python literals (the reference tool evaluates each value)."""
    lines = [f"; {h}" for h in header]
    for name, items in sections.items():
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        width = max((len(k) for k, _ in items), default=0)
        lines += [f"{k.ljust(width)} = {_literal(val)}" for k, val in items]
    return "\n".join(lines) + "\n"


def _literal(v: Any) -> str:
    """A Python literal that ``ast.literal_eval`` reads back (strings in double quotes)."""
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, tuple):
        inner = ", ".join(_literal(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, list):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no INI literal for {type(v).__name__}")


def _round(x: Any) -> float:
    return round(float(x), 6) + 0.0  # + 0.0 turns -0.0 into 0.0


def reference_data_dir(root: str, split: str, kind: str) -> str:
    """``<root>/<split>/<kind>/`` as the reference tool's paths are written (``val`` where the dataset has it)."""
    folder = split
    if split == "valid" and not Path(root, "valid").is_dir() and Path(root, "val").is_dir():
        folder = "val"
    return f"{root}/{folder}/{kind}/"
