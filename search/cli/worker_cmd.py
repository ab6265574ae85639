"""``worker NAME``: join a study and run trials (another process, GPU or machine).

Optuna strategies share the study through its storage: the local journal under
``results/NAME/engine/`` (workers on this machine) or ``--storage postgresql://…`` (many
machines; the study's config is read from the database when ``results/NAME/study.yaml`` is not
here). Keras Tuner strategies join through Keras Tuner's chief/worker mode (its environment
variables ``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from search.config import Config, apply_override, config_from_dict, load_config
from search.errors import ConfigError
from search.results import StudyDir


def register(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="join a study and run its trials (more processes, GPUs or machines)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="study name")
    p.add_argument("--storage", metavar="URL", help="the study's Optuna storage URL, e.g. postgresql://user@host/db (study.storage)")
    p.add_argument("--config", metavar="FILE", help="the study's YAML when results/NAME/study.yaml is not here (Keras Tuner workers)")
    p.add_argument("--data", metavar="DIR", help="dataset root on this machine (overrides data.root)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for this worker's trials")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key (repeatable)")
    p.add_argument("--allow-changes", action="store_true", help="join even if the config or data differ")
    p.add_argument("--index", type=int, help=argparse.SUPPRESS)  # set by `run --workers N`
    p.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # ditto: stop when the main driver is gone
    p.set_defaults(func=cmd_worker)


def resolve_worker_config(args: argparse.Namespace) -> Config:
    """The study's config: local study.yaml, else --config, else the one stored with the study."""
    results = Path(args.results)
    local = StudyDir(results / args.name).study_yaml
    sets = [f"study.name={args.name}"]
    if args.storage:
        sets.append(f"study.storage={args.storage}")
    if args.data:
        if not args.data.strip():
            raise ConfigError("--data: expected a folder path")
        sets.append(f"data.root={args.data}")
    sets += list(args.set)
    if local.is_file():
        raw = yaml.safe_load(local.read_text())
        for s in sets:
            raw = apply_override(raw, s)
        return config_from_dict(raw, source=str(local))
    if args.config:
        return load_config(args.config, overrides=sets)
    if args.storage:
        from search.engines.optuna_engine import redact_url, stored_config

        probe = load_config(None, overrides=[f"study.name={args.name}", f"study.storage={args.storage}"])
        stored = stored_config(probe)
        if stored is None:
            raise ConfigError(f"no study {args.name!r} in {redact_url(args.storage)}; start it with "
                              f"`python -m search run --study {args.name} --storage URL` first")
        if not stored:
            raise ConfigError(f"study {args.name!r} in {redact_url(args.storage)} was not made by "
                              f"`python -m search run` (no stored config); pass --config FILE")
        raw = stored
        for s in sets:
            raw = apply_override(raw, s)
        return config_from_dict(raw, source=f"{redact_url(args.storage)} study {args.name!r}")
    raise ConfigError(
        f"no study {args.name!r} in {results.resolve()}; pass --storage URL (the study's database) "
        f"or --config FILE"
    )


def _interrupt_now(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_worker(args: argparse.Namespace) -> int:
    from search.study.runner import run_study

    if args.parent is not None:
        # An extra driver of `run --workers N`: Ctrl-C reaches it from the main driver as SIGUSR1
        # (run_study installs the handler; until then it just ends this process, nothing started).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, _interrupt_now)
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads: expected an integer ≥ 1, got {args.threads}")
    cfg = resolve_worker_config(args)
    print(f"worker for study {cfg.study.name} ({cfg.study.strategy}) → {Path(args.results) / cfg.study.name}",
          file=sys.stderr)
    from search.tools.report import refresh_report

    summary = run_study(
        cfg,
        on_trial_end=refresh_report,
        results_root=Path(args.results),
        allow_changes=args.allow_changes,
        verbose=args.verbose,
        role="worker",
        threads=args.threads,
        worker_index=args.index,
        parent_pid=args.parent,
        show_progress=False,
    )
    best = summary.get("best")
    if best is not None:
        print(f"worker done; best trial so far {best['number']}: validation hard dice {best['score']:.4f}")
    else:
        print("worker done; no completed trial in this results folder yet")
    return 0
