"""``run`` (create or resume a study) and ``final`` (test the best trial's model, or retrain it first)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from search.config import load_config
from search.errors import ConfigError

DEFAULT_CONFIG = "search_space.yaml"
DEMO_DATA = {"n": 100, "size": 64, "seed": 0}


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="create or resume a study and run the search", description=__doc__)
    p.add_argument("--config", help=f"search space / study YAML (default: ./{DEFAULT_CONFIG} if present)")
    p.add_argument("--study", help="study name (results/<study>/); overrides study.name")
    p.add_argument("--data", help="dataset root with train/valid/test × images/masks; overrides data.root")
    p.add_argument("--demo", action="store_true", help="built-in synthetic dataset and a small, fast search")
    p.add_argument("--strategy", help="overrides study.strategy")
    p.add_argument("--max-trials", type=int, help="overrides study.max_trials")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="time budget of the whole run, search and final stage, in seconds (study.timeout_s)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (budget split, epoch, warm-up, first judgement) and exit; trains nothing")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any key (repeatable)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="run N trials at once: N drivers, one GPU each or a share of the CPU threads "
                        "(study.workers; Optuna strategies)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage shared by workers on many machines, e.g. postgresql://user@host/db "
                        "(study.storage)")
    p.add_argument("--allow-changes", action="store_true", help="resume even if the config or data changed")
    p.add_argument("--no-final", action="store_true", help="skip the final stage (test of the best model)")
    p.set_defaults(func=cmd_run)

    f = sub.add_parser("final", help="evaluate a study's best trial on the test split (final.train_on_valid: retrain it first)")
    f.add_argument("name", help="study name")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override final.* keys")
    f.add_argument("--show-candidate-test", action="store_true",
                   help="also test every re-evaluated candidate, after the pick, into final/candidate_test.json "
                        "(a pick made again after reading it is test-informed)")
    f.set_defaults(func=cmd_final)


def _seconds(text: str) -> float:
    """``--timeout``: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def demo_overrides(results_root: Path) -> dict[str, Any]:
    """The ``--demo`` study: synthetic 64² CT-like data, a small space, done in minutes on 2 CPU cores."""
    from data import write_synthetic_dataset

    root = results_root / ".demo-data" / "synthetic-{size}-n{n}-s{seed}".format(**DEMO_DATA)
    write_synthetic_dataset(root, n=DEMO_DATA["n"], size=DEMO_DATA["size"], seed=DEMO_DATA["seed"])
    return {
        "study": {"name": "demo", "strategy": "tpe", "pruner": "asha", "max_trials": 6, "seed": 7,
                  "prune_warmup_epochs": 10},
        "data": {"root": str(root), "image_size": 64, "channels": 1, "batch_size": 8},
        # One pass (60 images) per epoch and a 10-epoch warm-up keep the demo at its 2-minute budget.
        "train": {"max_epochs": 40, "patience": 10, "reducer": {"factor": 0.5, "patience": 4},
                  "samples_per_epoch": None, "warmup_samples": 600},
        "search_space": {
            "base_filters": {"type": "choice", "values": [8, 16]},
            "base_kernels": {"type": "choice", "values": [3, 5]},
            "num_layers": {"type": "int", "min": 3, "max": 4},
            "learning_rate": {"type": "float", "min": 1e-3, "max": 6e-3, "log": True},
            "dropout_rate": {"type": "float", "min": 0.0, "max": 0.05},
            "dilation": {"type": "choice", "values": [1, 2]},
            **{f"augment.{k}": {"value": v} for k, v in (
                ("hflip", 1.0), ("vflip", 1.0), ("rotation", 0.0), ("shrink", 0.0), ("shear", 0.0),
                ("elastic", 0.0), ("distortion", 0.0), ("barrel", 0.0), ("pincushion", 0.0))},
        },
    }


