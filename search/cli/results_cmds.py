"""Commands that read a study's results: ``status`` (and export, report, predict, dashboard)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from search.errors import ConfigError
from search.results import StudyDir


def register(sub: Any) -> None:
    s = sub.add_parser("status", help="table of a study's trials, the best one, running trials and failures")
    s.add_argument("name", help="study name")
    s.add_argument("--all", action="store_true", help="show every hyperparameter column")
    # SUPPRESS: `python -m search --debug status NAME` sets it too, and a default here would undo that.
    s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="print the full traceback of each failed trial that left one (trials/<n>/traceback.txt)")
    s.set_defaults(func=cmd_status)


def open_study(results: str, name: str) -> StudyDir:
    """The study folder, or a one-line ConfigError naming the studies that do exist."""
    root = Path(results)
    study = StudyDir(root / name)
    if not study.exists():
        known = sorted(p.parent.name for p in root.glob("*/study.yaml")) if root.is_dir() else []
        hint = f"; studies here: {', '.join(known)}" if known else ""
        raise ConfigError(f"no study {name!r} in {root.resolve()}{hint}")
    return study


def cmd_status(args: argparse.Namespace) -> int:
    from search.status import status_text

    print(status_text(open_study(args.results, args.name), all_columns=args.all,
                      tracebacks=getattr(args, "debug", False)))
    return 0
