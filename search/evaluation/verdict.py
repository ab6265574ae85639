"""The verdict: does the chosen configuration beat the reference configuration on the test split?

Both models are scored on the same test images, so the comparison is paired: per image, the chosen
model's hard dice minus the baseline's. The slices of one patient are not independent, so the
*units* are the test split's patients when the study knows them (``study.groups``, see
search/evaluation/units.py) and the images otherwise; each unit's differences are averaged first, and
everything below is computed on these G unit differences (with images as units: the per-image
differences themselves). Reported:

- the mean unit difference with a 95 % confidence interval, the union of two: the t interval
  ``mean ± t₀.₉₇₅,G₋₁ · sd/√G``, and the *expanded* percentile bootstrap (Hesterberg 2015; the units
  resampled with replacement ``n_boot`` times, seeded; the percentiles at Φ(∓√(G/(G−1))·t₀.₉₇₅,G₋₁),
  e.g. 0.24 % and 99.76 % for 6 units). Why the union: a percentile interval always lies inside
  [min, max] of the unit differences, so when a handful of units all lean one way it excludes 0
  whatever its multiplier (under the null, 3 images "won" 25 % of the time); the t interval is as
  wide as the spread of the units allows, and the bootstrap keeps the asymmetry of skewed
  differences. The union is never narrower than either, so "beats" needs both. Seeded null
  simulations (tests/evaluation_tests/test_verdict_null.py) hold the false "beats"/"worse" rate at about 5 % for 6–30 units, with
  and without patient clustering;
- no verdict below :data:`~search.evaluation.MIN_UNITS` (6) units ("too few test patients to tell"):
  the smallest two-sided signed-rank p of n units is 2/2ⁿ (0.0625 for 5), and the t interval rests
  on normality alone there;
- the Wilcoxon signed-rank p-value of the unit differences (two-sided, exact also with zeros and
  ties; None when every difference is 0 or with one unit);
- the smallest difference this test set can detect, ``(t₀.₉₇₅,G₋₁ + t₀.₈,G₋₁) · sd/√G`` (a paired
  test at α = 0.05 with 80 % power for the observed spread), so "no detectable difference" comes
  with how large a difference would have been detected; None ("not estimable") when the
  differences do not vary at all.

The one-sentence summary says "beats" only when the whole interval is above 0 and there are at
least 6 units; it names the units ("36 images from 6 patients").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from search.evaluation.stats import MIN_UNITS, cluster_se, signed_rank_p, unit_sums

__all__ = ["Verdict", "outcomes", "paired_verdict", "union_interval"]


@dataclass(frozen=True)
class Verdict:
    """A paired comparison of two models on the same test images (hard dice per image)."""

    n_images: int
    n_units: int  # independent units: patients, or images when no patient ids are known
    unit: str  # "patients" or "images"
    grouping: str  # how the patients were found (study.groups)
    mean_best: float  # means over units (each patient's mean first; with images as units, over images)
    mean_baseline: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float | None
    detectable: float | None
    best_label: str = "the chosen configuration"
    baseline_label: str = "the reference configuration"

    @property
    def outcome(self) -> str:
        """``better``, ``worse``, ``no_difference`` (by the 95 % interval) or ``too_few`` (units)."""
        return str(outcomes(self.n_units, self.ci_low, self.ci_high).item())

    def sentence(self) -> str:
        """One sentence for `status` and the report."""
        images = _count(self.n_images, "image") + (f" from {_count(self.n_units, 'patient')}, averaged per patient"
                                                   if self.unit == "patients" else "")
        interval = (f"95 % CI {self.ci_low:+.3f}…{self.ci_high:+.3f}"
                    if math.isfinite(self.ci_low) and math.isfinite(self.ci_high) else "no interval")
        ci = f"{interval}, {images}"
        p = f", Wilcoxon p = {self.p_value:.3g}" if self.p_value is not None else ""
        outcome = self.outcome
        if outcome == "too_few":
            return (f"too few test {self.unit} to tell whether {self.best_label} beats {self.baseline_label}: "
                    f"{self.difference:+.3f} dice ({ci}{p}); a verdict needs at least {MIN_UNITS} {self.unit}")
        if outcome == "better":
            return f"{self.best_label} beats {self.baseline_label} on test by {self.difference:+.3f} dice ({ci}{p})"
        if outcome == "worse":
            return (f"{self.baseline_label} beats {self.best_label} on test by {-self.difference:+.3f} dice "
                    f"({ci}{p})")
        if self.detectable is None:
            power = (f"the differences are the same for every one of the {self.unit}, so the smallest detectable "
                     f"difference is not estimable")
        else:
            shown = f"{self.detectable:.3f}" if self.detectable >= 0.0005 else f"{self.detectable:.1g}"
            power = f"this test set detects differences of about ±{shown}"
        return (f"no detectable difference between {self.best_label} and {self.baseline_label} on test: "
                f"{self.difference:+.3f} dice ({ci}{p}); {power}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: an interval one unit cannot give (±inf) is null, not the invalid JSON ``Infinity``."""
        fields = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}
        return {**fields, "outcome": self.outcome, "sentence": self.sentence()}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def paired_verdict(
    best: Sequence[float] | np.ndarray,
    baseline: Sequence[float] | np.ndarray,
    *,
    units: Sequence[str] | None = None,
    grouping: str = "",
    n_boot: int = 10_000,
    seed: int = 0,
    best_label: str = "the chosen configuration",
    baseline_label: str = "the reference configuration",
) -> Verdict:
    """Compare per-image scores of two models on the same images (same order).

    ``units``: each image's patient (None: the images are independent units); ``grouping`` says how
    the patients were found, for the record.

    Raises:
        ValueError: different lengths, no images, non-finite scores, or one unit per image missing.
    """
    a = np.asarray(best, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"Expected two equal-length lists of per-image scores. Received: {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("Expected at least one test image. Received: none")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("Expected finite per-image scores. Received: NaN or inf")
    sums, counts = unit_sums(np.stack([a, b, a - b], axis=1).T, units)
    best_u, base_u, diff_u = sums / counts
    g = int(diff_u.size)
    low, high = (float(v[0]) for v in union_interval(diff_u, n_boot=n_boot, seed=seed))
    se = float(cluster_se(diff_u, np.ones(g))[0])
    detectable = None
    if g > 1 and se > 0:
        from scipy.stats import t

        detectable = float(t.ppf(0.975, g - 1) + t.ppf(0.8, g - 1)) * se
    return Verdict(
        n_images=int(a.size),
        n_units=g,
        unit="patients" if units is not None else "images",
        grouping=grouping or ("patients" if units is not None else "images as units"),
        mean_best=float(best_u.mean()),
        mean_baseline=float(base_u.mean()),
        difference=float(diff_u.mean()),
        ci_low=low,
        ci_high=high,
        p_value=signed_rank_p(diff_u, alternative="two-sided") if g > 1 else None,
        detectable=detectable,
        best_label=best_label,
        baseline_label=baseline_label,
    )


def union_interval(unit_diffs: np.ndarray, *, n_boot: int = 10_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The 95 % interval of the mean unit difference: the union of the t interval and the expanded
    percentile bootstrap over units (module docstring), per row.

    ``unit_diffs``: (rows ×) units; rows are independent comparisons (vectorised for the null
    simulations). Fewer than 2 units: (−∞, +∞).
    """
    from scipy.stats import norm, t

    d = np.atleast_2d(np.asarray(unit_diffs, dtype=np.float64))
    rows, g = d.shape
    if g < 2:
        return np.full(rows, -math.inf), np.full(rows, math.inf)
    mean = d.mean(axis=1)
    tq = float(t.ppf(0.975, g - 1))
    half = tq * cluster_se(d, np.ones(g))  # sd/√G: each unit counts once
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // g)  # bound the memory of the resampling weights
    boot = []
    for start in range(0, n_boot, chunk):
        # how often each unit is drawn in a resample of g units with replacement
        draws = rng.multinomial(g, np.full(g, 1.0 / g), size=min(chunk, n_boot - start))
        boot.append(d @ draws.T.astype(np.float64) / g)
    tail = float(norm.cdf(-math.sqrt(g / (g - 1)) * tq))
    b_low, b_high = np.percentile(np.concatenate(boot, axis=1), [100 * tail, 100 * (1 - tail)], axis=1)
    return np.minimum(mean - half, b_low), np.maximum(mean + half, b_high)


def outcomes(n_units: int | np.ndarray, low: float | np.ndarray, high: float | np.ndarray) -> np.ndarray:
    """The verdict's outcome from its interval and unit count (vectorised for the null simulations)."""
    n, lo, hi = np.asarray(n_units), np.asarray(low), np.asarray(high)
    return np.select([n < MIN_UNITS, lo > 0, hi < 0], ["too_few", "better", "worse"], default="no_difference")
