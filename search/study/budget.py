"""The time budget of a run (``--timeout``, ``study.timeout_s``): the plan made before the search, and the deadline.

The budget bounds the whole ``run``: preparing the data, measuring the machine, the search and the
final stage. Before the search starts, :func:`plan_budget` (a pure function) splits it:

- the **final stage's share** is reserved from an estimate (testing the chosen model and the baseline,
  or retraining, or re-evaluating); the search ends that much before the deadline;
- the **training rules** left at ``auto`` (``train.samples_per_epoch``, ``warmup_samples``, ``patience``,
  ``max_epochs``) come from the budget and the data, so that a trial is first judged (end of its
  warm-up) about 1/20 of the budget after it starts, and no trial can train for more than a quarter
  of the search (the baseline included). Explicit values win. Without a budget ``auto`` is the
  reference tool's scale (:data:`search.config.NO_BUDGET_RULES`). The rules are fixed when a study is
  created (its ``study.yaml`` keeps them): a resumed study keeps its epochs comparable whatever
  budget the next run has.

The estimates need the machine's speed: :class:`Throughput`, measured once per study by a short probe
of the baseline configuration (search/study/throughput.py) and refined from the trials already run, kept in
``results/<study>/budget.json`` with a record of every run (its plan, what ended it, what each phase
used).

:class:`Deadline` is the plan at run time: the search's end (``search_ends_at``) and the run's end
(``ends_at``), in ``time.time()`` seconds so that a trial process can check them itself, with the
:class:`~search.trial.stop.StopSignal` it is given (search/trial/stop.py).

The plan is made per resolution **rung** (:class:`Rung`); today there is one, the study's image size.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.config import AUTO, NO_BUDGET_RULES, Config
from search.errors import ConfigError
from search.results import atomic_write_json
from search.results.layout import BUDGET_FILE
from search.trial.stop import stopped_by_budget
from search.vocabulary import TrialState

__all__ = [
    "AnytimePoint",
    "BudgetEnded",
    "NOT_STARTED",
    "DEADLINE_ENV",
    "RULE_KEYS",
    "BudgetPlan",
    "DataSizes",
    "Deadline",
    "FinalStage",
    "Rules",
    "RunLedger",
    "Rung",
    "Throughput",
    "TrialSpeed",
    "anytime_curve",
    "not_started",
    "read_runs",
    "fidelity_sentence",
    "run_sentence",
    "training_seconds_by_fidelity",
    "adopt_stored_rules",
    "apply_rules",
    "calibrate",
    "plan_budget",
    "read_budget_file",
    "record_run",
    "requested_rules",
    "write_throughput",
]

logger = logging.getLogger(__name__)

DEADLINE_ENV = "UNET_SEARCH_SEARCH_ENDS_AT"  # the search's end (time.time()) handed to `run --workers N` drivers

# The plan's shape (README "Budgets, warm-up and when a trial is judged").
FIRST_JUDGEMENT_SHARE = 1 / 20  # a trial is first judged this share of the budget after it starts
WARMUP_EPOCHS = 5  # epochs in a derived warm-up (curves, the reducer and collapse need a few points)
PATIENCE_WARMUPS = 2  # derived patience: twice the warm-up, in samples (the reference: 10 epochs of 800)
TRIAL_SHARE = 1 / 4  # a trial trains at most this share of the search (derived max_epochs)
MAX_EPOCHS = 100  # derived max_epochs never exceeds the reference's
MIN_WARMUP_PASS = 200  # the smallest derived warm-up: one pass over the training split, capped at this
FINAL_MARGIN = 1.25  # the final stage's estimate × this is reserved
REPORT_S = 5.0  # refreshing report.html and writing final.json at the end of a run
EVAL_TO_TRAIN = 3.0  # validation is about this much faster per sample than training (forward only)

RULE_KEYS = ("samples_per_epoch", "warmup_samples", "patience", "max_epochs")


# --------------------------------------------------------------------------- the run's clock


class Deadline:
    """When the search and the run must end (``time.time()`` seconds; None: no budget).

    Created when ``run`` starts, so that preparing the data counts; :meth:`reserve` sets the final
    stage's share once it is planned. ``clock`` is injectable for tests.
    """

    def __init__(self, budget_s: float | None, *, start: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.budget_s = budget_s
        self.start = clock() if start is None else start
        self.ends_at = None if budget_s is None else self.start + budget_s
        self.search_ends_at = self.ends_at
        self.search_ended: float | None = None  # when the search ended (set by the runner)

    @classmethod
    def from_env(cls, budget_s: float | None, *, clock: Callable[[], float] = time.time) -> Deadline:
        """An extra driver of ``run --workers N``: the main driver's search end, from :data:`DEADLINE_ENV`."""
        deadline = cls(budget_s, clock=clock)
        text = os.environ.get(DEADLINE_ENV)
        if text:
            try:
                deadline.search_ends_at = deadline.ends_at = float(text)
            except ValueError:
                logger.warning("%s=%r is not a time; using this driver's own budget", DEADLINE_ENV, text)
        return deadline

    def reserve(self, final_s: float) -> None:
        """End the search ``final_s`` seconds before the run's deadline (the final stage's share)."""
        if self.ends_at is not None:
            self.search_ends_at = self.ends_at - max(0.0, final_s)

    def elapsed(self) -> float:
        return self.clock() - self.start

    def remaining(self) -> float:
        """Seconds until the run's deadline (inf without a budget)."""
        return math.inf if self.ends_at is None else self.ends_at - self.clock()

    def search_remaining(self) -> float:
        return math.inf if self.search_ends_at is None else self.search_ends_at - self.clock()

    def search_left(self) -> bool:
        """Whether the search may start (or go on with) a trial."""
        return self.search_remaining() > 0


