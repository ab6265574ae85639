"""Several drivers on one machine (``run --workers N``): devices, threads and the extra drivers.

The main driver starts N−1 extra drivers, each ``python -m search worker NAME`` in a subprocess
with its own trial process. They share the study through the Optuna storage. Each driver gets one
GPU (``CUDA_VISIBLE_DEVICES``) when GPUs are present, else an equal share of the CPU threads.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DriverSlot", "ExtraDrivers", "free_port", "plan_slots", "visible_gpus", "watch_parent"]


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriverSlot:
    """What one driver may use: its GPU(s) (as CUDA_VISIBLE_DEVICES) or its CPU threads."""

    index: int
    env: dict[str, str] = field(default_factory=dict)
    threads: int | None = None


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, else ``nvidia-smi -L``."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]


def plan_slots(n: int, *, gpus: list[str] | None = None, cpus: int | None = None) -> list[DriverSlot]:
    """One slot per driver: GPUs round-robin when present, else CPU threads split evenly."""
    gpus = visible_gpus() if gpus is None else gpus
    if gpus:
        if n > len(gpus):
            logger.warning("%d workers share %d GPU(s); trials on one GPU compete for its memory", n, len(gpus))
        return [DriverSlot(i, env={"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}) for i in range(n)]
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cpus // n)
    if n > cpus:
        logger.warning("%d workers on %d CPU core(s): each gets 1 thread and they compete", n, cpus)
    return [DriverSlot(i, threads=threads if n > 1 else None) for i in range(n)]


class ExtraDrivers:
    """The N−1 extra drivers of ``run --workers N``: start, forward Ctrl-C, wait."""

    def __init__(self, *, study_name: str, results_root: Path, log_dir: Path, verbose: int = 0) -> None:
        self.study_name = study_name
        self.results_root = results_root
        self.log_dir = log_dir
        self.verbose = verbose
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[object] = []

    def start(self, slots: list[DriverSlot]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for slot in slots:
            cmd = [sys.executable, "-m", "search", "--results", str(self.results_root)]
            cmd += ["-v"] * self.verbose
            if self.verbose < 2 and logging.getLogger("search").isEnabledFor(logging.DEBUG):
                cmd.append("--debug")  # this driver runs with --debug: its extra drivers (and their workers) too
            cmd += ["worker", self.study_name, "--index", str(slot.index), "--parent", str(os.getpid())]
            if slot.threads:
                cmd += ["--threads", str(slot.threads)]
            env = {**os.environ, **slot.env, "PYTHONUNBUFFERED": "1"}
            log = (self.log_dir / f"worker-{slot.index}.log").open("ab")
            self._logs.append(log)
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.procs.append(proc)
            logger.info("started worker %d (pid %d%s); log: %s", slot.index, proc.pid,
                        f", GPU {slot.env['CUDA_VISIBLE_DEVICES']}" if slot.env.get("CUDA_VISIBLE_DEVICES") else
                        f", {slot.threads} threads" if slot.threads else "", log.name)  # type: ignore[attr-defined]

    def any_running(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def interrupt(self) -> None:
        """Forward a Ctrl-C as SIGUSR1 (the first: stop at the next step, resumable; the second: stop now).

        Extra drivers ignore SIGINT: the terminal sends it to the whole process group, and each
        Ctrl-C must count once.
        """
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGUSR1)
                except ProcessLookupError:
                    pass

    def wait(self, timeout: float | None = None) -> list[int | None]:
        """Wait for every extra driver; returns their exit codes (None: still running at timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for proc in self.procs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                pass
        codes = [p.poll() for p in self.procs]
        for i, code in enumerate(codes, start=1):
            if code not in (0, None, 130):
                logger.warning("worker %d exited with code %s; see %s", i, code, self.log_dir / f"worker-{i}.log")
        return codes

    def finish(self, *, stop_requested: int) -> None:
        """The main driver is leaving: let its extra drivers finish (they stop on Ctrl-C or on their own)."""
        if any(p.poll() is None for p in self.procs):
            if not stop_requested:
                self.interrupt()  # an error in the main driver: stop them after the epoch
            self.wait(timeout=120)
            self.kill()
        self.close()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    def close(self) -> None:
        for log in self._logs:
            log.close()  # type: ignore[attr-defined]
        self._logs = []


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for Keras Tuner's chief on this machine)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def watch_parent(parent_pid: int, on_gone: object) -> None:
    """Call ``on_gone()`` once the process ``parent_pid`` has exited (checked every second)."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
            if os.getppid() != parent_pid:
                break
        logger.warning("the main driver (pid %d) is gone; this worker stops at its next step", parent_pid)
        on_gone()  # type: ignore[operator]

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()