def resolve_config(args: argparse.Namespace) -> Any:
    """The run's config: the file (or ``--demo``), then the flags, then ``--set`` (each error names its source)."""
    results_root = Path(args.results)
    if args.demo and args.config:
        # --demo brings its own study, data and search space; merged under a file it silently replaced
        # the file's search space, and over it the file's data would not be the demo's.
        raise ConfigError(
            "--demo cannot be combined with --config: the demo brings its own study, data and search space. "
            "For your config on synthetic data: python -m search data synth DIR --size 64, then "
            "run --config FILE --data DIR --set data.image_size=64"
        )
    path = args.config
    if path is None and not args.demo and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    extra: dict[str, Any] = demo_overrides(results_root) if args.demo else {}
    flags: list[tuple[str, str]] = []
    for flag, value, key in (
        ("--no-final", False if args.no_final else None, "final.retrain"),
        ("--storage", args.storage or None, "study.storage"),
        ("--workers", args.workers, "study.workers"),
        ("--timeout", args.timeout, "study.timeout_s"),
        ("--max-trials", args.max_trials, "study.max_trials"),
        ("--strategy", args.strategy or None, "study.strategy"),
        ("--data", args.data, "data.root"),
        ("--study", args.study or None, "study.name"),
    ):
        if value is not None:  # a string flag is quoted: --study 2024 names a study, not a number
            text = json.dumps(value) if isinstance(value, (str, bool)) else value
            flags.append((flag, f"{key}={text}"))
    if args.data is not None and not args.data.strip():
        raise ConfigError("--data: expected a folder path")
    return load_config(path, overrides=[*flags, *args.set], extra=extra)


def cmd_run(args: argparse.Namespace) -> int:
    from search.study.budget import Deadline
    from search.study.runner import dry_run, run_study
    from search.tools.report import refresh_report

    started = time.time()  # the budget counts from here: preparing the data is part of the run
    cfg = resolve_config(args)
    deadline = Deadline(cfg.study.timeout_s, start=started)
    print(
        f"study {cfg.study.name}: strategy {cfg.study.strategy}, pruner {cfg.pruner}, "
        f"{cfg.study.max_trials} trials, data {cfg.data.root} at {cfg.data.image_size}px → "
        f"{Path(args.results) / cfg.study.name}",
        file=sys.stderr,
    )
    if args.dry_run:
        print(dry_run(cfg, results_root=Path(args.results), deadline=deadline).describe())
        return 0
    summary = run_study(cfg, results_root=Path(args.results), allow_changes=args.allow_changes, verbose=args.verbose,
                        deadline=deadline, on_trial_end=refresh_report)
    best = summary.get("best")
    if best is None:
        hint = ("; the budget ended first: run again with a larger --timeout to continue the study"
                if summary.get("run", {}).get("ended_by") == "the budget" else "")
        print(f"no trial completed{hint}; see python -m search status {cfg.study.name}", file=sys.stderr)
        return 1
    print(f"best trial {best['number']}: validation hard dice {best['score']:.4f}")
    final = summary.get("final")
    if final:
        print(f"final model: test hard dice {final['hard_dice']:.4f}, IoU {final['hard_iou']:.4f} "
              f"→ {Path(summary['study']) / 'final'}")
    return 0


def cmd_final(args: argparse.Namespace) -> int:
    import yaml

    from search.config import config_from_dict
    from search.results import StudyDir
    from search.study.final import run_final

    study = StudyDir(Path(args.results) / args.name)
    if not study.exists():
        raise ConfigError(f"no study {args.name!r} in {Path(args.results).resolve()}")
    raw = yaml.safe_load(study.study_yaml.read_text())
    from search.config import apply_override

    for s in args.set:
        raw = apply_override(raw, s)
    cfg = config_from_dict(raw, source=str(study.study_yaml))
    final = run_final(study, cfg=cfg, results_root=Path(args.results), verbose=args.verbose,
                      show_candidate_test=args.show_candidate_test)
    print(f"final model (trial {final['trial']}): test hard dice {final['hard_dice']:.4f}, "
          f"IoU {final['hard_iou']:.4f} → {study.final_dir}")
    return 0
