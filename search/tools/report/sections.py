"""The report's text sections: summary, validation predictions, failures, the final model, all trials."""

from __future__ import annotations

import html
import time
from typing import Any

import numpy as np

from search.config import HYPERPARAMETER_DEFAULTS
from search.config.space import describe
from search.results import TrialRecord
from search.study.reevaluation import selection_sentence
from search.tools.report.context import ReportContext
from search.tools.report.page import COLORS, Page, data_uri, finite, fmt, kv_table, note, table
from search.tools.status import poor_model_caution
from search.vocabulary import CLASS_DICE, TrialState

__all__ = ["failures", "final", "predictions", "summary", "trials_table"]

BEST_PREDICTIONS = 4
OTHER_TRIALS = 3
OTHER_PREDICTIONS = 2
FINAL_OVERLAYS = 6


def summary(ctx: ReportContext, page: Page) -> str:
    rows = [*_config_rows(ctx), ("trials", _trial_badges(ctx)), *_final_rows(ctx), *_best_rows(ctx)]
    durations = [r.duration_s for r in ctx.trials if r.status != TrialState.RUNNING]
    if durations:
        rows.append(("trial time", f"{sum(durations) / 60:.1f} min in all, "
                                   f"{np.median(durations):.0f} s median per trial"))
    env = ctx.env
    if env:
        versions = ", ".join(f"{k} {env[k]}" for k in ("tensorflow", "keras", "keras_tuner", "optuna") if env.get(k))
        git = f"; git {str(env['git_revision'])[:10]}" if env.get("git_revision") else ""
        rows.append(("environment", html.escape(f"{versions}; python {env.get('python', '?')}{git}")))
    rows.append(("report written", time.strftime("%Y-%m-%d %H:%M:%S")))
    return kv_table([(k, v) for k, v in rows], raw=True) + _best_values(ctx)


def _trial_badges(ctx: ReportContext) -> str:
    cfg, trials = ctx.cfg, ctx.trials
    counts = {s: sum(1 for r in trials if r.status == s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED, TrialState.RUNNING)}
    badges = " ".join(
        f'<span class="badge {s}">{n} {s}</span>' for s, n in counts.items()
    ) + f" <span class=\"muted\">({len(trials)} trials recorded"
    badges += f" of {cfg.study.max_trials} planned)</span>" if cfg is not None else ")</span>"
    return badges


def _config_rows(ctx: ReportContext) -> list[tuple[str, str]]:
    cfg = ctx.cfg
    if cfg is None:
        return [("configuration", html.escape(ctx.cfg_error or "study.yaml not found"))]
    return [
        ("strategy", f"{cfg.study.strategy} ({'Optuna' if cfg.engine == 'optuna' else 'Keras Tuner'}), "
                     f"pruner {cfg.pruner}, seed {cfg.study.seed}"),
        ("objective", "validation hard dice (per image, threshold 0.5), maximised"),
        ("data", f"{html.escape(cfg.data.root)} at {cfg.data.image_size}×{cfg.data.image_size}×{cfg.data.channels}, "
                 f"batch {cfg.data.batch_size}"),
        ("training", f"≤ {cfg.rule('max_epochs')} epochs, patience {cfg.rule('patience')}, "
                     f"clipvalue {cfg.train.clipvalue}"),
    ]


def _final_rows(ctx: ReportContext) -> list[tuple[str, str]]:
    if not ctx.final or not isinstance(ctx.final.get("test"), dict):
        return []
    t = ctx.final["test"]
    rows = [("final test", f"hard dice <b>{fmt(t.get('hard_dice'))}</b>, IoU {fmt(t.get('hard_iou'))} "
                           f"(trial {ctx.final.get('trial')}, {_model_from(ctx.final)})")]
    if isinstance(ctx.final.get("selection"), dict):
        rows.append(("selection", html.escape(selection_sentence(ctx.final["selection"]))))
    if isinstance(ctx.final.get("verdict"), dict):
        rows.append(("verdict", f"<b>{html.escape(str(ctx.final['verdict'].get('sentence', '')))}</b>"))
    caution = poor_model_caution(t, ctx.test_metrics or {})
    if caution:
        rows.append(("caution", f'<b class="bad">{html.escape(caution)}</b>'))
    return rows


