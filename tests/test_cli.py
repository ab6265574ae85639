"""The command-line parser: every command is registered, and a module that cannot be imported is an error."""

from __future__ import annotations

import sys
from pathlib import Path

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


def test_demo_with_a_config_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--config my.yaml --demo` silently replaced the file's search space with the demo's (issue 19.16d)."""
    from search.cli import EXIT_CONFIG, main

    path = tmp_path / "my.yaml"
    path.write_text("search_space:\n  base_filters: {type: choice, values: [32, 64]}\n")
    results = tmp_path / "results"
    assert main(["--results", str(results), "run", "--config", str(path), "--demo"]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert "--demo cannot be combined with --config" in err and len(err.splitlines()) == 1
    assert not results.exists()  # refused before the demo data is written
