"""B4 + B5: per-trial overhead of the search machinery, and the driver's memory over many trials.

Runs one study of N identical-cost trials (random-optuna, pruner none, only the learning rate sampled, no
early stopping) through ``search.study.runner.run_study(show_progress=False)`` on a synthetic CT-like dataset, with
a ``TrialProcess`` subclass that timestamps every ``run`` and reads VmRSS from /proc (psutil is not a
dependency). The number of epochs is calibrated first (in a separate process) so a trial trains for about
``--trial-s`` seconds.

B4, three views of the overhead, each ``(wall − train_s) ÷ wall``, train_s being the seconds spent inside
``model.fit`` (training + validation, tf.function tracing of the first epoch included) from trial.json:
  * worker:  wall = trial.json ``duration_s`` (the worker's run_task: config, build, compile, train,
             per-epoch checkpoints and history, predictions, weights);
  * pool:    wall = ``TrialProcess.run`` in the driver (adds the pipe and, on the first trial and after each
             recycle, the worker's spawn + TensorFlow import);
  * driver:  wall = time between the ends of consecutive trials (adds the engine's sampling, the results
             records, trials.csv and report.html refresh); the first trial's also covers the study set-up.
Target: ≤ 5 % for 60 s trials.

B5: the driver's VmRSS after trial 1 (sampled when trial 2 starts, i.e. after trial 1's bookkeeping and
report) and after the last trial (after ``run_study`` returned); a thread also records the peak.
Target: growth ≤ 200 MiB over 30 trials.

    .venv/bin/python benchmarks/trial_overhead.py                            # 6 trials × ≈15 s, ≈ 2.5 min
    .venv/bin/python benchmarks/trial_overhead.py --trials 30 --trial-s 60   # the full measurement, ≈ 35 min
"""

from __future__ import annotations

import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import argparse  # noqa: E402
import shutil  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _common import REPO, emit, machine_info, median, print_table, vmrss_mib  # noqa: E402

from search.trial.process import DecideEpoch, TrialProcess  # noqa: E402
from search.trial.task import TrialOutcome, TrialTask  # noqa: E402

AUGMENT_PRESETS = {
    "none": {},
    "flips": {"hflip": 1.0, "vflip": 1.0},
    "all": {k: 1.0 for k in ("hflip", "vflip", "rotation", "shrink", "shear", "elastic", "distortion", "barrel",
                             "pincushion")},
}


class MeasuredPool(TrialProcess):
    """A TrialProcess that records, for every run: wall times, whether a worker was started, RSS."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs: list[dict[str, Any]] = []

    def run(self, task: TrialTask, decide: DecideEpoch) -> TrialOutcome:
        before_pid = self.pid
        recycle = self._proc is not None and (self._tasks_done >= self.recycle_after or not self._proc.is_alive())
        rss_start = vmrss_mib()
        t0 = time.time()
        outcome = super().run(task, decide)
        t1 = time.time()
        self.runs.append({
            "number": task.number,
            "start": t0,
            "end": t1,
            "new_worker": before_pid is None or recycle or self.pid != before_pid,
            "worker_pid": self.pid,
            "driver_rss_start_mib": rss_start,
            "driver_rss_end_mib": vmrss_mib(),
            "worker_rss_end_mib": vmrss_mib(self.pid) if self.pid is not None else None,
            "status": outcome.status,
        })
        return outcome


class RssPoller(threading.Thread):
    """Samples this process's VmRSS every ``interval`` seconds; keeps the peak."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = 0.0
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = vmrss_mib() or 0.0
            self.peak = max(self.peak, rss)
            self.samples.append((time.time(), rss))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def study_config(args: argparse.Namespace, *, data_root: Path, cache_dir: Path, name: str, epochs: int) -> dict[str, Any]:
    augment = AUGMENT_PRESETS[args.augment]
    return {
        "study": {"name": name, "strategy": "random-optuna", "pruner": "none", "max_trials": args.trials,
                  "seed": args.seed, "baselines": False, "recycle_after": args.recycle_after},
        "data": {"root": str(data_root), "image_size": args.size, "channels": 1, "batch_size": args.batch,
                 "num_val_predictions": 2, "cache_dir": str(cache_dir)},
        "train": {"max_epochs": epochs, "patience": epochs, "min_epochs": 1},
        "final": {"retrain": False},
        "search_space": {
            "base_filters": {"value": args.base_filters},
            "base_kernels": {"value": 3},
            "num_layers": {"value": args.num_layers},
            "learning_rate": {"type": "float", "min": 1e-3, "max": 3e-3, "log": True},
            "dropout_rate": {"value": 0.0},
            "dilation": {"value": 1},
            "batch_norm": {"value": False},
            **{f"augment.{k}": {"value": augment.get(k, 0.0)} for k in AUGMENT_PRESETS["all"]},
        },
    }


