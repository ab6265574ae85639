"""B14: the reference tool's UNet families as search choices (issue 23).

Two measurements, each side by side in one run:

* ``steps``: the train-step time of every family ÷ the UNet's at a matched parameter count (128², 1 channel,
  batch 2, batch norm): each family's ``base_filters`` is the one whose analytic parameter count is nearest the
  UNet's (16 filters, 5 levels, 3×3); the families are timed in interleaved rounds in one process.
* ``search``: per dataset and seed, two studies with the same budget run at once, each pinned to its own core:
  ``all`` searches ``variant`` over every family, ``unet`` the shipped space (the UNet alone). Each is
  ``python -m search run --data DIR --timeout T --set data.image_size=128`` as a user types it.

    .venv/bin/python benchmarks/families.py steps
    .venv/bin/python benchmarks/families.py search --datasets chd-ct-aorta --seeds 0 --timeout 1800 --code SNAPSHOT
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    REPO,
    SHARED_DATA,
    add_real_data_args,
    emit,
    machine_info,
    median,
    real_data_results,
    table,
)
from benchmarks.budget import json_dict, summarise  # noqa: E402
from models import UNetSpec, estimate_cost  # noqa: E402
from models.families import FAMILIES  # noqa: E402
from search.results import StudyDir  # noqa: E402
from search.results.layout import TRIAL_JSON  # noqa: E402

USER = ["data.image_size=128"]
ALL_FAMILIES = "search_space.variant={type: choice, values: [" + ", ".join(FAMILIES) + "]}"
ARMS = {"all": [ALL_FAMILIES], "unet": []}
REFERENCE = UNetSpec(image_size=128, channels=1, base_filters=16, base_kernels=3, num_layers=5, dilation=1,
                     dropout_rate=0.0, batch_norm=True)


# ------------------------------------------------------------------------------------------------ step times


def matched_spec(family: str) -> UNetSpec | None:
    """The family at 128² whose parameter count is nearest the reference UNet's (None: nothing builds)."""
    target = estimate_cost(REFERENCE).params
    best: tuple[float, UNetSpec] | None = None
    for layers in (5, 4, 6, 3):
        for filters in range(2, 97):
            spec = UNetSpec(**{**REFERENCE.to_dict(), "variant": family, "base_filters": filters, "num_layers": layers})
            try:
                spec.validate()
            except ValueError:
                continue
            gap = abs(math.log(estimate_cost(spec).params / target))
            if best is None or gap < best[0]:
                best = (gap, spec)
        if best is not None:
            return best[1]
    return None


def step_times(rounds: int, steps: int) -> list[dict[str, Any]]:
    """Seconds per train step of each family (median over rounds), interleaved round by round."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from models import build_model, get_loss

    specs = {name: matched_spec(name) for name in FAMILIES}
    models: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 128, 128, 1)).astype("float32")
    masks = (rng.random((2, 128, 128, 1)) > 0.8).astype("float32")
    for name, spec in specs.items():
        if spec is None:
            continue
        model = build_model(spec)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=get_loss("bce_dice"))
        for _ in range(3):  # trace and warm up
            model.train_on_batch(images, masks)
        models[name] = model
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(images, masks)
            times[name].append((time.perf_counter() - t0) / steps)
    unet = median(times["unet"])
    rows = []
    for name, spec in specs.items():
        if spec is None or name not in times:
            rows.append(emit({"bench": "B14-steps", "family": name, "params": None}))
            continue
        cost = estimate_cost(spec)
        rows.append(emit({
            "bench": "B14-steps", "family": name, "base_filters": spec.base_filters, "num_layers": spec.num_layers,
            "params": cost.params, "params_ratio": round(cost.params / estimate_cost(REFERENCE).params, 3),
            "gmacs": round(cost.forward_macs_per_image / 1e9, 3), "step_ms": round(1000 * median(times[name]), 1),
            "step_ratio": round(median(times[name]) / unet, 2),
            "macs_ratio": round(cost.forward_macs_per_image / estimate_cost(REFERENCE).forward_macs_per_image, 2),
        }))
    return rows


# ------------------------------------------------------------------------------------------------ searches


def start(dataset: str, arm: str, seed: int, *, timeout: float, results: Path, extra: list[str], code: Path,
          core: int | None) -> tuple[subprocess.Popen[bytes], str, float]:
    study = f"b14-{dataset}-{arm}-t{timeout:.0f}-s{seed}"
    sets = [*USER, f"study.seed={seed}", *ARMS[arm], *extra]
    cmd = [sys.executable, "-m", "search", "--results", str(results), "run", "--data", str(SHARED_DATA / dataset),
           "--study", study, "--timeout", f"{timeout:g}", *[a for s in sets for a in ("--set", s)]]
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(code)}
    log = open(results / f"{study}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT), study, time.perf_counter()


def per_family(root: Path) -> dict[str, dict[str, Any]]:
    """Each family's trials (started, complete) and best validation dice, from trials.csv."""
    path = root / "trials.csv"
    rows = list(csv.DictReader(open(path))) if path.is_file() else []
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["reason"].startswith("not started"):
            continue
        fam = out.setdefault(row.get("variant") or "unet", {"started": 0, "complete": 0, "best_val": None})
        fam["started"] += 1
        if row["status"] == "complete" and row["score"]:
            fam["complete"] += 1
            fam["best_val"] = max(float(row["score"]), fam["best_val"] or 0.0)
    return out


