"""The report's plotly figures: optimisation history, parallel coordinates, importance, model families, learning
curves."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from typing import Any

from search.results import TrialRecord
from search.study.budget import anytime_curve, fidelity_sentence, read_runs, run_sentence
from search.tools.families import family_of, family_rows, trial_cost
from search.tools.report.context import ReportContext
from search.tools.report.page import COLORS, Page, finite, fmt, is_number, note, table
from search.vocabulary import OBJECTIVE, TrialState

__all__ = ["anytime", "curves", "families", "history", "importance", "parallel"]

MIN_TRIALS_FOR_IMPORTANCE = 3
MAX_LEGEND = 24


def history(ctx: ReportContext, page: Page) -> str:
    trials = [r for r in ctx.trials if r.status != TrialState.RUNNING]
    if not trials:
        return note("No finished trial yet.")
    names = ctx.param_names()

    def hover(r: TrialRecord) -> str:
        vals = "<br>".join(f"{k} = {fmt(r.values.get(k))}" for k in names[:8])
        reason = f"<br>{html.escape(r.reason[:120])}" if r.reason else ""
        return f"trial {r.number} ({r.status}{', baseline' if r.baseline else ''})<br>{vals}{reason}"

    data: list[dict[str, Any]] = []
    groups = [
        ("complete", [r for r in trials if r.status == TrialState.COMPLETE and finite(r.score) and not r.baseline], "circle"),
        ("pruned (score so far)", [r for r in trials if r.status == TrialState.PRUNED and finite(r.score)], "circle-open"),
        ("baseline", [r for r in trials if r.baseline and finite(r.score)], "star"),
    ]
    colors = [COLORS["complete"], COLORS["pruned"], "#9467bd"]
    for (label, group, symbol), color in zip(groups, colors, strict=True):
        if group:
            data.append({
                "type": "scatter", "mode": "markers", "name": label,
                "x": [r.number for r in group], "y": [r.score for r in group],
                "text": [hover(r) for r in group], "hoverinfo": "text",
                "marker": {"symbol": symbol, "size": 12 if label == "baseline" else 8, "color": color},
            })
    xs, ys, best = [], [], -math.inf
    for r in sorted(ctx.complete, key=lambda r: r.number):
        best = max(best, float(r.score or 0))
        xs.append(r.number)
        ys.append(best)
    if xs:
        data.insert(0, {
            "type": "scatter", "mode": "lines", "name": "best so far", "x": xs, "y": ys,
            "line": {"shape": "hv", "color": COLORS["best"], "width": 2},
        })
    failed = [r for r in trials if r.status == TrialState.FAILED or (r.status != TrialState.COMPLETE and not finite(r.score))]
    if failed:
        data.append({
            "type": "scatter", "mode": "markers", "name": "failed (no score)",
            "x": [r.number for r in failed], "y": [0.0] * len(failed),
            "text": [hover(r) for r in failed], "hoverinfo": "text",
            "marker": {"symbol": "x", "size": 9, "color": COLORS["failed"]},
        })
    layout = {
        "xaxis": {"title": {"text": "trial"}, "rangemode": "tozero"},
        "yaxis": {"title": {"text": "validation hard dice"}},
        "legend": {"orientation": "h", "y": -0.18},
    }
    return page.figure("fig-history", data, layout)


def anytime(ctx: ReportContext, page: Page) -> str:
    """The best validation dice against the runs' wall-clock seconds, the runs' use of their budget and
    the training time at each fidelity (budget.json and the trial records)."""
    runs = read_runs(ctx.study.root)
    curve = anytime_curve(ctx.trials, runs)
    parts = [note(_sentence_case(run_sentence(r))) for r in runs[-3:]]
    fidelity = fidelity_sentence(ctx.trials)
    if fidelity:
        parts.append(note(_sentence_case(fidelity)))
    if not curve:
        return "\n".join([note("No complete trial yet."), *parts])
    xs = [p.seconds for p in curve]
    ys = [p.best for p in curve]
    end = max([xs[-1], *(float(r.get("wall_s") or 0.0) for r in runs)]) if runs else xs[-1]
    data: list[dict[str, Any]] = [{
        "type": "scatter", "mode": "lines+markers", "name": "best so far", "x": [*xs, end], "y": [*ys, ys[-1]],
        "text": [f"trial {p.trial}: {p.best:.4f} after {p.seconds:.0f} s" for p in curve] + ["end"],
        "hoverinfo": "text", "line": {"shape": "hv", "color": COLORS["best"], "width": 2},
    }]
    layout = {"xaxis": {"title": {"text": "wall-clock seconds of the study's runs"}, "rangemode": "tozero"},
              "yaxis": {"title": {"text": "best validation hard dice"}}, "showlegend": False}
    return "\n".join([page.figure("fig-anytime", data, layout), *parts])


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


def parallel(ctx: ReportContext, page: Page) -> str:
    """Parallel coordinates drawn as SVG lines (plotly's parcoords needs WebGL, absent on many machines)."""
    done = sorted(ctx.complete, key=lambda r: float(r.score or 0))
    names = ctx.param_names()
    if len(done) < 2 or not names:
        return note("Needs at least two completed trials and one sampled hyperparameter.")
    axes = [_axis(k, [r.values.get(k) for r in done], log=ctx.is_log(k)) for k in names]
    scores = [float(r.score or 0) for r in done]
    axes.append(_axis("score", scores, log=False))
    lo, hi = min(scores), max(scores)
    best = ctx.best
    data: list[dict[str, Any]] = []
    xs = list(range(len(axes)))
    for i, r in enumerate(done):
        is_best = best is not None and r.number == best.number
        text = f"trial {r.number}" + "".join(
            f"<br>{k} = {fmt(r.values.get(k))}" for k in names) + f"<br>score = {scores[i]:.4f}"
        data.append({
            "type": "scatter", "mode": "lines+markers", "x": xs, "y": [a[1][i] for a in axes],
            "line": {"color": _viridis((scores[i] - lo) / (hi - lo) if hi > lo else 1.0), "width": 4 if is_best else 1.5},
            "marker": {"size": 4}, "opacity": 1.0 if is_best else 0.75, "showlegend": False,
            "text": [text] * len(xs), "hoverinfo": "text", "name": f"trial {r.number}",
        })
    data.append({  # colour bar only
        "type": "scatter", "mode": "markers", "x": [None], "y": [None], "showlegend": False, "hoverinfo": "skip",
        "marker": {"color": [lo, hi], "cmin": lo, "cmax": hi, "colorscale": "Viridis", "showscale": True,
                   "colorbar": {"title": {"text": "score"}, "thickness": 14}},
    })
    shapes = [{"type": "line", "x0": x, "x1": x, "y0": 0, "y1": 1, "line": {"color": "#555", "width": 1}}
              for x in xs]
    annotations = [
        {"x": x, "y": pos, "text": label, "showarrow": False, "xanchor": "right", "xshift": -3,
         "font": {"size": 10, "color": "#333"}, "bgcolor": "rgba(255,255,255,0.7)"}
        for x, a in zip(xs, axes, strict=True) for pos, label in a[2]
    ]
    layout = {
        "xaxis": {"tickvals": xs, "ticktext": [a[0] for a in axes], "side": "top", "showgrid": False,
                  "zeroline": False, "range": [-0.5, len(axes) - 0.6]},
        "yaxis": {"visible": False, "range": [-0.06, 1.06]},
        "shapes": shapes, "annotations": annotations, "plot_bgcolor": "white",
        "margin": {"l": 30, "r": 20, "t": 50, "b": 20},
    }
    return page.figure("fig-parallel", data, layout, height=440) + (
        '<p class="muted">One line per completed trial, coloured by score (best in bold); each axis spans the '
        "values tried. Learning rates on a log axis.</p>"
    )


def _axis(name: str, values: list[Any], *, log: bool) -> tuple[str, list[float], list[tuple[float, str]]]:
    """(label, positions in [0, 1], ticks) of one parallel-coordinates axis."""
    if all(is_number(v) for v in values):
        nums = [float(v) for v in values]
        use_log = log and all(v > 0 for v in nums)
        scale: Callable[[float], float] = math.log10 if use_log else float
        lo, hi = min(map(scale, nums)), max(map(scale, nums))

        def norm(v: float) -> float:
            return (scale(v) - lo) / (hi - lo) if hi > lo else 0.5

        distinct = sorted(set(nums))
        if len(distinct) > 5:
            mid = 10 ** ((lo + hi) / 2) if use_log else (lo + hi) / 2
            distinct = [distinct[0], mid, distinct[-1]]
        return name, [norm(v) for v in nums], [(norm(v), fmt(v)) for v in distinct]
    cats = sorted({json.dumps(v) for v in values})
    step = 1 / (len(cats) - 1) if len(cats) > 1 else 0.0
    where = {c: (i * step if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
    return name, [where[json.dumps(v)] for v in values], [(where[c], str(json.loads(c))) for c in cats]


def _viridis(t: float) -> str:
    """Viridis at ``t`` in [0, 1] (clipped), as plotly writes it ("rgb(r, g, b)")."""
    import plotly.colors

    return str(plotly.colors.sample_colorscale("Viridis", [min(max(t, 0.0), 1.0)])[0])


def importance(ctx: ReportContext, page: Page) -> str:
    done = ctx.complete
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE:
        return note(f"Needs at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials ({len(done)} so far).")
    import optuna

    from search.tools.dashboard import covering_distributions, frozen_trials, quiet_optuna_logging

    dists = covering_distributions(ctx.cfg, done)
    dists = {k: v for k, v in dists.items() if not getattr(v, "single", lambda: False)()}
    if not dists:
        return note("No sampled hyperparameter varies between the completed trials.")
    with quiet_optuna_logging():
        mem = optuna.create_study(direction="maximize")
        mem.add_trials(frozen_trials(done, dists))
        scores = {float(r.score or 0) for r in done}
        if len(scores) < 2:
            return note("Every completed trial has the same score; importance is undefined.")
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        importances = optuna.importance.get_param_importances(mem, evaluator=evaluator)
    items = sorted(((k, float(v)) for k, v in importances.items()), key=lambda kv: kv[1])
    data = [{
        "type": "bar", "orientation": "h", "x": [v for _, v in items], "y": [k for k, _ in items],
        "marker": {"color": COLORS["complete"]}, "text": [f"{v:.2f}" for _, v in items], "textposition": "auto",
        "hovertemplate": "%{y}: %{x:.3f}<extra></extra>",
    }]
    layout = {"xaxis": {"title": {"text": "importance (normalised)"}, "range": [0, 1]},
              "margin": {"l": 150, "r": 20, "t": 20, "b": 50}}
    return page.figure("fig-importance", data, layout, height=max(220, 40 + 32 * len(items))) + (
        f'<p class="muted">Optuna PED-ANOVA on {len(done)} completed trials (the same evaluator for every '
        "strategy: our trials are copied into an in-memory Optuna study).</p>"
    )


def curves(ctx: ReportContext, page: Page) -> str:
    rows = [(r, ctx.histories.get(r.number) or []) for r in ctx.trials]
    rows = [(r, h) for r, h in rows if h]
    if not rows:
        return note("No trial has finished an epoch yet.")
    best = ctx.best
    data: list[dict[str, Any]] = []
    for r, hist in rows:
        is_best = best is not None and r.number == best.number
        epochs = [h.get("epoch", i) for i, h in enumerate(hist)]
        style = {
            "width": 3 if is_best else 1.2,
            "dash": "dot" if r.status == TrialState.PRUNED else ("dash" if r.status == TrialState.FAILED else "solid"),
        }
        if is_best:
            style["color"] = COLORS["best"]
        label = f"trial {r.number}" + (" (best)" if is_best else "") + (" (baseline)" if r.baseline else "")
        common = {"type": "scatter", "mode": "lines", "legendgroup": f"t{r.number}", "name": label,
                  "opacity": 1.0 if is_best else 0.65}
        for key, axis, show in ((OBJECTIVE, "", True), ("loss", "2", False)):
            ys = [h.get(key) for h in hist]
            if not any(is_number(y) for y in ys):
                continue
            data.append({**common, "x": epochs, "y": ys, "xaxis": f"x{axis}", "yaxis": f"y{axis}",
                         "showlegend": show, "line": dict(style),
                         "hovertemplate": f"{label}<br>epoch %{{x}}<br>{key} %{{y:.4f}}<extra></extra>"})
    legend = len(rows) <= MAX_LEGEND
    if not legend:
        for trace in data:
            trace["showlegend"] = False
    last = max((int(h.get("epoch", 0)) for _, hist in rows for h in hist if is_number(h.get("epoch"))), default=0)
    epoch_axis = {"title": {"text": "epoch"}, "dtick": max(1, math.ceil(last / 10))}
    layout = {
        "xaxis": {**epoch_axis, "domain": [0, 0.46]},
        "yaxis": {"title": {"text": "validation hard dice"}},
        "xaxis2": {**epoch_axis, "domain": [0.54, 1], "anchor": "y2"},
        "yaxis2": {"title": {"text": "training loss"}, "anchor": "x2"},
        "legend": {"orientation": "h", "y": -0.25, "yanchor": "top"},
        "showlegend": legend,
        "margin": {"l": 60, "r": 20, "t": 20, "b": 60},
    }
    rows_of_legend = math.ceil(len(rows) / 8) if legend else 0
    hint = "Click a legend entry to hide a trial." if legend else "Hover a line to see its trial."
    return page.figure("fig-curves", data, layout, height=400 + 24 * rows_of_legend) + (
        '<p class="muted">Per epoch, from each trial\'s history.csv; the best trial in bold green, dotted: pruned, '
        f"dashed: failed. {hint}</p>"
    )


def families(ctx: ReportContext, page: Page) -> str:
    """Each model family's best validation dice, and every complete trial's dice against its model's size."""
    rows = family_rows(ctx.cfg, ctx.trials)
    if len(rows) < 2:
        names = ", ".join(r.family for r in rows) or "none yet"
        return note(f"One model family in this study ({names}); search_space.variant chooses between families "
                    "(README: Model families).")
    head = ["family", "trials", "complete", "best validation dice", "best trial", "its parameters", "its MACs / image"]
    body = [[
        r.title, str(r.trials), str(r.complete),
        fmt(r.best.score) if r.best is not None else "-",
        str(r.best.number) if r.best is not None else "-",
        f"{r.best_cost.params / 1e6:.2f} M" if r.best_cost is not None else "-",
        f"{r.best_cost.forward_macs_per_image / 1e9:.2f} G" if r.best_cost is not None else "-",
    ] for r in rows]
    data = []
    for i, row in enumerate(rows):
        costs = [(trial_cost(ctx.cfg, r), r) for r in ctx.complete if family_of(r) == row.family]
        points = [(c, r) for c, r in costs if c is not None]
        if points:
            data.append({
                "type": "scatter", "mode": "markers", "name": row.title,
                "x": [c.params for c, _ in points], "y": [r.score for _, r in points],
                "text": [f"trial {r.number}: {fmt(r.score)}, {c.params / 1e6:.2f} M parameters" for c, r in points],
                "hoverinfo": "text", "marker": {"size": 9, "color": FAMILY_COLORS[i % len(FAMILY_COLORS)]},
            })
    layout = {"xaxis": {"title": {"text": "model parameters"}, "type": "log"},
              "yaxis": {"title": {"text": "validation hard dice"}}, "legend": {"orientation": "h", "y": -0.18}}
    figure = page.figure("fig-families", data, layout) if data else note("No complete trial with a known cost yet.")
    return table(head, body) + figure


FAMILY_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
