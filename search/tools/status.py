"""``status``: a study's trials as a table (returned as text; the CLI prints it).

It leads with what counts: the final model's test result and the verdict (with a caution when the
final model is poor), then the search. A trial left ``running`` shows its progress so far from its
``history.csv``, and reads ``interrupted`` when no driver holds the study.
"""

from __future__ import annotations

import platform
import textwrap
from typing import Any

import pandas as pd

from search.config import Config
from search.errors import ConfigError
from search.results import StudyDir, TrialRecord, read_final, read_study_config, read_test_metrics
from search.study.budget import anytime_curve, fidelity_sentence, read_runs, run_sentence
from search.study.folder import StudyLock
from search.study.progress import SHOWN, format_value
from search.study.reevaluation import selection_sentence
from search.tools.families import family_rows
from search.trial.task import row_score
from search.vocabulary import TrialState

__all__ = ["budget_lines", "status_text", "trials_frame"]

# A final model below this test dice, or predicting outside [1/FG_RATIO, FG_RATIO]× the true foreground
# area, gets a plain caution: the verdict only compares it with the baseline, which may be as poor.
POOR_DICE = 0.5
FG_RATIO = 2.0
INTERRUPTED = "interrupted"
ANYTIME_SHOWN = 6  # improvements of the best score listed by status (the first and the last ones)


def trials_frame(study: StudyDir, *, all_columns: bool = False) -> pd.DataFrame:
    """One row per trial; a running trial shows its epochs and best score so far (from history.csv)."""
    driver = _driver_running(study)
    rows: list[dict[str, Any]] = []
    for r in study.trials():
        row: dict[str, Any] = {
            "trial": r.number,
            "status": _status(r, driver) + (" (baseline)" if r.baseline else ""),
            "score": r.score,
            "± se": r.score_se,
            "best_ep": r.best_epoch,
            "epochs": r.epochs_run,
            "time_s": round(r.duration_s, 1),
            "samples": r.train_samples,
        }
        if r.status == TrialState.RUNNING:
            row.update(_so_far(study, r))
        for k, v in r.values.items():
            if all_columns or k in SHOWN:
                row[k] = v
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in ("score", "± se", "best_ep", "samples"):  # None -> NaN, so that they print as "-" with the numbers
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def status_text(study: StudyDir, *, all_columns: bool = False, tracebacks: bool = False) -> str:
    """The status report; ``tracebacks``: the full traceback of each failed trial that left one."""
    trials = study.trials()
    driver = _driver_running(study)
    lines = [f"study {study.name} ({study.root})"]
    lines += _final_lines(study)
    labels = [_status(r, driver) for r in trials]
    parts = [f"{labels.count(s)} {s}" for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED,
                                                 TrialState.RUNNING)]
    if INTERRUPTED in labels:
        parts.append(f"{labels.count(INTERRUPTED)} {INTERRUPTED}")
    lines.append("trials: " + ", ".join(parts) + f" ({len(trials)} in all)")
    if trials:
        frame = trials_frame(study, all_columns=all_columns)
        with pd.option_context("display.width", 200, "display.max_columns", 50, "display.float_format", "{:.4g}".format):
            lines.append(frame.to_string(index=False, na_rep="-"))
    best = study.best_trial()
    if best is not None:
        vals = ", ".join(f"{k}={format_value(v)}" for k, v in best.values.items() if not k.startswith("augment."))
        se = f" ± {best.score_se:.4f}" if best.score_se is not None else ""
        lines.append(f"best: trial {best.number}, validation hard dice {best.score:.4f}{se} ({vals})")
        base = study.baseline_trial()
        if base is not None and base.score is not None and best.score is not None:
            pruned = f", pruned after {base.epochs_run} epochs" if base.status == TrialState.PRUNED else ""
            lines.append(f"baseline: trial {base.number}{pruned}, {base.score:.4f} "
                         f"→ gain on validation {best.score - base.score:+.4f} (the best of many trials: "
                         f"optimistic; the test verdict is the fair comparison)")
    lines += _family_lines(study, trials)
    lines += budget_lines(study, trials)
    for r in trials:
        if r.status == TrialState.RUNNING:
            lines.append(_running_line(study, r, driver))
    failed = [r for r in trials if r.status in (TrialState.FAILED, TrialState.PRUNED) and r.reason]
    for r in failed:
        line = f"{r.status} trial {r.number}: {r.reason}"
        trace = study.traceback_path(r.number)
        if r.status != TrialState.FAILED or not trace.is_file():
            lines.append(line)
        elif tracebacks:
            lines.append(line)
            lines.append(textwrap.indent(trace.read_text(errors="replace").rstrip(), "    "))
        else:
            lines.append(f"{line} (traceback: {trace}; status --debug prints it)")
    return "\n".join(lines)


def _family_lines(study: StudyDir, trials: list[TrialRecord]) -> list[str]:
    """With trials of more than one model family: each family's best validation dice, trials and model size."""
    rows = family_rows(_config_or_none(study), trials)
    if len(rows) < 2:
        return []
    parts = []
    for row in rows:
        best = (f"best {row.best.score:.4f} (trial {row.best.number}"
                + (f", {row.best_cost.params / 1e6:.2f} M parameters)" if row.best_cost is not None else ")")
                if row.best is not None and row.best.score is not None else "no complete trial")
        parts.append(f"{row.family} {best}, {row.complete} of {row.trials} complete")
    return ["families: " + "; ".join(parts)]


