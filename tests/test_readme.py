"""The README tells the truth: its commands exist, every command is documented, --help works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from search.cli import commands, main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _subcommands() -> set[str]:
    return set(commands())


def test_readme_commands_exist_and_every_command_is_documented() -> None:
    mentioned = set(re.findall(r"python -m search (?:--\S+ \S+ )*([a-z]+)", README))
    actual = _subcommands()
    assert mentioned <= actual, f"README mentions unknown commands: {mentioned - actual}"
    table = set(re.findall(r"^\| `([a-z]+)` \|", README, flags=re.M))
    assert actual <= table, f"commands missing from the README's command table: {actual - table}"


def test_quickstart_and_test_commands_are_the_documented_ones() -> None:
    quick = re.search(r"<!-- quickstart -->\s*```bash\n(.*?)```", README, flags=re.S)
    tests = re.search(r"<!-- tests -->\s*```bash\n(.*?)```", README, flags=re.S)
    assert quick and quick.group(1).strip() == "pip install -e . && python -m search run --demo"
    assert tests and tests.group(1).strip() == 'pip install -e ".[dev]" && pytest'
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "quickstart" in ci and "\npytest" in ci  # CI runs both blocks (see .ci/run)


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture) -> None:
    assert main([command, "--help"]) == 0
    assert "usage:" in capsys.readouterr().out


def test_flags_in_readme_run_row_exist(capsys: pytest.CaptureFixture) -> None:
    row = re.search(r"^\| `run` \| .*?\((.*?)\)", README, flags=re.M)
    assert row
    flags = re.findall(r"--[a-z-]+", row.group(1))
    main(["run", "--help"])
    help_text = capsys.readouterr().out
    missing = [f for f in flags if f not in help_text]
    assert not missing, missing


def test_bad_usage_is_one_line_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--max-trials", "many"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "--max-trials" in err
    assert main(["nosuchcommand"]) == 2


def test_the_package_map_names_every_module_where_it_is() -> None:
    """README "Development": each package row names modules that exist in it, and every module is named."""
    text = (REPO / "README.md").read_text()
    rows = [line for line in text[text.index("| package | answers | its modules |"):].splitlines()[2:]
            if line.startswith("| `")]
    named: set[Path] = set()
    for row in rows:
        package = re.match(r"\| `([a-z_]+)/`", row)
        if package is None:
            continue
        folder = REPO / "search" / package.group(1)
        assert folder.is_dir(), row
        for name in re.findall(r"`([a-z_]+(?:\.py|/))`", row.split("|")[3]):
            path = folder / name.rstrip("/")
            assert path.exists(), f"README names {path.relative_to(REPO)}, which does not exist"
            named.add(path)
    assert len(rows) >= 8
    modules = {p for p in (REPO / "search").glob("*/*") if (p.suffix == ".py" and p.name != "__init__.py") or
               (p.is_dir() and (p / "__init__.py").is_file())}
    missing = sorted(str(p.relative_to(REPO)) for p in modules - named)
    assert not missing, f"modules the README's package map does not name: {missing}"
