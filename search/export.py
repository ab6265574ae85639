"""``export``: take a study's best configuration away, as YAML, JSON or the reference tool's INI.

- ``yaml``: a re-runnable config with every hyperparameter fixed (``python -m search run --config FILE``).
- ``json``: the best trial (number, score, values) and the final test metrics when there are some.
- ``ini``:  the reference tool's ``train_eval_infer.config`` (DESIGN §10), our strengths mapped back to its
  augmentation parameters (the inverse of the table in ``data/augment.py``).

Only the results contract is read, and only a *completed* trial is ever exported.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from search.config import AUGMENTATIONS, HYPERPARAMETER_DEFAULTS, Config, config_from_dict
from search.errors import ConfigError
from search.results import StudyDir, TrialRecord, atomic_write_text, read_json
from search.vocabulary import OBJECTIVE

__all__ = [
    "FORMATS",
    "LOSS_TO_REFERENCE",
    "best_completed_trial",
    "export_ini",
    "export_json",
    "export_study",
    "export_yaml",
    "read_study_config",
    "reference_ini_sections",
    "write_export",
]

logger = logging.getLogger(__name__)

ExportFormat = Literal["yaml", "json", "ini"]
FORMATS: tuple[ExportFormat, ...] = ("yaml", "json", "ini")

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


# --------------------------------------------------------------------------------------------- reading


def read_study_config(study: StudyDir) -> Config:
    """The study's resolved config from ``study.yaml``.

    Raises:
        ConfigError: the study has no readable ``study.yaml``.
    """
    try:
        raw = yaml.safe_load(study.study_yaml.read_text())
    except OSError as e:
        raise ConfigError(f"study {study.name!r}: cannot read {study.study_yaml} ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"study {study.name!r}: {study.study_yaml} is not valid YAML ({e})") from None
    return config_from_dict(raw or {}, source=str(study.study_yaml))


def best_completed_trial(study: StudyDir) -> TrialRecord:
    """The completed trial with the highest finite score (never a failed, pruned or running one).

    Raises:
        ConfigError: no trial has completed.
    """
    done = [
        r for r in study.trials()
        if r.status == "complete" and r.score is not None and math.isfinite(float(r.score))
    ]
    if not done:
        raise ConfigError(f"study {study.name!r} has no completed trial; nothing to export")
    return max(done, key=lambda r: (float(r.score or 0.0), -r.number))


def _final_metrics(study: StudyDir) -> dict[str, Any] | None:
    """``final/final.json`` (trial + test summary), else the summary of ``final/test_metrics.json``."""
    final_json = study.final_dir / "final.json"
    metrics_json = study.final_dir / "test_metrics.json"
    try:
        if final_json.is_file():
            f = read_json(final_json)
            return {"trial": f.get("trial"), "valid_score": f.get("valid_score"), "test": f.get("test")}
        if metrics_json.is_file():
            m = read_json(metrics_json)
            return {"trial": None, "valid_score": m.get("valid_score"),
                    "test": {k: v for k, v in m.items() if k != "per_image"}}
    except (OSError, ValueError) as e:
        logger.warning("cannot read the final metrics of %s: %s", study.name, e)
    return None


# --------------------------------------------------------------------------------------------- formats


def export_yaml(study: StudyDir) -> str:
    """The re-runnable config: the study's settings with every hyperparameter fixed to the best values."""
    from search.config import best_config

    cfg = read_study_config(study)
    best = best_completed_trial(study)
    text = best_config(cfg, best.values).to_yaml()
    header = (
        f"# unet-search: best configuration of study {study.name!r} — trial {best.number}, "
        f"validation hard dice {best.score:.4f}.\n"
        f"# Re-run it with: python -m search run --config THIS_FILE\n"
    )
    return header + text


def export_json(study: StudyDir) -> str:
    """Best trial number, score, values (and the final test metrics when present) as JSON."""
    cfg = read_study_config(study)
    best = best_completed_trial(study)
    baseline = next((r for r in study.trials() if r.baseline and r.status == "complete"), None)
    final = _final_metrics(study)
    out: dict[str, Any] = {
        "study": study.name,
        "strategy": cfg.study.strategy,
        "objective": OBJECTIVE,
        "trial": best.number,
        "score": best.score,
        "best_epoch": best.best_epoch,
        "epochs_run": best.epochs_run,
        "baseline": best.baseline,
        "values": best.values,
        "baseline_trial": None if baseline is None else {"trial": baseline.number, "score": baseline.score},
        "test_metrics": None if final is None else final.get("test"),
        "final_trial": None if final is None else final.get("trial"),
    }
    return json.dumps(out, indent=2) + "\n"


