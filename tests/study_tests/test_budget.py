"""The budget contract's pure parts: the plan (search/study/budget.py), the deadline, the stop signal, the
calibration, and how a study keeps the rules it was created with. No TensorFlow, no processes."""

from __future__ import annotations

import math
import threading

import pytest
from tiny import AUTO_RULES, CHD, CPU

from search.config import NO_BUDGET_RULES, load_config
from search.errors import ConfigError
from search.study.budget import (
    DEADLINE_ENV,
    FIRST_JUDGEMENT_SHARE,
    TRIAL_SHARE,
    DataSizes,
    Deadline,
    FinalStage,
    Throughput,
    TrialSpeed,
    adopt_stored_rules,
    apply_rules,
    calibrate,
    plan_budget,
    requested_rules,
)
from search.study.folder import blocking_differences
from search.trial.stop import StepStop, StopSignal


def plan(budget_s: float | None, *, throughput: Throughput | None = CPU, sizes: DataSizes = CHD,
         requested: dict | None = None, final: FinalStage | None = None, spent_s: float = 10.0):
    return plan_budget(budget_s=budget_s, spent_s=spent_s, throughput=throughput, sizes=sizes, image_size=128,
                       requested=requested or AUTO_RULES, final=final or FinalStage())


@pytest.mark.parametrize("budget_s", [300.0, 600.0, 1800.0, 8 * 3600.0])
def test_the_first_judgement_comes_about_a_twentieth_of_the_budget_after_a_trial_starts(budget_s: float) -> None:
    p = plan(budget_s)
    rung = p.rung
    assert p.derived == ("samples_per_epoch", "warmup_samples", "patience", "max_epochs")
    assert rung.judge_epochs == 5 and p.rules.warmup_samples == 5 * p.rules.samples_per_epoch
    assert p.rules.samples_per_epoch % CHD.batch_size == 0
    target = FIRST_JUDGEMENT_SHARE * budget_s
    # within one epoch of the target (the epoch is whole batches)
    assert abs(rung.first_judgement_s - target) <= 5 * rung.epoch_s / p.rules.samples_per_epoch * CHD.batch_size + 1e-6
    assert p.rules.patience == 10  # twice the warm-up, in samples
    # the whole budget is split: what was spent, the search, the final stage
    assert p.spent_s + p.search_s + p.final_s == pytest.approx(budget_s)
    # no trial (the baseline included) can train for more than about a quarter of the search
    assert rung.trial_max_s <= TRIAL_SHARE * p.search_s + rung.epoch_s or p.rules.max_epochs == 6
    assert p.rules.max_epochs <= 100
    assert not p.warnings


def test_a_larger_budget_gives_longer_epochs_and_a_larger_dataset_a_longer_smallest_warm_up() -> None:
    epochs = [plan(b).rules.samples_per_epoch for b in (300, 600, 1800, 7200)]
    assert epochs == sorted(epochs) and epochs[0] < epochs[-1]
    # the smallest warm-up is one pass over the training split (at most 200 samples)
    tight = plan(120.0, spent_s=0.0, sizes=DataSizes(train=400, valid=5, test=6, batch_size=2))
    assert tight.rules.warmup_samples >= 200
    assert plan(120.0, spent_s=0.0).rules.warmup_samples < 200  # 25 training images
    # a bigger validation split costs time in every epoch: fewer training samples fit before the judgement
    assert (plan(600.0, sizes=DataSizes(train=25, valid=60, test=6, batch_size=2)).rules.samples_per_epoch
            < plan(600.0).rules.samples_per_epoch)


def test_a_trial_trains_at_least_as_long_as_it_takes_to_start_before_it_is_judged() -> None:
    slow_start = Throughput(train_samples_per_s=7.0, eval_samples_per_s=21.0, startup_s=20.0)
    p = plan(300.0, throughput=slow_start)  # 1/20 of 300 s is 15 s: less than starting a trial
    training_s = p.rung.first_judgement_s - slow_start.startup_s
    assert training_s >= slow_start.startup_s * 0.9
    assert any("more than 1/20 of the budget" in w for w in p.warnings)


