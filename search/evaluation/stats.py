"""How sure each number is: means and cluster-robust standard errors over units (patients), the exact
Wilcoxon signed-rank test, and fold pruning. numpy and scipy only.

Fold pruning (``study.fold_prune_p``): after each fold from the second to the last but one, the
trial's out-of-fold dice are compared with the best complete trial's on the same images, per unit
(the mean difference of each patient, or each image); an exact one-sided Wilcoxon signed-rank test
on the non-zero unit differences (at least :data:`MIN_UNITS` of them) below ``fold_prune_p / (k − 2)``
(Bonferroni over the k − 2 looks) stops the trial. It is paired (same images) and needs no other
trials' epochs, so it works for Keras Tuner too; epoch-level pruning (ASHA, median) acts within the
first fold only, where every trial's epochs are comparable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from search.evaluation.units import Units

__all__ = ["MIN_UNITS", "cluster_se", "fold_prune_reason", "mean_se", "signed_rank_p", "unit_sums"]

# Fewer independent units (patients, or images) than this: no verdict, no fold pruning. The smallest
# two-sided signed-rank p of n units is 2/2ⁿ, so below 6 no rank test can reach 0.05.
MIN_UNITS = 6
_EXACT_MAX = 200  # exact signed-rank distribution up to this many non-zero units, else the normal approximation


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
