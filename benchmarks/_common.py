"""Helpers shared by the benchmark scripts: machine description, JSON lines, tables, RSS.

Importing this module does nothing but define functions (TensorFlow is imported only where a function
needs its version). The scripts set TF_CPP_MIN_LOG_LEVEL / CUDA_VISIBLE_DEVICES themselves, before any
TensorFlow import.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from search.results.io import json_default

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def cores() -> int:
    """CPU cores this process may run on (affinity), not the host's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_info(*, tensorflow: bool = True) -> dict[str, Any]:
    """What a measurement ran on; ``tensorflow=False`` avoids importing it (driver-side scripts)."""
    info: dict[str, Any] = {
        "bench": "machine",
        "cores": cores(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_total_gib": mem_total_gib(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if tensorflow:
        import keras
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["keras"] = keras.__version__
        info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    return info


def emit(row: dict[str, Any]) -> dict[str, Any]:
    """Print one measurement as one JSON line (flushed) and return it."""
    print(json.dumps(row, default=json_default), flush=True)
    return row


def vmrss_mib(pid: int | str = "self") -> float | None:
    """Resident set size of a process in MiB, from /proc/<pid>/status (None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return None


def median(values: Iterable[float]) -> float:
    vals = list(values)
    return statistics.median(vals) if vals else float("nan")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], *, title: str = "") -> str:
    """A fixed-width text table; ``columns`` = (key, header). Floats print with 3 significant decimals."""

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            if v != v:  # NaN
                return "nan"
            if abs(v) >= 100:
                return f"{v:.1f}"
            if abs(v) >= 1:
                return f"{v:.2f}"
            return f"{v:.3f}"
        return str(v)

    cells = [[fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, (_, h) in enumerate(columns)]
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(h.rjust(w) for (_, h), w in zip(columns, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    for c in cells:
        lines.append("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))
    return "\n".join(lines)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], *, title: str = "") -> None:
    print(file=sys.stdout)
    print(table(rows, columns, title=title), flush=True)


def add_real_data_args(ap: Any, *, results: Path) -> None:
    """The options of the benchmarks that run whole searches on ``../shared/data`` (B8, B11)."""
    ap.add_argument("--datasets", nargs="+", default=["chd-ct-aorta", "isbi-em-membrane"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--results", default=str(results))
    ap.add_argument("--set", action="append", default=[], help="more overrides for every run")
    ap.add_argument("--code", default=str(REPO),
                    help="checkout whose code runs (e.g. a `git archive` snapshot, so edits in the work tree "
                         "cannot reach a running benchmark); default: this repository")
    ap.add_argument("--report-only", action="store_true", help="summarise existing study folders, run nothing")


def real_data_results(args: Any) -> Path | None:
    """The results folder of a real-data benchmark (made, machine line emitted), or None without the data."""
    if not SHARED_DATA.is_dir():
        print(f"no real datasets at {SHARED_DATA}", file=sys.stderr)
        return None
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    emit(machine_info(tensorflow=False))
    return results
