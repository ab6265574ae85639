"""search/results/locks.py: one flock helper; a held lock refuses others, a killed holder releases it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import REPO

from search.results.locks import lock_file, locked, unlock_file

HOLD = "import sys, time\nfrom search.results.locks import lock_file\nlock_file(__import__('pathlib').Path(sys.argv[1]))\nprint('held', flush=True)\ntime.sleep(60)\n"


def test_a_held_lock_refuses_another_process_until_its_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert lock_file(path, blocking=False) is None  # refused, and nothing was truncated or left open
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        fd = lock_file(path, blocking=False)  # the kernel released it with the process
        assert fd is not None
        unlock_file(fd)
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_the_context_manager_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    path.write_text("1234\n")
    with locked(path):
        pass
    fd = lock_file(path, blocking=False)
    assert fd is not None
    unlock_file(fd)
    assert path.read_text() == "1234\n"  # a lock never truncates what its holder wrote
