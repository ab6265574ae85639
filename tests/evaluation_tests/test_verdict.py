"""The baseline-vs-best verdict on test (search/verdict.py): paired, with an interval and a p-value."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import rankdata
from scipy.stats import t as t_dist

from search.evaluation import paired_verdict


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


def test_identical_models_have_no_p_value_a_zero_interval_and_no_detectable_difference_of_zero() -> None:
    scores = np.linspace(0.5, 0.8, 8)
    v = paired_verdict(scores, scores)
    assert (v.difference, v.ci_low, v.ci_high, v.p_value) == (0.0, 0.0, 0.0, None)
    assert v.outcome == "no_difference"
    # review §14: the observed spread is 0, so "detects differences of about ±0.000" would be false
    assert v.detectable is None
    assert "±0.000" not in v.sentence() and "not estimable" in v.sentence()


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
    assert paired_verdict([0.9], [0.1]).outcome == "too_few"  # one image proves nothing


def _exact_signed_rank_p(diff: np.ndarray) -> float:
    """Two-sided signed-rank p by enumerating every sign flip (zeros dropped, mid-ranks for ties)."""
    d = diff[diff != 0]
    ranks = rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    flips = np.array(list(itertools.product([0, 1], repeat=d.size)))
    w = flips @ ranks
    return min(1.0, 2 * min(np.mean(w <= observed + 1e-9), np.mean(w >= observed - 1e-9)))


@pytest.mark.parametrize("diff", [[0.10, 0.05], [0.02, 0.05, 0.10], [0.001, 0.001, 0.001, 0.5],
                                  [0.001, 0.001, 0.001, 0.001, 0.5]])
def test_fewer_than_six_images_are_too_few_to_tell(diff: list[float]) -> None:
    # review §3's table: each of these was called "better" (the bootstrap's support lies inside [min, max])
    base = np.full(len(diff), 0.5)
    v = paired_verdict(base + np.array(diff), base)
    assert v.outcome == "too_few" and v.n_units == v.n_images == len(diff) and v.unit == "images"
    assert v.sentence().startswith("too few test images to tell whether the chosen configuration beats")
    assert "a verdict needs at least 6 images" in v.sentence()


def test_the_interval_is_never_narrower_than_the_t_interval() -> None:
    # Six differences, all positive, one large: every bootstrap mean lies in [0.001, 0.5], so the expanded
    # percentile interval alone excludes 0 (a "win"); the t interval does not, and the union is reported.
    diff = np.array([0.001] * 5 + [0.5])
    base = np.full(6, 0.4)
    v = paired_verdict(base + diff, base)
    half = t_dist.ppf(0.975, 5) * diff.std(ddof=1) / np.sqrt(6)
    assert v.ci_low <= diff.mean() - half + 1e-12 and v.ci_high >= diff.mean() + half - 1e-12
    assert v.outcome == "no_difference"


def test_patients_not_slices_are_the_units() -> None:
    # 8 patients x 5 slices: the gain varies by patient (mean +0.02, sd 0.04), slices of a patient agree.
    effects = np.array([0.07, -0.03, 0.05, -0.02, 0.06, -0.04, 0.04, 0.03])
    rng = np.random.default_rng(1)
    diff = np.repeat(effects, 5) + rng.normal(0, 0.002, 40)
    base = rng.uniform(0.5, 0.8, 40)
    patients = [f"p{i}" for i in range(8) for _ in range(5)]
    assert paired_verdict(base + diff, base).outcome == "better"  # 40 slices taken as independent
    v = paired_verdict(base + diff, base, units=patients, grouping="patients from split.csv")
    assert v.outcome == "no_difference" and (v.n_images, v.n_units, v.unit) == (40, 8, "patients")
    assert "40 images from 8 patients" in v.sentence()
    means = diff.reshape(8, 5).mean(axis=1)  # equal patient sizes: the t interval of the patient means
    half = t_dist.ppf(0.975, 7) * means.std(ddof=1) / np.sqrt(8)
    assert v.ci_low <= means.mean() - half + 1e-9 and v.ci_high >= means.mean() + half - 1e-9
    assert v.difference == pytest.approx(diff.mean())
    assert v.p_value == pytest.approx(_exact_signed_rank_p(means))  # on the patients' mean differences
    assert v.detectable == pytest.approx((t_dist.ppf(0.975, 7) + t_dist.ppf(0.8, 7)) * means.std(ddof=1) / np.sqrt(8))
    record = v.to_dict()
    assert (record["n_units"], record["unit"], record["grouping"]) == (8, "patients", "patients from split.csv")
    # the review's cluster probe: 2 test patients x 30 slices, both a little better, cannot decide anything
    two = paired_verdict(base[:30] + 0.05, base[:30], units=["a"] * 15 + ["b"] * 15)
    assert two.outcome == "too_few"
    assert two.sentence().startswith("too few test patients to tell") and "30 images from 2 patients" in two.sentence()


def test_the_p_value_is_exact_when_zeros_and_ties_would_make_scipy_approximate() -> None:
    # review §14: 5 positive differences among 10 zeros; SciPy's "auto" gives 0.043, the exact p is 2/2**5
    diff = np.array([0.1, 0.2, 0.3, 0.4, 0.5] + [0.0] * 10)
    base = np.full(15, 0.5)
    assert paired_verdict(base + diff, base).p_value == pytest.approx(0.0625)
    tied = np.array([0.1, 0.1, 0.1, -0.1, 0.2, 0.2, 0.3, 0.0, 0.0])  # ties among the ranks too
    assert paired_verdict(0.5 + tied, np.full(9, 0.5)).p_value == pytest.approx(_exact_signed_rank_p(tied))


def test_the_final_stage_gives_the_verdict_the_test_images_patients() -> None:
    from search.evaluation import Units
    from search.results import TrialRecord
    from search.study.final import _verdict

    stems = [f"{p}_{i:04d}" for p in ("P1", "P2") for i in range(3)]
    metrics = {"hard_dice": 0.8, "per_image": {"hard_dice": [0.8] * 6, "stems": stems},
               "baseline": {"per_image": [0.7] * 6}}
    best = TrialRecord(number=3, status="complete", values={}, seed=1)
    baseline = TrialRecord(number=0, status="complete", values={}, seed=2, baseline=True)
    units = Units(patients={s: s[:2] for s in stems}, grouping="patients from split.csv")
    v = _verdict(metrics, best, baseline, 0, units=units)
    assert (v["outcome"], v["n_images"], v["n_units"], v["unit"]) == ("too_few", 6, 2, "patients")
    assert v["grouping"] == "patients from split.csv" and "6 images from 2 patients" in v["sentence"]


def test_one_image_gives_no_interval_in_valid_json_and_counts_in_the_singular() -> None:
    """One unit has no interval: final.json held the invalid JSON ``-Infinity`` and said "1 images"."""
    import json

    v = paired_verdict([0.5], [0.4], seed=0).to_dict()
    text = json.dumps(v, allow_nan=False)  # raises on Infinity / NaN
    assert json.loads(text)["ci_low"] is None and v["outcome"] == "too_few"
    assert "no interval, 1 image)" in v["sentence"] and "1 images" not in v["sentence"]
