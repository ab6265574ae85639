"""Trial isolation: trials run in a recycled worker process.

In-process TensorFlow keeps memory after every trial, so the driver never trains: a spawned worker
does, for up to ``recycle_after`` trials, then is replaced. Per-epoch logs stream back over a pipe
and the driver answers each one with ``continue``, ``prune`` or ``stop`` (pruning and Ctrl-C). A
worker that dies (OOM killer, segfault, kill -9) becomes a failed trial with that reason.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import Interrupted
from search.results import TRACEBACK_FILE, atomic_write_text
from search.runtime import temporary_environ

if TYPE_CHECKING:  # search.trial is imported where it is used, so that it may import this module
    from search.trial import TrialOutcome, TrialTask

logger = logging.getLogger(__name__)

EpochDecision = Callable[[int, dict[str, float]], str]  # returns "continue" | "prune" | "stop"


def write_traceback(out_dir: Path, exc: BaseException) -> None:
    """Write ``exc``'s full traceback, chained causes included, to ``out_dir/traceback.txt`` atomically.

    For the trial code's crash handler (the trial's record keeps only a one-line reason);
    ``python -m search status NAME --debug`` prints it. Never raises: a traceback that cannot be
    written is logged instead.
    """
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    path = Path(out_dir) / TRACEBACK_FILE
    try:
        atomic_write_text(path, text)
    except OSError as e:
        logger.warning("could not write %s (%s); the traceback:\n%s", path, e, text.rstrip())


def _worker_main(conn: Any, runtime: dict[str, Any]) -> None:
    """Worker process: receive tasks, run them, stream epochs back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C means
    _exit_with_parent(os.getppid())
    from search.runtime import configure_runtime

    configure_runtime(**runtime)
    from data import open_cache
    from search.errors import TrialPruned
    from search.trial import TrialOutcome, run_task

    caches: dict[str, Any] = {}
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            conn.send(("epoch", epoch, logs))
            reply = conn.recv()
            if reply == "prune":
                raise TrialPruned(f"pruned after epoch {epoch}")
            if reply == "stop":
                raise _Stop()

        if task.cache_path not in caches:
            caches[task.cache_path] = open_cache(task.cache_path)
        try:
            outcome = run_task(task, caches[task.cache_path], on_epoch)
        except _Stop:
            outcome = TrialOutcome(status="interrupted", reason="interrupted by the user (resumable)")
        conn.send(("done", outcome))
        _release_memory()


def _exit_with_parent(parent: int) -> None:
    """Die with the driver: a driver killed with SIGKILL cannot stop its worker, and an orphaned
    worker would go on writing the checkpoint of a trial that the next driver continues."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


class _Stop(BaseException):
    """Raised inside the worker when the driver asks it to stop after this epoch."""


def _release_memory() -> None:
    import gc

    try:
        import keras

        keras.backend.clear_session()
    except Exception:  # noqa: BLE001 - best effort
        pass
    gc.collect()


class WorkerPool:
    """One worker process at a time, recycled after ``recycle_after`` tasks."""

    def __init__(self, *, recycle_after: int = 10, runtime: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> None:
        self.recycle_after = recycle_after
        self.runtime = runtime or {}
        self.env = env or {}
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None
        self._tasks_done = 0
        self.stop_requested = 0  # 1: stop after this epoch; 2: stop now

    # lifecycle
    def _start(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        # The driver's level (-v, -vv, --debug), unless the runtime sets one: a spawned child starts unconfigured.
        runtime = {"log_level": logging.getLogger("search").getEffectiveLevel(), **self.runtime}
        with temporary_environ(self.env):  # inherited by the spawned child only for its start
            proc = self._ctx.Process(target=_worker_main, args=(child, runtime), daemon=True)
            proc.start()
            self._proc = proc
        child.close()
        self._conn = parent
        self._tasks_done = 0

    def close(self) -> None:
        if self._proc is None or self._conn is None:
            self.kill()
            return
        try:
            self._conn.send(None)
            self._proc.join(timeout=10)
        except (OSError, BrokenPipeError):
            pass
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)
        self._conn.close()
        self._proc = None

    def kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)
        self._proc = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    # running
    def run(self, task: TrialTask, decide: EpochDecision) -> TrialOutcome:
        """Run one task; worker death becomes a failed outcome. Raises Interrupted on a hard stop."""
        from search.trial import TrialOutcome

        if self._proc is not None and (self._tasks_done >= self.recycle_after or not self._proc.is_alive()):
            self.close()
        if self._proc is None:
            self._start()
        t0 = time.perf_counter()
        self._conn.send(task)
        self._tasks_done += 1
        while True:
            if self.stop_requested >= 2:
                self.kill()
                raise Interrupted("stopped at once; the study resumes from the last completed epoch")
            try:
                ready = self._conn.poll(0.2)
            except (OSError, EOFError):
                ready = False
            if not ready and self._proc.is_alive():
                continue
            try:
                msg = self._conn.recv() if ready else None
            except (EOFError, OSError):
                msg = None  # the worker's end of the pipe closed: it died
            if msg is None:
                self._proc.join(timeout=10)
                code = self._proc.exitcode
                self.kill()
                self._conn.close()
                return TrialOutcome(status="failed", reason=_death_reason(code), duration_s=time.perf_counter() - t0)
            if msg[0] == "epoch":
                _, epoch, logs = msg
                reply = "stop" if self.stop_requested else decide(epoch, logs)
                try:
                    self._conn.send(reply)
                except (BrokenPipeError, OSError):
                    pass
            elif msg[0] == "done":
                outcome: TrialOutcome = msg[1]
                return outcome


def _death_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (killed: out of memory?)" if name == "SIGKILL" else ""
        return f"worker process died with {name}{hint}"
    return f"worker process exited unexpectedly with code {code}"
