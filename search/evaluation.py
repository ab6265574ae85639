"""How a trial is scored: holdout (the valid split) or patient-grouped k-fold over train+valid, and
how sure each number is.

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

Fold pruning (``study.fold_prune_p``): after each fold from the second to the last but one, the
trial's out-of-fold dice are compared with the best complete trial's on the same images, per unit
(the mean difference of each patient, or each image); an exact one-sided Wilcoxon signed-rank test
on the non-zero unit differences (at least :data:`MIN_UNITS` of them) below ``fold_prune_p / (k − 2)``
(Bonferroni over the k − 2 looks) stops the trial. It is paired (same images) and needs no other
trials' epochs, so it works for Keras Tuner too; epoch-level pruning (ASHA, median) acts within the
first fold only, where every trial's epochs are comparable.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from search.errors import ConfigError

if TYPE_CHECKING:
    from search.config import Config
    from search.study_data import PreparedData

__all__ = ["MIN_UNITS", "FoldPlan", "Units", "cluster_se", "fold_prune_reason", "group_images", "image_units", "make_folds",
           "mean_se", "signed_rank_p", "study_units", "unit_sums"]

_TRAILING_INDEX = re.compile(r"^(.+?)[_-]\d+$")
# Fewer independent units (patients, or images) than this: no verdict, no fold pruning. The smallest
# two-sided signed-rank p of n units is 2/2ⁿ, so below 6 no rank test can reach 0.05.
MIN_UNITS = 6
_EXACT_MAX = 200  # exact signed-rank distribution up to this many non-zero units, else the normal approximation


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


def study_units(cfg: Config, data: PreparedData) -> Units:
    """The study's units, from every split's image names (one rule for valid, folds and test)."""
    return image_units((s for split in data.stems.values() for s in split), cfg.study.groups,
                       data_root=Path(cfg.data.root))


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


def unit_sums(values: Sequence[float] | np.ndarray, units: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per unit (sorted by name): the sum of its values and its image count. ``values``: (rows ×) images;
    ``units``: each image's unit (None: each image its own unit, in order)."""
    a = np.asarray(values, dtype=np.float64)
    if units is None:
        return a, np.ones(a.shape[-1])
    if len(units) != a.shape[-1]:
        raise ValueError(f"Expected one unit per image. Received: {len(units)} units for {a.shape[-1]} images")
    _, inverse = np.unique(np.asarray([str(u) for u in units]), return_inverse=True)
    member = np.zeros((inverse.size, int(inverse.max()) + 1 if inverse.size else 0))
    member[np.arange(inverse.size), inverse] = 1.0  # images x units
    return a @ member, member.sum(axis=0)


def mean_se(values: Sequence[float] | np.ndarray, units: Sequence[str] | None = None) -> tuple[float, float | None]:
    """Mean over images and its standard error, counting units (patients) rather than images.

    With ``units`` (each value's patient) the standard error is cluster-robust,
    ``sqrt(G/(G−1) · Σ_g (Σ_{i∈g} (x_i − x̄))²) / N`` for G units and N images: slices of one patient
    move together, so they are one unit. Without, each image is a unit and this is ``sd/√N``.
    None with fewer than 2 units.
    """
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return math.nan, None
    sums, counts = unit_sums(a, units)
    se = float(cluster_se(sums, counts)[0])
    return float(a.mean()), None if math.isnan(se) else se


