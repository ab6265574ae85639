"""The trial process (search/trial/process.py): the driver's log level reaches it, and a crash leaves its traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from search.results import write_traceback
from search.results.layout import TRACEBACK_FILE
from search.trial.process import TrialProcess
from search.trial.runtime import configure_logging

PACKAGES = ("search", "data", "models")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the package loggers' levels (and the root handlers) back after a test changes them."""
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in PACKAGES}
    handlers, root_level = list(root.handlers), root.level
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(root_level)


class _FakeProcess:
    def __init__(self, *, target: Any, args: tuple[Any, ...], daemon: bool) -> None:
        self.args = args
        self.pid = 12345

    def start(self) -> None:
        pass

    def is_alive(self) -> bool:
        return False


class _FakeContext:
    """Stands in for the spawn context: records what a worker would be started with."""

    def __init__(self) -> None:
        self.started: list[_FakeProcess] = []

    def Pipe(self, duplex: bool = True) -> tuple[Any, Any]:  # noqa: N802 - multiprocessing's name
        class _End:
            def close(self) -> None:
                pass

        return _End(), _End()

    def Process(self, **kwargs: Any) -> _FakeProcess:  # noqa: N802
        proc = _FakeProcess(**kwargs)
        self.started.append(proc)
        return proc


def _started_runtime(pool: TrialProcess) -> dict[str, Any]:
    ctx = _FakeContext()
    pool._ctx = ctx
    pool._start()
    (proc,) = ctx.started
    runtime: dict[str, Any] = proc.args[1]
    return runtime


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.WARNING])
def test_worker_starts_with_the_drivers_log_level(level: int, restore_logging: None) -> None:
    logging.getLogger("search").setLevel(level)
    runtime = _started_runtime(TrialProcess(runtime={"mixed_precision": False}))
    assert runtime["log_level"] == level
    assert runtime["mixed_precision"] is False


def test_an_explicit_worker_log_level_wins(restore_logging: None) -> None:
    logging.getLogger("search").setLevel(logging.DEBUG)
    assert _started_runtime(TrialProcess(runtime={"log_level": logging.ERROR}))["log_level"] == logging.ERROR


def test_cli_debug_and_verbose_set_the_level_the_worker_inherits(restore_logging: None) -> None:
    from search.cli import _configure_logging

    for verbose, debug, expected in ((0, False, logging.INFO), (1, False, logging.INFO), (2, False, logging.DEBUG),
                                     (0, True, logging.DEBUG)):
        _configure_logging(verbose, debug=debug)
        assert _started_runtime(TrialProcess())["log_level"] == expected, (verbose, debug)


def test_worker_logging_shows_debug_records_of_the_packages_only(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the worker process does with the level (search.trial.runtime.configure_logging, called by configure_runtime)."""
    for h in list(logging.getLogger().handlers):
        logging.getLogger().removeHandler(h)
    configure_logging(logging.DEBUG)
    logging.getLogger("search.trial.task").debug("trial 3 crashed: details")
    logging.getLogger("tensorflow.something").debug("third-party chatter")
    err = capsys.readouterr().err
    assert "trial 3 crashed: details" in err
    assert "third-party chatter" not in err
    configure_logging(logging.WARNING)
    logging.getLogger("search.trial.task").debug("hidden at WARNING")
    assert "hidden at WARNING" not in capsys.readouterr().err


def _crash() -> None:
    def inner() -> None:
        raise ValueError("shapes (2, 3) and (4,) do not broadcast\nsecond line of the message")

    try:
        inner()
    except ValueError as e:
        raise RuntimeError("trial failed while building") from e


def test_write_traceback_keeps_the_whole_chain(tmp_path: Path) -> None:
    try:
        _crash()
    except RuntimeError as e:
        write_traceback(tmp_path / "trials" / "3", e)
    text = (tmp_path / "trials" / "3" / TRACEBACK_FILE).read_text()
    assert text.startswith("Traceback (most recent call last):")
    assert "in inner" in text and "in _crash" in text
    assert "second line of the message" in text
    assert "The above exception was the direct cause" in text and "RuntimeError: trial failed while building" in text
    assert [p.name for p in (tmp_path / "trials" / "3").iterdir()] == [TRACEBACK_FILE]  # no temp file left


def test_write_traceback_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    write_traceback(blocker / "trial", ValueError("x"))  # its folder cannot be created: logged, not raised
    assert "could not write" in caplog.text
