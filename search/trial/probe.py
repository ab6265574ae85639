"""The throughput probe, in the trial process: a few timed optimizer steps of the baseline configuration on
the study's own images (augmentation included) and a timed validation pass; search/study/throughput.py plans
the budget with the result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from search.trial.task import TrialOutcome, TrialTask
from search.trial.training import compile_model, label_count
from search.vocabulary import TrialState

__all__ = ["ProbeTask", "run_probe"]

logger = logging.getLogger(__name__)

PROBE_TARGET_S = 1.0  # time at least this long a batch of steps (grown by doubling)
PROBE_MAX_STEPS = 32
PROBE_VALID_IMAGES = 16


@dataclass
class ProbeTask(TrialTask):
    """Measure how fast ``specs`` trains and validates here; nothing is written (a dry run has no study folder)."""

    def run(self, data: Any, on_epoch: Any = None, stop: Any = None) -> TrialOutcome:
        """A TrialOutcome whose metrics hold the measured speeds."""
        return run_probe(self, data)


def run_probe(task: TrialTask, data: Any) -> TrialOutcome:
    """The probe in the trial process: a TrialOutcome whose metrics hold the measured speeds."""
    t0 = time.perf_counter()
    try:
        metrics = _measure(task, data)
    except Exception as e:  # noqa: BLE001 - a probe that cannot train is a failed probe, not a crash
        logger.debug("throughput probe failed", exc_info=True)
        return TrialOutcome(status=TrialState.FAILED, reason=f"{type(e).__name__}: {str(e)[:200]}")
    metrics["total_s"] = time.perf_counter() - t0
    return TrialOutcome(status=TrialState.COMPLETE, metrics=metrics, duration_s=metrics["total_s"])


def _measure(task: TrialTask, data: Any) -> dict[str, float]:
    import numpy as np

    from data import eval_dataset, train_dataset

    specs = task.specs
    t, batch = specs.train, specs.train.batch_size
    train, valid = data.split("train"), data.split("valid")
    t0 = time.perf_counter()
    model = compile_model(specs)

    def fit(steps: int, epoch: int) -> float:
        ds = train_dataset(train.images, train.masks, batch_size=batch, augment=specs.augment, seed=t.seed,
                           epoch=epoch, steps=steps, num_classes=label_count(specs))
        start = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0, shuffle=False)
        return time.perf_counter() - start

    fit(1, 0)  # traces the train step
    built_s = time.perf_counter() - t0
    n_valid = min(len(valid.images), PROBE_VALID_IMAGES)
    valid_ds = eval_dataset(np.asarray(valid.images[:n_valid]), np.asarray(valid.masks[:n_valid]), batch_size=batch,
                            num_classes=label_count(specs))
    start = time.perf_counter()
    model.evaluate(valid_ds, verbose=0)  # traces the test step
    eval_first = time.perf_counter() - start
    steps, seconds = 2, fit(2, 1)
    while seconds < PROBE_TARGET_S and steps < PROBE_MAX_STEPS:
        steps *= 2
        seconds = fit(steps, 2)
    double = fit(2 * steps, 3)
    per_step = max((double - seconds) / steps, 0.5 * double / (2 * steps))  # the difference; guard against noise
    overhead = max(0.0, seconds - steps * per_step)
    start = time.perf_counter()
    model.evaluate(valid_ds, verbose=0)
    eval_s = max(1e-3, time.perf_counter() - start)
    return {
        "train_samples_per_s": batch / per_step,
        "eval_samples_per_s": n_valid / eval_s,
        "epoch_overhead_s": overhead,
        # build and compile, the first step's tracing beyond a normal step, the first validation's tracing
        "startup_s": max(0.0, built_s - per_step - overhead) + max(0.0, eval_first - eval_s),
        "steps_timed": float(3 * steps),
    }
