"""Top-k re-evaluation before the final pick (``final.reevaluate_top_k``, ``final.seeds``, ``final.select``).

With a handful of validation images the best of many trials is partly the luckiest: its search score
is the maximum of noisy numbers, so it is biased upwards (the winner's curse). Before the final
stage, the ``k`` best complete trials *and the baseline* are trained again with ``final.seeds`` fresh
seeds each, on the same data and with the same evaluation as the search (the valid split, or the
study's folds), and the final configuration is picked on these fresh scores only:

* ``mean``: the highest mean fresh score;
* ``lcb``: the highest lower confidence bound, mean − 1 standard error, where the standard error adds
  the spread over images (of the per-image dice averaged over seeds; cluster-robust over patients
  when the study knows them, search/evaluation/units.py) and the spread over seeds (of each run's mean):
  ``se = sqrt(se_images² + se_seeds²)``.

The search score is not used: it is the biased number. A fresh run that fails (NaN, out of memory)
scores 0 on every image: the configuration gave no usable model with that seed. Each run trains in
``final/reeval/<nnnn>-s<j>/`` with checkpoints and records ``run.json`` when it ends, so an
interrupted re-evaluation resumes at the run it was in. The selection, with every candidate's fresh
scores, is ``final/selection.json`` (and ``final.json``'s ``selection``). It holds no test score:
only the pick is tested (search/study/final.py), unless ``final --show-candidate-test`` asks otherwise.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search.config import Config
from search.config.specs import specs_from_values, trial_seed
from search.errors import Interrupted, TrialFailed
from search.evaluation import FoldPlan, Units, mean_se
from search.results import StudyDir, TrialRecord, atomic_write_json, ranked, read_json
from search.results.layout import REEVAL_DIR, RUN_FILE, SCORES_FILE, SELECTION_FILE
from search.study.budget import BudgetEnded
from search.study.dataset import PreparedData, study_units
from search.trial.holdout import HoldoutTask
from search.trial.kfold import KFoldTask
from search.trial.process import TrialProcess
from search.trial.task import TrialOutputs, TrialTask
from search.vocabulary import EpochDecision, TrialState

__all__ = ["Candidate", "pick", "reevaluate", "reeval_seed", "selection_sentence",
           "top_candidates"]

logger = logging.getLogger(__name__)


def reeval_seed(study_seed: int, number: int, j: int) -> int:
    """The seed of trial ``number``'s ``j``-th fresh run: never a seed of the search's own trials."""
    return trial_seed(int(study_seed) + 7919 * (j + 1), number) ^ 0x5EED


@dataclass
class Candidate:
    """One configuration re-evaluated: its search record, its fresh runs (score and per-image dice) and the
    study's units (each image's patient)."""

    trial: int
    baseline: bool
    search_score: float | None
    runs: list[dict[str, Any]] = field(default_factory=list)
    units: Units = field(default_factory=Units)

    def stats(self) -> dict[str, Any]:
        """Mean of the fresh scores, its standard error (units and seeds), and mean − se."""
        scored = [r for r in self.runs if r.get("per_image")]
        if not scored:
            return {"mean": None, "se": None, "lcb": None}
        stems = sorted(set.intersection(*(set(r["per_image"]) for r in scored)))
        grid = np.array([[float(r["per_image"][s]) for s in stems] for r in scored])  # seeds x images
        mean = float(grid.mean())
        _, se_images = mean_se(list(grid.mean(axis=0)), self.units.labels(stems))
        _, se_seeds = mean_se(list(grid.mean(axis=1)))
        se = math.sqrt((se_images or 0.0) ** 2 + (se_seeds or 0.0) ** 2)
        return {"mean": mean, "se": se, "lcb": mean - se, "n_images": len(stems), "n_units": self.units.count(stems),
                "unit": self.units.noun, "n_seeds": len(scored)}

    def to_dict(self) -> dict[str, Any]:
        runs = [{k: v for k, v in r.items() if k != "per_image"} for r in self.runs]
        return {"trial": self.trial, "baseline": self.baseline, "search_score": self.search_score,
                **self.stats(), "runs": runs}


def top_candidates(study: StudyDir, k: int) -> list[TrialRecord]:
    """The ``k`` best complete trials by search score, then the baseline (complete or pruned) if not among them."""
    chosen = ranked(study.trials())[:k]
    baseline = study.baseline_trial()
    if baseline is not None and all(r.number != baseline.number for r in chosen):
        chosen.append(baseline)
    return chosen


def pick(candidates: list[Candidate], rule: str) -> Candidate:
    """The candidate with the highest fresh mean (``mean``) or lower bound (``lcb``); ties: the better
    search score, then the lower trial number."""
    def key(c: Candidate) -> tuple[float, float, int]:
        value = c.stats()[rule]
        return (-math.inf if value is None else value, c.search_score or -math.inf, -c.trial)

    return max(candidates, key=key)


def reevaluate(
    study: StudyDir, cfg: Config, data: PreparedData, process: TrialProcess, folds: FoldPlan | None,
    *, stop_at: float | None = None,
) -> dict[str, Any]:
    """Run the fresh seeds of the top-k and the baseline, pick, write ``final/selection.json``.

    Raises:
        BudgetEnded: the run's deadline (``stop_at``) came before every fresh run was judged; the
            finished runs are kept (``python -m search final NAME`` continues).
    """
    f = cfg.final
    records = top_candidates(study, f.reevaluate_top_k)
    root = study.final_dir / REEVAL_DIR
    units = study_units(cfg, data)
    candidates: list[Candidate] = []
    total = len(records) * f.seeds
    done = 0
    for rec in records:
        cand = Candidate(trial=rec.number, baseline=rec.baseline, search_score=rec.score, units=units)
        for j in range(f.seeds):
            done += 1
            run_dir = root / f"{rec.number:04d}-s{j}"
            if (run_dir / RUN_FILE).is_file():
                cand.runs.append(read_json(run_dir / RUN_FILE))
                continue
            if stop_at is not None and time.time() >= stop_at:
                raise BudgetEnded(f"the budget ended after {done - 1} of {total} re-evaluation runs")
            logger.info("re-evaluation %d/%d: trial %d, fresh seed %d of %d", done, total, rec.number, j + 1, f.seeds)
            run = _run(cfg, data, process, folds, rec, j, run_dir, units, stop_at)
            atomic_write_json(run_dir / RUN_FILE, run)
            cand.runs.append(run)
            logger.info("re-evaluation: trial %d seed %d: %s %.4f (%d epochs, %.0f s)", rec.number, j + 1,
                        run["status"], run["score"], run["epochs_run"], run["duration_s"])
        candidates.append(cand)
    chosen = pick(candidates, f.select)
    by_search = records[0].number if records else None
    selection: dict[str, Any] = {
        "rule": f.select, "top_k": f.reevaluate_top_k, "seeds": f.seeds, "evaluation": cfg.study.evaluation,
        "chosen": chosen.trial, "search_best": by_search,
        "changed": by_search is not None and chosen.trial != by_search,
        "candidates": [c.to_dict() for c in candidates],
    }
    selection["sentence"] = selection_sentence(selection)
    atomic_write_json(study.final_dir / SELECTION_FILE, selection)
    logger.info("%s", selection["sentence"])
    return selection


def selection_sentence(selection: dict[str, Any]) -> str:
    """One sentence for status and the report: what was re-evaluated, what was picked, and why."""
    cands = {int(c["trial"]): c for c in selection["candidates"]}
    chosen = cands[int(selection["chosen"])]

    def fresh(c: dict[str, Any]) -> str:
        return f"{c['mean']:.3f} ± {c['se']:.3f}" if c.get("mean") is not None else "no score"

    def searched(c: dict[str, Any]) -> str:
        return f"{c['search_score']:.3f}" if c.get("search_score") is not None else "no score"

    rule = "mean" if selection["rule"] == "mean" else "lower bound (mean − se)"
    out = (f"re-evaluation of {len(cands)} configurations with {selection['seeds']} fresh seeds each picked "
           f"trial {chosen['trial']}{' (the baseline)' if chosen['baseline'] else ''} by the {rule}: "
           f"fresh {fresh(chosen)}")
    search_best = cands.get(int(selection["search_best"])) if selection.get("search_best") is not None else None
    if search_best is None or search_best is chosen:
        return out + f", the search's best too (search score {searched(chosen)})"
    return (out + f"; the search's best, trial {search_best['trial']}, scored {searched(search_best)} in the search "
            f"and {fresh(search_best)} fresh")


def _run(cfg: Config, data: PreparedData, process: TrialProcess, folds: FoldPlan | None, rec: TrialRecord,
         j: int, run_dir: Path, units: Units, stop_at: float | None = None) -> dict[str, Any]:
    seed = reeval_seed(cfg.study.seed, rec.number, j)
    base = {"trial": rec.number, "seed_index": j, "seed": seed}
    try:
        specs = specs_from_values(cfg, rec.values, seed=seed)
    except TrialFailed as e:
        return {**base, "status": TrialState.FAILED.value, "score": 0.0, "per_image": None, "epochs_run": 0,
                "duration_s": 0.0, "reason": e.reason}
    common: dict[str, Any] = dict(
        number=rec.number, specs=specs, out_dir=str(run_dir), cache_path=data.cache_path,
        outputs=TrialOutputs(predictions=0, checkpoint=cfg.train.checkpoint_every_epoch), units=units, stop_at=stop_at,
    )
    task: TrialTask = KFoldTask(**common, folds=folds.folds) if folds is not None else HoldoutTask(**common)
    outcome = process.run(task, lambda report: EpochDecision.CONTINUE)
    if outcome.interrupted and outcome.stopped_by == "budget":
        raise BudgetEnded(f"the budget ended during the re-evaluation of trial {rec.number}")
    if outcome.interrupted:
        raise Interrupted(f"stopped during the re-evaluation of trial {rec.number}; "
                          f"`python -m search final NAME` resumes it")
    per_image: dict[str, float] | None = None
    scores = run_dir / SCORES_FILE
    if outcome.status != TrialState.FAILED and scores.is_file():
        per_image = {str(k): float(v) for k, v in read_json(scores)["per_image"].items()}
    elif outcome.status == TrialState.FAILED:
        # No usable model with this seed: 0 on every image the search scored it on.
        stems = [s for fold in folds.folds for s in fold] if folds is not None else list(data.stems["valid"])
        per_image = dict.fromkeys(stems, 0.0)
    score = float(np.mean(list(per_image.values()))) if per_image else 0.0
    return {**base, "status": outcome.status.value, "score": score, "per_image": per_image,
            "epochs_run": outcome.epochs_run, "duration_s": round(outcome.duration_s, 1), "reason": outcome.reason}