def test_explicit_values_win() -> None:
    requested = {"samples_per_epoch": 64, "warmup_samples": 128, "patience": 3, "max_epochs": 7}
    p = plan(600.0, requested=requested)
    assert (p.rules.samples_per_epoch, p.rules.warmup_samples, p.rules.patience, p.rules.max_epochs) == (64, 128, 3, 7)
    assert p.derived == ()
    assert p.rung.judge_epochs == 2  # 128 / 64
    # one pass per epoch (null) stays one pass; the warm-up is then a whole number of passes
    p = plan(600.0, requested={**AUTO_RULES, "samples_per_epoch": None})
    assert p.rules.samples_per_epoch is None and p.rules.warmup_samples % CHD.train == 0
    # a given warm-up is kept, and the epoch is a fifth of it
    p = plan(600.0, requested={**AUTO_RULES, "warmup_samples": 400})
    assert p.rules.warmup_samples == 400 and p.rules.samples_per_epoch == 80


def test_a_budget_below_one_judged_trial_is_refused_naming_the_minimum() -> None:
    with pytest.raises(ConfigError, match=r"--timeout 20: too small; .* use --timeout (\d+) or more") as e:
        plan(20.0)
    minimum = int(str(e.value).rsplit("--timeout ", 1)[1].split()[0])
    assert minimum > 20
    plan(float(minimum))  # the minimum named is enough
    with pytest.raises(ConfigError):
        plan(float(minimum) - 2)
    # explicit rules that cannot be judged in time are refused the same way
    with pytest.raises(ConfigError, match=r"this study's rules: 4000 samples"):
        plan(300.0, requested={"samples_per_epoch": 800, "warmup_samples": 4000, "patience": 10, "max_epochs": 100})


def test_a_budget_too_small_for_the_final_stage_warns_in_one_line_and_keeps_one_judged_trial() -> None:
    final = FinalStage(test=True, reevaluations=6)  # top-2 and the baseline, 2 seeds: 6 fresh trainings
    p = plan(120.0, final=final)
    warning = [w for w in p.warnings if "too small for the final stage" in w]
    assert len(warning) == 1 and "\n" not in warning[0] and "late" in warning[0]
    assert p.search_s >= p.rung.first_judgement_s
    assert "warning: the budget is too small for the final stage" in p.describe()
    # without a final stage there is nothing to warn about
    assert not [w for w in plan(120.0, final=FinalStage(test=False)).warnings if "final stage" in w]


def test_without_a_budget_auto_is_the_reference_scale() -> None:
    p = plan(None)
    assert (p.rules.samples_per_epoch, p.rules.warmup_samples, p.rules.patience, p.rules.max_epochs) == tuple(
        NO_BUDGET_RULES[k] for k in ("samples_per_epoch", "warmup_samples", "patience", "max_epochs"))
    assert p.search_s is None and p.minimum_s is None
    assert p.rung.first_judgement_s == pytest.approx(CPU.startup_s + 5 * (800 / 7 + 5 / 21 + 0.1))
    assert "no time budget" in p.describe() and "from the reference's scale, without a budget" in p.describe()
    # a budget without a measurement keeps the deadline (a tenth for the final stage) and says so
    p = plan(600.0, throughput=None)
    assert p.rules.samples_per_epoch == 800 and p.final_s == pytest.approx(59.0) and p.warnings


def test_the_plan_describes_itself_in_the_budget_s_words() -> None:
    text = plan(600.0).describe()
    assert text.startswith("600 s: search ≈ ")
    assert "final stage ≈" in text and "epoch = " in text and "first judgement after ≈" in text
    assert "from the budget" in text


def test_the_deadline_splits_the_run_and_counts_down_on_its_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    d = Deadline(300.0, clock=lambda: now[0])
    d.reserve(40.0)
    assert d.ends_at == 1300.0 and d.search_ends_at == 1260.0
    now[0] = 1259.0
    assert d.search_left() and d.remaining() == pytest.approx(41.0) and d.elapsed() == pytest.approx(259.0)
    now[0] = 1260.0
    assert not d.search_left()
    free = Deadline(None, clock=lambda: now[0])
    assert free.search_left() and math.isinf(free.remaining())
    # an extra driver of `run --workers N` ends its search with the main driver's
    monkeypatch.setenv(DEADLINE_ENV, "1234.5")
    assert Deadline.from_env(300.0).search_ends_at == 1234.5


def test_the_stop_signal_says_why() -> None:
    now = [0.0]
    flag = threading.Event()
    stop = StopSignal(at=10.0, flag=flag, clock=lambda: now[0])
    assert stop.reason() is None
    stop.check()
    now[0] = 10.0
    assert stop.reason() == "budget"
    flag.set()
    assert stop.reason() == "user"  # Ctrl-C wins: the trial stays resumable
    with pytest.raises(StepStop) as e:
        stop.check()
    assert e.value.reason == "user"