def _best_rows(ctx: ReportContext) -> list[tuple[str, str]]:
    best, base = ctx.best, ctx.baseline
    rows: list[tuple[str, str]] = []
    if best is not None:
        rows.append(("best", f"<b>{best.score:.4f}</b> (trial {best.number}, epoch {best.best_epoch}"
                             f"{', baseline' if best.baseline else ''})"))
    else:
        rows.append(("best", "no completed trial yet"))
    if base is not None:
        base_text = f"trial {base.number}: {base.status}"
        if finite(base.score):
            pruned = f", pruned after {base.epochs_run} epochs" if base.status == TrialState.PRUNED else ""
            base_text = f"{base.score:.4f} (trial {base.number}{pruned})"
            if best is not None and best.number != base.number:
                gain = float(best.score or 0) - float(base.score or 0)
                base_text += (f" → gain on validation {gain:+.4f} (the best of many trials: optimistic; the test "
                              f"verdict is the fair comparison)")
        rows.append(("baseline", base_text))
    elif any(r.baseline for r in ctx.trials):
        rows.append(("baseline", "none: the baseline trial failed"))
    return rows


def _best_values(ctx: ReportContext) -> str:
    """The best trial's values next to the baseline's and the search space."""
    best, base, trials = ctx.best, ctx.baseline, ctx.trials
    names = [k for k in HYPERPARAMETER_DEFAULTS if any(k in r.values for r in trials)]
    if best is None or not names:
        return ""
    space = ctx.cfg.search_space if ctx.cfg is not None else {}
    head = ["hyperparameter", "best", "baseline", "search space"]
    body = []
    for k in names:
        b = best.values.get(k)
        body.append([
            k,
            fmt(b),
            fmt(base.values.get(k)) if base is not None else "",
            describe(space[k]) if k in space else "default",
        ])
    return "<h3>Best values</h3>" + table(head, body)


def predictions(ctx: ReportContext, page: Page) -> str:
    best = ctx.best
    if best is None:
        return note("No completed trial yet.")
    chosen: list[tuple[TrialRecord, int]] = [(best, BEST_PREDICTIONS)]
    others = sorted((r for r in ctx.complete if r.number != best.number), key=lambda r: -float(r.score or 0))
    base = ctx.baseline
    if base is not None and base.number != best.number and base in others:
        others.remove(base)
        others.insert(0, base)
    chosen += [(r, OTHER_PREDICTIONS) for r in others[:OTHER_TRIALS]]
    parts = []
    for r, limit in chosen:
        files = sorted((ctx.study.trial_dir(r.number) / "predictions").glob("*.png"))[:limit]
        title = f"Trial {r.number}" + (" — best" if r is best else "") + (" — baseline" if r.baseline else "")
        title += f" (score {r.score:.4f})"
        if not files:
            parts.append(f"<h3>{html.escape(title)}</h3>" + note("No saved predictions."))
            continue
        figs = "".join(
            f'<figure><img alt="{html.escape(p.stem)}" src="{data_uri(p.read_bytes())}">'
            f"<figcaption>{html.escape(p.stem)}</figcaption></figure>"
            for p in files
        )
        parts.append(f"<h3>{html.escape(title)}</h3><div class=\"gallery\">{figs}</div>")
    how = "each class in its colour, the prediction's argmax" if ctx.classes is not None else "threshold 0.5"
    return (f'<p class="muted">Each panel: image | truth | prediction ({how}), best epoch.</p>' + class_legend(ctx)
            + "".join(parts))


def class_legend(ctx: ReportContext) -> str:
    """Several classes: each class's colour and name, as the panels and overlays draw them."""
    if ctx.classes is None:
        return ""
    swatches = "".join(
        f'<span class="swatch" style="display:inline-block;margin-right:1em"><span style="display:inline-block;'
        f'width:0.9em;height:0.9em;background:rgb({r},{g},{b});border:1px solid #888;vertical-align:middle">'
        f"</span> {k} {html.escape(name)}</span>"
        for k, (name, (r, g, b)) in enumerate(zip(ctx.classes.names, ctx.classes.colours().tolist(), strict=True)))
    return f'<p class="legend">{swatches}</p>'


