"""B13: multi-class segmentation on real data (issue 22).

For each seed, two studies run side by side with the same budget, each pinned to its own CPU core so that
both see the same machine: ``multi`` on ``chd-ct-multiclass`` (7 structures + background, RGB colour masks, its
``labels.json`` picked up with no flag) and ``binary`` on ``chd-ct-aorta`` (the same slices, aorta only). Each is
``python -m search run --data DIR --timeout T --set data.image_size=128`` as a user types it.

Per run: wall ÷ budget, configurations judged, the best validation score, the final test mean foreground dice
and every class's test dice; the aorta's dice of the multi-class study beside the binary study's.

    .venv/bin/python benchmarks/multiclass.py --seeds 0 1 2 --timeout 1800 --code /path/to/snapshot
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, SHARED_DATA, add_real_data_args, emit, real_data_results, table  # noqa: E402
from benchmarks.budget import json_dict, summarise  # noqa: E402

ARMS = {"multi": "chd-ct-multiclass", "binary": "chd-ct-aorta"}
USER = ["data.image_size=128"]


def start(arm: str, seed: int, *, timeout: float, results: Path, extra: list[str], code: Path,
          core: int | None) -> tuple[subprocess.Popen[bytes], str, float]:
    """Start one study (pinned to ``core`` when given); returns the process, the study name and its start."""
    study = f"b13-{arm}-t{timeout:.0f}-s{seed}"
    sets = [*USER, f"study.seed={seed}", *extra]
    cmd = [sys.executable, "-m", "search", "--results", str(results), "run", "--data", str(SHARED_DATA / ARMS[arm]),
           "--study", study, "--timeout", f"{timeout:g}", *[a for s in sets for a in ("--set", s)]]
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(code)}
    log = open(results / f"{study}.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, study, time.perf_counter()


def summary(arm: str, seed: int, study: str, *, timeout: float, results: Path, exit_code: int | None,
            wall: float | None) -> dict[str, Any]:
    root = results / study
    test = json_dict(root / "final" / "test_metrics.json")
    classes = test.get("class_dice") or ({"aorta": test.get("hard_dice")} if test else {})
    return {"bench": "multiclass", "arm": arm, "dataset": ARMS[arm], "seed": seed, "budget_s": timeout,
            "exit": exit_code, "wall_over_budget": None if wall is None else round(wall / timeout, 3),
            **summarise(root), "class_dice": classes, "aorta": classes.get("aorta"),
            "min_class": min((v for v in classes.values() if v is not None), default=None)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=1800.0, help="budget of each study (study.timeout_s)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin each study to its own core")
    add_real_data_args(ap, results=REPO / "results" / "benchmarks" / "multiclass")
    args = ap.parse_args(argv)
    results = real_data_results(args)
    if results is None:
        return 2
    code = Path(args.code).resolve()
    rows = []
    with open(results / "b13.jsonl", "a") as out:
        for seed in args.seeds:
            running = {}
            for core, arm in enumerate(ARMS):
                if args.report_only:
                    running[arm] = (None, f"b13-{arm}-t{args.timeout:.0f}-s{seed}", None)
                    continue
                running[arm] = start(arm, seed, timeout=args.timeout, results=results, extra=args.set, code=code,
                                     core=None if args.no_pin else core % max(1, os.cpu_count() or 1))
            for arm, (proc, study, t0) in running.items():
                code_ = proc.wait() if proc is not None else None
                wall = time.perf_counter() - t0 if t0 is not None else None
                row = emit(summary(arm, seed, study, timeout=args.timeout, results=results, exit_code=code_,
                                   wall=wall))
                if not args.report_only:
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                rows.append(row)
    print(table(rows, [("arm", "arm"), ("seed", "seed"), ("wall_over_budget", "wall/budget"), ("judged", "judged"),
                       ("best_val", "best val"), ("test_hard_dice", "test mean fg dice"), ("aorta", "aorta"),
                       ("min_class", "worst class")],
                title=f"B13: multi-class vs binary, 128², {args.timeout:g} s"))
    for row in rows:
        if row["arm"] == "multi" and row["class_dice"]:
            print(f"seed {row['seed']} per class: " + ", ".join(
                f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in row["class_dice"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
