"""The trial executor: what both engines call to run one trial.

It writes the trial's record (``trials/<n>/trial.json``, ``trials.csv``) before and after, runs the
trial in the driver's :class:`~search.trial.process.TrialProcess`, and answers each epoch: this is
where a trial is pruned (the engine's ``should_prune`` asked with the running best) or stopped.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import platform
import time
from collections.abc import Callable
from typing import Any

from models import train_work
from search.config import Config
from search.config.space import complete_values
from search.config.specs import check_memory, specs_from_values, trial_seed
from search.errors import Interrupted, SearchAborted, TrialFailed
from search.evaluation import FoldPlan
from search.results import StudyDir, TrialRecord, atomic_write_json
from search.results.layout import CHECKPOINT_DIR, SCORES_FILE, VALUES_JSON, fold_dir
from search.study.budget import NOT_STARTED, BudgetPlan, Deadline, Throughput, calibrate
from search.study.dataset import PreparedData, study_units
from search.study.progress import Progress
from search.study.throughput import reference_work, trial_speeds
from search.trial.holdout import HoldoutTask
from search.trial.kfold import KFoldTask
from search.trial.process import DecideEpoch, TrialProcess
from search.trial.runtime import device_memory_budget
from search.trial.task import EpochReport, TrialOutcome, TrialOutputs, TrialTask, row_score
from search.trial.training import Checkpoint
from search.vocabulary import EpochDecision, PruneHook, TrialState

__all__ = ["NOT_STARTED_LIMIT", "TrialExecutor"]

logger = logging.getLogger(__name__)

# Configurations not started for the budget in a row before the search ends (the sampler keeps
# proposing costly ones when the cheap region has been explored).
NOT_STARTED_LIMIT = 3


class TrialExecutor:
    """Runs one trial for an engine: records it in the results contract, streams progress.

    Implements :class:`search.engines.Executor`.
    """

    def __init__(
        self,
        cfg: Config,
        study: StudyDir,
        data: PreparedData,
        process: TrialProcess,
        progress: Progress,
        *,
        deadline: Deadline | None,
        on_trial_end: Callable[[], None] | None = None,
        verbose: int = 0,
        folds: FoldPlan | None = None,
        budget: BudgetPlan | None = None,
    ) -> None:
        self.cfg = cfg
        self.budget = budget
        self._search_over = False  # the remaining search time fits no configuration's first judgement
        self._not_started_in_a_row = 0
        self.folds = folds
        self.study = study
        self.data = data
        self.process = process
        self.progress = progress
        self.deadline = deadline
        self.on_trial_end = on_trial_end
        self.verbose = verbose
        self.consecutive_failures = 0
        self._space_checked = False  # whether the smallest configurations were found feasible (once)
        self.baselines = cfg.study.baselines
        self.memory_budget = device_memory_budget()
        # Each image's patient (study.groups): score_se and fold pruning count patients, not slices.
        self.units = study_units(cfg, data)

    def budget_left(self) -> bool:
        """Whether the search's share of the time budget has time left (search/study/budget.py)."""
        return not self._search_over and (self.deadline is None or self.deadline.search_left())

    @property
    def stop_requested(self) -> int:
        """Ctrl-C count (the engines stop asking for trials once it is set)."""
        return self.process.stop_requested

    def owns_stale_trial(self, number: int) -> bool:
        """The record of a trial left running says it ran on this machine, in this results folder."""
        rec = self.study.read_trial(number)
        return rec is not None and rec.status == TrialState.RUNNING and rec.engine_id == platform.node()

    def mark_lost(self, number: int, reason: str, *, force: bool = False) -> None:
        """Record as failed a trial the engine gave up on (its driver stopped sending heartbeats).

        Only a record still 'running' changes, unless ``force`` (the trial finished here after the
        storage had failed it: the storage's verdict wins, a retry runs under a new number).
        """
        rec = self.study.read_trial(number)
        if rec is None or rec.status == TrialState.FAILED or (rec.status != TrialState.RUNNING and not force):
            return
        rec.status = TrialState.FAILED
        rec.reason = reason if rec.reason == "" or rec.reason == reason else f"{reason} ({rec.reason})"
        rec.finished_at = time.time()
        self.study.write_trial(rec)
        self.study.refresh_trials_csv()
        logger.warning("trial %d: %s; recorded as failed (its retry, if any, has a new number)", number, reason)

    def record_external(
        self, number: int, sampled: dict[str, Any], *, status: TrialState, score: float | None, reason: str,
        baseline: bool,
    ) -> None:
        """Record a trial that another process ran (Keras Tuner chief), unless recorded here already."""
        existing = self.study.read_trial(number)
        if existing is not None:
            if existing.status != TrialState.RUNNING:
                self.progress.trial_finished(existing, self.study.best_trial())
            return
        values = complete_values(self.cfg, sampled)
        rec = TrialRecord(number=number, status=status, values=values,
                          seed=trial_seed(self.cfg.study.seed, number), score=score, reason=reason,
                          baseline=baseline, engine_id="keras-tuner worker", finished_at=time.time())
        self.study.write_trial(rec)
        atomic_write_json(self.study.trial_dir(number) / VALUES_JSON, values)
        self.study.refresh_trials_csv()
        self.progress.trial_finished(rec, self.study.best_trial())

    def _catch_up_reports(self, number: int, should_prune: PruneHook) -> None:
        """Report the epochs of a resumed trial's checkpoint that the engine may have missed
        (the driver can die between the checkpoint and the report)."""
        trial_dir = self.study.trial_dir(number)
        ckpt = Checkpoint((fold_dir(trial_dir, 0) if self.folds is not None else trial_dir) / CHECKPOINT_DIR)
        if not ckpt.exists():
            return
        best = float("-inf")
        for row in ckpt.history():
            score = row_score(row)
            if "epoch" in row and score is not None:
                best = max(best, float(score))  # the running best, as the live reports send it
                try:
                    should_prune(int(row["epoch"]), best, False)  # report only
                except Exception:  # noqa: BLE001 - reporting is best effort, the trial still runs
                    logger.debug("catch-up report failed", exc_info=True)

    def __call__(
        self,
        number: int,
        sampled: dict[str, Any],
        *,
        baseline: bool,
        max_epochs: int | None = None,
        should_prune: PruneHook | None = None,
    ) -> TrialRecord:
        if self.process.stop_requested:
            raise Interrupted("stopped before starting another trial")
        values = complete_values(self.cfg, sampled)
        previous = self.study.read_trial(number)
        if previous is not None and previous.status != TrialState.RUNNING:
            logger.warning("trial %d was already recorded as %s; keeping that record", number, previous.status)
            return previous
        rec = self._running_record(number, values, baseline=baseline, max_epochs=max_epochs, previous=previous)
        if previous is None and (too_slow := self._not_started_reason(values)) is not None:
            return self._not_started(rec, too_slow)
        self.study.write_trial(rec)
        atomic_write_json(self.study.trial_dir(number) / VALUES_JSON, values)
        self.study.refresh_trials_csv()
        self.progress.trial_started(number)
        task = self._task(number, values, rec.seed, max_epochs)
        if previous is not None and should_prune is not None:
            self._catch_up_reports(number, should_prune)
        if isinstance(task, TrialOutcome):  # infeasible values: rejected here, no trial process round trip
            outcome = task
        else:
            self._not_started_in_a_row = 0
            outcome = self.process.run(task, self._decider(number, should_prune))
        if outcome.interrupted and outcome.stopped_by != "budget":
            raise Interrupted(f"stopped during trial {number}; it resumes from its last completed epoch")
        self._finish(rec, outcome)
        self._count_failures(rec, outcome)
        if rec.status == TrialState.RUNNING:  # the deadline came before its first judgement: resumable
            logger.info("trial %d: %s", number, rec.reason)
        return rec

    def _running_record(self, number: int, values: dict[str, Any], *, baseline: bool, max_epochs: int | None,
                        previous: TrialRecord | None) -> TrialRecord:
        cfg = self.cfg
        rec = TrialRecord(
            number=number,
            status=TrialState.RUNNING,
            values=values,
            seed=trial_seed(cfg.study.seed, number),
            baseline=baseline,
            engine_id=platform.node(),
            max_epochs=max_epochs if max_epochs is not None else int(cfg.rule("max_epochs")),
            image_size=cfg.data.image_size,
        )
        if previous is not None:
            rec.started_at = previous.started_at
        return rec

    def _decider(self, number: int, should_prune: PruneHook | None) -> DecideEpoch:
        """The driver's answer after each epoch of trial ``number``: progress, then the engine's pruner."""

        def decide(report: EpochReport) -> EpochDecision:
            self.progress.epoch(number, report)
            if should_prune is None or report.fold > 0:  # k-fold: the pruner judges the first fold
                return EpochDecision.CONTINUE
            try:
                # The running best: the objective is the best epoch, so a dip at a rung is no reason
                # to prune, and a pruned trial's Optuna value equals its trials.csv score. Not judgeable
                # (warm-up, or still learning with a zero score): the value is reported, the pruner not asked.
                prune = should_prune(report.epoch, report.best_score, report.judgeable)
            except Exception:  # noqa: BLE001 - a storage hiccup must not wedge the trial process mid-epoch
                logger.warning("trial %d: the pruner could not be asked at epoch %d", number, report.epoch,
                               exc_info=True)
                return EpochDecision.CONTINUE
            return EpochDecision.PRUNE if prune else EpochDecision.CONTINUE

        return decide

    def _finish(self, rec: TrialRecord, outcome: TrialOutcome) -> None:
        """Record the outcome (trial.json, trials.csv), tell progress and the report."""
        rec.status = outcome.status
        rec.score = outcome.score
        rec.score_se = outcome.score_se
        rec.best_epoch = outcome.best_epoch
        rec.epochs_run = outcome.epochs_run
        rec.reason = outcome.reason
        rec.duration_s = outcome.duration_s
        rec.train_s = outcome.train_s
        rec.train_samples = self._samples_trained(outcome.epochs_run)
        rec.metrics = {k: v for k, v in outcome.metrics.items() if isinstance(v, (int, float, str))}
        rec.finished_at = time.time() if rec.status != TrialState.RUNNING else None
        self.study.write_trial(rec)
        self.study.refresh_trials_csv()
        self.progress.trial_finished(rec, self.study.best_trial())
        if self.on_trial_end is not None:
            self.on_trial_end()

    def _count_failures(self, rec: TrialRecord, outcome: TrialOutcome) -> None:
        """Failures in a row end the search; rejected (infeasible) values cost nothing and do not count."""
        if rec.status == TrialState.FAILED and outcome.infeasible:
            self._check_space_is_feasible(rec.reason)
        if rec.status == TrialState.FAILED and not outcome.infeasible:
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.cfg.study.max_consecutive_failures:
                raise SearchAborted(
                    f"{self.consecutive_failures} trials failed in a row (study.max_consecutive_failures); "
                    f"last reason: {rec.reason}. See `python -m search status {self.cfg.study.name}`"
                )
        elif rec.status != TrialState.FAILED:
            self.consecutive_failures = 0

    # ------------------------------------------------------------------ cost-aware: not started for the budget

    def _not_started_reason(self, values: dict[str, Any]) -> str | None:
        """Why a configuration is not started: the search time left cannot take it to its first judgement
        (its predicted seconds: the reference model's measured speed, calibrated by this study's trials,
        scaled by its models.train_work: forward MACs weighted by its family's time per MAC). None: it fits, or nothing is known to predict with."""
        left = self.deadline.search_remaining() if self.deadline is not None else None
        if left is None or not math.isfinite(left) or self.budget is None:
            return None
        need = self._first_judgement_s(values, self._throughput())
        if need is None or need <= left:
            return None
        return (f"{NOT_STARTED}: its first judgement needs ≈ {need:.0f} s here, "
                f"{max(0.0, left):.0f} s of the search were left")

    def _throughput(self) -> Throughput | None:
        """The plan's measured speed, refined by this study's trials so far."""
        assert self.budget is not None
        return calibrate(self.budget.throughput, trial_speeds(self.study, self.cfg))

    @functools.cached_property
    def _reference_work(self) -> float:
        return reference_work(self.cfg)

    def _first_judgement_s(self, values: dict[str, Any], throughput: Throughput | None) -> float | None:
        assert self.budget is not None
        try:
            ratio = train_work(specs_from_values(self.cfg, values, seed=0).model) / self._reference_work
        except (TrialFailed, KeyError, ValueError):
            return None  # infeasible values: the trial's own checks say why
        return self.budget.first_judgement_s(ratio, throughput)

    def _not_started(self, rec: TrialRecord, reason: str) -> TrialRecord:
        """Record a configuration the budget cannot judge as pruned before training (no score): the
        sampler is told (Optuna ranks a pruned trial without reports below every judged one). The
        search ends when the cheapest configuration of the space would not fit either, or after
        :data:`NOT_STARTED_LIMIT` such trials in a row."""
        rec.status, rec.reason, rec.finished_at, rec.train_samples = TrialState.PRUNED, reason, time.time(), 0
        self.study.write_trial(rec)
        atomic_write_json(self.study.trial_dir(rec.number) / VALUES_JSON, rec.values)
        self.study.refresh_trials_csv()
        self.progress.trial_finished(rec, self.study.best_trial())
        self._not_started_in_a_row += 1
        throughput = self._throughput()
        cheapest = [s for v in _smallest_values(self.cfg) if (s := self._first_judgement_s(v, throughput)) is not None]
        left = self.deadline.search_remaining() if self.deadline is not None else math.inf
        if cheapest and min(cheapest) > left:
            logger.info("the search time left (%.0f s) fits no configuration's first judgement; the search ends",
                        max(0.0, left))
            self._search_over = True
        elif self._not_started_in_a_row >= NOT_STARTED_LIMIT:
            logger.info("%d configurations in a row did not fit the search time left (%.0f s); the search ends",
                        self._not_started_in_a_row, max(0.0, left))
            self._search_over = True
        return rec

    def _samples_trained(self, epochs_run: int) -> int | None:
        """Training samples a trial saw (all its folds): its fidelity, with the image size."""
        per_epoch = self.cfg.steps_per_epoch
        if per_epoch is not None:
            return epochs_run * per_epoch * self.cfg.data.batch_size
        if self.folds is not None:
            return None  # one pass over a fold's training share: not kept per fold
        return epochs_run * len(self.data.stems.get("train", ()))

    def _check_space_is_feasible(self, reason: str) -> None:
        """After a rejected trial, once: stop the search when no configuration of the space can train here.

        Rejected trials do not count as failures (a space may hold some configurations that do not fit),
        but a space that holds none would spend the whole trial budget on rejections. The smallest
        configurations (numeric hyperparameters at their minimum) need the least memory and pass the
        most rules: if they are rejected too, every trial would be.
        """
        if self._space_checked:
            return
        self._space_checked = True
        for values in _smallest_values(self.cfg):
            try:
                check_memory(specs_from_values(self.cfg, values, seed=0), budget_bytes=self.memory_budget)
                return
            except TrialFailed as e:
                reason = e.reason
        raise SearchAborted(
            f"no configuration of the search space can be trained here: even the smallest one is rejected "
            f"({reason}); shrink the space (base_filters, num_layers), data.batch_size or data.image_size, or "
            f"set UNET_SEARCH_GPU_MEMORY_GB to the device's memory"
        )

    def _task(self, number: int, values: dict[str, Any], seed: int, max_epochs: int | None) -> TrialTask | TrialOutcome:
        """The trial's task (frozen specs), or a failed outcome for values that cannot make a model."""
        cfg = self.cfg
        try:
            specs = specs_from_values(cfg, values, seed=seed, max_epochs=max_epochs)
            check_memory(specs, budget_bytes=self.memory_budget)
        except TrialFailed as e:
            return TrialOutcome(status=TrialState.FAILED, reason=e.reason, infeasible=e.infeasible)
        common: dict[str, Any] = dict(
            number=number,
            specs=specs,
            out_dir=str(self.study.trial_dir(number)),
            cache_path=self.data.cache_path,
            outputs=TrialOutputs(predictions=cfg.data.num_val_predictions, checkpoint=cfg.train.checkpoint_every_epoch,
                                 tensorboard=cfg.train.tensorboard),
            units=self.units,
            verbose=self.verbose,
            stop_at=self.deadline.search_ends_at if self.deadline is not None else None,
        )
        if self.folds is None:
            return HoldoutTask(**common)
        return KFoldTask(**common, folds=self.folds.folds, fold_prune_p=cfg.study.fold_prune_p,
                         fold_reference=self._fold_reference(number))

    def _fold_reference(self, number: int) -> dict[str, float] | None:
        """Per-image out-of-fold dice of the best complete trial (fold pruning compares with it)."""
        best = self.study.best_trial()
        if best is None or best.number == number:
            return None
        path = self.study.trial_dir(best.number) / SCORES_FILE
        try:
            return {str(k): float(v) for k, v in json.loads(path.read_text())["per_image"].items()}
        except (OSError, ValueError, KeyError):
            return None


def _smallest_values(cfg: Config) -> list[dict[str, Any]]:
    """Each numeric sampled hyperparameter at its minimum, with every combination of the non-numeric ones."""
    import itertools

    options: dict[str, tuple[Any, ...]] = {}
    for name, p in cfg.sampled_params().items():
        values = p.bounds_values()
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        options[name] = (min(values),) if numeric else tuple(values)
    names = list(options)
    return [complete_values(cfg, dict(zip(names, combo, strict=True)))
            for combo in itertools.product(*(options[n] for n in names))]