def test_calibration_scales_each_trial_by_its_cost_and_keeps_the_probe_s_fixed_costs() -> None:
    probe = Throughput(train_samples_per_s=10.0, eval_samples_per_s=30.0, startup_s=4.0, epoch_overhead_s=0.0)
    # a model twice the reference's cost at 5 samples/s and one half its cost at 20: both say 10 for the reference
    speeds = [TrialSpeed(epoch_s=20.0, samples_per_epoch=100, work_ratio=2.0),
              TrialSpeed(epoch_s=5.0, samples_per_epoch=100, work_ratio=0.5),
              TrialSpeed(epoch_s=1.0, samples_per_epoch=100, work_ratio=1.0)]  # 100/s
    tp = calibrate(probe, speeds)
    assert tp is not None
    assert tp.train_samples_per_s == pytest.approx(10.0) and tp.eval_samples_per_s == pytest.approx(30.0)
    assert tp.startup_s == 4.0 and tp.source == "3 trials"
    assert calibrate(probe, []) is probe and calibrate(None, []) is None


def test_a_study_keeps_the_rules_it_was_created_with() -> None:
    new = load_config(overrides=["data.image_size=64"])  # every rule auto
    assert requested_rules(new) == AUTO_RULES
    from search.study.budget import Rules

    created = apply_rules(new, Rules(samples_per_epoch=40, warmup_samples=200, patience=10, max_epochs=23))
    assert (created.train.samples_per_epoch, created.train.max_epochs) == (40, 23)
    assert created.steps_per_epoch == 20 and created.prune_warmup == 5
    # resuming with `auto` (another budget) is no difference, and takes the stored rules
    assert blocking_differences(created, new) == []
    assert adopt_stored_rules(new, created).train == created.train
    # an explicit change of a rule is one
    changed = load_config(overrides=["data.image_size=64", "train.patience=3"])
    assert [d.split(":")[0] for d in blocking_differences(created, changed)] == ["train.patience"]
    # steps_per_epoch is an explicit epoch size
    assert requested_rules(load_config(overrides=["train.steps_per_epoch=7"]))["samples_per_epoch"] == 14


def test_a_k_fold_trial_with_all_its_folds_trains_at_most_a_quarter_of_the_search() -> None:
    one = plan_budget(budget_s=4 * 3600.0, throughput=CPU, sizes=CHD, image_size=128, requested=AUTO_RULES)
    three = plan_budget(budget_s=4 * 3600.0, throughput=CPU, sizes=CHD, image_size=128, requested=AUTO_RULES,
                        folds=3)
    assert three.rules.max_epochs < one.rules.max_epochs
    assert three.rung.trial_max_s <= TRIAL_SHARE * three.search_s
    # never below a judged model per fold (the warm-up and one epoch), even when that takes more:
    # five folds each judged after 1/20 of the budget are a quarter already
    tight = plan_budget(budget_s=1800.0, throughput=CPU, sizes=CHD, image_size=128, requested=AUTO_RULES, folds=5)
    assert tight.rules.max_epochs == tight.rung.judge_epochs + 1


def test_a_budget_just_above_the_minimum_plans_the_smallest_warm_up_rather_than_none() -> None:
    with pytest.raises(ConfigError) as e:
        plan(10.0, spent_s=30.0)
    minimum = int(str(e.value).rsplit("--timeout ", 1)[1].split()[0])
    p = plan(float(minimum), spent_s=30.0)
    assert p.rung.first_judgement_s <= p.search_s + 1e-9  # one trial can still be judged
    assert p.rules.warmup_samples == 5 * p.rules.samples_per_epoch


def test_a_resumed_study_s_rules_planned_for_another_budget_are_kept_with_a_warning() -> None:
    small = plan(120.0).rules  # a first run with two minutes
    stored = {"samples_per_epoch": small.samples_per_epoch, "warmup_samples": small.warmup_samples,
              "patience": small.patience, "max_epochs": small.max_epochs}
    p = plan_budget(budget_s=4 * 3600.0, spent_s=5.0, throughput=CPU, sizes=CHD, image_size=128,
                    requested=stored, study_rules=True)
    assert (p.rules.samples_per_epoch, p.rules.max_epochs) == (small.samples_per_epoch, small.max_epochs)
    assert any("planned for another budget" in w for w in p.warnings)
    assert "this study's rules" in p.describe()
