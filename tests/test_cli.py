"""The command-line parser: every command is registered, and a module that cannot be imported is an error."""

from __future__ import annotations

import sys

import pytest

from search.cli import build_parser

COMMANDS = {"run", "final", "worker", "status", "export", "report", "dashboard", "predict"}


def _commands() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices)  # type: ignore[arg-type]


def test_every_command_is_registered() -> None:
    assert COMMANDS <= _commands()


def test_a_command_module_that_cannot_be_imported_is_not_silently_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    import search.cli

    monkeypatch.setitem(sys.modules, "search.cli.results_cmds", None)  # importing it raises ImportError
    monkeypatch.delattr(search.cli, "results_cmds", raising=False)
    with pytest.raises(ImportError):
        _commands()

