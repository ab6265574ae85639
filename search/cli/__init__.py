"""Command-line interface: one small module per command group, ``main(argv) -> int``.

Exit codes: 0 ok, 1 unexpected error or aborted search, 2 usage/config error, 3 data error,
130 interrupted (the study is resumable).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from search.errors import ConfigError, Interrupted, SearchAborted

__all__ = [
    "EXIT_CONFIG",
    "EXIT_DATA",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "build_parser",
    "commands",
    "main",
]


EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_DATA, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    from search.cli import data_cmds, results_cmds, run_cmd, worker_cmd

    parser = _Parser(
        prog="python -m search",
        description="Hyperparameter search for 2D UNet segmentation (Keras Tuner + Optuna).",
    )
    parser.add_argument("--results", default="results", help="results root folder (default: results)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more output (-v: Keras epoch bars)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs (workers too)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    run_cmd.register(sub)
    worker_cmd.register(sub)
    data_cmds.register(sub)
    results_cmds.register(sub)
    return parser


def commands() -> dict[str, argparse.ArgumentParser]:
    """Each command's name and parser (the README's tests and `--help` checks read them here)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (tests call this directly)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from data import DatasetError
    except ImportError:  # pragma: no cover - data is part of this distribution
        DatasetError = RuntimeError  # type: ignore[misc, assignment]  # noqa: N806
    try:
        args = build_parser().parse_args(argv)
        _configure_logging(args.verbose, debug=debug)
        return int(args.func(args) or 0)
    except ConfigError as e:
        _fail(e, debug)
        return EXIT_CONFIG
    except DatasetError as e:
        _fail(e, debug)
        return EXIT_DATA
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted; the study is resumable (run the same command again)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SearchAborted as e:
        _fail(e, debug)
        return EXIT_ERROR
    except SystemExit as e:  # argparse --help / --version
        return int(e.code or 0) if isinstance(e.code, int) else 0
    except Exception as e:  # noqa: BLE001 - last resort: one line unless --debug
        if debug:
            traceback.print_exc()
        else:
            print(f"error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_ERROR


def _fail(e: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f"error: {e}", file=sys.stderr)


def _configure_logging(verbose: int, *, debug: bool = False) -> None:
    """Our packages at INFO (DEBUG with -vv or --debug), others at WARNING; trial processes inherit the level."""
    level = logging.DEBUG if verbose >= 2 or debug else logging.INFO
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in ("search", "data", "models"):
        logging.getLogger(name).setLevel(level)