class BudgetEnded(Exception):
    """The run's deadline came before a step of the final stage could be done (its work so far is kept)."""


# --------------------------------------------------------------------------- the plan's inputs


@dataclass(frozen=True)
class Throughput:
    """How fast this machine trains the plan's reference model (the baseline configuration).

    Attributes:
        train_samples_per_s: training samples per second (augmentation and input pipeline included).
        eval_samples_per_s: validation samples per second.
        startup_s: a trial's fixed cost: build, compile, tracing of the first step and validation.
        spawn_s: a new trial process (Python, TensorFlow, the data cache).
        epoch_overhead_s: per epoch: the dataset and ``fit()`` set-up.
        image_size: the size it was measured at.
        source: ``probe`` or ``trials (n)``.
    """

    train_samples_per_s: float
    eval_samples_per_s: float
    startup_s: float = 0.0
    spawn_s: float = 0.0
    epoch_overhead_s: float = 0.0
    image_size: int = 0
    source: str = "probe"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Throughput | None:
        try:
            known = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
            tp = cls(**known)
        except (TypeError, KeyError):
            return None
        return tp if tp.train_samples_per_s > 0 and tp.eval_samples_per_s > 0 else None


@dataclass(frozen=True)
class TrialSpeed:
    """One trial's measured speed, for :func:`calibrate`: its median epoch time and its cost relative
    to the reference model (``models.train_work``: forward MACs per image weighted by the family's time per MAC,
    trial / reference)."""

    epoch_s: float
    samples_per_epoch: int
    work_ratio: float


@dataclass(frozen=True)
class DataSizes:
    train: int
    valid: int
    test: int
    batch_size: int


@dataclass(frozen=True)
class FinalStage:
    """What the final stage will do (``final.*``): test the chosen model and the baseline, retrain it on
    train+valid first, and how many fresh trainings the re-evaluation runs before the pick."""

    test: bool = True
    retrain: bool = False
    reevaluations: int = 0


@dataclass(frozen=True)
class Rules:
    """The training rules the plan settles (``None`` samples_per_epoch: one pass over the training split)."""

    samples_per_epoch: int | None
    warmup_samples: int
    patience: int
    max_epochs: int


@dataclass(frozen=True)
class Rung:
    """One fidelity of the plan: the image size it trains at and the seconds its rules take there
    (the reference model). Today the plan has one rung, the study's size; resolution rungs slot in here."""

    image_size: int
    epoch_s: float | None
    judge_epochs: int
    first_judgement_s: float | None
    trial_max_s: float | None