def summary(dataset: str, arm: str, seed: int, study: str, *, timeout: float, results: Path,
            exit_code: int | None, wall: float | None) -> dict[str, Any]:
    root = results / study
    final = json_dict(root / "final" / "final.json")
    trial = final.get("trial")
    chosen = json_dict(StudyDir(root).trial_dir(trial) / TRIAL_JSON) if isinstance(trial, int) else {}
    return {"bench": "B14-search", "dataset": dataset, "arm": arm, "seed": seed, "budget_s": timeout,
            "exit": exit_code, "wall_over_budget": None if wall is None else round(wall / timeout, 3),
            **summarise(root), "chosen_family": (chosen.get("values") or {}).get("variant", "unet" if chosen else None),
            "families": per_family(root)}


def searches(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = real_data_results(args)
    if results is None:
        return []
    code = Path(args.code).resolve()
    rows = []
    with open(results / "b14.jsonl", "a") as out:
        for dataset in args.datasets:
            for seed in args.seeds:
                running = {}
                for core, arm in enumerate(ARMS):
                    if args.report_only:
                        running[arm] = (None, f"b14-{dataset}-{arm}-t{args.timeout:.0f}-s{seed}", None)
                        continue
                    running[arm] = start(dataset, arm, seed, timeout=args.timeout, results=results, extra=args.set,
                                         code=code, core=None if args.no_pin else core % max(1, os.cpu_count() or 1))
                for arm, (proc, study, t0) in running.items():
                    exit_code = proc.wait() if proc is not None else None
                    wall = time.perf_counter() - t0 if t0 is not None else None
                    row = emit(summary(dataset, arm, seed, study, timeout=args.timeout, results=results,
                                       exit_code=exit_code, wall=wall))
                    if not args.report_only:
                        out.write(json.dumps(row) + "\n")
                        out.flush()
                    rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    steps = sub.add_parser("steps", help="train-step time per family at a matched parameter count")
    steps.add_argument("--rounds", type=int, default=5)
    steps.add_argument("--steps", type=int, default=5)
    search = sub.add_parser("search", help="all families against the UNet alone, same budget, side by side")
    search.add_argument("--timeout", type=float, default=1800.0)
    search.add_argument("--no-pin", action="store_true")
    add_real_data_args(search, results=REPO / "results" / "benchmarks" / "families")
    args = ap.parse_args(argv)
    if args.what == "steps":
        emit(machine_info())
        rows = step_times(args.rounds, args.steps)
        print(table(rows, [("family", "family"), ("base_filters", "F0"), ("num_layers", "L"), ("params", "params"),
                           ("params_ratio", "params ÷ unet"), ("gmacs", "GMACs"), ("macs_ratio", "MACs ÷ unet"),
                           ("step_ms", "ms/step"), ("step_ratio", "step ÷ unet")],
                    title="B14: train step at 128², batch 2, matched parameters"))
        return 0
    rows = searches(args)
    print(table(rows, [("dataset", "dataset"), ("arm", "arm"), ("seed", "seed"), ("wall_over_budget", "wall/budget"),
                       ("judged", "judged"), ("best_val", "best val"), ("test_hard_dice", "test dice"),
                       ("chosen_family", "chosen"), ("verdict", "verdict")],
                title="B14: every family vs the UNet alone, 128²"))
    for row in rows:
        if row["arm"] == "all":
            print(f"{row['dataset']} seed {row['seed']}: " + "; ".join(
                f"{name} {f['complete']}/{f['started']} best {f['best_val'] if f['best_val'] is not None else '-'}"
                for name, f in row["families"].items()))
    return 0 if rows else 2


if __name__ == "__main__":
    raise SystemExit(main())