def cluster_se(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The cluster-robust standard error of the image mean ``Σ sums / Σ counts``, per row.

    ``sums``/``counts``: (rows ×) units, each unit's sum of values and image count (:func:`unit_sums`).
    Vectorised over rows for the null simulations; NaN with fewer than 2 units.
    """
    s = np.atleast_2d(np.asarray(sums, dtype=np.float64))
    c = np.broadcast_to(np.atleast_2d(np.asarray(counts, dtype=np.float64)), s.shape)
    g = s.shape[1]
    if g < 2:
        return np.full(s.shape[0], math.nan)
    n = c.sum(axis=1)
    residuals = s - c * (s.sum(axis=1) / n)[:, None]
    se = np.sqrt(g / (g - 1) * np.sum(residuals**2, axis=1)) / n
    return np.where(se < 1e-12, 0.0, se)  # identical values: exactly 0, not float noise


def signed_rank_p(diff: Sequence[float] | np.ndarray, *, alternative: Literal["two-sided", "less", "greater"]) -> float | None:
    """The Wilcoxon signed-rank p of ``diff`` (one value per unit), exact where SciPy is not.

    Zeros are dropped (Wilcoxon's rule), tied magnitudes get mid-ranks, and the p-value comes from
    the exact distribution of W⁺ over the 2ⁿ sign flips of these ranks (up to 200 non-zero units;
    the normal approximation with tie correction above). SciPy 1.17 switches to the normal
    approximation as soon as zeros or ties occur, which at n = 5–15 is off by up to half.
    None when no difference is non-zero.
    """
    d = np.asarray(diff, dtype=np.float64)
    magnitude = np.round(np.abs(d), 12)  # float noise must not break a tie
    keep = magnitude > 0
    d, magnitude = d[keep], magnitude[keep]
    if d.size == 0:
        return None
    from scipy.stats import norm, rankdata

    doubled = np.rint(2 * rankdata(magnitude)).astype(np.int64)  # mid-ranks ×2: integers
    w_plus = int(doubled[d > 0].sum())
    if d.size <= _EXACT_MAX:
        dist = np.zeros(int(doubled.sum()) + 1)
        dist[0] = 1.0
        for r in doubled:  # each rank's sign: + (shift by r) or − (stay), with probability ½
            shifted = np.zeros_like(dist)
            shifted[r:] = dist[:-r]
            dist = 0.5 * (dist + shifted)
        p_less, p_greater = float(dist[: w_plus + 1].sum()), float(dist[w_plus:].sum())
    else:
        mean = doubled.sum() / 2
        sd = math.sqrt(float(np.sum(doubled.astype(np.float64) ** 2)) / 4)
        p_less = float(norm.cdf((w_plus - mean + 1) / sd))  # continuity: W⁺ moves in steps of 2 (doubled)
        p_greater = float(norm.sf((w_plus - mean - 1) / sd))
    if alternative == "less":
        return min(1.0, p_less)
    if alternative == "greater":
        return min(1.0, p_greater)
    return min(1.0, 2 * min(p_less, p_greater))


def fold_prune_reason(
    scores: dict[str, float], reference: dict[str, float] | None, *, p_threshold: float, folds_done: int,
    k: int, units: Units | None = None, reference_label: str = "the best trial",
) -> str | None:
    """The reason to stop a k-fold trial after ``folds_done`` folds, or None to go on (module docstring)."""
    if not reference or p_threshold <= 0 or folds_done < 2 or folds_done >= k:
        return None
    common = sorted(set(scores) & set(reference))
    if not common:
        return None
    units = units or Units()
    sums, counts = unit_sums([scores[s] - reference[s] for s in common], units.labels(common))
    per_unit = sums / counts  # each patient's mean difference (with images as units: each image's)
    if per_unit.mean() >= 0 or np.count_nonzero(np.round(per_unit, 12)) < MIN_UNITS:
        return None
    alpha = p_threshold / (k - 2)  # Bonferroni over the looks after folds 2 … k−1
    p = signed_rank_p(per_unit, alternative="less")
    if p is None or p >= alpha:
        return None
    looks = f" = {p_threshold:g}/{k - 2} looks" if k > 3 else ""
    images = f"{len(common)} images" + (f" from {per_unit.size} patients" if units.patients is not None else "")
    return (f"pruned after fold {folds_done} of {k}: {per_unit.mean():+.3f} dice against {reference_label} on the "
            f"same {images} (one-sided exact Wilcoxon p = {p:.3g} < {alpha:.3g}{looks})")


def _contiguous(stems: list[str], k: int) -> dict[str, str]:
    blocks = np.array_split(np.arange(len(stems)), max(1, min(k, len(stems))))
    return {stems[i]: f"block{b}" for b, idx in enumerate(blocks) for i in idx}


def _split_csv_patients(root: Path) -> list[str]:
    path = root / "split.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return sorted({row["patient"] for row in csv.DictReader(f) if row.get("patient")}, key=len, reverse=True)
