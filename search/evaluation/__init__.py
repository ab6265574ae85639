"""How a score is judged: the units (patients) and folds, the statistics over units, the verdict.

- :mod:`~search.evaluation.units`: each image's patient (``study.groups``), the fold plan, the units;
- :mod:`~search.evaluation.stats`: means and cluster-robust standard errors, the exact signed-rank test,
  fold pruning;
- :mod:`~search.evaluation.verdict`: the final model against the baseline on the test split.
"""

from __future__ import annotations

from search.evaluation.stats import (
    MIN_UNITS,
    cluster_se,
    fold_prune_reason,
    mean_se,
    signed_rank_p,
    unit_sums,
)
from search.evaluation.units import FoldPlan, Units, group_images, image_units, make_folds
from search.evaluation.verdict import Verdict, outcomes, paired_verdict, union_interval

__all__ = [
    "MIN_UNITS",
    "FoldPlan",
    "Units",
    "Verdict",
    "cluster_se",
    "fold_prune_reason",
    "group_images",
    "image_units",
    "make_folds",
    "mean_se",
    "outcomes",
    "paired_verdict",
    "signed_rank_p",
    "union_interval",
    "unit_sums",
]
