"""How fast this machine trains: a short probe of the baseline configuration, and the trials' own speed.

The budget's plan (search/study/budget.py) needs seconds per training sample before the first trial starts.
A new study measures them once with a probe in its trial process (:func:`measure_throughput`; the
process then runs the trials): a few timed optimizer steps of the baseline configuration on the
study's own images (augmentation included), and a timed validation pass. It costs a few seconds
(about 10 at 128² on 2 CPU cores) and writes nothing but ``budget.json``. A resumed study refines
the measurement with the epochs its trials ran (:func:`study_throughput`).
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

from models import train_work
from search.config import Config
from search.config.space import baseline_values, complete_values
from search.config.specs import specs_from_values, trial_seed
from search.errors import TrialFailed
from search.results import StudyDir
from search.study.budget import Throughput, TrialSpeed, calibrate, read_budget_file
from search.trial.probe import ProbeTask
from search.vocabulary import EpochDecision, TrialState

__all__ = ["measure_throughput", "reference_work", "study_throughput", "trial_speeds"]

logger = logging.getLogger(__name__)


def measure_throughput(cfg: Config, data: Any, process: Any) -> Throughput | None:
    """Probe the baseline configuration in ``process`` (a TrialProcess); None if it cannot train here."""
    try:
        specs = specs_from_values(cfg, complete_values(cfg, baseline_values(cfg)), seed=trial_seed(cfg.study.seed, 0))
    except TrialFailed as e:
        logger.warning("throughput probe: the baseline configuration cannot be built (%s)", e.reason)
        return None
    task = ProbeTask(number=-1, specs=specs, out_dir="", cache_path=data.cache_path)
    t0 = time.perf_counter()
    outcome = process.run(task, lambda report: EpochDecision.CONTINUE)
    wall = time.perf_counter() - t0
    if outcome.status != TrialState.COMPLETE:
        logger.warning("throughput probe failed (%s); the budget is kept by the deadline alone", outcome.reason)
        return None
    m = outcome.metrics
    tp = Throughput(train_samples_per_s=float(m["train_samples_per_s"]), eval_samples_per_s=float(m["eval_samples_per_s"]),
                    startup_s=float(m["startup_s"]), spawn_s=max(0.0, wall - float(m["total_s"])),
                    epoch_overhead_s=float(m["epoch_overhead_s"]), image_size=cfg.data.image_size, source="probe")
    logger.info("throughput probe (%.0f s): the baseline configuration trains %.3g samples/s and validates %.3g "
                "samples/s at %d²; a trial starts in ≈ %.1f s", wall, tp.train_samples_per_s, tp.eval_samples_per_s,
                cfg.data.image_size, tp.startup_s)
    return tp


def reference_work(cfg: Config) -> float:
    """``models.train_work`` of the baseline configuration, the model the throughput is measured on.

    Raises:
        TrialFailed: the baseline configuration cannot be built at this image size.
    """
    values = complete_values(cfg, baseline_values(cfg))
    return max(1.0, train_work(specs_from_values(cfg, values, seed=0).model))


def trial_speeds(study: StudyDir, cfg: Config) -> list[TrialSpeed]:
    """Each finished trial's median epoch seconds (its first epoch, which traces, left out) and its
    cost relative to the baseline configuration (``models.train_work``)."""
    try:
        ref = reference_work(cfg)
    except TrialFailed:
        return []
    samples = cfg.rule("samples_per_epoch")
    if cfg.train.steps_per_epoch is not None or samples is None:
        steps = cfg.steps_per_epoch
        samples = steps * cfg.data.batch_size if steps is not None else None
    out: list[TrialSpeed] = []
    for rec in study.trials():
        if rec.status == TrialState.RUNNING or rec.epochs_run < 2 or samples is None:
            continue
        # Full-size epochs only (a first rung trains at a smaller size; search/trial/training.py, FirstRung).
        seconds = [float(h["epoch_s"]) for h in study.read_history(rec.number)[1:]
                   if "epoch_s" in h and h.get("image_size") in (None, "", cfg.data.image_size)]
        if not seconds:
            continue
        try:
            work = train_work(specs_from_values(cfg, rec.values, seed=0).model)
        except (TrialFailed, KeyError, ValueError):
            continue
        out.append(TrialSpeed(epoch_s=statistics.median(seconds), samples_per_epoch=int(samples),
                              work_ratio=work / ref))
    return out


def study_throughput(study: StudyDir, cfg: Config, data: Any, process: Any, *,
                     probe: bool) -> tuple[Throughput | None, Throughput | None]:
    """The study's measurement (budget.json, else a probe now if ``probe``), refined by its trials.

    Returns the throughput and the probe's result when it ran now (to be kept in budget.json).
    """
    stored = Throughput.from_dict(read_budget_file(study.root).get("throughput") or {})
    if stored is not None and stored.image_size not in (0, cfg.data.image_size):
        stored = None  # measured at another size (a resumed study keeps its size; a dry run may not)
    fresh = measure_throughput(cfg, data, process) if stored is None and probe else None
    speeds = trial_speeds(study, cfg) if study.exists() else []
    return calibrate(stored or fresh, speeds), fresh
