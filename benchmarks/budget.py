"""B12: searching inside the user's budget, on real data (issue 20).

Each run is ``python -m search run --data DIR --timeout T --set data.image_size=128`` as a user types it,
in one of three arms, side by side in one invocation (arm-major within each seed and dataset, so that a
run cut short still compares the arms):

- ``auto``: the defaults (training rules ``auto``, planned from the budget);
- ``auto-rung``: the same with the warm-up at half the image side (``train.first_rung_size=auto``);
- ``fixed``: the previous fixed-fidelity defaults (800-sample epochs, a 4000-sample warm-up, patience
  10, 100 epochs), same code, same budget;
- ``baseline``: the baseline configuration alone for the whole budget (one trial, no early stop,
  epochs planned from the budget; the deadline ends it).

Per run it reports wall ÷ budget, configurations started, judged and complete (full fidelity: trained
to its early stop or epoch cap), configurations not started for the budget, the best validation and
the final test hard dice, and the verdict of the final model against the baseline.

    .venv/bin/python benchmarks/budget.py --datasets chd-ct-aorta isbi-em-membrane --seeds 0 --timeout 600
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

USER = ["data.image_size=128"]
ARMS: dict[str, list[str]] = {
    "auto": [],
    "auto-rung": ["train.first_rung_size=auto"],
    "fixed": ["train.samples_per_epoch=800", "train.warmup_samples=4000", "train.patience=10",
              "train.max_epochs=100", "train.first_rung_size=null"],
    "baseline": ["study.max_trials=1", "train.patience=100000", "train.max_epochs=100000",
                 "train.first_rung_size=null"],
}


def run_one(dataset: str, seed: int, arm: str, *, timeout: float, results: Path, extra: list[str], code: Path,
            report_only: bool = False) -> dict[str, Any]:
    study = f"b12-{dataset}-{arm}-t{timeout:.0f}-s{seed}"
    sets = [*USER, *ARMS[arm], f"study.seed={seed}", *extra]
    cmd = [sys.executable, "-m", "search", "--results", str(results), "run", "--data", str(SHARED_DATA / dataset),
           "--study", study, "--timeout", f"{timeout:g}", *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(code)}
    log = results / f"{study}.log"
    returncode, wall = None, None
    if not report_only:
        t0 = time.perf_counter()
        with open(log, "w") as fh:
            returncode = subprocess.run(cmd, cwd=code, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                        check=False).returncode
        wall = time.perf_counter() - t0
    return {"bench": "budget", "dataset": dataset, "seed": seed, "arm": arm, "budget_s": timeout,
            "exit": returncode, "wall_s": None if wall is None else round(wall, 1),
            "wall_over_budget": None if wall is None else round(wall / timeout, 3),
            **summarise(results / study), "log": str(log)}


def summarise(root: Path) -> dict[str, Any]:
    """What the results contract says of one study: trials by fate, best validation, test, verdict."""
    rows = list(csv.DictReader(open(root / "trials.csv"))) if (root / "trials.csv").is_file() else []
    not_started = [r for r in rows if r["reason"].startswith("not started")]
    started = [r for r in rows if r not in not_started]
    complete = [r for r in started if r["status"] == "complete"]
    judged = [r for r in started if r["status"] in ("complete", "pruned")]
    scores = [float(r["score"]) for r in complete if r["score"]]
    final = json_dict(root / "final" / "final.json")
    test = json_dict(root / "final" / "test_metrics.json")
    verdict = final.get("verdict") or {}
    budget = json_dict(root / "budget.json")
    plan = ((budget.get("runs") or [{}])[-1].get("plan") or {})
    return {"started": len(started), "judged": len(judged), "complete": len(complete),
            "not_started": len(not_started), "best_val": max(scores) if scores else None,
            "test_hard_dice": test.get("hard_dice"), "verdict": verdict.get("outcome"),
            "epoch_samples": (plan.get("rules") or {}).get("samples_per_epoch"),
            "first_judgement_s": plan.get("first_judgement_s")}


def json_dict(path: Path) -> dict[str, Any]:
    """A study file's JSON object, or {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, nargs="+", default=[600.0], help="budgets (study.timeout_s)")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    add_real_data_args(ap, results=REPO / "results" / "benchmarks" / "budget")
    args = ap.parse_args(argv)
    results = real_data_results(args)
    if results is None:
        return 2
    rows = []
    with open(results / "b12.jsonl", "a") as out:
        for timeout in args.timeout:
            for seed in args.seeds:
                for dataset in args.datasets:
                    for arm in args.arms:
                        row = emit(run_one(dataset, seed, arm, timeout=timeout, results=results, extra=args.set,
                                           code=Path(args.code).resolve(), report_only=args.report_only))
                        if not args.report_only:
                            out.write(json.dumps(row) + "\n")
                            out.flush()
                        rows.append(row)
    print(table(rows, [("dataset", "dataset"), ("budget_s", "budget"), ("seed", "seed"), ("arm", "arm"),
                       ("wall_over_budget", "wall/budget"), ("started", "started"), ("judged", "judged"),
                       ("complete", "complete"), ("not_started", "not started"), ("best_val", "best val"),
                       ("test_hard_dice", "test dice"), ("verdict", "verdict")],
                title="B12: search inside the budget, 128²"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
