"""Who the images belong to: patient-grouped folds over train+valid, and the units the statistics count.

Shared by the driver (folds are made once per study and recorded in ``folds.json``) and the trial
process (fold pruning, mean ± standard error). The test split is never part of a fold.

Grouping (``study.groups``): images of one patient must land in one fold, or the fold's score
measures memorisation of that patient's neighbouring slices.

- ``auto``: the patient column of ``<data.root>/split.csv`` (written by ``data prepare``) when the
  image names start with those patient ids; else the file-name prefix before a trailing
  ``_<number>`` (``1003_142`` → ``1003``) when every name has one and there are at least two such
  prefixes (one shared prefix, ``phantom_0001``, is a naming scheme, not a patient); else no
  patient ids: contiguous blocks of the sorted names (one stack of slices, e.g. EM).
- a regular expression with one group, e.g. ``^(\\w+)_\\d+``: the group is the patient id.
- ``contiguous``: ``k`` contiguous blocks of the sorted names.
- ``none``: every image its own group (only when images are independent).

A patient rule that finds fewer patients than folds is an error: contiguous blocks would cut
patients in two.

Units (:class:`Units`): the slices of one patient are correlated, so every standard error, interval,
p-value and lower bound treats a patient's images as one unit when a patient rule above matched
(on every split's names, the test split's too), and each image as a unit otherwise (``contiguous``,
``none``, or no patient ids). The standard error of a mean over images is then cluster-robust
(:func:`mean_se`), and paired tests run on each unit's mean difference.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search.errors import ConfigError

__all__ = ["FoldPlan", "Units", "group_images", "image_units", "make_folds"]

_TRAILING_INDEX = re.compile(r"^(.+?)[_-]\d+$")


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


@dataclass(frozen=True)
class Units:
    """The independent units of the statistics: each image's patient, or (``patients`` None) the images."""

    patients: dict[str, str] | None = None
    grouping: str = "images as units"

    @property
    def noun(self) -> str:
        return "patients" if self.patients is not None else "images"

    def labels(self, stems: Sequence[str]) -> list[str] | None:
        """The unit of each image (None: every image is its own unit)."""
        if self.patients is None:
            return None
        return [self.patients.get(s, s) for s in stems]

    def count(self, stems: Sequence[str]) -> int:
        labels = self.labels(stems)
        return len(set(labels)) if labels is not None else len(stems)

    def describe(self, stems: Sequence[str]) -> dict[str, Any]:
        """For ``scores.json`` and the verdict: what the units are, how many, and how they were found."""
        return {"unit": self.noun, "n_units": self.count(stems), "grouping": self.grouping}


def group_images(stems: Sequence[str], rule: str, *, k: int, data_root: Path | None = None) -> tuple[dict[str, str], str]:
    """Map each image stem to its fold group (its patient, else a contiguous block, or itself with
    ``none``); returns the mapping and how it was made."""
    stems = sorted(stems)
    patients, how = _patient_ids(stems, rule, data_root)
    if patients is not None:
        return patients, how
    if rule == "none":
        return {s: s for s in stems}, "none (every image its own group)"
    return _contiguous(stems, k), "contiguous blocks of sorted names" + (f" ({how})" if rule == "auto" else "")


def image_units(stems: Iterable[str], rule: str, *, data_root: Path | None) -> Units:
    """The units of the statistics for these images under ``study.groups`` (module docstring)."""
    patients, how = _patient_ids(sorted(set(stems)), rule, data_root)
    return Units(patients=patients, grouping=how if patients is not None else f"images as units ({how})")


def _patient_ids(stems: list[str], rule: str, data_root: Path | None) -> tuple[dict[str, str] | None, str]:
    """Each image's patient by ``rule``, or None when the rule names no patients; and how."""
    if rule in ("none", "contiguous"):
        return None, f"study.groups: {rule}"
    if rule == "auto":
        patients = _split_csv_patients(data_root) if data_root is not None else []
        if patients:
            by_prefix = {s: next((p for p in patients if s.startswith(f"{p}_") or s == p), "") for s in stems}
            if all(by_prefix.values()):
                return by_prefix, f"patients from {data_root}/split.csv"
        matches = {s: _TRAILING_INDEX.match(s) for s in stems}
        if all(matches.values()):
            groups = {s: m.group(1) for s, m in matches.items() if m}
            if len(set(groups.values())) >= 2:
                return groups, "file-name prefix before _<index>"
        return None, "no patient ids found"
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
    n = len(members)
    if n < k:
        fix = f"lower study.folds to {n}" if n >= 2 else "use study.evaluation: holdout"
        raise ConfigError(
            f"study.folds: {k} folds need at least {k} patients (groups), but train+valid has {n} ({grouping}); "
            f"{fix}, or set study.groups (contiguous or none) if these names are not patients"
        )
    rng = np.random.default_rng(seed)
    order = sorted(members, key=lambda g: (-len(members[g]), rng.random()))
    folds: list[list[str]] = [[] for _ in range(k)]
    for g in order:
        smallest = min(range(k), key=lambda i: (len(folds[i]), i))
        folds[smallest].extend(members[g])
    return FoldPlan(k=k, grouping=grouping, folds=tuple(tuple(sorted(f)) for f in folds), groups=dict(groups))


def _contiguous(stems: list[str], k: int) -> dict[str, str]:
    blocks = np.array_split(np.arange(len(stems)), max(1, min(k, len(stems))))
    return {stems[i]: f"block{b}" for b, idx in enumerate(blocks) for i in idx}


def _split_csv_patients(root: Path) -> list[str]:
    path = root / "split.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return sorted({row["patient"] for row in csv.DictReader(f) if row.get("patient")}, key=len, reverse=True)
