"""Seeded null simulations of the verdict (search/evaluation/verdict.py): how often does it name a winner when
both models are equally good? Nominal 5 %; the review measured 25 % (3 images) and 82 % (2 patients
x 30 slices) for the old image-level expanded percentile bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from search.evaluation import outcomes, paired_verdict, union_interval

REPS = 2000
CAP = 0.07  # the allowed false "beats"/"worse" rate (5 % nominal + Monte Carlo error, about 0.5 % here)


def _null(rng: np.random.Generator, sizes: np.ndarray, reps: int, *, effect_sd: float = 0.05,
          slice_sd: float = 0.02, heavy: bool = False) -> np.ndarray:
    """Each unit's mean paired difference under the null, (reps, units): a patient effect (mean 0)
    shared by the patient's slices, plus the mean of its slices' independent noise."""
    effect = rng.standard_t(3, (reps, sizes.size)) / np.sqrt(3) if heavy else rng.standard_normal((reps, sizes.size))
    noise = rng.standard_normal((reps, sizes.size)) / np.sqrt(sizes)  # the mean of `size` slices' noise
    return effect_sd * effect + slice_sd * noise


CASES = [
    *[(f"{n} images", np.ones(n)) for n in (3, 4, 5, 6, 7, 8, 10, 15, 20, 30)],
    *[(f"{g} patients x {m} slices", np.full(g, float(m))) for g, m in
      ((2, 30), (3, 20), (4, 15), (6, 10), (8, 8), (12, 5), (20, 3), (30, 2))],
    ("8 patients of 2-40 slices", np.array([2, 3, 5, 8, 12, 20, 30, 40], dtype=float)),
]


@pytest.mark.parametrize(("name", "sizes"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("heavy", [False, True], ids=["normal", "heavy-tailed"])
def test_false_calls_under_the_null_stay_near_five_percent(name: str, sizes: np.ndarray, heavy: bool) -> None:
    rng = np.random.default_rng([int(sizes.sum()), sizes.size, heavy])
    low, high = union_interval(_null(rng, sizes, REPS, heavy=heavy), n_boot=1000, seed=1)
    calls = outcomes(sizes.size, low, high)
    rate = float(np.isin(calls, ["better", "worse"]).mean())
    assert rate <= CAP, f"{name}: false calls {rate:.1%}"
    if sizes.size < 6:
        assert set(calls) == {"too_few"}


def test_paired_verdict_is_the_simulated_procedure() -> None:
    # The review's cluster probe, through paired_verdict itself: 3 test patients x 20 slices, per-patient
    # effects sd 0.05, slice noise sd 0.02. The old verdict called a winner in 71 % of these null sets.
    rng = np.random.default_rng(71)
    patients = [f"p{g}" for g in range(3) for _ in range(20)]
    calls = []
    for _ in range(200):
        diff = np.repeat(rng.normal(0, 0.05, 3), 20) + rng.normal(0, 0.02, 60)
        base = rng.uniform(0.4, 0.8, 60)
        calls.append(paired_verdict(base + diff, base, units=patients, n_boot=1000, seed=3).outcome)
    assert set(calls) == {"too_few"}
    # 8 patients x 5 slices: paired_verdict gives exactly the vectorised procedure's outcome (same seed)
    patients = [f"p{g}" for g in range(8) for _ in range(5)]
    means = []
    for _ in range(100):
        diff = np.repeat(rng.normal(0, 0.05, 8), 5) + rng.normal(0, 0.02, 40)
        v = paired_verdict(0.5 + diff, np.full(40, 0.5), units=patients, n_boot=1000, seed=3)
        means.append(diff.reshape(8, 5).mean(axis=1))
        calls.append(v.outcome)
    low, high = union_interval(np.array(means), n_boot=1000, seed=3)
    assert list(outcomes(8, low, high)) == calls[200:]
