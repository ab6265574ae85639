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


def main() -> int:
    label = sys.argv[1] if len(sys.argv) > 1 else "this checkout"
    t0 = time.perf_counter()
    for name in ("search.study.runner", "search.engines.optuna_engine"):
        importlib.import_module(name)
    from search.config import load_config
    try:
        from search.results.environment import environment_info
    except ImportError:  # a checkout from before search/results/environment.py
        from search.study.runner import environment_info  # type: ignore[attr-defined, no-redef]
    from search.config.specs import specs_from_values

    cfg = load_config("search_space.yaml")
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