def _calibrate(raw: dict[str, Any], cache_path: str, epochs: int) -> dict[str, float]:
    """In a fresh process: train the trial's configuration for a few epochs; seconds per epoch."""
    from search.trial.runtime import configure_runtime

    configure_runtime()
    from data import open_cache
    from search.config import config_from_dict
    from search.config.specs import specs_from_values
    from search.trial.training import train_model

    cfg = config_from_dict(raw)
    values = {**cfg.fixed_values(), "learning_rate": 2e-3}
    specs = specs_from_values(cfg, values, seed=0, max_epochs=epochs)
    data = open_cache(cache_path)
    train, valid = data.split("train"), data.split("valid")
    result = train_model(specs, train_images=train.images, train_masks=train.masks, valid_images=valid.images,
                         valid_masks=valid.masks)
    times = [float(h["epoch_s"]) for h in result.history]
    return {"first_epoch_s": times[0], "epoch_s": median(times[1:]) if len(times) > 1 else times[0]}


def summarise(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": float("nan"), "median": float("nan"), "max": float("nan")}
    return {"mean": round(sum(values) / len(values), 4), "median": round(median(values), 4),
            "max": round(max(values), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--trial-s", type=float, default=15.0, help="target training seconds per trial")
    parser.add_argument("--recycle-after", type=int, default=3,
                        help="study.recycle_after (product default 10); 3 shows recycling in a short run")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--n", type=int, default=160, help="synthetic images (70/15/15 split)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--base-filters", type=int, default=8)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--augment", choices=sorted(AUGMENT_PRESETS), default="all")
    parser.add_argument("--epochs", type=int, default=0, help="max_epochs per trial; 0 = calibrate to --trial-s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=REPO / "results" / "benchmarks" / "trial_overhead")
    parser.add_argument("--keep", action="store_true", help="keep the study folder (default: deleted)")
    args = parser.parse_args()

    from data import write_synthetic_dataset
    from search.config import config_from_dict
    from search.results import StudyDir
    from search.study.dataset import prepare_data
    from search.study.runner import run_study
    from search.tools.report import refresh_report

    emit(machine_info(tensorflow=False))
    args.workdir.mkdir(parents=True, exist_ok=True)
    data_root = write_synthetic_dataset(args.workdir / f"synthetic-{args.size}-n{args.n}", n=args.n,
                                        size=args.size, seed=0)
    cache_dir = args.workdir / ".cache"
    name = time.strftime("overhead-%Y%m%d-%H%M%S")
    results_root = args.workdir / "results"

    probe = config_from_dict(study_config(args, data_root=data_root, cache_dir=cache_dir, name=name, epochs=3))
    data = prepare_data(probe, results_root)
    epochs = args.epochs
    calib: dict[str, float] = {}
    if not epochs:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as ex:
            calib = ex.submit(_calibrate, probe.to_dict(), data.cache_path, 3).result()
        epochs = max(1, round((args.trial_s - (calib["first_epoch_s"] - calib["epoch_s"])) / calib["epoch_s"]))
        emit({"bench": "B4.calibration", **{k: round(v, 3) for k, v in calib.items()}, "epochs": epochs,
              "trial_s_target": args.trial_s})
    cfg = config_from_dict(study_config(args, data_root=data_root, cache_dir=cache_dir, name=name, epochs=epochs))

    pool = MeasuredPool(recycle_after=cfg.study.recycle_after,
                        runtime={"mixed_precision": cfg.train.mixed_precision, "deterministic": cfg.train.deterministic})
    poller = RssPoller()
    rss_before = vmrss_mib()
    poller.start()
    t_start = time.time()
    try:
        run_study(cfg, results_root=results_root, show_progress=False, trial_process=pool,
                  on_trial_end=refresh_report)  # as `run` does
        t_end = time.time()
        rss_after_study = vmrss_mib()
    finally:
        pool.close()
        poller.stop()

    study = StudyDir(results_root / name)
    records = {r.number: r for r in study.trials()}
    rows = []
    prev_end = t_start
    for run in pool.runs:
        rec = records[run["number"]]
        pool_wall = run["end"] - run["start"]
        driver_wall = run["end"] - prev_end
        prev_end = run["end"]
        row = {
            "bench": "B4.trial", "number": rec.number, "status": rec.status, "epochs": rec.epochs_run,
            "train_s": round(rec.train_s, 3), "duration_s": round(rec.duration_s, 3),
            "pool_wall_s": round(pool_wall, 3), "driver_wall_s": round(driver_wall, 3),
            "new_worker": run["new_worker"],
            "overhead_worker": round((rec.duration_s - rec.train_s) / rec.duration_s, 4),
            "overhead_pool": round((pool_wall - rec.train_s) / pool_wall, 4),
            "overhead_driver": round((driver_wall - rec.train_s) / driver_wall, 4),
            "driver_rss_start_mib": round(run["driver_rss_start_mib"] or 0, 1),
            "driver_rss_end_mib": round(run["driver_rss_end_mib"] or 0, 1),
            "worker_rss_end_mib": round(run["worker_rss_end_mib"], 1) if run["worker_rss_end_mib"] else None,
        }
        rows.append(emit(row))

    total_wall = t_end - t_start
    total_train = sum(r["train_s"] for r in rows)
    reused = [r for r in rows if not r["new_worker"]]
    rss_first = rows[1]["driver_rss_start_mib"] if len(rows) > 1 else rows[0]["driver_rss_end_mib"]
    rss_last = round(rss_after_study or 0.0, 1)
    growth = rss_last - rss_first
    per_trial = growth / max(1, len(rows) - 1)
    summary = {
        "bench": "B4",
        "trials": len(rows),
        "statuses": sorted({r["status"] for r in rows}),
        "epochs_per_trial": epochs,
        "recycle_after": cfg.study.recycle_after,
        "workers_started": sum(r["new_worker"] for r in rows),
        "size": args.size, "augment": args.augment, "batch": args.batch,
        "train_s_mean": round(total_train / len(rows), 2),
        "duration_s_mean": round(sum(r["duration_s"] for r in rows) / len(rows), 2),
        "overhead_worker": summarise([r["overhead_worker"] for r in rows]),
        "overhead_pool": summarise([r["overhead_pool"] for r in rows]),
        "overhead_pool_reused_worker": summarise([r["overhead_pool"] for r in reused]),
        "overhead_driver": summarise([r["overhead_driver"] for r in rows]),
        "overhead_driver_excluding_first": summarise([r["overhead_driver"] for r in rows[1:]]),
        "overhead_end_to_end": round((total_wall - total_train) / total_wall, 4),
        "study_wall_s": round(total_wall, 1),
        "target": 0.05,
    }
    emit(summary)
    rss = {
        "bench": "B5",
        "trials": len(rows),
        "driver_rss_before_mib": round(rss_before or 0.0, 1),
        "driver_rss_after_trial1_mib": rss_first,
        "driver_rss_after_last_mib": rss_last,
        "driver_rss_peak_mib": round(poller.peak, 1),
        "growth_mib": round(growth, 1),
        "growth_per_trial_mib": round(per_trial, 2),
        "growth_extrapolated_30_trials_mib": round(per_trial * 29, 1),
        "worker_rss_end_mib": [r["worker_rss_end_mib"] for r in rows],
        "target_mib_over_30": 200,
    }
    emit(rss)

    print_table(rows, [
        ("number", "trial"), ("new_worker", "new worker"), ("epochs", "epochs"), ("train_s", "train s"),
        ("duration_s", "duration s"), ("pool_wall_s", "pool s"), ("driver_wall_s", "driver s"),
        ("overhead_worker", "ovh worker"), ("overhead_pool", "ovh pool"), ("overhead_driver", "ovh driver"),
        ("driver_rss_end_mib", "driver RSS MiB"), ("worker_rss_end_mib", "worker RSS MiB"),
    ], title="B4/B5 per trial (overhead = (wall − train_s) ÷ wall)")
    print_table([
        {"view": "worker (duration_s)", **summary["overhead_worker"]},
        {"view": "pool (TrialProcess.run)", **summary["overhead_pool"]},
        {"view": "pool, reused worker", **summary["overhead_pool_reused_worker"]},
        {"view": "driver (end to end)", **summary["overhead_driver"]},
        {"view": "driver, trials 2..N", **summary["overhead_driver_excluding_first"]},
    ], [("view", "overhead view"), ("mean", "mean"), ("median", "median"), ("max", "max")],
        title=f"B4 overhead over {len(rows)} trials of ≈{summary['train_s_mean']} s training (target ≤ 0.05); "
              f"whole study: {summary['overhead_end_to_end']}")
    print(f"\nB5 driver RSS: {rss_first:.1f} MiB after trial 1 → {rss_last:.1f} MiB after trial {len(rows)} "
          f"(growth {growth:+.1f} MiB, {per_trial:+.2f} MiB/trial, peak {poller.peak:.1f} MiB; "
          f"target ≤ 200 MiB over 30 trials)")
    if not args.keep:
        shutil.rmtree(results_root / name, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