def class_table(ctx: ReportContext) -> str:
    """Several classes: each foreground class's test dice, the chosen model's and the baseline's."""
    metrics = ctx.test_metrics or {}
    chosen = metrics.get("class_dice")
    if not chosen:
        return ""
    baseline = (metrics.get("baseline") or {}).get("class_dice") or {}
    per_image = (metrics.get("per_class") or {}).get("per_image_hard_dice") or []
    scored = [sum(1 for row in per_image if k < len(row) and row[k] is not None) for k in range(len(chosen))]
    rows = [[name, fmt(dice) if dice is not None else "not scored", fmt(baseline.get(name)) if baseline else "",
             str(scored[k]) if per_image else ""] for k, (name, dice) in enumerate(chosen.items())]
    return ("<h3>Per class (test)</h3><p class=\"muted\">Hard dice of each structure: the mean over the test images that "
            "score it (a class absent from an image's truth and prediction is not scored there). The study's score "
            "is each image's mean over its scored classes.</p>"
            + table(["class", "test dice", "baseline", "images scored"], rows))


def failures(ctx: ReportContext, page: Page) -> str:
    bad = [r for r in ctx.trials if r.status in (TrialState.FAILED, TrialState.PRUNED)]
    if not bad:
        return '<p class="ok">No failed or pruned trials.</p>'
    rows = [
        [str(r.number), f'<span class="badge {r.status}">{r.status}</span>', str(r.epochs_run),
         fmt(r.score) if finite(r.score) else "", html.escape(r.reason or "")]
        for r in bad
    ]
    return table(["trial", "status", "epochs", "score so far", "reason"], rows, raw=True)


def _model_from(final: dict[str, Any]) -> str:
    """How the final model was made (final.json ``model_from``; older studies retrained)."""
    if str(final.get("model_from", "")).startswith("ensemble_of_"):
        return "the mean of its fold models (k-fold ensemble)"
    return {"trial_weights": "the trial's own weights",
            "retrained_train_valid": "retrained on train+valid"}.get(str(final.get("model_from")), "retrained")


def final(ctx: ReportContext, page: Page) -> str:
    metrics = ctx.test_metrics
    final = ctx.final or {}
    if metrics is None and not final:
        return note(f"No final model yet: run <code>python -m search final {html.escape(ctx.study.name)}</code> "
                     "to test the best trial's model.", raw=True)
    test = dict(final.get("test") or {})
    for k in ("hard_dice", "hard_iou", "soft_dice", "loss", "n_images"):
        if metrics and k not in test and k in metrics:
            test[k] = metrics[k]
    rows = [("final model", f"trial {final.get('trial', '?')}, {_model_from(final)}"),
            ("validation score of that trial", fmt(final.get("valid_score")))]
    if isinstance(final.get("selection"), dict):
        rows.append(("selection (fresh seeds, validation)", selection_sentence(final["selection"])))
    if isinstance(final.get("verdict"), dict):
        rows.append(("verdict (paired, test)", str(final["verdict"].get("sentence", ""))))
    labels = {"hard_dice": "test hard dice (per image)", "hard_iou": "test IoU (per image)",
              "soft_dice": "test soft dice (reference, batch)", "loss": "test loss", "n_images": "test images"}
    rows += [(labels[k], fmt(test[k])) for k in labels if k in test]
    out = kv_table(rows) + class_table(ctx) + _selection_table(final.get("selection"))
    per = (metrics or {}).get("per_image") or {}
    dice = per.get("hard_dice") or []
    if dice:
        stems = per.get("stems") or [str(i) for i in range(len(dice))]
        out += page.figure("fig-test-dice", [{
            "type": "bar", "x": [str(s) for s in stems], "y": dice, "marker": {"color": COLORS["complete"]},
            "hovertemplate": "%{x}: %{y:.4f}<extra></extra>",
        }], {"yaxis": {"title": {"text": "hard dice"}, "range": [0, 1]},
             "xaxis": {"type": "category", "title": {"text": "test image"}}}, height=300)
    files = sorted((ctx.study.final_dir / "predictions").glob("*.png"))[:FINAL_OVERLAYS]
    if files:
        figs = []
        for p in files:
            data = p.read_bytes()
            overlay = _overlay_from_panel(data)
            img = f'<img alt="{html.escape(p.stem)} overlay" src="{data_uri(overlay)}">' if overlay else ""
            figs.append(f'<figure><div class="pair">{img}<img alt="{html.escape(p.stem)}" src="{data_uri(data)}"></div>'
                        f"<figcaption>{html.escape(p.stem)}</figcaption></figure>")
        how = ('<span style="color:#2ca02c">green</span> truth outline, <span style="color:#d62728">red</span> '
               'prediction' if ctx.classes is None else "each class's prediction tinted and its truth outlined in "
               "its colour")
        out += (f'<h3>Test predictions</h3><p class="muted">Overlay: {how}; then image | truth | prediction.</p>'
                + class_legend(ctx) + f'<div class="gallery">{"".join(figs)}</div>')
    return out


