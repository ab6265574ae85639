"""The per-family view of a study that status and the report share: each model family's trials, its best
validation dice and the cost (parameters, MACs) of its models."""

from __future__ import annotations

from dataclasses import dataclass

from models import ModelCost, estimate_cost
from models.families import FAMILIES
from search.config import HYPERPARAMETER_DEFAULTS, VARIANT, Config
from search.config.specs import specs_from_values
from search.errors import TrialFailed
from search.results import TrialRecord, best_of
from search.vocabulary import TrialState

__all__ = ["FamilyRow", "family_of", "family_rows", "trial_cost"]


@dataclass(frozen=True)
class FamilyRow:
    """One family's part of a study."""

    family: str
    title: str
    trials: int
    complete: int
    best: TrialRecord | None  # its best complete trial (validation dice)
    best_cost: ModelCost | None  # that trial's model's cost (None: not computable)


def family_of(record: TrialRecord) -> str:
    """The trial's model family (``unet`` for trials recorded before families existed)."""
    return str(record.values.get(VARIANT, HYPERPARAMETER_DEFAULTS[VARIANT]))


def trial_cost(cfg: Config | None, record: TrialRecord) -> ModelCost | None:
    """The analytic cost of the trial's model (None without a resolved config, or for values no model fits)."""
    if cfg is None or not isinstance(cfg.data.channels, int):
        return None
    try:
        return estimate_cost(specs_from_values(cfg, record.values, seed=0).model)
    except (TrialFailed, ValueError, KeyError):
        return None


def family_rows(cfg: Config | None, trials: list[TrialRecord]) -> list[FamilyRow]:
    """One row per family that has trials, in the registry's order."""
    rows = []
    for name, fam in FAMILIES.items():
        mine = [r for r in trials if family_of(r) == name]
        if not mine:
            continue
        best = best_of(mine)
        rows.append(FamilyRow(
            family=name, title=fam.title, trials=len(mine),
            complete=sum(r.status == TrialState.COMPLETE for r in mine), best=best,
            best_cost=trial_cost(cfg, best) if best is not None else None,
        ))
    return rows
