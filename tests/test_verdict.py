"""The baseline-vs-best verdict on test (search/verdict.py): paired, with an interval and a p-value."""

from __future__ import annotations

import numpy as np
import pytest

from search.verdict import paired_verdict


def test_a_consistent_gain_is_a_win_with_an_interval_above_zero() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.8, 12)
    best = base + 0.05 + rng.normal(0, 0.01, 12)
    v = paired_verdict(best, base)
    assert v.outcome == "better" and 0 < v.ci_low < v.difference < v.ci_high
    assert v.difference == pytest.approx(float(np.mean(best - base)))
    assert v.p_value is not None and v.p_value < 0.001  # 12 of 12 positive: exact p = 2 / 2**12
    assert v.sentence().startswith("the chosen configuration beats the reference configuration on test by +0.0")
    assert "12 images" in v.sentence()


def test_noise_is_no_detectable_difference_and_says_what_would_be() -> None:
    base = np.array([0.6, 0.7, 0.5, 0.8, 0.65, 0.55])
    best = base + np.array([0.1, -0.1, 0.05, -0.08, 0.02, 0.0])
    v = paired_verdict(best, base)
    assert v.outcome == "no_difference" and v.ci_low < 0 < v.ci_high
    sd = np.std(best - base, ddof=1)
    assert v.detectable == pytest.approx((2.5706 + 0.9195) * sd / np.sqrt(6), rel=1e-3)  # t quantiles, 5 df
    assert "no detectable difference" in v.sentence() and f"±{v.detectable:.3f}" in v.sentence()


def test_a_loss_is_reported_as_the_baseline_winning() -> None:
    base = np.linspace(0.6, 0.9, 8)
    v = paired_verdict(base - 0.2, base)
    assert v.outcome == "worse" and v.ci_high < 0
    assert v.sentence().startswith("the reference configuration beats the chosen configuration on test by +0.200")


def test_identical_models_have_no_p_value_and_a_zero_interval() -> None:
    scores = [0.5, 0.6, 0.7]
    v = paired_verdict(scores, scores)
    assert (v.difference, v.ci_low, v.ci_high, v.p_value) == (0.0, 0.0, 0.0, None)
    assert v.outcome == "no_difference"


def test_bad_input_names_what_was_expected() -> None:
    with pytest.raises(ValueError, match="equal-length"):
        paired_verdict([0.5, 0.6], [0.5])
    with pytest.raises(ValueError, match="at least one test image"):
        paired_verdict([], [])
    with pytest.raises(ValueError, match="finite"):
        paired_verdict([float("nan")], [0.5])


def test_six_images_need_more_than_a_plain_percentile_interval() -> None:
    # A +0.075 mean gain on 6 images, one of them worse: the plain 2.5/97.5 % percentile interval excludes 0
    # (it is too narrow for so few images); the expanded interval and the t interval do not.
    base = np.array([0.3, 0.2, 0.25, 0.1, 0.15, 0.2])
    diff = np.array([0.2, 0.15, 0.1, 0.05, 0.0, -0.05])
    rng = np.random.default_rng(0)
    boot = diff[rng.integers(0, 6, size=(10_000, 6))].mean(axis=1)
    assert np.percentile(boot, 2.5) > 0  # what a plain percentile bootstrap would have called a win
    v = paired_verdict(base + diff, base)
    half_t = 2.5706 * diff.std(ddof=1) / np.sqrt(6)
    assert v.outcome == "no_difference" and v.ci_low < 0 < v.ci_high
    assert v.ci_high - v.ci_low == pytest.approx(2 * half_t, rel=0.2)  # about as wide as the t interval
    assert paired_verdict([0.9], [0.1]).outcome == "no_difference"  # one image proves nothing
