"""The verdict: does the chosen configuration beat the reference configuration on the test split?

Both models are scored on the same test images, so the comparison is paired: per image, the chosen
model's hard dice minus the baseline's. Reported:

- the mean difference with a bootstrap 95 % confidence interval (images resampled with replacement,
  ``n_boot`` times, seeded). A plain percentile interval is too narrow for the 5–10 test images of
  our users (it behaves like ±z·sd/√n·√((n−1)/n), where ±t₀.₉₇₅,ₙ₋₁·sd/√n is due), so this is the
  *expanded* percentile interval (Hesterberg 2015): the percentiles at Φ(∓√(n/(n−1))·t₀.₉₇₅,ₙ₋₁)
  instead of 2.5 % and 97.5 %. With 6 images that is the 0.24 % and 99.76 % percentiles; with one
  image there is no interval (−∞…+∞);
- the Wilcoxon signed-rank p-value (two-sided; None when every difference is 0 or fewer than 2 images);
- the smallest difference this test set can detect: ``(t₀.₉₇₅,ₙ₋₁ + t₀.₈,ₙ₋₁) · sd / √n`` (a paired
  test at α = 0.05 with 80 % power, for the observed spread ``sd`` of the differences), so "no
  detectable difference" comes with how large a difference would have been detected.

The one-sentence summary says "beats" only when the whole interval is above 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Verdict", "paired_verdict"]


@dataclass(frozen=True)
class Verdict:
    """A paired comparison of two models on the same test images (hard dice per image)."""

    n_images: int
    mean_best: float
    mean_baseline: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float | None
    detectable: float
    best_label: str = "the chosen configuration"
    baseline_label: str = "the reference configuration"

    @property
    def outcome(self) -> str:
        """``better``, ``worse`` or ``no_difference`` (by the 95 % interval)."""
        if self.ci_low > 0:
            return "better"
        if self.ci_high < 0:
            return "worse"
        return "no_difference"

    def sentence(self) -> str:
        """One sentence for `status` and the report."""
        ci = f"95 % CI {self.ci_low:+.3f}…{self.ci_high:+.3f}, {self.n_images} images"
        p = f", Wilcoxon p = {self.p_value:.3g}" if self.p_value is not None else ""
        if self.outcome == "better":
            return f"{self.best_label} beats {self.baseline_label} on test by {self.difference:+.3f} dice ({ci}{p})"
        if self.outcome == "worse":
            return (f"{self.baseline_label} beats {self.best_label} on test by {-self.difference:+.3f} dice "
                    f"({ci}{p})")
        return (f"no detectable difference between {self.best_label} and {self.baseline_label} on test: "
                f"{self.difference:+.3f} dice ({ci}{p}); this test set detects differences of about "
                f"±{self.detectable:.3f}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "outcome": self.outcome, "sentence": self.sentence()}


def paired_verdict(
    best: list[float] | np.ndarray,
    baseline: list[float] | np.ndarray,
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    best_label: str = "the chosen configuration",
    baseline_label: str = "the reference configuration",
) -> Verdict:
    """Compare per-image scores of two models on the same images (same order).

    Raises:
        ValueError: different lengths, no images, or non-finite scores.
    """
    a = np.asarray(best, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"Expected two equal-length lists of per-image scores. Received: {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("Expected at least one test image. Received: none")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("Expected finite per-image scores. Received: NaN or inf")
    diff = a - b
    n = int(diff.size)
    sd = float(diff.std(ddof=1)) if n > 1 else 0.0
    low, high, detectable = -math.inf, math.inf, math.inf
    if n > 1:
        from scipy.stats import norm, t

        rng = np.random.default_rng(seed)
        means = diff[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
        tail = float(norm.cdf(-math.sqrt(n / (n - 1)) * t.ppf(0.975, n - 1)))  # expanded percentile interval
        low, high = (float(v) for v in np.percentile(means, [100 * tail, 100 * (1 - tail)]))
        detectable = float(t.ppf(0.975, n - 1) + t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
    return Verdict(
        n_images=n,
        mean_best=float(a.mean()),
        mean_baseline=float(b.mean()),
        difference=float(diff.mean()),
        ci_low=low,
        ci_high=high,
        p_value=_wilcoxon(diff),
        detectable=detectable,
        best_label=best_label,
        baseline_label=baseline_label,
    )


def _wilcoxon(diff: np.ndarray) -> float | None:
    if diff.size < 2 or not np.any(diff != 0):
        return None
    from scipy.stats import wilcoxon

    return float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)
