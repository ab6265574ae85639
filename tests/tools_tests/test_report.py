"""The HTML report and the TensorBoard HParams summaries, on study folders built with the contract's writers.

The fake studies come from tests/fake_study.py.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from fake_study import SECTION_IDS, build_study, report_figures

# --------------------------------------------------------------------------------------------- tests


def test_report_is_one_self_contained_file(tmp_path: Path) -> None:
    from search.tools.report import write_report

    study = build_study(tmp_path)
    path = write_report(study)
    assert path == study.root / "report.html"
    text = path.read_text()
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in text
    # no network: nothing is loaded from outside, plotly.js is inlined exactly once
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(https?:)?//", text)
    assert text.count("<script") == 3
    assert "Plotly" in text and text.count("plotly.js v") <= 2
    # images: 2 per completed trial shown (best 2 + three others 2 each) + 3 final panels and 3 overlays
    body = text.split("</head>", 1)[1]
    assert body.count('src="data:image/png;base64,') == 2 * 4 + 3 * 2
    figs = report_figures(text)
    assert {"fig-history", "fig-parallel", "fig-importance", "fig-curves", "fig-test-dice"} <= set(figs)
    names = [t.get("name") for t in figs["fig-history"]["data"]]
    assert "best so far" in names and "baseline" in names and "failed (no score)" in names
    best_line = next(t for t in figs["fig-history"]["data"] if t.get("name") == "best so far")
    assert best_line["y"] == sorted(best_line["y"])
    axes = figs["fig-parallel"]["layout"]["xaxis"]["ticktext"]
    assert axes == ["base_filters", "num_layers", "dropout_rate", "learning_rate", "score"]
    assert all(t["type"] == "scatter" for t in figs["fig-parallel"]["data"])  # SVG, no WebGL
    assert set(figs["fig-importance"]["data"][0]["y"]) <= {"base_filters", "num_layers", "learning_rate",
                                                          "dropout_rate"}
    assert "loss became nan at epoch 0" in text and "pruned at epoch 1 (asha)" in text
    assert not list(study.root.glob(".report.html*"))


def test_report_of_partial_studies(tmp_path: Path) -> None:
    from search.tools.report import write_report

    empty = build_study(tmp_path, name="empty", n_complete=0, n_pruned=0, n_failed=0, final=False)
    text = write_report(empty).read_text()
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in text
    assert "No finished trial yet" in text and "No final model yet" in text

    two = build_study(tmp_path, name="two", n_complete=2, n_pruned=0, n_failed=1, n_running=1, final=False)
    text = write_report(two).read_text()
    assert "Needs at least 3 completed trials (2 so far)" in text
    assert "fig-importance" not in report_figures(text)
    assert "could not be drawn" not in text

    # a study folder whose study.yaml is gone still gets a page
    two.study_yaml.unlink()
    text = write_report(two).read_text()
    assert "could not be drawn" not in text and '<section id="history">' in text


def test_report_handles_keras_tuner_studies_and_odd_values(tmp_path: Path) -> None:
    from search.tools.report import write_report

    study = build_study(tmp_path, name="kt", strategy="random", n_complete=5)
    # a value outside today's search space (study resumed with --allow-changes) must not break importance
    rec = study.read_trial(1)
    assert rec is not None
    rec.values["base_filters"] = 32
    study.write_trial(rec)
    text = write_report(study).read_text()
    assert "fig-importance" in report_figures(text)
    assert "Keras Tuner" in text and "could not be drawn" not in text


def test_the_report_of_60_trials_lists_every_trial(tmp_path: Path) -> None:
    """(Its speed is not a unit test: machines here are shared; it used to assert < 1 s.)"""
    from search.tools.report import write_report

    study = build_study(tmp_path, name="big", n_complete=50, n_pruned=6, n_failed=4, predictions=False)
    text = write_report(study).read_text()
    table = text[text.index('id="trials"'):]
    numbers = re.findall(r"<tr[^>]*><td>(\d+)\b", table)
    assert [int(n) for n in numbers] == list(range(60)), numbers[:5]


def test_hparams_summaries(tmp_path: Path) -> None:
    import tensorflow as tf

    from search.tools.tensorboard import write_hparams_summary

    study = build_study(tmp_path, n_complete=2, n_pruned=1, n_failed=1, final=False, predictions=False)
    written = write_hparams_summary(study)
    assert [p.parent.parent.name for p in written] == ["0000", "0001"]
    for again in (False, True):
        if again:
            written = write_hparams_summary(study)  # rebuilt, not appended
        for folder in written:
            events = list(folder.glob("events.out.tfevents.*"))
            assert len(events) == 1
            tags, score = set(), None
            for event in tf.compat.v1.train.summary_iterator(str(events[0])):
                for v in event.summary.value:
                    tags.add(v.tag)
                    if v.tag == "score":
                        score = float(tf.make_ndarray(v.tensor))
            assert "_hparams_/session_start_info" in tags
            rec = study.read_trial(int(folder.parent.parent.name))
            assert rec is not None and score is not None and math.isclose(score, rec.score or 0, rel_tol=1e-6)
    assert not (study.trial_dir(2) / "tb").exists() and not (study.trial_dir(3) / "tb").exists()


def test_report_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from search.cli import main

    build_study(tmp_path, final=False, predictions=False)
    assert main(["--results", str(tmp_path), "report", "tiny", "--no-hparams"]) == 0
    assert (tmp_path / "tiny" / "report.html").is_file()
    assert "report.html" in capsys.readouterr().out
    assert main(["--results", str(tmp_path), "report", "nope"]) == 2
    assert "no study 'nope'" in capsys.readouterr().err


def test_report_shows_the_reevaluation_and_the_verdict_escaped_once(tmp_path: Path) -> None:
    from search.results import atomic_write_json
    from search.study.reevaluation import selection_sentence
    from search.tools.report import write_report

    study = build_study(tmp_path)
    final = json.loads((study.final_dir / "final.json").read_text())
    run = {"trial": 3, "seed_index": 0, "seed": 1, "status": "complete", "score": 0.61}
    selection = {"rule": "lcb", "seeds": 2, "top_k": 1, "chosen": 3, "search_best": 5, "changed": True,
                 "candidates": [
                     {"trial": 5, "baseline": False, "search_score": 0.9, "mean": 0.55, "se": 0.05, "lcb": 0.5,
                      "runs": [{**run, "trial": 5, "score": 0.5}, {**run, "trial": 5, "score": 0.6}],
                      "test_hard_dice": 0.52},
                     {"trial": 3, "baseline": False, "search_score": 0.8, "mean": 0.6, "se": 0.01, "lcb": 0.59,
                      "runs": [run, {**run, "score": 0.59}], "test_hard_dice": 0.58}]}
    selection["sentence"] = selection_sentence(selection)
    assert selection["sentence"] == (
        "re-evaluation of 2 configurations with 2 fresh seeds each picked trial 3 by the lower bound (mean − se): "
        "fresh 0.600 ± 0.010; the search's best, trial 5, scored 0.900 in the search and 0.550 ± 0.050 fresh")
    final.update(selection=selection, verdict={"outcome": "better", "sentence": "A & B < C"})
    atomic_write_json(study.final_dir / "final.json", final)
    text = write_report(study).read_text()
    import html

    assert html.escape(selection["sentence"]) in text
    assert "A &amp; B &lt; C" in text and "&amp;amp;" not in text  # escaped exactly once
    assert "Re-evaluation before the pick" in text and "<td>0.5 0.6</td>" in text  # the fresh runs of trial 5


def test_the_report_leads_with_the_test_result_and_verdict_and_cautions_a_poor_final_model(tmp_path: Path) -> None:
    """The report's summary said "search gain" before the test result, like `status` did (issue 19.16c)."""
    from tiny import set_final_result as _final

    from search.tools.report import write_report

    study = build_study(tmp_path)
    sentence = "no detectable difference between the chosen configuration and the baseline"
    _final(study, dice=0.09, pred_fg=0.17, true_fg=0.01, sentence=sentence)
    text = write_report(study).read_text()
    summary = text[: text.index("Best values")]
    assert summary.index("final test") < summary.index(sentence) < summary.index("caution") < summary.index(">best<")
    assert "predicts 17.0× the true foreground area" in summary
    assert "search gain" not in text and "gain on validation" in summary

    _final(study, dice=0.85, pred_fg=0.011, true_fg=0.01, sentence=sentence)  # a good model: no caution
    assert "caution" not in write_report(study).read_text()


def test_the_report_shows_the_best_score_against_time_and_how_each_run_used_its_budget(tmp_path: Path) -> None:
    from search.study.budget import anytime_curve, record_run
    from search.tools.report import build_report_html

    study = build_study(tmp_path)
    started = min(r.started_at for r in study.trials())
    record_run(study.root, {"started_at": started - 5.0, "budget_s": 900.0, "ended_by": "the budget", "wall_s": 880.0,
                            "search_s": 700.0, "final_s": 60.0, "trials_started": 8, "trials_judged": 7,
                            "not_started": 0, "stopped_by_budget": [5]})
    text = build_report_html(study)
    figs = report_figures(text)
    line = figs["fig-anytime"]["data"][0]
    curve = anytime_curve(study.trials(), [{"started_at": started - 5.0, "wall_s": 880.0}])
    assert line["x"][:-1] == [p.seconds for p in curve] and line["x"][-1] == 880.0  # drawn to the run's end
    assert line["y"][:-1] == [p.best for p in curve] == sorted(p.best for p in curve)
    assert "Run ended by the budget after 880 s of 900 s" in text and "stopped by the budget: trial 5" in text
