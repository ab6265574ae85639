"""Trial isolation: trials run in a recycled child process (:class:`TrialProcess`).

In-process TensorFlow keeps memory after every trial, so the driver never trains: a spawned child
process does, for up to ``recycle_after`` trials, then is replaced. Per-epoch logs stream back over
a pipe and the driver answers each one with an :class:`~search.vocabulary.EpochDecision`
(continue, prune, stop: pruning and Ctrl-C). A process that dies (OOM killer, segfault, kill -9)
becomes a failed trial with that reason.

Training also stops at the next optimizer step (:class:`~search.trial.stop.StopSignal`)
when the task's deadline (``TrialTask.stop_at``) passes or on Ctrl-C, which the driver signals through
an event shared with the process, so that nobody waits for the end of a long epoch.

Not to be confused with ``python -m search worker NAME``: a *driver* that joins a study
(search/cli/worker_cmd.py); each driver runs its trials in one TrialProcess.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from data import open_cache
from search.errors import Interrupted, TrialPruned
from search.trial.runtime import configure_runtime, temporary_environ
from search.trial.stop import StopSignal
from search.trial.task import EpochReport, TrialOutcome, TrialTask, run_task
from search.vocabulary import EpochDecision, TrialState

__all__ = ["DecideEpoch", "TrialProcess"]

logger = logging.getLogger(__name__)

DecideEpoch = Callable[[EpochReport], EpochDecision]  # the driver's answer to an epoch


def _child_main(conn: Any, runtime: dict[str, Any], stop_event: Any = None) -> None:
    """The trial process: receive tasks, run them, stream epochs back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C means
    _exit_with_parent(os.getppid())
    configure_runtime(**runtime)  # before TensorFlow loads (threads, determinism, GPU memory)

    caches: dict[str, Any] = {}
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            conn.send(("epoch", EpochReport.of(epoch, logs)))
            reply = conn.recv()
            if reply == EpochDecision.PRUNE:
                raise TrialPruned(f"pruned after epoch {epoch}")
            if reply == EpochDecision.STOP:
                raise _StopRequested()

        if task.cache_path not in caches:
            caches[task.cache_path] = open_cache(task.cache_path)
        try:
            outcome = run_task(task, caches[task.cache_path], on_epoch, StopSignal(at=task.stop_at, flag=stop_event))
        except _StopRequested:
            outcome = TrialOutcome(status=TrialState.RUNNING, reason="interrupted by the user (resumable)",
                                   stopped_by="user")
        conn.send(("done", outcome))
        _release_memory()


def _exit_with_parent(parent: int) -> None:
    """Die with the driver: a driver killed with SIGKILL cannot stop its trial process, and an orphaned
    one would go on writing the checkpoint of a trial that the next driver continues."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


class _StopRequested(BaseException):
    """Raised inside the trial process when the driver answers ``stop`` after an epoch."""


def _release_memory() -> None:
    import gc

    try:
        import keras

        keras.backend.clear_session()
    except Exception:  # noqa: BLE001 - best effort
        pass
    gc.collect()


class TrialProcess:
    """One isolated trial process at a time, replaced after ``recycle_after`` tasks."""

    def __init__(self, *, recycle_after: int = 10, runtime: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> None:
        self.recycle_after = recycle_after
        self.runtime = runtime or {}
        self.env = env or {}
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None
        self._tasks_done = 0
        self._stop_event = self._ctx.Event()  # shared with the process: Ctrl-C stops at the next step
        self._stop_requested = 0

    @property
    def stop_requested(self) -> int:
        """Ctrl-C count: 1 stops the running trial at its next step (resumable); 2 kills the process."""
        return self._stop_requested

    @stop_requested.setter
    def stop_requested(self, value: int) -> None:
        self._stop_requested = value
        if value:
            self._stop_event.set()
        else:
            self._stop_event.clear()

    # lifecycle
    def _start(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        # The driver's level (-v, -vv, --debug), unless the runtime sets one: a spawned child starts unconfigured.
        runtime = {"log_level": logging.getLogger("search").getEffectiveLevel(), **self.runtime}
        with temporary_environ(self.env):  # inherited by the spawned child only for its start
            proc = self._ctx.Process(target=_child_main, args=(child, runtime, self._stop_event), daemon=True)
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
    def run(self, task: TrialTask, decide: DecideEpoch) -> TrialOutcome:
        """Run one task; the process's death becomes a failed outcome. Raises Interrupted on a hard stop.

        An outcome ``running`` means the trial stopped on request and resumes from its checkpoint.
        """
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
                msg = None  # the child's end of the pipe closed: it died
            if msg is None:
                self._proc.join(timeout=10)
                code = self._proc.exitcode
                self.kill()
                self._conn.close()
                return TrialOutcome(status=TrialState.FAILED, reason=_death_reason(code),
                                    duration_s=time.perf_counter() - t0)
            if msg[0] == "epoch":
                report: EpochReport = msg[1]
                reply = EpochDecision.STOP if self.stop_requested else decide(report)
                try:
                    self._conn.send(reply)
                except (BrokenPipeError, OSError):
                    pass
            elif msg[0] == "done":
                outcome: TrialOutcome = msg[1]
                return outcome


def _death_reason(code: int | None) -> str:
    # "worker process" in the recorded reasons: the wording studies on disk already use.
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (killed: out of memory?)" if name == "SIGKILL" else ""
        return f"worker process died with {name}{hint}"
    return f"worker process exited unexpectedly with code {code}"