@dataclass(frozen=True)
class BudgetPlan:
    """The plan of one run (see :func:`plan_budget`)."""

    budget_s: float | None
    spent_s: float  # before the plan: data, probe
    search_s: float | None
    final_s: float
    rules: Rules
    derived: tuple[str, ...]  # the rules that came from the budget (the others were given or the study's)
    rungs: tuple[Rung, ...]
    throughput: Throughput | None
    minimum_s: float | None
    warnings: tuple[str, ...] = ()
    study_rules: bool = False  # the rules were fixed when the study was created
    sizes: DataSizes | None = None
    min_epochs: int = 1

    @property
    def rung(self) -> Rung:
        return self.rungs[-1]

    def first_judgement_s(self, work_ratio: float, throughput: Throughput | None = None) -> float | None:
        """Seconds from a trial's start to its first judgement for a configuration ``work_ratio`` times
        as costly as the reference model (``models.train_work``), at ``throughput`` (else the plan's).
        None: no measurement. The model's fixed start-up cost is the reference's."""
        tp = throughput or self.throughput
        if tp is None or self.sizes is None or work_ratio <= 0:
            return None
        first = self.rungs[0]
        cost = work_ratio * _area(first.image_size, self.rung.image_size)  # judged at the first rung
        return _rung(self.rules, _slower(tp, cost), self.sizes, first.image_size, self.min_epochs,
                     trial_max_s=None).first_judgement_s

    def summary(self) -> dict[str, Any]:
        """What budget.json records of the plan: the split, the rules, the estimates."""
        rung = self.rung
        return {"search_s": _round(self.search_s), "final_s": _round(self.final_s), "spent_s": _round(self.spent_s),
                "first_rung": {"image_size": self.rungs[0].image_size,
                               "first_judgement_s": _round(self.rungs[0].first_judgement_s)}
                if len(self.rungs) > 1 else None,
                "rules": dataclasses.asdict(self.rules), "derived": list(self.derived),
                "first_judgement_s": _round(rung.first_judgement_s), "epoch_s": _round(rung.epoch_s),
                "trial_max_s": _round(rung.trial_max_s), "minimum_s": _round(self.minimum_s),
                "warnings": list(self.warnings)}

    def describe(self) -> str:
        """The plan in a few lines, e.g. "600 s: search ≈ 540 s, final stage ≈ 45 s; epoch = 64 samples …"."""
        r, rung = self.rules, self.rung
        if self.budget_s is None:
            head = "no time budget (--timeout): the search ends at study.max_trials or Ctrl-C"
        else:
            head = (f"{self.budget_s:.0f} s: search ≈ {self.search_s or 0:.0f} s, final stage ≈ {self.final_s:.0f} s"
                    f" ({self.spent_s:.0f} s spent preparing)")
        epoch = "one pass" if r.samples_per_epoch is None else f"{r.samples_per_epoch} samples"
        rules = (f"epoch = {epoch}, warm-up {r.warmup_samples} samples, patience {r.patience} epochs, "
                 f"at most {r.max_epochs} epochs a trial")
        if self.study_rules:
            rules += " (this study's rules)"
        elif self.derived:
            source = "the budget" if self.budget_s is not None else "the reference's scale, without a budget"
            rules += f" ({', '.join(self.derived)} from {source})"
        lines = [f"{head}; {rules}"]
        if rung.first_judgement_s is not None and self.throughput is not None:
            tp = self.throughput
            cap = f", a trial ≤ {rung.trial_max_s:.0f} s" if rung.trial_max_s is not None else ""
            lines.append(f"first judgement after ≈ {rung.first_judgement_s:.0f} s ({rung.judge_epochs} epochs of "
                         f"≈ {rung.epoch_s:.1f} s{cap}; the baseline configuration at "
                         f"{tp.train_samples_per_s:.3g} samples/s at {rung.image_size}², {tp.source})")
        first = self.rungs[0]
        if len(self.rungs) > 1 and first.first_judgement_s is not None:
            lines.append(f"first rung at {first.image_size}²: each trial's warm-up trains there and is judged after "
                         f"≈ {first.first_judgement_s:.0f} s; the trials the pruner keeps go on at "
                         f"{rung.image_size}² with their weights")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# --------------------------------------------------------------------------- the plan