def export_ini(study: StudyDir) -> str:
    """The reference tool's ``train_eval_infer.config`` for the best trial."""
    cfg = read_study_config(study)
    best = best_completed_trial(study)
    sections = reference_ini_sections(cfg, best.values, counts=_split_counts(study, cfg))
    header = [
        f"train_eval_infer.config exported by unet-search from study {study.name!r}",
        f"trial {best.number}, validation hard dice {best.score:.4f} (per-image, threshold 0.5)",
        "Augmentation parameters are our strengths mapped back to the reference tool's settings; our rotation",
        "also samples a continuous angle within +-30 degrees x strength, which the reference's right-angle list cannot express.",
    ]
    return render_ini(sections, header=header)


def export_study(study: StudyDir, *, fmt: str) -> str:
    """The export text of ``study`` in ``fmt`` (yaml | json | ini)."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r} is not supported; expected one of {list(FORMATS)}")
    return {"yaml": export_yaml, "json": export_json, "ini": export_ini}[fmt](study)


def write_export(text: str, path: Path | str) -> Path:
    """Write an export atomically (never a half-written file).

    Raises:
        ConfigError: the folder cannot be created or written.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"-o {p}: is a folder; expected a file name")
    try:
        atomic_write_text(p, text)
    except OSError as e:
        raise ConfigError(f"cannot write {p} ({e.strerror or e})") from None
    return p


# --------------------------------------------------------------------------------------------- the INI


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
    counts = counts or {}
    batch = d.batch_size

    train: list[tuple[str, Any]] = [("epochs", t.max_epochs), ("batch_size", batch)]
    steps = t.steps_per_epoch or (math.ceil(counts["train"] / batch) if counts.get("train") else None)
    if steps:
        train.append(("steps_per_epoch", int(steps)))
    if counts.get("valid"):
        train.append(("validation_steps", math.ceil(counts["valid"] / batch)))
    train += [
        ("patience", t.patience),
        ("learning_rate_reducer", True),
        ("reducer_factor", t.reducer.factor),
        ("reducer_patience", t.reducer.patience),
        ("image_datapath", _data_dir(root, "train", "images")),
        ("mask_datapath", _data_dir(root, "train", "masks")),
        ("model_dir", "./models"),
        ("eval_dir", "./eval"),
    ]
    kernels, dilation = int(v["base_kernels"]), int(v["dilation"])
    return {
        "model": [
            ("model", "TensorflowUNet"),
            ("generator", True),
            ("image_width", d.image_size),
            ("image_height", d.image_size),
            ("image_channels", d.channels),
            ("num_classes", 1),
            ("base_filters", int(v["base_filters"])),
            ("base_kernels", (kernels, kernels)),
            ("num_layers", int(v["num_layers"])),
            ("dropout_rate", float(v["dropout_rate"])),
            ("dilation", (dilation, dilation)),
            ("learning_rate", float(v["learning_rate"])),
            ("clipvalue", t.clipvalue),
            ("loss", ref_loss),
            ("metrics", ["dice_coef"]),
            ("normalization", bool(v["batch_norm"])),
            ("input_normalize", t.rescale_input),
        ],
        "train": train,
        "eval": [
            ("image_datapath", _data_dir(root, "valid", "images")),
            ("mask_datapath", _data_dir(root, "valid", "masks")),
        ],
        "test": [
            ("image_datapath", _data_dir(root, "test", "images")),
            ("mask_datapath", _data_dir(root, "test", "masks")),
        ],
        "infer": [("images_dir", _data_dir(root, "test", "images")), ("output_dir", "./test_output")],
        "mask": [("blur", False), ("binarize", True), ("threshold", d.mask_threshold)],
        "generator": [("debug", False), ("augmentation", any(x > 0 for x in s.values()))],
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
    raise TypeError(f"no INI literal for {type(v).__name__}")


def _round(x: Any) -> float:
    return round(float(x), 6) + 0.0  # + 0.0 turns -0.0 into 0.0


def _data_dir(root: str, split: str, kind: str) -> str:
    folder = split
    if split == "valid" and not Path(root, "valid").is_dir() and Path(root, "val").is_dir():
        folder = "val"
    return f"{root}/{folder}/{kind}/"


def _split_counts(study: StudyDir, cfg: Config) -> dict[str, int]:
    """Images per split, from the study's data fingerprint, else by counting the dataset's files."""
    counts: dict[str, int] = {}
    try:
        fp = read_json(study.fingerprint_json) if study.fingerprint_json.is_file() else {}
        for split, summary in (fp.get("splits") or {}).items():
            if isinstance(summary, dict) and isinstance(summary.get("count"), int):
                counts[split] = summary["count"]
    except (OSError, ValueError):
        pass
    if counts:
        return counts
    for split in ("train", "valid"):
        folder = Path(_data_dir(cfg.data.root, split, "images"))
        if folder.is_dir():
            counts[split] = sum(1 for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not counts:
        logger.warning("dataset %s not found: steps_per_epoch and validation_steps are left out", cfg.data.root)
    return counts
