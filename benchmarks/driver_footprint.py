"""B9: what the search driver costs before it runs a trial: import + plan time, RSS, TensorFlow loaded or not.

The driver never trains (trials run in worker processes), so it should not load TensorFlow. Run from the
repository root; to compare with another checkout, run it there with PYTHONPATH pointing at that checkout
(a script's own folder comes first on sys.path, not the working directory):

    PYTHONPATH=. .venv/bin/python benchmarks/driver_footprint.py after
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from typing import Any


def _first_importable(*names: str) -> Any:
    for name in names[:-1]:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return importlib.import_module(names[-1])


def main() -> int:
    label = sys.argv[1] if len(sys.argv) > 1 else "this checkout"
    t0 = time.perf_counter()
    # this checkout's modules, or their names before the packages of issue 21 (B9 compares checkouts)
    importlib.import_module(_first_importable("search.study.runner", "search.runner").__name__)
    importlib.import_module("search.engines.optuna_engine")
    from search.config import load_config

    environment_info = _first_importable("search.results.environment", "search.environment",
                                         "search.runner").environment_info
    specs_from_values = _first_importable("search.config.specs", "search.specs").specs_from_values

    cfg = load_config("search_space.yaml", overrides=["data.channels=1"])  # auto is resolved from the data
    specs_from_values(cfg, cfg.fixed_values(), seed=0)
    environment_info()
    seconds = time.perf_counter() - t0
    rss_kib = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmRSS"))
    print(f"{label}: import+plan {seconds:.2f} s, RSS {rss_kib / 1024:.0f} MiB, "
          f"tensorflow loaded: {'tensorflow' in sys.modules}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