def plan_budget(
    *,
    budget_s: float | None,
    spent_s: float = 0.0,
    throughput: Throughput | None,
    sizes: DataSizes,
    image_size: int,
    requested: dict[str, Any],
    final: FinalStage = FinalStage(),
    min_epochs: int = 1,
    folds: int = 1,
    study_rules: bool = False,
    first_rung_size: int | None = None,
) -> BudgetPlan:
    """Split a run's budget and settle the training rules left at ``auto``. Pure.

    Args:
        budget_s: the whole run's budget (None: no budget).
        spent_s: seconds of the budget already spent (preparing the data, the probe).
        throughput: the reference model's speed here (None: unknown; rules fall back to the reference
            tool's scale and no time is estimated).
        requested: the four :data:`RULE_KEYS` as configured, ``"auto"`` where the plan decides.
        folds: a k-fold trial trains this many models (``sizes`` are one fold's).
        study_rules: the requested rules are a resumed study's, fixed when it was created.
        first_rung_size: the warm-up trains at this image side (``train.first_rung_size``): the plan
            gets a first rung whose epochs cost the reference's × (size / image_size)² (pixels).

    Raises:
        ConfigError: the budget cannot take one trial to its first judgement (names the minimum).
    """
    derived = tuple(k for k in RULE_KEYS if requested.get(k) == AUTO)
    if budget_s is None or throughput is None:
        return _unplanned(budget_s=budget_s, spent_s=spent_s, throughput=throughput, sizes=sizes,
                          image_size=image_size, requested=requested, final=final, min_epochs=min_epochs,
                          study_rules=study_rules, derived=derived)
    wrap_s = _wrap_seconds(throughput, sizes)
    smallest = _derive_rules(requested, throughput, sizes, target_s=None, min_epochs=min_epochs)
    smallest_rung = _rung(smallest, throughput, sizes, image_size, min_epochs, trial_max_s=None)
    assert smallest_rung.first_judgement_s is not None
    minimum_s = spent_s + smallest_rung.first_judgement_s + wrap_s
    if budget_s < minimum_s:
        how = "this study's rules" if study_rules or not derived else "the smallest warm-up"
        raise ConfigError(
            f"--timeout {budget_s:g}: too small; one trial needs ≈ {smallest_rung.first_judgement_s:.0f} s to reach its "
            f"first judgement here ({how}: {smallest.warmup_samples} samples at "
            f"≈ {throughput.train_samples_per_s:.3g} samples/s) after {spent_s:.0f} s of preparation; "
            f"use --timeout {math.ceil(minimum_s)} or more (study.timeout_s)"
        )
    rules = _derive_rules(requested, throughput, sizes, target_s=FIRST_JUDGEMENT_SHARE * budget_s,
                          min_epochs=min_epochs)
    rung = _rung(rules, throughput, sizes, image_size, min_epochs, trial_max_s=None)
    assert rung.first_judgement_s is not None and rung.epoch_s is not None
    remaining = budget_s - spent_s
    if rung.first_judgement_s + wrap_s > remaining:  # the target does not fit what is left: the smallest does
        rules, rung = smallest, smallest_rung
    first_s, epoch_s = rung.first_judgement_s, rung.epoch_s
    assert first_s is not None and epoch_s is not None
    final_s = _final_seconds(throughput, sizes, final, rules, rung) + wrap_s
    warnings_l = _stored_rules_warning(rules, throughput, sizes, budget_s=budget_s, min_epochs=min_epochs) \
        if study_rules else []
    search_s = remaining - final_s
    if search_s < first_s:
        short = first_s - search_s
        warnings_l.append(
            f"the budget is too small for the final stage (≈ {final_s:.0f} s) after one judged trial "
            f"(≈ {first_s:.0f} s): the run may end ≈ {short:.0f} s late; use --timeout "
            f"{math.ceil(budget_s + short)} or more")
        search_s = first_s
        final_s = max(0.0, remaining - search_s)
    if first_s > FIRST_JUDGEMENT_SHARE * budget_s * 1.5:
        warnings_l.append(
            f"a trial's first judgement (≈ {first_s:.0f} s) takes more than 1/20 of the budget: "
            f"the search has time for at most ≈ {max(1, int(search_s // first_s))} judged trial(s)")
    if requested.get("max_epochs") == AUTO:  # a trial (all its folds) trains at most TRIAL_SHARE of the search
        per_model_s = TRIAL_SHARE * search_s / max(1, folds)
        cap = max(rung.judge_epochs + 1, math.floor((per_model_s - throughput.startup_s) / epoch_s))
        rules = dataclasses.replace(rules, max_epochs=min(MAX_EPOCHS, cap))
    trial_max_s = max(1, folds) * (throughput.startup_s + rules.max_epochs * epoch_s)
    rung = dataclasses.replace(rung, trial_max_s=trial_max_s)
    rungs: tuple[Rung, ...] = (rung,)
    if first_rung_size is not None and first_rung_size < image_size:
        small = _slower(throughput, _area(first_rung_size, image_size))
        rungs = (_rung(rules, small, sizes, first_rung_size, min_epochs, trial_max_s=None), rung)
    return BudgetPlan(budget_s=budget_s, spent_s=spent_s, search_s=search_s, final_s=final_s, rules=rules,
                      derived=derived, rungs=rungs, throughput=throughput, minimum_s=minimum_s,
                      warnings=tuple(warnings_l), study_rules=study_rules, sizes=sizes, min_epochs=min_epochs)


