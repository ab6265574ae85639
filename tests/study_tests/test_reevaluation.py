"""Top-k re-evaluation before the final pick: the statistics, the rules, and a whole final stage that resumes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_raw_config

from search.cli import main
from search.config import config_from_dict
from search.config.specs import trial_seed
from search.errors import ConfigError
from search.evaluation import Units
from search.results import StudyDir
from search.study.reevaluation import Candidate, pick, reeval_seed, selection_sentence


def _run(per_image: dict[str, float]) -> dict[str, object]:
    return {"score": float(np.mean(list(per_image.values()))), "per_image": per_image}


def test_fresh_scores_give_mean_se_over_images_and_seeds_and_the_rules_can_disagree() -> None:
    # A: two seeds far apart (0.9 and 0.5 on every image); B: two seeds that agree (0.66 and 0.66).
    a = Candidate(trial=1, baseline=False, search_score=0.95,
                  runs=[_run({"x": 0.9, "y": 0.9, "z": 0.9}), _run({"x": 0.5, "y": 0.5, "z": 0.5})])
    b = Candidate(trial=2, baseline=False, search_score=0.7,
                  runs=[_run({"x": 0.6, "y": 0.7, "z": 0.68}), _run({"x": 0.62, "y": 0.7, "z": 0.66})])
    sa, sb = a.stats(), b.stats()
    assert sa["mean"] == pytest.approx(0.7) and sb["mean"] == pytest.approx(0.66)
    # A: every image averages 0.7 (no spread over images); the seeds' means 0.9 and 0.5 give se 0.2
    assert sa["se"] == pytest.approx(0.2) and sa["lcb"] == pytest.approx(0.5)
    img = np.array([0.61, 0.7, 0.67])  # B's per-image means over its seeds; its seed means are equal
    assert sb["se"] == pytest.approx(img.std(ddof=1) / math.sqrt(3))
    assert (sa["n_images"], sa["n_seeds"]) == (3, 2)
    assert pick([a, b], "mean").trial == 1  # the higher mean, however unsteady
    assert pick([a, b], "lcb").trial == 2  # the higher lower bound
    # no score at all (no run yet) never wins; ties go to the better search score
    empty = Candidate(trial=3, baseline=True, search_score=0.99)
    assert empty.stats()["mean"] is None and pick([empty, b], "mean").trial == 2
    twin = Candidate(trial=4, baseline=False, search_score=0.8, runs=b.runs)
    assert pick([b, twin], "mean").trial == 4


def test_the_lower_bound_counts_patients_not_slices() -> None:
    # two patients, three slices each; both seeds agree, so the se is the spread over units only
    per_image = {"a_0": 0.9, "a_1": 0.9, "a_2": 0.9, "b_0": 0.5, "b_1": 0.5, "b_2": 0.5}
    runs = [_run(per_image), _run(per_image)]
    by_slice = Candidate(trial=1, baseline=False, search_score=0.7, runs=runs).stats()
    units = Units(patients={s: s[0] for s in per_image}, grouping="file-name prefix before _<index>")
    by_patient = Candidate(trial=1, baseline=False, search_score=0.7, runs=runs, units=units).stats()
    assert by_slice["se"] == pytest.approx(np.std(list(per_image.values()), ddof=1) / math.sqrt(6))
    assert by_patient["se"] == pytest.approx(0.2)  # sd of (0.9, 0.5) / sqrt(2)
    assert by_patient["lcb"] == pytest.approx(0.5) and by_patient["n_units"] == 2
    assert by_slice["n_units"] == 6


def test_fresh_seeds_are_new_and_reproducible() -> None:
    seeds = {reeval_seed(137, n, j) for n in range(20) for j in range(3)}
    assert len(seeds) == 60  # all distinct
    assert not seeds & {trial_seed(137, n) for n in range(1000)}  # never a seed the search itself used
    assert reeval_seed(137, 4, 1) == reeval_seed(137, 4, 1) != reeval_seed(138, 4, 1)


def test_reevaluation_settings_are_checked(tmp_path: Path) -> None:
    for key, value, message in (("seeds", 0, "final.seeds: expected an integer ≥ 1"),
                                ("reevaluate_top_k", -1, "final.reevaluate_top_k: expected an integer ≥ 0"),
                                ("select", "median", "final.select")):
        raw = tiny_raw_config(tmp_path, final={key: value})
        with pytest.raises(ConfigError, match=message):
            config_from_dict(raw)


@pytest.mark.slow
@pytest.mark.parametrize("evaluation", ["holdout", "kfold"])
def test_the_final_stage_reevaluates_picks_on_fresh_scores_records_and_resumes(
    tmp_path: Path, synthetic_root: Path, evaluation: str, capsys: pytest.CaptureFixture
) -> None:
    raw = tiny_raw_config(synthetic_root, study={"name": "re", "max_trials": 3, "baselines": True,
                                                 "evaluation": evaluation, "folds": 2},
                          train={"max_epochs": 2, "patience": 2},
                          final={"retrain": True, "reevaluate_top_k": 1, "seeds": 2, "select": "mean"})
    config = tmp_path / "re.yaml"
    config.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    assert main(["--results", str(results), "run", "--config", str(config)]) == 0
    study = StudyDir(results / "re")
    sel = json.loads((study.final_dir / "selection.json").read_text())
    final = json.loads((study.final_dir / "final.json").read_text())
    best, baseline = study.best_trial(), study.trials()[0]
    assert best is not None and baseline.baseline
    # the candidates: the search's best, then the baseline (once, if it is the best itself)
    expected = [best.number] + ([baseline.number] if baseline.number != best.number else [])
    assert [c["trial"] for c in sel["candidates"]] == expected and sel["search_best"] == best.number
    runs = sorted((study.final_dir / "reeval").glob("*/run.json"))
    assert len(runs) == 2 * len(expected)
    for c in sel["candidates"]:
        assert [r["seed_index"] for r in c["runs"]] == [0, 1]
        assert {r["seed"] for r in c["runs"]}.isdisjoint({rec.seed for rec in study.trials()})
        run0 = json.loads((study.final_dir / "reeval" / f"{c['trial']:04d}-s0" / "run.json").read_text())
        assert run0["score"] == pytest.approx(np.mean(list(run0["per_image"].values())))
        if evaluation == "kfold":  # scored out of fold on every train+valid image, like the search's trials
            folds = json.loads((study.root / "folds.json").read_text())["folds"]
            assert sorted(run0["per_image"]) == sorted(s for f in folds for s in f)
        else:
            assert sorted(run0["per_image"]) == sorted(json.loads(
                (study.trial_dir(c["trial"]) / "scores.json").read_text())["per_image"])
        assert c["n_images"] == len(run0["per_image"])
        assert not any("test" in key for key in c)  # only the pick is tested (review §14)
    # the pick is the highest fresh mean, and the final model is that trial's
    cands = [Candidate(trial=c["trial"], baseline=c["baseline"], search_score=c["search_score"],
                       runs=[json.loads((study.final_dir / "reeval" / f"{c['trial']:04d}-s{j}" / "run.json").read_text())
                             for j in range(2)]) for c in sel["candidates"]]
    assert sel["chosen"] == pick(cands, "mean").trial == final["trial"]
    assert final["selection"]["sentence"] == sel["sentence"] == selection_sentence(sel)
    # the synthetic set has no patient ids (phantom_0000 …): the units of every uncertainty are images
    assert all(c["n_units"] == c["n_images"] for c in sel["candidates"])
    if "n_units" in final["verdict"]:
        assert final["verdict"]["unit"] == "images" and final["verdict"]["n_units"] == final["test"]["n_images"]
    # export takes the pick, not the search's best
    capsys.readouterr()
    assert main(["--results", str(results), "export", "re", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["trial"] == final["trial"]
    # status shows the selection; `final` again reuses every fresh run and may switch the rule
    capsys.readouterr()
    assert main(["--results", str(results), "status", "re"]) == 0
    assert f"selection: {sel['sentence']}" in capsys.readouterr().out
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    lost = runs[-1]
    lost.unlink()  # as if killed after training that run, before recording it
    assert main(["--results", str(results), "final", "re", "--set", "final.select=lcb", "--show-candidate-test"]) == 0
    after = {p: p.stat().st_mtime_ns for p in runs}
    assert {p: t for p, t in after.items() if p != lost} == {p: t for p, t in stamps.items() if p != lost}
    assert lost.is_file()  # only the unrecorded run trained again (same seed, same per-image scores)
    sel2 = json.loads((study.final_dir / "selection.json").read_text())
    assert sel2["rule"] == "lcb" and sel2["chosen"] == pick(cands, "lcb").trial
    # asked for, each candidate's own weights on test, in a file of their own: the pick's is the final model's
    tested = {c["trial"]: c["test_hard_dice"]
              for c in json.loads((study.final_dir / "candidate_test.json").read_text())["candidates"]}
    final2 = json.loads((study.final_dir / "final.json").read_text())
    assert set(tested) == {c["trial"] for c in sel2["candidates"]}
    if final2["model_from"] == "trial_weights":
        assert final2["test"]["hard_dice"] == pytest.approx(tested[final2["trial"]])
    # predict with a trial's weights: a k-fold trial is the mean of its fold models, as in the final stage
    capsys.readouterr()
    assert main(["--results", str(results), "predict", "re", "--images", str(synthetic_root / "test" / "images"),
                 "--out", str(tmp_path / "pred"), "--trial", str(best.number)]) == 0
    masks = sorted((tmp_path / "pred").glob("*.png"))
    assert len(masks) == len(list((synthetic_root / "test" / "images").iterdir()))
    if evaluation == "kfold":
        assert "fold models" in capsys.readouterr().out
    # without re-evaluation the final stage forgets the earlier pick
    assert main(["--results", str(results), "final", "re", "--set", "final.reevaluate_top_k=0"]) == 0
    assert not (study.final_dir / "selection.json").exists()
    assert not (study.final_dir / "candidate_test.json").exists()
    again = json.loads((study.final_dir / "final.json").read_text())
    assert again["selection"] is None and again["trial"] == best.number
