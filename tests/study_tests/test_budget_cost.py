"""Cost-aware search and the anytime view (issue 20 items 3 and 8): a configuration the time left cannot take to
its first judgement is not started and the sampler is told; each trial's training seconds and fidelity are
recorded; status and the report show the best score against the budget's seconds."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_raw_config
from tiny import AUTO_RULES, CHD, CPU

from models import estimate_cost
from search.config import config_from_dict
from search.config.space import baseline_values, complete_values
from search.config.specs import specs_from_values
from search.results import StudyDir, TrialRecord
from search.study.budget import (
    NOT_STARTED,
    Deadline,
    anytime_curve,
    fidelity_sentence,
    plan_budget,
    run_sentence,
    training_seconds_by_fidelity,
)
from search.vocabulary import TrialState

CHEAP = {"base_filters": 4, "num_layers": 2, "learning_rate": 3e-3}


def _plan(image_size: int = 32) -> Any:
    return plan_budget(budget_s=600.0, spent_s=10.0, throughput=CPU, sizes=CHD, image_size=image_size,
                       requested=AUTO_RULES)


def test_a_costlier_configuration_needs_longer_to_its_first_judgement_by_its_training_not_its_start_up() -> None:
    plan = _plan(128)
    reference = plan.first_judgement_s(1.0)
    assert reference == pytest.approx(plan.rung.first_judgement_s)
    double = plan.first_judgement_s(2.0)
    assert double is not None and reference is not None
    assert double - CPU.startup_s == pytest.approx(2 * (reference - CPU.startup_s) - plan.rung.judge_epochs
                                                   * CPU.epoch_overhead_s)
    assert plan.first_judgement_s(0.5) < reference < double  # type: ignore[operator]
    slower = CPU.__class__(**{**CPU.to_dict(), "train_samples_per_s": CPU.train_samples_per_s / 2,
                              "eval_samples_per_s": CPU.eval_samples_per_s / 2})
    assert plan.first_judgement_s(1.0, slower) == pytest.approx(double)  # a calibrated throughput is used
    no_measurement = plan_budget(budget_s=None, throughput=None, sizes=CHD, image_size=128, requested=AUTO_RULES)
    assert no_measurement.first_judgement_s(1.0) is None


class _Pool:
    stop_requested = 0

    def __init__(self) -> None:
        self.ran: list[int] = []

    def run(self, task: Any, decide: Any) -> Any:
        from search.trial.task import TrialOutcome

        self.ran.append(task.number)
        return TrialOutcome(status="complete", score=0.5, best_epoch=0, epochs_run=2, train_s=3.0)


def _executor(tmp_path: Path, search_left_s: float, **train: Any) -> tuple[Any, _Pool, Any]:
    from search.study.dataset import PreparedData
    from search.study.executor import TrialExecutor
    from search.study.progress import Progress

    cfg = config_from_dict(tiny_raw_config(Path("unused"), train=train))
    now = [1000.0]
    deadline = Deadline(600.0, start=1000.0 - 600.0 + search_left_s + 20.0, clock=lambda: now[0])
    deadline.reserve(20.0)
    assert deadline.search_remaining() == pytest.approx(search_left_s)
    study = StudyDir(tmp_path / "study")
    study.root.mkdir()
    pool = _Pool()
    executor = TrialExecutor(cfg, study, PreparedData(cache_path="", fingerprint={}), pool,  # type: ignore[arg-type]
                             Progress(total=5, enabled=False), deadline=deadline, budget=_plan())
    return executor, pool, cfg


def _needs(cfg: Any, values: dict[str, Any]) -> float:
    ref = estimate_cost(specs_from_values(cfg, complete_values(cfg, baseline_values(cfg)), seed=0).model)
    cost = estimate_cost(specs_from_values(cfg, complete_values(cfg, values), seed=0).model)
    need = _plan().first_judgement_s(cost.forward_macs_per_image / ref.forward_macs_per_image)
    assert need is not None
    return need


def test_a_configuration_the_time_left_cannot_judge_is_not_started_but_a_cheaper_one_still_is(tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_raw_config(Path("unused")))
    costly = baseline_values(cfg)
    cheap_s, costly_s = _needs(cfg, CHEAP), _needs(cfg, costly)
    assert cheap_s < costly_s
    executor, pool, _ = _executor(tmp_path, search_left_s=(cheap_s + costly_s) / 2)

    rec = executor(0, costly, baseline=True)
    assert pool.ran == []  # no trial process round trip
    assert rec.status == TrialState.PRUNED and rec.score is None and rec.reason.startswith(NOT_STARTED)
    assert f"{costly_s:.0f} s" in rec.reason
    assert executor.study.read_trial(0).status == TrialState.PRUNED  # type: ignore[union-attr]
    assert executor.budget_left()  # the cheapest configuration still fits: the search goes on

    rec = executor(1, CHEAP, baseline=False)
    assert pool.ran == [1] and rec.status == TrialState.COMPLETE


def test_after_three_configurations_in_a_row_that_do_not_fit_the_search_ends(tmp_path: Path) -> None:
    from search.study.executor import NOT_STARTED_LIMIT

    cfg = config_from_dict(tiny_raw_config(Path("unused")))
    costly = baseline_values(cfg)
    executor, pool, _ = _executor(tmp_path, search_left_s=(_needs(cfg, CHEAP) + _needs(cfg, costly)) / 2)
    for number in range(NOT_STARTED_LIMIT):
        assert executor.budget_left()
        executor(number, costly, baseline=False)
    assert pool.ran == [] and not executor.budget_left()


def test_when_not_even_the_cheapest_configuration_fits_the_search_ends(tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_raw_config(Path("unused")))
    executor, pool, _ = _executor(tmp_path, search_left_s=_needs(cfg, CHEAP) * 0.9)
    rec = executor(0, CHEAP, baseline=False)
    assert pool.ran == [] and rec.reason.startswith(NOT_STARTED)
    assert not executor.budget_left()


def test_a_configuration_that_fits_starts_and_records_its_training_seconds_and_fidelity(tmp_path: Path) -> None:
    executor, pool, cfg = _executor(tmp_path, search_left_s=500.0, samples_per_epoch=16)
    executor(0, CHEAP, baseline=False)
    assert pool.ran == [0]
    rec = executor.study.read_trial(0)
    assert rec.train_s == 3.0 and rec.image_size == cfg.data.image_size == 32
    assert rec.train_samples == 2 * 16  # 2 epochs of 16 samples (2 batches of 8)
    rows = list(csv.DictReader(executor.study.trials_csv.open()))
    assert (rows[0]["train_s"], rows[0]["train_samples"], rows[0]["image_size"]) == ("3.00", "32", "32")


def test_without_a_budget_every_configuration_starts(tmp_path: Path) -> None:
    from search.study.dataset import PreparedData
    from search.study.executor import TrialExecutor
    from search.study.progress import Progress

    cfg = config_from_dict(tiny_raw_config(Path("unused")))
    study = StudyDir(tmp_path / "study")
    study.root.mkdir()
    pool = _Pool()
    executor = TrialExecutor(cfg, study, PreparedData(cache_path="", fingerprint={}), pool,  # type: ignore[arg-type]
                             Progress(total=5, enabled=False), deadline=Deadline(None), budget=_plan())
    executor(0, baseline_values(cfg), baseline=True)
    assert pool.ran == [0]


def _rec(number: int, status: str, score: float | None, started: float, finished: float, **kw: Any) -> TrialRecord:
    return TrialRecord(number=number, status=TrialState(status), values={}, seed=0, score=score,
                       started_at=started, finished_at=finished, **kw)


def test_the_anytime_curve_counts_the_runs_wall_clock_and_leaves_out_the_gap_between_runs() -> None:
    trials = [
        _rec(0, "complete", 0.30, 1000.0, 1100.0),
        _rec(1, "pruned", 0.90, 1100.0, 1150.0),  # not a complete trial: never the best
        _rec(2, "complete", 0.25, 1150.0, 1200.0),  # no improvement
        _rec(3, "complete", 0.50, 1200.0, 1280.0),
        _rec(4, "complete", 0.60, 5000.0, 5040.0),  # a second run, an hour later
    ]
    runs = [{"started_at": 990.0, "wall_s": 300.0}, {"started_at": 4990.0, "wall_s": 100.0}]
    curve = anytime_curve(trials, runs)
    assert [(p.trial, p.best) for p in curve] == [(0, 0.30), (3, 0.50), (4, 0.60)]
    assert [p.seconds for p in curve] == pytest.approx([110.0, 290.0, 300.0 + 50.0])
    # a study without budget.json (older runs): one run from the first trial's start
    assert [p.seconds for p in anytime_curve(trials[:4], [])] == pytest.approx([100.0, 280.0])


def test_training_time_is_shared_out_by_fidelity_and_fate() -> None:
    trials = [
        _rec(0, "complete", 0.3, 0.0, 1.0, train_s=300.0, image_size=128),
        _rec(1, "pruned", 0.1, 0.0, 1.0, train_s=100.0, image_size=128),
        _rec(2, "complete", 0.4, 0.0, 1.0, train_s=100.0, image_size=128, reason="budget: stopped at the deadline"),
        _rec(3, "pruned", None, 0.0, 1.0, image_size=128, reason=f"{NOT_STARTED}: …"),  # trained nothing
    ]
    assert training_seconds_by_fidelity(trials) == {"128²": {"complete": 300.0, "pruned": 100.0,
                                                             "stopped by the budget": 100.0}}
    assert fidelity_sentence(trials) == ("training time: 128²: 500 s (complete 300 s, 60 %; pruned 100 s, 20 %; "
                                         "stopped by the budget 100 s, 20 %)")
    assert fidelity_sentence(trials[3:]) is None


def test_status_shows_how_the_last_run_used_its_budget_and_the_best_score_against_time(tmp_path: Path) -> None:
    from search.tools.status import status_text

    study = StudyDir(tmp_path / "s")
    study.root.mkdir()
    for rec in (_rec(0, "complete", 0.30, 1000.0, 1100.0, train_s=90.0, image_size=64),
                _rec(1, "complete", 0.50, 1100.0, 1250.0, train_s=140.0, image_size=64)):
        study.write_trial(rec)
    study.refresh_trials_csv()
    run = {"started_at": 990.0, "budget_s": 300.0, "ended_by": "the budget", "wall_s": 301.0, "search_s": 260.0,
           "final_s": 30.0, "trials_started": 2, "trials_judged": 2, "not_started": 1, "stopped_by_budget": []}
    (study.root / "budget.json").write_text(json.dumps({"runs": [run]}))
    text = status_text(study)
    assert f"last {run_sentence(run)}" in text
    assert "run ended by the budget after 301 s of 300 s" in text and "1 not started" in text
    assert "best so far: 0.3 after 110 s (trial 0), 0.5 after 260 s (trial 1)" in text
    assert "training time: 64²: 230 s" in text


def test_a_familys_time_per_mac_scales_its_predicted_time(tmp_path: Path) -> None:
    """Issue 23 / B14: a Swin-UNet does fewer MACs per second than a UNet; its time is predicted from
    models.train_work (MACs × the family's time per MAC), not from its MACs alone."""
    from models import train_work
    from models.families import FAMILIES

    raw = tiny_raw_config(Path("unused"))
    raw["search_space"]["variant"] = {"type": "choice", "values": ["unet", "swin_unet"]}
    cfg = config_from_dict(raw)
    values = complete_values(cfg, {"variant": "swin_unet", "base_filters": 8, "num_layers": 2})
    spec = specs_from_values(cfg, values, seed=0).model
    assert FAMILIES["swin_unet"].time_per_mac > 1
    assert train_work(spec) == pytest.approx(estimate_cost(spec).forward_macs_per_image *
                                             FAMILIES["swin_unet"].time_per_mac)
    executor, _, _ = _executor(tmp_path, search_left_s=100.0)
    ref = train_work(specs_from_values(cfg, complete_values(cfg, baseline_values(cfg)), seed=0).model)
    assert executor._first_judgement_s(values, None) == pytest.approx(_plan().first_judgement_s(train_work(spec) / ref))