def _stored_rules_warning(rules: Rules, throughput: Throughput, sizes: DataSizes, *, budget_s: float,
                          min_epochs: int) -> list[str]:
    """A resumed study's epoch planned for a very different budget: say what a new study would use."""
    if rules.samples_per_epoch is None:
        return []
    fresh = _derive_rules(dict.fromkeys(RULE_KEYS, AUTO), throughput, sizes,
                          target_s=FIRST_JUDGEMENT_SHARE * budget_s, min_epochs=min_epochs)
    assert fresh.samples_per_epoch is not None
    if 1 / 4 <= rules.samples_per_epoch / fresh.samples_per_epoch <= 4:
        return []
    return [f"this study's epoch ({rules.samples_per_epoch} samples) was planned for another budget; with this "
            f"one a new study would use {fresh.samples_per_epoch} (a new --study, or set train.* explicitly)"]


def _unplanned(*, budget_s: float | None, spent_s: float, throughput: Throughput | None, sizes: DataSizes,
               image_size: int, requested: dict[str, Any], final: FinalStage, min_epochs: int, study_rules: bool,
               derived: tuple[str, ...]) -> BudgetPlan:
    """No budget, or no measurement: the reference's rules; with a budget, the deadline alone keeps it."""
    rules = _fixed_rules(requested)
    rung = _rung(rules, throughput, sizes, image_size, min_epochs, trial_max_s=None)
    final_s = _final_seconds(throughput, sizes, final, rules, rung) if throughput is not None else 0.0
    warnings: tuple[str, ...] = ()
    search_s = None
    if budget_s is not None:  # a budget but no measurement: keep the deadline, reserve a tenth
        final_s = 0.1 * max(0.0, budget_s - spent_s) if final.test else 0.0
        search_s = budget_s - spent_s - final_s
        warnings = ("no throughput measurement: the training rules are the reference's and the deadline alone "
                    "keeps the budget",)
    return BudgetPlan(budget_s=budget_s, spent_s=spent_s, search_s=search_s, final_s=final_s, rules=rules,
                      derived=derived if budget_s is None else (), rungs=(rung,), throughput=throughput,
                      minimum_s=None, warnings=warnings, study_rules=study_rules, sizes=sizes,
                      min_epochs=min_epochs)


def _slower(tp: Throughput, cost: float) -> Throughput:
    """``tp`` for a model whose steps cost ``cost`` times the reference's (its fixed costs unchanged)."""
    return dataclasses.replace(tp, train_samples_per_s=tp.train_samples_per_s / cost,
                               eval_samples_per_s=tp.eval_samples_per_s / cost)


def _area(size: int, full: int) -> float:
    """The share of a full-size image's pixels at ``size``: what a step costs there, roughly."""
    return (size / full) ** 2


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _fixed_rules(requested: dict[str, Any]) -> Rules:
    """The requested rules, ``auto`` read as the reference tool's scale (no budget)."""
    def get(key: str) -> Any:
        value = requested.get(key, AUTO)
        return NO_BUDGET_RULES[key] if value == AUTO else value

    return Rules(samples_per_epoch=get("samples_per_epoch"), warmup_samples=int(get("warmup_samples")),
                 patience=int(get("patience")), max_epochs=int(get("max_epochs")))


def _round_batches(samples: float, batch: int) -> int:
    """Whole batches, at least one."""
    return max(batch, batch * math.ceil(max(0.0, samples) / batch))


