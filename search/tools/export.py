"""``export``: take a study's best configuration away, as YAML, JSON or the reference tool's INI.

- ``yaml``: a re-runnable config with every hyperparameter fixed (``python -m search run --config FILE``),
  its ``data.root`` absolute (resolved where the study ran).
- ``json``: the best trial (number, score, values) and the final test metrics when there are some.
- ``ini``:  the reference tool's ``train_eval_infer.config`` (DESIGN §10), our strengths mapped back to its
  augmentation parameters (search/tools/reference_ini.py).

Only the results contract is read, and only a *completed* trial is ever exported. Floats are written
to 6 significant digits.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any, Literal

from search.config import Config, best_config
from search.errors import ConfigError
from search.results import (
    StudyDir,
    TrialRecord,
    atomic_write_text,
    chosen_trial,
    read_final,
    read_json,
    read_study_config,
    read_test_metrics,
)
from search.tools.reference_ini import reference_data_dir, reference_ini_sections, render_ini
from search.vocabulary import OBJECTIVE

__all__ = [
    "FORMATS",
    "export_ini",
    "export_json",
    "export_study",
    "export_yaml",
    "write_export",
]

logger = logging.getLogger(__name__)

ExportFormat = Literal["yaml", "json", "ini"]
FORMATS: tuple[ExportFormat, ...] = ("yaml", "json", "ini")


# --------------------------------------------------------------------------------------------- reading


def _exported_config(study: StudyDir) -> Config:
    """The study's config with ``data.root`` absolute, resolved where the study ran.

    A relative root is relative to the folder ``run`` was started in, which the study's data
    fingerprint records (as an absolute path); without one, the current folder is assumed.
    """
    cfg = read_study_config(study)
    root = Path(cfg.data.root).expanduser()
    if not root.is_absolute():
        try:
            recorded = read_json(study.fingerprint_json).get("root") if study.fingerprint_json.is_file() else None
        except (OSError, ValueError):
            recorded = None
        root = Path(recorded) if isinstance(recorded, str) and Path(recorded).is_absolute() else root.absolute()
    return cfg.replace(data=dataclasses.replace(cfg.data, root=str(root)))


def _short(obj: Any) -> Any:
    """Floats to 6 significant digits (0.00137958, not 0.0013795764907022507), in nested dicts and lists.

    Readable, and exact enough to reproduce a trial: a relative change of at most 5e-6, far below
    what any hyperparameter or score here can resolve.
    """
    if isinstance(obj, float) and math.isfinite(obj):
        return float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {k: _short(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_short(v) for v in obj)
    return obj


def _score(rec: TrialRecord) -> str:
    return f"{rec.score:.4f}" if rec.score is not None else "n/a"


def _final_metrics(study: StudyDir) -> dict[str, Any] | None:
    """``final/final.json`` (trial + test summary), else the summary of ``final/test_metrics.json``."""
    f = read_final(study)
    if f is not None:
        return {"trial": f.get("trial"), "valid_score": f.get("valid_score"), "test": f.get("test")}
    m = read_test_metrics(study)
    if m is not None:
        return {"trial": None, "valid_score": m.get("valid_score"),
                "test": {k: v for k, v in m.items() if k != "per_image"}}
    return None


# --------------------------------------------------------------------------------------------- formats


def export_yaml(study: StudyDir) -> str:
    """The re-runnable config: the study's settings with every hyperparameter fixed to the best values."""
    cfg = _exported_config(study)
    best = chosen_trial(study)
    text = best_config(cfg, _short(best.values)).to_yaml()
    header = (
        f"# unet-search: best configuration of study {study.name!r} — trial {best.number}, "
        f"validation hard dice {_score(best)}.\n"
        f"# Re-run it with: python -m search run --config THIS_FILE\n"
    )
    return header + text


def export_json(study: StudyDir) -> str:
    """Best trial number, score, values (and the final test metrics when present) as JSON."""
    cfg = read_study_config(study)
    best = chosen_trial(study)
    baseline = study.baseline_trial()
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
        "baseline_trial": None if baseline is None else {"trial": baseline.number, "score": baseline.score,
                                                         "status": str(baseline.status)},
        "test_metrics": None if final is None else final.get("test"),
        "final_trial": None if final is None else final.get("trial"),
    }
    return json.dumps(_short(out), indent=2) + "\n"


def export_ini(study: StudyDir) -> str:
    """The reference tool's ``train_eval_infer.config`` for the best trial."""
    cfg = _exported_config(study)
    best = chosen_trial(study)
    sections = reference_ini_sections(cfg, _short(best.values), counts=_split_counts(study, cfg))
    header = [
        f"train_eval_infer.config exported by unet-search from study {study.name!r}",
        f"trial {best.number}, validation hard dice {_score(best)} (per-image, threshold 0.5)",
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
        folder = Path(reference_data_dir(cfg.data.root, split, "images"))
        if folder.is_dir():
            counts[split] = sum(1 for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not counts:
        logger.warning("dataset %s not found: steps_per_epoch and validation_steps are left out", cfg.data.root)
    return counts
