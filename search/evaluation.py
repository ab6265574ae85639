"""How a trial is scored: holdout (the valid split) or patient-grouped k-fold over train+valid.

Shared by the driver (folds are made once per study and recorded in ``folds.json``) and the trial
process (fold pruning, mean ± standard error). The test split is never part of a fold.

Grouping (``study.groups``): images of one patient must land in one fold, or the fold's score
measures memorisation of that patient's neighbouring slices.

- ``auto``: the patient column of ``<data.root>/split.csv`` (written by ``data prepare``) when the
  image names start with those patient ids; else the file-name prefix before a trailing
  ``_<number>`` (``1003_142`` → ``1003``) when every name has one; else contiguous blocks of the
  sorted names (one stack of slices, e.g. EM).
- a regular expression with one group, e.g. ``^(\\w+)_\\d+``: the group is the patient id.
- ``contiguous``: ``k`` contiguous blocks of the sorted names.
- ``none``: every image its own group (only when images are independent).

Fold pruning (``study.fold_prune_p``): after each fold from the second on, the trial's per-image
out-of-fold dice are compared, image by image, with the best complete trial's on the same images;
a one-sided Wilcoxon signed-rank test below ``fold_prune_p`` stops the trial. It is paired (same
images) and needs no other trials' epochs, so it works for Keras Tuner too; epoch-level pruning
(ASHA, median) acts within the first fold only, where every trial's epochs are comparable.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search.errors import ConfigError

__all__ = ["FoldPlan", "fold_prune_reason", "group_images", "make_folds", "mean_se"]

_TRAILING_INDEX = re.compile(r"^(.+?)[_-]\d+$")
MIN_PRUNE_PAIRS = 6  # fewer paired images than this: never prune on folds


@dataclass(frozen=True)
class FoldPlan:
    """The study's folds: validation stems of each fold (train+valid pooled), fixed for every trial."""

    k: int
    grouping: str
    folds: tuple[tuple[str, ...], ...]
    groups: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "grouping": self.grouping, "folds": [list(f) for f in self.folds], "groups": self.groups}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FoldPlan:
        return cls(k=int(d["k"]), grouping=str(d["grouping"]), folds=tuple(tuple(f) for f in d["folds"]),
                   groups=dict(d["groups"]))


def group_images(stems: Sequence[str], rule: str, *, k: int, data_root: Path | None = None) -> tuple[dict[str, str], str]:
    """Map each image stem to its group (patient); returns the mapping and how it was made."""
    stems = sorted(stems)
    if rule == "none":
        return {s: s for s in stems}, "none (every image its own group)"
    if rule == "contiguous":
        return _contiguous(stems, k), "contiguous blocks of sorted names"
    if rule == "auto":
        patients = _split_csv_patients(data_root) if data_root is not None else []
        if patients:
            by_prefix = {s: next((p for p in patients if s.startswith(f"{p}_") or s == p), "") for s in stems}
            if all(by_prefix.values()):
                return by_prefix, f"patients from {data_root}/split.csv"
        matches = {s: _TRAILING_INDEX.match(s) for s in stems}
        if all(matches.values()):
            groups = {s: m.group(1) for s, m in matches.items() if m}
            if len(set(groups.values())) >= k:
                return groups, "file-name prefix before _<index>"
        return _contiguous(stems, k), "contiguous blocks of sorted names (no patient ids found)"
    pattern = re.compile(rule)
    groups = {}
    for s in stems:
        m = pattern.search(s)
        if m is None or not m.groups():
            raise ConfigError(f"study.groups: pattern {rule!r} does not match image {s!r} with a group; "
                              "expected a regular expression with one (group) that every image name matches")
        groups[s] = m.group(1)
    return groups, f"pattern {rule}"


def make_folds(groups: dict[str, str], k: int, *, seed: int, grouping: str) -> FoldPlan:
    """Assign whole groups to ``k`` folds, balancing image counts (largest group first, seeded ties).

    Raises:
        ConfigError: fewer groups (patients) than folds.
    """
    members: dict[str, list[str]] = {}
    for stem, g in sorted(groups.items()):
        members.setdefault(g, []).append(stem)
    if len(members) < k:
        raise ConfigError(
            f"study.folds: {k} folds need at least {k} patients (groups), but train+valid has {len(members)} "
            f"({grouping}); lower study.folds or set study.groups"
        )
    rng = np.random.default_rng(seed)
    order = sorted(members, key=lambda g: (-len(members[g]), rng.random()))
    folds: list[list[str]] = [[] for _ in range(k)]
    for g in order:
        smallest = min(range(k), key=lambda i: (len(folds[i]), i))
        folds[smallest].extend(members[g])
    return FoldPlan(k=k, grouping=grouping, folds=tuple(tuple(sorted(f)) for f in folds), groups=dict(groups))


def mean_se(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (None with fewer than 2 values)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return math.nan, None
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else None
    return float(a.mean()), se


def fold_prune_reason(
    scores: dict[str, float], reference: dict[str, float] | None, *, p_threshold: float, folds_done: int,
    k: int, reference_label: str = "the best trial",
) -> str | None:
    """The reason to stop a k-fold trial after ``folds_done`` folds, or None to go on (module docstring)."""
    if not reference or p_threshold <= 0 or folds_done < 2 or folds_done >= k:
        return None
    common = sorted(set(scores) & set(reference))
    if len(common) < MIN_PRUNE_PAIRS:
        return None
    diff = np.array([scores[s] - reference[s] for s in common])
    if not np.any(diff != 0) or diff.mean() >= 0:
        return None
    from scipy.stats import wilcoxon

    p = float(wilcoxon(diff, zero_method="wilcox", alternative="less").pvalue)
    if p >= p_threshold:
        return None
    return (f"pruned after fold {folds_done} of {k}: {diff.mean():+.3f} dice against {reference_label} on the "
            f"same {len(common)} images (one-sided Wilcoxon p = {p:.3g} < {p_threshold:g})")


def _contiguous(stems: list[str], k: int) -> dict[str, str]:
    blocks = np.array_split(np.arange(len(stems)), max(1, min(k, len(stems))))
    return {stems[i]: f"block{b}" for b, idx in enumerate(blocks) for i in idx}


def _split_csv_patients(root: Path) -> list[str]:
    path = root / "split.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return sorted({row["patient"] for row in csv.DictReader(f) if row.get("patient")}, key=len, reverse=True)