def _selection_table(selection: Any) -> str:
    """The re-evaluated candidates: search score, fresh mean ± se, lower bound (no test score: only the
    pick is tested, so that no one picks again by test)."""
    if not isinstance(selection, dict) or not selection.get("candidates"):
        return ""
    rows = []
    for c in selection["candidates"]:
        mark = " ★" if c.get("trial") == selection.get("chosen") else ""
        fresh = f"{fmt(c.get('mean'))} ± {fmt(c.get('se'))}" if c.get("mean") is not None else "no score"
        rows.append([f"{c.get('trial')}{mark}{' (baseline)' if c.get('baseline') else ''}", fmt(c.get("search_score")),
                     fresh, fmt(c.get("lcb")), " ".join(fmt(r.get("score")) for r in c.get("runs", []))])
    rule = "mean" if selection.get("rule") == "mean" else "lower bound"
    return (f'<h3>Re-evaluation before the pick</h3><p class="muted">Each configuration trained again with '
            f'{html.escape(str(selection.get("seeds")))} fresh seeds; picked by the {rule} of the fresh validation '
            f'scores. Only the pick is tested.</p>'
            + table(["trial", "search score", "fresh mean ± se", "mean − se", "fresh runs"], rows))


def trials_table(ctx: ReportContext, page: Page) -> str:
    if not ctx.trials:
        return note("No trial recorded yet.")
    names = ctx.param_names()
    classes = list(ctx.classes.foreground) if ctx.classes is not None else []
    head = ["trial", "status", "score", "± se", "best epoch", "epochs", "time (s)", *names,
            *[f"dice {c}" for c in classes]]
    best = ctx.best
    rows = []
    for r in ctx.trials:
        mark = " ★" if best is not None and r.number == best.number else ""
        rows.append([
            f"{r.number}{mark}{' (baseline)' if r.baseline else ''}",
            f'<span class="badge {r.status}">{r.status}</span>',
            fmt(r.score) if finite(r.score) else "",
            fmt(r.score_se) if finite(r.score_se) else "",
            "" if r.best_epoch is None else str(r.best_epoch),
            str(r.epochs_run),
            f"{r.duration_s:.0f}",
            *[html.escape(fmt(r.values.get(k))) for k in names],
            *[fmt(r.metrics.get(f"{CLASS_DICE}{c}")) if finite(r.metrics.get(f"{CLASS_DICE}{c}")) else "" for c in classes],
        ])
    return table(head, rows, raw=True)


def _overlay_from_panel(png: bytes) -> bytes | None:
    """A colour overlay (truth outline green, prediction red) from an image | truth | prediction panel; a colour
    panel (several classes): each class's prediction tinted and its truth outlined in its colour."""
    import cv2

    colour = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if colour is not None and colour.ndim == 3 and colour.shape[1] % 3 == 0:
        return _class_overlay_from_panel(colour)
    panel = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    if panel is None or panel.shape[1] % 3:
        return None
    w = panel.shape[1] // 3
    image, truth, pred = panel[:, :w], panel[:, w : 2 * w] > 127, panel[:, 2 * w :] > 127
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR).astype(np.float32)
    red = np.array([40, 40, 214], np.float32)  # BGR
    rgb[pred] = 0.55 * rgb[pred] + 0.45 * red
    out = rgb.astype(np.uint8)
    contours, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (44, 160, 44), 1)
    ok, buf = cv2.imencode(".png", out)
    return buf.tobytes() if ok else None


def _class_overlay_from_panel(panel: np.ndarray) -> bytes | None:
    import cv2

    w = panel.shape[1] // 3
    image, truth, pred = panel[:, :w], panel[:, w : 2 * w], panel[:, 2 * w :]
    out = image.astype(np.float32)
    predicted = pred.any(axis=-1)
    out[predicted] = 0.55 * out[predicted] + 0.45 * pred[predicted].astype(np.float32)
    out8 = out.astype(np.uint8)
    for colour in np.unique(truth.reshape(-1, 3), axis=0):
        if not colour.any():
            continue
        on = np.all(truth == colour, axis=-1).astype(np.uint8)
        contours, _ = cv2.findContours(on, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out8, contours, -1, tuple(int(c) for c in colour), 1)
    ok, buf = cv2.imencode(".png", out8)
    return buf.tobytes() if ok else None
