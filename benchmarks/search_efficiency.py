"""B6: search efficiency of every strategy at the same wall-clock budget.

Strategies (default): Keras Tuner ``random``, ``bayesian``, ``hyperband`` (pruner none: Keras Tuner cannot
prune mid-training, the config refuses anything but none/auto for them) and Optuna ``tpe``, ``cmaes`` with
pruner ``asha``. Each (dataset, seed, strategy) is one study run through ``search.study.runner.run_study`` in its
own Python process (``--run-one``), with ``study.timeout_s`` = the budget, no baseline trial (so every
strategy starts from its own samples), no final retrain. The clock starts just before ``run_study`` (after
TensorFlow, Keras Tuner and Optuna are imported and the dataset cache is built, for every strategy alike), so
the worker's start is inside the budget. A trial that starts before the deadline runs to its end; only trials
*finished* within the budget count.

Recorded per run: every trial's status, score (best validation hard dice), finished_at; the best score of a
completed trial over time. Summaries per dataset and strategy: final best (mean ± sd over seeds), and the
fraction of the budget each strategy needs to reach Keras Tuner random search's final best of the same seed
("-" when it never does). A JSON summary is written to ``--out``.

Datasets: the synthetic CT-like set at 64² (``data.write_synthetic_dataset``, 100 images, as ``--demo``), and
``../shared/data/chd-ct-aorta`` at 128², 1 channel (skipped with a message if absent).

    .venv/bin/python benchmarks/search_efficiency.py --seeds 0 --datasets synthetic --budget 30  # smoke, ≈ 4 min
    .venv/bin/python benchmarks/search_efficiency.py --budget 60 --seeds 0 1 2 --chd-seeds 0     # ≈ 25 min
    .venv/bin/python benchmarks/search_efficiency.py --budget 600 --seeds 0 1 2                  # the real thing, hours
"""

from __future__ import annotations

import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _common import REPO, SHARED_DATA, emit, machine_info, print_table  # noqa: E402

STRATEGIES = {  # strategy: pruner
    "random": "none",
    "bayesian": "none",
    "hyperband": "none",
    "tpe": "asha",
    "cmaes": "asha",
}
REFERENCE_STRATEGY = "random"
OPTUNA = ("tpe", "cmaes", "gp", "random-optuna")


def split_strategy(label: str) -> tuple[str, str]:
    """``tpe`` → (tpe, asha); ``tpe:none`` → (tpe, none): a strategy with another pruner, to separate the
    sampler's effect from the pruner's."""
    name, _, pruner = label.partition(":")
    if not pruner:
        pruner = STRATEGIES.get(name, "asha" if name in OPTUNA else "none")
    return name, pruner


def check_strategy(label: str) -> str:
    name, pruner = split_strategy(label)
    if name not in STRATEGIES and name not in OPTUNA:
        raise argparse.ArgumentTypeError(f"unknown strategy {name!r}; expected one of {sorted(set(STRATEGIES) | set(OPTUNA))}")
    if pruner not in ("none", "median", "asha", "hyperband"):
        raise argparse.ArgumentTypeError(f"unknown pruner {pruner!r} in {label!r}")
    if name not in OPTUNA and pruner != "none":
        raise argparse.ArgumentTypeError(f"{name} is a Keras Tuner strategy: it cannot prune (pruner none only)")
    return label


