"""B11: honest selection on tiny real datasets: holdout vs k-fold optimism, re-evaluation by mean vs lcb.

For each study seed and dataset this runs two searches exactly as a user would (subprocesses of
``python -m search run``) with the same space, trial budget and training budget:

* ``holdout``: trials scored on the valid split, then ``final.reevaluate_top_k`` re-evaluation (the
  top-k and the baseline, fresh seeds) before the pick;
* ``kfold``: trials scored out of fold on patient-grouped folds of train+valid, the final model the
  fold ensemble (no re-evaluation: k× the cost again).

It then reads the results contract and reports, per study, the selected trial's validation score, its
test dice and their difference (the optimism: how much the number that chose it overstated it), the
baseline's test dice and whether the pick beat it on test. For holdout studies it also reports what
each selection rule would have picked from the same fresh runs (``final/selection.json`` records every
candidate's fresh mean and lower bound, and, after the pick, its own weights' test dice): the search's
best, the best fresh mean, the best lower bound.

    .venv/bin/python benchmarks/selection.py --seeds 0 1 2 --code /tmp/snapshot

Defaults are the CPU budget stated in BENCHMARKS.md (B11). ``--report-only`` summarises existing folders.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, SHARED_DATA, add_real_data_args, emit, real_data_results, table  # noqa: E402

CPU_BUDGET = [
    "data.image_size=64",
    "data.channels=1",
    "train.samples_per_epoch=100",
    "train.warmup_samples=600",
    "train.patience=4",
    "train.max_epochs=12",
    "train.collapse_epochs=4",
    "train.reducer.patience=3",
    "final.num_predictions=0",
]
MODES = {
    "holdout": ["study.evaluation=holdout", "final.reevaluate_top_k=2", "final.seeds=2", "final.select=mean"],
    "kfold": ["study.evaluation=kfold", "study.folds=3", "final.reevaluate_top_k=0"],
}


def run_one(dataset: str, mode: str, seed: int, *, max_trials: int, results: Path, extra: list[str], code: Path,
            report_only: bool) -> dict[str, Any]:
    study = f"b11-{dataset}-{mode}-s{seed}"
    sets = [*CPU_BUDGET, *MODES[mode], f"study.seed={seed}", *extra]
    cmd = [sys.executable, "-m", "search", "--results", str(results), "run", "--data", str(SHARED_DATA / dataset),
           "--study", study, "--max-trials", str(max_trials), *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(code)}
    root = results / study
    wall = None
    rc = None
    if not report_only and not (root / "final" / "final.json").is_file():
        t0 = time.perf_counter()
        with open(results / f"{study}.log", "w") as fh:
            rc = subprocess.run(cmd, cwd=code, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
        wall = round(time.perf_counter() - t0, 1)
    return {"bench": "selection", "dataset": dataset, "mode": mode, "seed": seed, "exit": rc, "wall_s": wall,
            **summarise(root, seed)}


def summarise(root: Path, seed: int) -> dict[str, Any]:
    """What the study folder says about its selection (see the module docstring)."""
    rows = list(csv.DictReader(open(root / "trials.csv"))) if (root / "trials.csv").is_file() else []
    out: dict[str, Any] = {"trials": len(rows), "complete": sum(r["status"] == "complete" for r in rows),
                           "pruned": sum(r["status"] == "pruned" for r in rows)}
    final_path = root / "final" / "final.json"
    if not final_path.is_file():
        return out
    final = json.loads(final_path.read_text())
    metrics = json.loads((root / "final" / "test_metrics.json").read_text())
    score = {int(r["number"]): float(r["score"]) for r in rows if r["score"] not in ("", None)}
    baseline = next((int(r["number"]) for r in rows if r["baseline"] in ("1", "True", "true")), None)
    base_test = metrics.get("baseline", {}).get("hard_dice")
    if baseline == final["trial"]:
        base_test = metrics["hard_dice"]
    selection = final.get("selection")
    verdict = final["verdict"]
    if "baseline" in metrics:  # recomputed with this checkout's search/verdict.py (the run may be older)
        from search.evaluation import paired_verdict

        verdict = paired_verdict(metrics["per_image"]["hard_dice"], metrics["baseline"]["per_image"],
                                 seed=seed).to_dict()
    out.update(baseline_val=score.get(baseline) if baseline is not None else None, baseline_test=base_test,
               verdict=verdict.get("outcome"), verdict_sentence=verdict.get("sentence"))
    if selection is None:  # the search's best is the final model
        out.update(search_pick=final["trial"], search_val=final["valid_score"], search_test=metrics["hard_dice"])
    else:
        cands = selection["candidates"]
        by_search = next(c for c in cands if c["trial"] == selection["search_best"])
        out.update(search_pick=by_search["trial"], search_val=by_search["search_score"],
                   search_test=by_search["test_hard_dice"])
        for rule in ("mean", "lcb"):
            best = max(cands, key=lambda c, r=rule: (c[r] if c[r] is not None else -math.inf,
                                                     c["search_score"] or -math.inf, -c["trial"]))
            out.update({f"{rule}_pick": best["trial"], f"{rule}_val": best["mean"], f"{rule}_lcb": best["lcb"],
                        f"{rule}_test": best["test_hard_dice"]})
    for rule in ("search", "mean", "lcb"):
        val, test = out.get(f"{rule}_val"), out.get(f"{rule}_test")
        if val is not None and test is not None:
            out[f"{rule}_optimism"] = round(val - test, 4)
            if base_test is not None:
                out[f"{rule}_beats_baseline"] = test > base_test
    return out


def _mean(rows: list[dict[str, Any]], key: str) -> str:
    """Mean ± standard deviation over the studies that have ``key`` (signed: optimisms are differences)."""
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    if not vals:
        return "-"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    sign = "+" if key.endswith("optimism") else ""
    return f"{statistics.mean(vals):{sign}.3f} ± {sd:.3f} (n={len(vals)})"


def _mae(rows: list[dict[str, Any]], key: str) -> str:
    vals = [abs(float(r[key])) for r in rows if r.get(key) is not None]
    return f"{statistics.mean(vals):.3f}" if vals else "-"


def _rate(rows: list[dict[str, Any]], key: str) -> str:
    vals = [bool(r[key]) for r in rows if r.get(key) is not None]
    return f"{sum(vals)}/{len(vals)}" if vals else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--max-trials", type=int, default=5, help="trials per search (trial 0 = the baseline)")
    add_real_data_args(ap, results=REPO / "results" / "benchmarks" / "selection")
    args = ap.parse_args(argv)
    results = real_data_results(args)
    if results is None:
        return 2
    rows = []
    with open(results / "b11.jsonl", "a") as log:
        for seed in args.seeds:  # seed-major: a run cut short still covers every dataset and mode
            for dataset in args.datasets:
                for mode in args.modes:
                    row = emit(run_one(dataset, mode, seed, max_trials=args.max_trials, results=results,
                                       extra=args.set, code=Path(args.code).resolve(), report_only=args.report_only))
                    if row["exit"] is not None:
                        log.write(json.dumps(row) + "\n")
                        log.flush()
                    rows.append(row)
    print(table(rows, [("dataset", "dataset"), ("mode", "mode"), ("seed", "seed"), ("trials", "trials"),
                       ("search_pick", "pick"), ("search_val", "val"), ("search_test", "test"),
                       ("search_optimism", "optimism"), ("baseline_test", "baseline test"),
                       ("search_beats_baseline", "beats"), ("verdict", "verdict"), ("mean_pick", "mean pick"),
                       ("mean_val", "fresh mean"), ("mean_test", "its test"),
                       ("lcb_pick", "lcb pick"), ("lcb_test", "its test"), ("wall_s", "wall s")],
                title="B11: selection on real data"))
    for mode in args.modes:
        sub = [r for r in rows if r["mode"] == mode]
        print(f"{mode}: optimism of the search's pick {_mean(sub, 'search_optimism')} (mean |val - test| "
              f"{_mae(sub, 'search_optimism')}); beats the baseline on test {_rate(sub, 'search_beats_baseline')}; "
              f"verdict 'better' {sum(r.get('verdict') == 'better' for r in sub)}/{sum('verdict' in r for r in sub)}")
        if mode == "holdout":
            for rule in ("mean", "lcb"):
                print(f"  re-evaluated, pick by {rule}: optimism {_mean(sub, f'{rule}_optimism')} (mean |val - test| "
                      f"{_mae(sub, f'{rule}_optimism')}); picks another trial than the search in "
                      f"{sum(r.get(f'{rule}_pick') != r.get('search_pick') for r in sub if f'{rule}_pick' in r)}/"
                      f"{sum(f'{rule}_pick' in r for r in sub)}; beats the baseline "
                      f"{_rate(sub, f'{rule}_beats_baseline')}; test {_mean(sub, f'{rule}_test')} vs the search's "
                      f"pick {_mean(sub, 'search_test')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