def _derive_rules(requested: dict[str, Any], tp: Throughput, sizes: DataSizes, *, target_s: float | None,
                  min_epochs: int) -> Rules:
    """The rules whose first judgement comes ``target_s`` after a trial starts (None: the smallest
    warm-up); explicit values are kept. max_epochs is settled later (it needs the search's length).

    The warm-up trains at least as long as a trial takes to start: where starting a trial costs
    more than 1/20 of the budget, trials are judged later rather than spend most of their time starting.
    """
    spe_req, warm_req = requested.get("samples_per_epoch", AUTO), requested.get("warmup_samples", AUTO)
    batch = sizes.batch_size
    valid_s = sizes.valid / tp.eval_samples_per_s
    min_warm = max(min(sizes.train, MIN_WARMUP_PASS), WARMUP_EPOCHS * batch)
    training_s = 0.0 if target_s is None else max(target_s - tp.startup_s, tp.startup_s)
    target_s = tp.startup_s + training_s
    per_epoch_s = training_s / WARMUP_EPOCHS - valid_s - tp.epoch_overhead_s
    if spe_req == AUTO and warm_req == AUTO:
        spe = max(_round_batches(per_epoch_s * tp.train_samples_per_s, batch),
                  _round_batches(min_warm / WARMUP_EPOCHS, batch))
        warm = WARMUP_EPOCHS * spe
    elif spe_req == AUTO:
        warm = int(warm_req)
        spe = (_round_batches(warm / WARMUP_EPOCHS, batch) if warm > 0
               else _round_batches(per_epoch_s * tp.train_samples_per_s, batch))
    else:
        spe = spe_req  # an int, or None (one pass)
        if warm_req == AUTO:
            epoch_samples = spe if spe is not None else sizes.train
            epoch_s = epoch_samples / tp.train_samples_per_s + valid_s + tp.epoch_overhead_s
            epochs = max(min_epochs, math.floor((target_s - tp.startup_s) / epoch_s))
            warm = max(epochs * epoch_samples, math.ceil(min_warm / epoch_samples) * epoch_samples)
        else:
            warm = int(warm_req)
    patience_req = requested.get("patience", AUTO)
    if patience_req == AUTO:
        epoch_samples = spe if spe is not None else sizes.train
        patience = max(2, math.ceil(PATIENCE_WARMUPS * warm / max(1, epoch_samples))) if warm > 0 else 10
    else:
        patience = int(patience_req)
    max_req = requested.get("max_epochs", AUTO)
    return Rules(samples_per_epoch=spe, warmup_samples=warm, patience=patience,
                 max_epochs=MAX_EPOCHS if max_req == AUTO else int(max_req))


def _judge_epochs(rules: Rules, sizes: DataSizes, min_epochs: int) -> int:
    """Epochs before a trial may be judged (as search/trial/training.py counts them)."""
    per_epoch = rules.samples_per_epoch if rules.samples_per_epoch is not None else sizes.train
    per_epoch = sizes.batch_size * math.ceil(per_epoch / sizes.batch_size) if rules.samples_per_epoch else per_epoch
    return max(min_epochs, math.ceil(rules.warmup_samples / max(1, per_epoch)), 1)


def _rung(rules: Rules, tp: Throughput | None, sizes: DataSizes, image_size: int, min_epochs: int, *,
          trial_max_s: float | None) -> Rung:
    judge = min(_judge_epochs(rules, sizes, min_epochs), rules.max_epochs)
    if tp is None:
        return Rung(image_size=image_size, epoch_s=None, judge_epochs=judge, first_judgement_s=None,
                    trial_max_s=None)
    epoch_s = _epoch_seconds(rules, tp, sizes)
    return Rung(image_size=image_size, epoch_s=epoch_s, judge_epochs=judge,
                first_judgement_s=tp.startup_s + judge * epoch_s, trial_max_s=trial_max_s)


def _epoch_seconds(rules: Rules, tp: Throughput, sizes: DataSizes, *, validate: bool = True) -> float:
    samples = rules.samples_per_epoch if rules.samples_per_epoch is not None else sizes.train
    valid = sizes.valid / tp.eval_samples_per_s if validate else 0.0
    return samples / tp.train_samples_per_s + valid + tp.epoch_overhead_s


def _wrap_seconds(tp: Throughput, sizes: DataSizes) -> float:
    """After the deadline, the stopped trial saves its best weights and its per-image validation dice."""
    return sizes.valid / tp.eval_samples_per_s + 2.0


def _final_seconds(tp: Throughput, sizes: DataSizes, final: FinalStage, rules: Rules, rung: Rung) -> float:
    """The final stage's estimate × :data:`FINAL_MARGIN`: two models built and tested (the chosen one and
    the baseline) in the trial process the search used, a retrain, fresh runs; the report."""
    if not final.test:
        return REPORT_S
    assert rung.epoch_s is not None
    typical_epochs = min(rules.max_epochs, rung.judge_epochs + rules.patience)  # warm-up, then patience
    seconds = tp.startup_s + 3 * sizes.test / tp.eval_samples_per_s + REPORT_S
    if final.retrain:
        seconds += typical_epochs * _epoch_seconds(rules, tp, sizes, validate=False) * (
            (sizes.train + sizes.valid) / max(1, sizes.train) if rules.samples_per_epoch is None else 1.0)
    seconds += final.reevaluations * (tp.startup_s + typical_epochs * rung.epoch_s)
    return FINAL_MARGIN * seconds