def _config_or_none(study: StudyDir) -> Config | None:
    try:
        return read_study_config(study)
    except ConfigError:
        return None


# --------------------------------------------------------------------------------------------- the final model


def _final_lines(study: StudyDir) -> list[str]:
    """The headline: the final model's test result, the selection, the verdict, and a caution if it is poor."""
    f = read_final(study)
    if f is None:
        return []
    test = f["test"]
    images = f" on {test['n_images']} test images" if test.get("n_images") else ""
    lines = [f"final model: trial {f['trial']}, test hard dice {test['hard_dice']:.4f}, "
             f"IoU {test['hard_iou']:.4f}{images}"]
    if isinstance(test.get("class_dice"), dict):  # several classes: hard_dice is the mean foreground dice
        lines.append("test dice per class: " + ", ".join(
            f"{name} {value:.3f}" if isinstance(value, int | float) else f"{name} not scored"
            for name, value in test["class_dice"].items()))
    if isinstance(f.get("selection"), dict):
        lines.append(f"selection: {selection_sentence(f['selection'])}")
    if isinstance(f.get("verdict"), dict):
        lines.append(f"verdict: {f['verdict']['sentence']}")
    metrics = read_test_metrics(study) or {}
    caution = poor_model_caution(test, metrics)
    if caution:
        lines.append(f"caution: {caution}")
    return lines


def poor_model_caution(test: dict[str, Any], metrics: dict[str, Any]) -> str | None:
    """A plain sentence when the final model is poor on test (low dice, or far too much / too little foreground)."""
    problems = []
    dice = test.get("hard_dice")
    if isinstance(dice, (int, float)) and dice < POOR_DICE:
        problems.append(f"test hard dice {dice:.3f} is low")
    pred, true = metrics.get("pred_fg_fraction"), metrics.get("true_fg_fraction")
    if isinstance(pred, (int, float)) and isinstance(true, (int, float)) and true > 0:
        ratio = pred / true
        if ratio > FG_RATIO:
            problems.append(f"it predicts {ratio:.1f}× the true foreground area (over-segmentation)")
        elif ratio < 1 / FG_RATIO:
            problems.append(f"it predicts {ratio:.2f}× the true foreground area (under-segmentation)")
    if not problems:
        return None
    return ("the final model is poor: " + "; ".join(problems)
            + ". Look at final/predictions/ before using it; a verdict against the baseline does not make it good.")


# --------------------------------------------------------------------------------------------- the budget


def budget_lines(study: StudyDir, trials: list[TrialRecord]) -> list[str]:
    """The anytime view: how the last run used its budget (budget.json), the best validation score
    against the runs' wall-clock seconds, and the training time at each fidelity."""
    runs = read_runs(study.root)
    lines = [f"last {run_sentence(runs[-1])}"] if runs else []
    curve = anytime_curve(trials, runs)
    if curve:
        shown = curve if len(curve) <= ANYTIME_SHOWN else [curve[0], *curve[-(ANYTIME_SHOWN - 1):]]
        lines.append("best so far: " + ", ".join(f"{p.best:.4g} after {p.seconds:.0f} s (trial {p.trial})"
                                                   for p in shown))
    fidelity = fidelity_sentence(trials)
    if fidelity:
        lines.append(fidelity)
    return lines


# --------------------------------------------------------------------------------------------- running trials


def _driver_running(study: StudyDir) -> bool:
    return StudyLock(study).is_held()


def _status(rec: TrialRecord, driver_running: bool) -> str:
    """``interrupted`` for a trial left running on this machine while no driver holds the study."""
    local = rec.engine_id in ("", platform.node())
    if rec.status == TrialState.RUNNING and not driver_running and local:
        return INTERRUPTED
    return str(rec.status)


def _so_far(study: StudyDir, rec: TrialRecord) -> dict[str, Any]:
    """A running trial's epochs, best score and seconds so far, from its history.csv (its record has none yet)."""
    history = study.read_history(rec.number)
    scored = [(s, row) for row in history if (s := row_score(row)) is not None]
    out: dict[str, Any] = {"epochs": len(history)}
    if scored:
        score, row = max(scored, key=lambda sr: sr[0])
        out.update(score=score, best_ep=row.get("epoch"))
    seconds = sum(float(row.get("epoch_s") or 0.0) for row in history)
    if seconds:
        out["time_s"] = round(seconds, 1)
    return out


def _running_line(study: StudyDir, rec: TrialRecord, driver_running: bool) -> str:
    so_far = _so_far(study, rec)
    best = f", best {so_far['score']:.4f}" if "score" in so_far else ""
    epochs = so_far["epochs"]
    done = f"{epochs} epoch{'' if epochs == 1 else 's'} done{best} so far"
    if _status(rec, driver_running) == INTERRUPTED:
        return (f"interrupted: trial {rec.number} ({done}); no driver holds the study. Run the same command "
                f"again to resume it from its last completed epoch")
    where = f" on {rec.engine_id}" if rec.engine_id else ""
    return f"running: trial {rec.number}{where} ({done})"
