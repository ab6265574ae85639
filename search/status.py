"""``status``: a study's trials as a table (returned as text; the CLI prints it)."""

from __future__ import annotations

import textwrap
from typing import Any

import pandas as pd

from search.progress import SHOWN
from search.results import StudyDir
from search.vocabulary import TrialState

__all__ = ["status_text", "trials_frame"]


def trials_frame(study: StudyDir, *, all_columns: bool = False) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for r in study.trials():
        row: dict[str, Any] = {
            "trial": r.number,
            "status": r.status + (" (baseline)" if r.baseline else ""),
            "score": r.score,
            "± se": r.score_se,
            "best_ep": r.best_epoch,
            "epochs": r.epochs_run,
            "time_s": round(r.duration_s, 1),
        }
        for k, v in r.values.items():
            if all_columns or k in SHOWN:
                row[k] = v
        rows.append(row)
    return pd.DataFrame(rows)


def status_text(study: StudyDir, *, all_columns: bool = False, tracebacks: bool = False) -> str:
    """The status report; ``tracebacks``: the full traceback of each failed trial that left one."""
    trials = study.trials()
    lines = [f"study {study.name} ({study.root})"]
    counts = {s: sum(1 for r in trials if r.status == s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED, TrialState.RUNNING)}
    lines.append("trials: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f" ({len(trials)} in all)")
    if trials:
        frame = trials_frame(study, all_columns=all_columns)
        with pd.option_context("display.width", 200, "display.max_columns", 50, "display.float_format", "{:.4g}".format):
            lines.append(frame.to_string(index=False))
    best = study.best_trial()
    if best is not None:
        vals = ", ".join(f"{k}={v}" for k, v in best.values.items() if not k.startswith("augment."))
        se = f" ± {best.score_se:.4f}" if best.score_se is not None else ""
        lines.append(f"best: trial {best.number}, validation hard dice {best.score:.4f}{se} ({vals})")
        base = study.baseline_trial()
        if base is not None and base.score is not None and best.score is not None:
            pruned = f", pruned after {base.epochs_run} epochs" if base.status == TrialState.PRUNED else ""
            lines.append(f"baseline: trial {base.number}{pruned}, {base.score:.4f} "
                         f"→ search gain {best.score - base.score:+.4f}")
    running = [r for r in trials if r.status == TrialState.RUNNING]
    if running:
        lines.append("running: " + ", ".join(f"trial {r.number} ({r.engine_id})" for r in running))
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
    final = study.final_dir / "final.json"
    if final.is_file():
        import json

        f = json.loads(final.read_text())
        lines.append(f"final model: trial {f['trial']}, test hard dice {f['test']['hard_dice']:.4f}, "
                     f"IoU {f['test']['hard_iou']:.4f}")
        if isinstance(f.get("selection"), dict):
            from search.reevaluation import selection_sentence

            lines.append(f"selection: {selection_sentence(f['selection'])}")
        if isinstance(f.get("verdict"), dict):
            lines.append(f"verdict: {f['verdict']['sentence']}")
    return "\n".join(lines)
