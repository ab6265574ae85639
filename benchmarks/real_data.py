"""B8: the whole product on real data: `python -m search run` on the shared CT and EM sets, timed.

For each dataset and study seed this runs one search exactly as a user would (a subprocess of
``python -m search run --data DIR --timeout T``, default search_space.yaml plus the CPU budget settings
below), then reads the results contract and reports: the baseline's (trial 0) and the best trial's
validation hard dice, whether the best beat the baseline, the final model's test hard dice, how many
trials completed, were pruned, collapsed or failed, and the wall time.

    .venv/bin/python benchmarks/real_data.py --datasets chd-ct-aorta isbi-em-membrane --seeds 0 1 2 --timeout 900

Defaults are the CPU budget used for BENCHMARKS.md: 128², one channel, 50-step epochs (100 samples at batch
2), an 800-sample warm-up, patience 6, at most 40 epochs. ``--set`` adds more overrides.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, SHARED_DATA, add_real_data_args, emit, real_data_results, table  # noqa: E402

CPU_BUDGET = [
    "data.image_size=128",
    "data.channels=1",
    "train.samples_per_epoch=100",
    "train.warmup_samples=800",
    "train.patience=6",
    "train.max_epochs=40",
    "train.collapse_epochs=4",
    "train.reducer.patience=3",
]


def run_one(dataset: str, seed: int, *, timeout: float, results: Path, extra: list[str], code: Path,
            report_only: bool = False) -> dict[str, Any]:
    study = f"b8-{dataset}-s{seed}"
    sets = [*CPU_BUDGET, f"study.seed={seed}", *extra]
    cmd = [sys.executable, "-m", "search", "--results", str(results), "run", "--data", str(SHARED_DATA / dataset),
           "--study", study, "--timeout", str(timeout), "--max-trials", "200",
           *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(code)}
    t0 = time.perf_counter()
    log = results / f"{study}.log"
    returncode: int | None = None
    if not report_only:
        with open(log, "w") as fh:
            returncode = subprocess.run(cmd, cwd=code, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                        check=False).returncode
    wall = time.perf_counter() - t0 if not report_only else None
    root = results / study
    rows = list(csv.DictReader(open(root / "trials.csv"))) if (root / "trials.csv").is_file() else []

    def score(r: dict[str, str]) -> float | None:
        return float(r["score"]) if r.get("score") not in (None, "") else None

    complete = [r for r in rows if r["status"] == "complete"]
    baseline = next((r for r in rows if r.get("baseline") in ("True", "true", "1")), None)
    best = max(complete, key=lambda r: score(r) or -1.0, default=None)
    test_path = root / "final" / "test_metrics.json"
    test = json.loads(test_path.read_text()) if test_path.is_file() else {}
    base_score = score(baseline) if baseline is not None else None
    best_score = score(best) if best is not None else None
    return {
        "bench": "real_data", "dataset": dataset, "seed": seed, "exit": returncode,
        "wall_s": round(wall, 1) if wall is not None else None,
        "trials": len(rows), "complete": len(complete),
        "pruned": sum(r["status"] == "pruned" and not r["reason"].startswith("collapsed") for r in rows),
        "collapsed": sum(r["reason"].startswith("collapsed") for r in rows),
        "failed": sum(r["status"] == "failed" for r in rows),
        "baseline_status": baseline["status"] if baseline else None,
        "baseline_val": base_score, "best_trial": int(best["number"]) if best else None, "best_val": best_score,
        "best_beats_baseline": (best_score or 0.0) > (base_score or 0.0) and best is not baseline,
        "test_hard_dice": test.get("hard_dice"), "log": str(log),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=900.0, help="study.timeout_s of each search")
    add_real_data_args(ap, results=REPO / "results" / "benchmarks" / "real_data")
    args = ap.parse_args(argv)
    results = real_data_results(args)
    if results is None:
        return 2
    rows = []
    with open(results / "b8.jsonl", "a") as out:
        for seed in args.seeds:  # seed-major: a run cut short still covers every dataset
            for dataset in args.datasets:
                row = emit(run_one(dataset, seed, timeout=args.timeout, results=results, extra=args.set,
                                   code=Path(args.code).resolve(), report_only=args.report_only))
                if not args.report_only:
                    out.write(json.dumps(row) + "\n")
                out.flush()
                rows.append(row)
    print(table(rows, [("dataset", "dataset"), ("seed", "seed"), ("trials", "trials"), ("complete", "done"),
                       ("pruned", "pruned"), ("collapsed", "collapsed"), ("failed", "failed"),
                       ("baseline_val", "baseline val"), ("best_val", "best val"),
                       ("best_beats_baseline", "beats"), ("test_hard_dice", "test dice"), ("wall_s", "wall s")],
                title="B8: real data, default space + CPU budget"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