def dataset_settings(name: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """Data section and search space of one benchmark dataset (None when it is not available)."""
    if name == "synthetic":
        from data import write_synthetic_dataset

        root = write_synthetic_dataset(args.workdir / "synthetic-64-n100-s0", n=100, size=64, seed=0)
        data = {"root": str(root), "image_size": 64, "channels": 1, "batch_size": 8}
        layers = (3, 5)
        epochs, patience = args.max_epochs, args.patience
        batch_norm: dict[str, Any] = {"value": False}
    elif name == "chd":
        root = args.chd_root
        if not (root / "train").is_dir():
            print(f"chd-ct-aorta not found at {root}: skipping that dataset", file=sys.stderr)
            return None
        data = {"root": str(root), "image_size": 128, "channels": 1, "batch_size": 4}
        layers = (3, 5)
        epochs, patience = args.max_epochs_chd, args.patience_chd
        # The aorta is ~0.8 % of each slice: without BatchNorm most short runs never leave dice 0 (measured).
        batch_norm = {"type": "choice", "values": [False, True]}
    else:
        raise ValueError(name)
    space = {
        "base_filters": {"type": "choice", "values": [8, 16]},
        "base_kernels": {"type": "choice", "values": [3, 5]},
        "num_layers": {"type": "int", "min": layers[0], "max": layers[1]},
        "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "log": True},
        "dropout_rate": {"type": "float", "min": 0.0, "max": 0.1},
        "dilation": {"type": "choice", "values": [1, 2]},
        "batch_norm": batch_norm,
        **{f"augment.{k}": {"value": 1.0 if k in ("hflip", "vflip") else 0.0} for k in (
            "hflip", "vflip", "rotation", "shrink", "shear", "elastic", "distortion", "barrel", "pincushion")},
    }
    train = {"max_epochs": epochs, "patience": patience, "reducer": {"factor": 0.5, "patience": 3}}
    return {"data": {**data, "num_val_predictions": 0, "cache_dir": str(args.workdir / ".cache")},
            "train": train, "search_space": space}


def study_raw(settings: dict[str, Any], *, name: str, strategy: str, seed: int, budget: float) -> dict[str, Any]:
    strategy, pruner = split_strategy(strategy)
    return {
        "study": {"name": name, "strategy": strategy, "pruner": pruner, "max_trials": 10_000,
                  "timeout_s": budget, "seed": seed, "baselines": False},
        "final": {"retrain": False},
        **settings,
    }


# --------------------------------------------------------------------------- one run (child process)


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Run one study; return its trials with times relative to the start."""
    import keras_tuner  # noqa: F401 - imported before the clock starts, for every strategy alike
    import optuna  # noqa: F401

    from search.config import config_from_dict
    from search.results import StudyDir
    from search.study.runner import run_study

    cfg = config_from_dict(job["raw"])
    results_root = Path(job["results_root"])
    t0 = time.time()
    run_study(cfg, results_root=results_root, show_progress=False)
    t_end = time.time()
    trials = []
    for r in StudyDir(results_root / cfg.study.name).trials():
        trials.append({
            "number": r.number, "status": r.status, "score": r.score, "epochs_run": r.epochs_run,
            "duration_s": round(r.duration_s, 2), "started_s": round(r.started_at - t0, 2),
            "finished_s": None if r.finished_at is None else round(r.finished_at - t0, 2),
            "values": r.values,
        })
    return {"t0": t0, "wall_s": round(t_end - t0, 2), "trials": trials}


# --------------------------------------------------------------------------- analysis


def best_curve(trials: list[dict[str, Any]], budget: float) -> list[tuple[float, float]]:
    """(time, best score so far) at every completed trial that improved it, within the budget."""
    done = sorted((t for t in trials if t["status"] == "complete" and t["score"] is not None
                   and t["finished_s"] is not None and t["finished_s"] <= budget), key=lambda t: t["finished_s"])
    curve: list[tuple[float, float]] = []
    best = -math.inf
    for t in done:
        if t["score"] > best:
            best = float(t["score"])
            curve.append((float(t["finished_s"]), best))
    return curve


def time_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    for t, best in curve:
        if best >= target - 1e-12:
            return t
    return None


def summarise(runs: list[dict[str, Any]], strategies: list[str]) -> list[dict[str, Any]]:
    rows = []
    datasets = sorted({r["dataset"] for r in runs})
    for ds in datasets:
        ref_best = {r["seed"]: r["final_best"] for r in runs if r["dataset"] == ds and r["strategy"] == REFERENCE_STRATEGY}
        for strategy in strategies:
            mine = [r for r in runs if r["dataset"] == ds and r["strategy"] == strategy]
            if not mine:
                continue
            finals = [r["final_best"] for r in mine if r["final_best"] is not None]
            fractions = []
            reached = 0
            compared = 0
            for r in mine:
                target = ref_best.get(r["seed"])
                if target is None:
                    continue
                compared += 1
                t = time_to_reach(r["curve"], target)
                if t is not None:
                    reached += 1
                    fractions.append(t / r["budget_s"])
            rows.append({
                "bench": "B6.summary",
                "dataset": ds,
                "strategy": strategy,
                "pruner": split_strategy(strategy)[1],
                "seeds": len(mine),
                "budget_s": mine[0]["budget_s"],
                "best_mean": round(statistics.mean(finals), 4) if finals else None,
                "best_sd": round(statistics.stdev(finals), 4) if len(finals) > 1 else None,
                "best_per_seed": [r["final_best"] for r in mine],
                "trials_in_budget_mean": round(statistics.mean(r["n_in_budget"] for r in mine), 1),
                "complete_mean": round(statistics.mean(r["n_complete"] for r in mine), 1),
                "pruned_mean": round(statistics.mean(r["n_pruned"] for r in mine), 1),
                "failed_mean": round(statistics.mean(r["n_failed"] for r in mine), 1),
                "reached_random_best": f"{reached}/{compared}",
                "fraction_to_random_best_median": round(statistics.median(fractions), 3) if fractions else None,
                "fraction_to_random_best": [round(f, 3) for f in fractions],
            })
    return rows


def winners(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset: the strategy with the best mean, its margin over the runner-up, and whether the margin is
    larger than the seed-to-seed spread (the larger of the two standard deviations)."""
    out = []
    for ds in sorted({r["dataset"] for r in summary}):
        ranked = sorted((r for r in summary if r["dataset"] == ds and r["best_mean"] is not None),
                        key=lambda r: r["best_mean"], reverse=True)
        if not ranked:
            continue
        top = ranked[0]
        second = ranked[1] if len(ranked) > 1 else None
        margin = round(top["best_mean"] - second["best_mean"], 4) if second else None
        spread = max((r["best_sd"] or 0.0) for r in ranked[:2]) if second else None
        out.append({
            "bench": "B6.winner", "dataset": ds, "winner": top["strategy"], "best_mean": top["best_mean"],
            "runner_up": second["strategy"] if second else None,
            "runner_up_best_mean": second["best_mean"] if second else None, "margin": margin,
            "spread_sd": spread, "seeds": top["seeds"],
            "within_noise": None if second is None or top["seeds"] < 2 else bool(margin <= spread),
        })
    return out


# --------------------------------------------------------------------------- driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", type=check_strategy, default=list(STRATEGIES),
                        help="strategies, optionally NAME:PRUNER for an Optuna one (e.g. tpe:none); default: "
                             + " ".join(f"{k}:{v}" for k, v in STRATEGIES.items()))
    parser.add_argument("--datasets", nargs="+", choices=["synthetic", "chd"], default=["synthetic", "chd"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--chd-seeds", type=int, nargs="+", default=None, help="seeds for chd (default: --seeds)")
    parser.add_argument("--budget", type=float, default=60.0, help="wall-clock seconds per study (study.timeout_s)")
    parser.add_argument("--budget-chd", type=float, default=None, help="budget for chd (default: --budget)")
    parser.add_argument("--max-epochs", type=int, default=15, help="train.max_epochs on the synthetic set")
    parser.add_argument("--max-epochs-chd", type=int, default=30)
    parser.add_argument("--patience", type=int, default=5, help="train.patience on the synthetic set")
    parser.add_argument("--patience-chd", type=int, default=10)
    parser.add_argument("--chd-root", type=Path, default=SHARED_DATA / "chd-ct-aorta")
    parser.add_argument("--workdir", type=Path, default=REPO / "results" / "benchmarks" / "search_efficiency")
    parser.add_argument("--out", type=Path, default=None, help="JSON summary (default: WORKDIR/summary.json)")
    parser.add_argument("--keep", action="store_true", help="keep every study folder")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="a previous summary JSON: its runs are kept, except those of the (dataset, strategy, "
                             "seed) run again now, and summarised together with the new ones")
    parser.add_argument("--summarise-only", action="store_true",
                        help="run nothing: summarise the runs of --reuse FILE again (tables, winners, --out)")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run_one:
        result = run_one(json.loads(args.run_one))
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    if args.summarise_only and not args.reuse:
        parser.error("--summarise-only needs --reuse FILE")
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = args.out or args.workdir / "summary.json"
    emit({**machine_info(tensorflow=False), "strategies": args.strategies, "datasets": args.datasets})

    import importlib.util

    if any(split_strategy(s)[0] == "cmaes" for s in args.strategies) and importlib.util.find_spec("cmaes") is None:
        # Optuna's CmaEsSampler imports the `cmaes` package only once it leaves its random start-up trials
        # (3 completed), and the project does not depend on it: the study then dies with ModuleNotFoundError.
        emit({"bench": "B6.warning", "strategy": "cmaes",
              "message": "the `cmaes` package is not installed: cmaes studies fail after 3 completed trials "
                         "(pip install cmaes, or put it on PYTHONPATH for this benchmark)"})

    from search.config import config_from_dict
    from search.study.dataset import prepare_data

    runs: list[dict[str, Any]] = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for ds in [] if args.summarise_only else args.datasets:
        settings = dataset_settings(ds, args)
        if settings is None:
            emit({"bench": "B6.skip", "dataset": ds, "reason": "not found"})
            continue
        budget = args.budget_chd if (ds == "chd" and args.budget_chd) else args.budget
        seeds = args.chd_seeds if (ds == "chd" and args.chd_seeds is not None) else args.seeds
        # Build the dataset cache once, outside every run's clock.
        prepare_data(config_from_dict(study_raw(settings, name="warm", strategy="tpe", seed=0, budget=budget)),
                     args.workdir / "results")
        for i, seed in enumerate(seeds):
            # Rotate the order per seed so a slow spell of the shared machine does not always hit one strategy.
            order = args.strategies[i % len(args.strategies):] + args.strategies[: i % len(args.strategies)]
            for strategy in order:
                name = f"b6-{ds}-{strategy.replace(':', '-')}-s{seed}-{stamp}"
                job = {"raw": study_raw(settings, name=name, strategy=strategy, seed=seed, budget=budget),
                       "results_root": str(args.workdir / "results")}
                t_start = time.time()
                proc = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--run-one", json.dumps(job)],
                    capture_output=True, text=True, timeout=budget * 4 + 300, cwd=REPO,
                )
                line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("RESULT ")), None)
                if proc.returncode != 0 or line is None:
                    emit({"bench": "B6.error", "dataset": ds, "strategy": strategy, "seed": seed,
                          "returncode": proc.returncode, "stderr_tail": proc.stderr[-2000:]})
                    continue
                result = json.loads(line[len("RESULT "):])
                trials = result["trials"]
                curve = best_curve(trials, budget)
                in_budget = [t for t in trials if t["finished_s"] is not None and t["finished_s"] <= budget]
                run = {
                    "bench": "B6.run", "dataset": ds, "strategy": strategy, "pruner": split_strategy(strategy)[1],
                    "seed": seed, "budget_s": budget, "study_wall_s": result["wall_s"],
                    "process_wall_s": round(time.time() - t_start, 1),
                    "n_trials": len(trials), "n_in_budget": len(in_budget),
                    "n_complete": sum(t["status"] == "complete" for t in in_budget),
                    "n_pruned": sum(t["status"] == "pruned" for t in in_budget),
                    "n_failed": sum(t["status"] == "failed" for t in in_budget),
                    "final_best": curve[-1][1] if curve else None,
                    "curve": curve,
                    "trials": [{k: t[k] for k in ("number", "status", "score", "epochs_run", "finished_s")}
                               for t in trials],
                }
                runs.append(emit(run))
                if not args.keep:
                    shutil.rmtree(args.workdir / "results" / name, ignore_errors=True)

    strategies = list(args.strategies)
    if args.reuse:
        again = {(r["dataset"], r["strategy"], r["seed"]) for r in runs}
        old = json.loads(args.reuse.read_text())
        kept = [r for r in old["runs"] if (r["dataset"], r["strategy"], r["seed"]) not in again]
        emit({"bench": "B6.reuse", "file": str(args.reuse), "runs_kept": len(kept), "runs_new": len(runs)})
        runs = kept + runs
        seen = list(dict.fromkeys(r["strategy"] for r in runs))
        strategies = [s for s in STRATEGIES if s in seen] + [s for s in seen if s not in STRATEGIES]
    summary = summarise(runs, strategies)
    for row in summary:
        emit(row)
    verdicts = [emit(w) for w in winners(summary)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                               "machine": machine_info(tensorflow=False), "runs": runs, "summary": summary,
                               "winners": verdicts},
                              indent=1))
    print_table(runs, [
        ("dataset", "dataset"), ("strategy", "strategy"), ("seed", "seed"), ("budget_s", "budget s"),
        ("n_in_budget", "trials"), ("n_complete", "complete"), ("n_pruned", "pruned"), ("n_failed", "failed"),
        ("final_best", "best dice"), ("study_wall_s", "study wall s"),
    ], title="B6 runs (trials finished within the budget)")
    print_table(summary, [
        ("dataset", "dataset"), ("strategy", "strategy"), ("pruner", "pruner"), ("seeds", "seeds"),
        ("trials_in_budget_mean", "trials"), ("best_mean", "best dice mean"), ("best_sd", "sd"),
        ("reached_random_best", "reached random's best"),
        ("fraction_to_random_best_median", "budget fraction (median)"),
    ], title="B6 summary (best validation hard dice at the budget; budget fraction to reach KT random's final best)")
    for w in verdicts:
        noise = {True: "within the seed-to-seed spread (noise)", False: "larger than the seed-to-seed spread",
                 None: "one seed only: no spread to compare with"}[w["within_noise"]]
        print(f"{w['dataset']}: best mean dice {w['best_mean']} by {w['winner']}"
              + (f", {w['margin']:+.4f} over {w['runner_up']} ({w['runner_up_best_mean']}); {noise}"
                 if w["runner_up"] else ""))
    print(f"\nJSON summary: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