def calibrate(probe: Throughput | None, trials: Sequence[TrialSpeed]) -> Throughput | None:
    """The reference model's speed from the trials already run (the median over trials, each scaled by
    its cost relative to the reference), keeping the probe's fixed costs. None: nothing measured."""
    usable = [t for t in trials if t.epoch_s > 0 and t.samples_per_epoch > 0 and t.work_ratio > 0]
    if not usable:
        return probe
    ratio = probe.eval_samples_per_s / probe.train_samples_per_s if probe is not None else EVAL_TO_TRAIN
    overhead = probe.epoch_overhead_s if probe is not None else 0.0
    rates = sorted(t.samples_per_epoch / max(1e-3, t.epoch_s - overhead) * t.work_ratio for t in usable)
    rate = rates[len(rates) // 2]
    base = probe or Throughput(train_samples_per_s=rate, eval_samples_per_s=rate * ratio)
    return dataclasses.replace(base, train_samples_per_s=rate, eval_samples_per_s=rate * ratio,
                               source=f"{len(usable)} trials")


def run_sentence(run: dict[str, Any]) -> str:
    """One run's record of budget.json (:meth:`RunLedger.to_dict`) as the end-of-run line: what ended it
    and the seconds of each phase."""
    wall, search_s, final_s = (float(run.get(k) or 0.0) for k in ("wall_s", "search_s", "final_s"))
    of = f" of {run['budget_s']:.0f} s" if isinstance(run.get("budget_s"), (int, float)) else ""
    stopped = run.get("stopped_by_budget") or []
    extra = f"; stopped by the budget: trial {', '.join(map(str, stopped))}" if stopped else ""
    if run.get("not_started"):
        extra += f"; {run['not_started']} not started: too slow for the time left"
    before = max(0.0, wall - search_s - final_s)
    return (f"run ended by {run.get('ended_by', '?')} after {wall:.0f} s{of}: data and plan {before:.0f} s, search "
            f"{search_s:.0f} s ({run.get('trials_started', 0)} trials started, {run.get('trials_judged', 0)} "
            f"judged{extra}), final stage {final_s:.0f} s")


# --------------------------------------------------------------------------- the anytime view


@dataclass(frozen=True)
class AnytimePoint:
    """The best validation score when ``seconds`` of the study's runs had passed (run after run, the
    gaps between runs left out), reached by ``trial``."""

    seconds: float
    best: float
    trial: int


def anytime_curve(trials: Sequence[Any], runs: Sequence[dict[str, Any]]) -> list[AnytimePoint]:
    """Each new best of the complete trials (the best trial's definition, search/results/records.py) against
    the wall-clock seconds of the runs in which they finished. ``runs``: budget.json's records
    (``started_at``, ``wall_s``); without them, one run from the first trial's start."""
    done = sorted((r for r in trials if r.status == TrialState.COMPLETE and r.score is not None
                   and math.isfinite(r.score) and r.finished_at is not None), key=lambda r: (r.finished_at, r.number))
    if not done:
        return []
    spans = sorted((float(r["started_at"]), float(r.get("wall_s") or 0.0)) for r in runs
                   if isinstance(r.get("started_at"), (int, float)))
    if not spans or done[0].finished_at < spans[0][0]:  # trials of runs that left no record: one span
        first = min(float(r.started_at) for r in trials)
        cut = spans[0][0] if spans else math.inf
        last = max(float(r.finished_at) for r in done if r.finished_at < cut)
        spans = [(first, last - first), *spans]
    starts = [start for start, _ in spans]
    offsets = list(itertools.accumulate((wall for _, wall in spans[:-1]), initial=0.0))  # seconds before each run
    points: list[AnytimePoint] = []
    best = -math.inf
    for r in done:
        i = max(0, bisect.bisect_right(starts, r.finished_at) - 1)  # the run it finished in
        start, before = starts[i], offsets[i]
        if float(r.score) > best:
            best = float(r.score)
            points.append(AnytimePoint(seconds=before + r.finished_at - start, best=best, trial=r.number))
    return points


def training_seconds_by_fidelity(trials: Sequence[Any]) -> dict[str, dict[str, float]]:
    """Training seconds of the finished trials by fidelity (image side) and by what became of them:
    ``{"128²": {"complete": 520.0, "pruned": 180.0, "stopped by the budget": 40.0}}``."""
    out: dict[str, dict[str, float]] = {}
    for r in trials:
        seconds = float(r.train_s or 0.0) or float(r.duration_s or 0.0)
        if seconds <= 0:
            continue
        size = f"{r.image_size}²" if r.image_size else "unknown size"
        fate = "stopped by the budget" if stopped_by_budget(r.reason) else str(r.status.value)
        bucket = out.setdefault(size, {})
        bucket[fate] = bucket.get(fate, 0.0) + seconds
    return out


def fidelity_sentence(trials: Sequence[Any]) -> str | None:
    """``training time: 128²: 740 s (complete 520 s, 70 %; pruned 180 s, 24 %; …)``; None: nothing trained."""
    by = training_seconds_by_fidelity(trials)
    total = sum(sum(v.values()) for v in by.values())
    if total <= 0:
        return None
    parts = []
    for size, fates in by.items():
        inner = "; ".join(f"{fate} {sec:.0f} s, {100 * sec / total:.0f} %" for fate, sec in
                          sorted(fates.items(), key=lambda kv: -kv[1]))
        parts.append(f"{size}: {sum(fates.values()):.0f} s ({inner})")
    return "training time: " + ", ".join(parts)


# --------------------------------------------------------------------------- config glue


def requested_rules(cfg: Config) -> dict[str, Any]:
    """The four rules as configured (``train.steps_per_epoch`` counts as an explicit epoch size)."""
    t = cfg.train
    spe: Any = t.samples_per_epoch
    if t.steps_per_epoch is not None:
        spe = t.steps_per_epoch * cfg.data.batch_size
    return {"samples_per_epoch": spe, "warmup_samples": t.warmup_samples, "patience": t.patience,
            "max_epochs": t.max_epochs}


def apply_rules(cfg: Config, rules: Rules) -> Config:
    """``cfg`` with the plan's rules in place of ``auto`` (explicit values are already the rules')."""
    t = cfg.train
    changes: dict[str, Any] = {k: getattr(rules, k) for k in RULE_KEYS if getattr(t, k) == AUTO}
    return cfg.replace(train=dataclasses.replace(t, **changes)) if changes else cfg


def adopt_stored_rules(cfg: Config, stored: Config) -> Config:
    """A resumed study keeps the rules it was created with: ``auto`` takes the stored value."""
    t = cfg.train
    changes = {k: getattr(stored.train, k) for k in RULE_KEYS if getattr(t, k) == AUTO}
    return cfg.replace(train=dataclasses.replace(t, **changes)) if changes else cfg


# --------------------------------------------------------------------------- budget.json


def read_budget_file(study_root: Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(study_root) / BUDGET_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_runs(study_root: Path) -> list[dict[str, Any]]:
    """budget.json's record of every run (:meth:`RunLedger.to_dict`), oldest first."""
    return [r for r in read_budget_file(study_root).get("runs") or [] if isinstance(r, dict)]


def write_throughput(study_root: Path, throughput: Throughput) -> None:
    data = read_budget_file(study_root)
    data["throughput"] = throughput.to_dict()
    atomic_write_json(Path(study_root) / BUDGET_FILE, data)


def record_run(study_root: Path, run: dict[str, Any]) -> None:
    """Append one run's record (its plan, what ended it, the seconds of each phase) to budget.json."""
    data = read_budget_file(study_root)
    data.setdefault("runs", []).append(run)
    atomic_write_json(Path(study_root) / BUDGET_FILE, data)


NOT_STARTED = "not started (budget)"  # the reason of a configuration the time left could not judge
def not_started(reason: str) -> bool:
    """Whether a trial's recorded reason says it was not started for the time left."""
    return reason.startswith(NOT_STARTED)


@dataclass
class RunLedger:
    """What one run did with its budget, for the end-of-run line and budget.json."""

    deadline: Deadline
    plan: dict[str, Any] | None = None
    ended_by: str = "max_trials"
    search_s: float = 0.0
    final_s: float = 0.0
    trials_started: int = 0
    trials_judged: int = 0
    not_started: int = 0  # configurations the time left could not judge (search/study/executor.py)
    stopped_by_budget: list[int] = field(default_factory=list)

    def sentence(self) -> str:
        return run_sentence(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        d = self.deadline
        return {"started_at": d.start, "budget_s": d.budget_s, "ended_by": self.ended_by,
                "wall_s": round(d.elapsed(), 1), "search_s": round(self.search_s, 1),
                "final_s": round(self.final_s, 1), "trials_started": self.trials_started,
                "trials_judged": self.trials_judged, "not_started": self.not_started,
                "stopped_by_budget": self.stopped_by_budget,
                "plan": self.plan}
