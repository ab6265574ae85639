"""``report``: one self-contained HTML page about a study, and TensorBoard HParams summaries.

The page (``results/<study>/report.html``) opens from disk without a network: plotly.js is inlined once,
figures are plain JSON drawn by ``Plotly.newPlot``, images are base64 PNG data URIs. The runner refreshes it
after every trial, so it must cope with any partial study and stay fast (no TensorFlow, no plotly Python
figure objects); a section that cannot be drawn shows a note instead of breaking the page.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from search.config import HYPERPARAMETER_DEFAULTS, Config
from search.errors import ConfigError
from search.results import StudyDir, TrialRecord, atomic_write_text, read_json
from search.vocabulary import OBJECTIVE

__all__ = ["SECTIONS", "build_report_html", "write_hparams_summary", "write_report"]

logger = logging.getLogger(__name__)

# (id, title) of every section, in page order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("history", "Optimisation history"),
    ("parallel", "Hyperparameters vs score"),
    ("importance", "Hyperparameter importance"),
    ("curves", "Learning curves"),
    ("predictions", "Validation predictions"),
    ("failures", "Failed and pruned trials"),
    ("final", "Final model on the test split"),
    ("trials", "All trials"),
)
MIN_TRIALS_FOR_IMPORTANCE = 3
BEST_PREDICTIONS = 4
OTHER_TRIALS = 3
OTHER_PREDICTIONS = 2
FINAL_OVERLAYS = 6
MAX_LEGEND = 24
COLORS = {"complete": "#1f77b4", "pruned": "#9e9e9e", "failed": "#d62728", "running": "#ff7f0e", "best": "#2ca02c"}


# --------------------------------------------------------------------------------------------- public


def write_report(study: StudyDir) -> Path:
    """Write ``results/<study>/report.html`` atomically and return its path."""
    t0 = time.perf_counter()
    text = build_report_html(study)
    atomic_write_text(study.report_html, text)
    logger.debug("report %s written in %.2f s", study.report_html, time.perf_counter() - t0)
    return study.report_html


def build_report_html(study: StudyDir) -> str:
    """The report page of ``study`` as one HTML string."""
    ctx = _Context.load(study)
    page = _Page()
    builders: dict[str, Callable[[_Context, _Page], str]] = {
        "summary": _summary,
        "history": _history,
        "parallel": _parallel,
        "importance": _importance,
        "curves": _curves,
        "predictions": _predictions,
        "failures": _failures,
        "final": _final,
        "trials": _trials_table,
    }
    body = []
    for sid, title in SECTIONS:
        try:
            content = builders[sid](ctx, page)
        except Exception as e:  # noqa: BLE001 - one broken section must not cost the whole page
            logger.warning("report section %s of %s failed: %s", sid, study.name, e, exc_info=logger.isEnabledFor(10))
            content = _note(f"This section could not be drawn ({type(e).__name__}: {e}).")
        body.append(f'<section id="{sid}"><h2>{html.escape(title)}</h2>\n{content}\n</section>')
    return _document(ctx, page, "\n".join(body))


def write_hparams_summary(study: StudyDir) -> list[Path]:
    """One TensorBoard HParams summary per completed trial, in ``trials/<n>/tb/hparams`` (rebuilt each call).

    ``tensorboard --logdir results/<study>`` then shows every completed trial's values and score in its
    HParams tab, next to the per-epoch logs that ``train.tensorboard: true`` writes to ``trials/<n>/tb``.

    Returns:
        The folders written.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    written = []
    for rec in study.trials():
        if rec.status != "complete" or rec.score is None or not math.isfinite(float(rec.score)):
            continue
        tb = study.trial_dir(rec.number) / "tb"
        final = tb / "hparams"
        tmp = tb / f".hparams.{rec.number}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tb.mkdir(parents=True, exist_ok=True)
        writer = tf.summary.create_file_writer(str(tmp))
        with writer.as_default():
            hp.hparams({k: _hparam_value(v) for k, v in rec.values.items()}, trial_id=f"trial {rec.number:04d}")
            step = int(rec.best_epoch or 0)
            tf.summary.scalar("score", float(rec.score), step=step)
            tf.summary.scalar("epochs_run", float(rec.epochs_run), step=step)
        writer.close()
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        written.append(final)
    logger.info("HParams summaries written for %d completed trials of %s", len(written), study.name)
    return written


# --------------------------------------------------------------------------------------------- context


class _Context:
    """Everything the sections read, loaded once per report."""

    def __init__(self, study: StudyDir) -> None:
        self.study = study
        self.cfg: Config | None = None
        self.cfg_error = ""
        self.trials: list[TrialRecord] = []
        self.histories: dict[int, list[dict[str, Any]]] = {}
        self.env: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None
        self.test_metrics: dict[str, Any] | None = None

    @classmethod
    def load(cls, study: StudyDir) -> _Context:
        from search.export import read_study_config

        ctx = cls(study)
        try:
            ctx.cfg = read_study_config(study)
        except ConfigError as e:
            ctx.cfg_error = str(e)
        ctx.trials = study.trials()
        ctx.histories = {r.number: study.read_history(r.number) for r in ctx.trials}
        ctx.env = _read_json_or(study.environment_json, {})
        ctx.final = _read_json_or(study.final_dir / "final.json", None)
        ctx.test_metrics = _read_json_or(study.final_dir / "test_metrics.json", None)
        return ctx

    @property
    def complete(self) -> list[TrialRecord]:
        return [r for r in self.trials if r.status == "complete" and _finite(r.score)]

    @property
    def best(self) -> TrialRecord | None:
        done = self.complete
        return max(done, key=lambda r: (float(r.score or 0.0), -r.number)) if done else None

    @property
    def baseline(self) -> TrialRecord | None:
        return next((r for r in self.trials if r.baseline), None)

    def param_names(self) -> list[str]:
        """The sampled hyperparameters (else those whose recorded values differ), in a stable order."""
        if self.cfg is not None and self.cfg.sampled_params():
            sampled = self.cfg.sampled_params()
            return [k for k in HYPERPARAMETER_DEFAULTS if k in sampled]
        names = []
        for k in HYPERPARAMETER_DEFAULTS:
            seen = {json.dumps(r.values.get(k), sort_keys=True) for r in self.trials if k in r.values}
            if len(seen) > 1:
                names.append(k)
        return names

    def is_log(self, name: str) -> bool:
        p = self.cfg.search_space.get(name) if self.cfg is not None else None
        return bool(p is not None and p.log) or name == "learning_rate"


class _Page:
    """Collects the figures (plain plotly JSON) while sections are built."""

    def __init__(self) -> None:
        self.figures: dict[str, dict[str, Any]] = {}

    def figure(self, fig_id: str, data: list[dict[str, Any]], layout: dict[str, Any], *, height: int = 420) -> str:
        base = {
            "height": height,
            "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
            "paper_bgcolor": "white",
            "plot_bgcolor": "#fafafa",
            "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12},
            "hovermode": "closest",
        }
        self.figures[fig_id] = {"data": _clean(data), "layout": _clean({**base, **layout})}
        return f'<div class="plot" id="{fig_id}" style="height:{height}px"></div>'


# --------------------------------------------------------------------------------------------- sections


def _summary(ctx: _Context, page: _Page) -> str:
    cfg, trials = ctx.cfg, ctx.trials
    counts = {s: sum(1 for r in trials if r.status == s) for s in ("complete", "pruned", "failed", "running")}
    badges = " ".join(
        f'<span class="badge {s}">{n} {s}</span>' for s, n in counts.items()
    ) + f" <span class=\"muted\">({len(trials)} trials recorded"
    badges += f" of {cfg.study.max_trials} planned)</span>" if cfg is not None else ")</span>"
    rows: list[tuple[str, str]] = []
    if cfg is not None:
        rows += [
            ("strategy", f"{cfg.study.strategy} ({'Optuna' if cfg.engine == 'optuna' else 'Keras Tuner'}), "
                         f"pruner {cfg.pruner}, seed {cfg.study.seed}"),
            ("objective", "validation hard dice (per image, threshold 0.5), maximised"),
            ("data", f"{html.escape(cfg.data.root)} at {cfg.data.image_size}×{cfg.data.image_size}×{cfg.data.channels}, "
                     f"batch {cfg.data.batch_size}"),
            ("training", f"≤ {cfg.train.max_epochs} epochs, patience {cfg.train.patience}, "
                         f"clipvalue {cfg.train.clipvalue}"),
        ]
    else:
        rows.append(("configuration", html.escape(ctx.cfg_error or "study.yaml not found")))
    rows.append(("trials", badges))
    best, base = ctx.best, ctx.baseline
    if best is not None:
        rows.append(("best", f"<b>{best.score:.4f}</b> (trial {best.number}, epoch {best.best_epoch}"
                             f"{', baseline' if best.baseline else ''})"))
    else:
        rows.append(("best", "no completed trial yet"))
    if base is not None:
        base_text = f"trial {base.number}: {base.status}"
        if _finite(base.score) and base.status == "complete":
            base_text = f"{base.score:.4f} (trial {base.number}, the reference configuration)"
            if best is not None and best.number != base.number:
                gain = float(best.score or 0) - float(base.score or 0)
                base_text += f" → search gain <b>{gain:+.4f}</b>"
        rows.append(("baseline", base_text))
    if ctx.final and isinstance(ctx.final.get("test"), dict):
        t = ctx.final["test"]
        rows.append(("final test", f"hard dice <b>{_fmt(t.get('hard_dice'))}</b>, IoU {_fmt(t.get('hard_iou'))} "
                                   f"(trial {ctx.final.get('trial')}, {_model_from(ctx.final)})"))
    durations = [r.duration_s for r in trials if r.status != "running"]
    if durations:
        rows.append(("trial time", f"{sum(durations) / 60:.1f} min in all, "
                                   f"{np.median(durations):.0f} s median per trial"))
    env = ctx.env
    if env:
        versions = ", ".join(f"{k} {env[k]}" for k in ("tensorflow", "keras", "keras_tuner", "optuna") if env.get(k))
        git = f"; git {str(env['git_revision'])[:10]}" if env.get("git_revision") else ""
        rows.append(("environment", html.escape(f"{versions}; python {env.get('python', '?')}{git}")))
    rows.append(("report written", time.strftime("%Y-%m-%d %H:%M:%S")))
    out = _kv_table([(k, v) for k, v in rows], raw=True)
    names = [k for k in HYPERPARAMETER_DEFAULTS if any(k in r.values for r in trials)]
    if best is not None and names:
        from search.space import describe

        space = ctx.cfg.search_space if ctx.cfg is not None else {}
        head = ["hyperparameter", "best", "baseline", "search space"]
        body = []
        for k in names:
            b = best.values.get(k)
            body.append([
                k,
                _fmt(b),
                _fmt(base.values.get(k)) if base is not None else "",
                describe(space[k]) if k in space else "default",
            ])
        out += "<h3>Best values</h3>" + _table(head, body)
    return out


def _history(ctx: _Context, page: _Page) -> str:
    trials = [r for r in ctx.trials if r.status != "running"]
    if not trials:
        return _note("No finished trial yet.")
    names = ctx.param_names()

    def hover(r: TrialRecord) -> str:
        vals = "<br>".join(f"{k} = {_fmt(r.values.get(k))}" for k in names[:8])
        reason = f"<br>{html.escape(r.reason[:120])}" if r.reason else ""
        return f"trial {r.number} ({r.status}{', baseline' if r.baseline else ''})<br>{vals}{reason}"

    data: list[dict[str, Any]] = []
    groups = [
        ("complete", [r for r in trials if r.status == "complete" and _finite(r.score) and not r.baseline], "circle"),
        ("pruned (score so far)", [r for r in trials if r.status == "pruned" and _finite(r.score)], "circle-open"),
        ("baseline", [r for r in trials if r.baseline and _finite(r.score)], "star"),
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
    failed = [r for r in trials if r.status == "failed" or (r.status != "complete" and not _finite(r.score))]
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


def _parallel(ctx: _Context, page: _Page) -> str:
    """Parallel coordinates drawn as SVG lines (plotly's parcoords needs WebGL, absent on many machines)."""
    done = sorted(ctx.complete, key=lambda r: float(r.score or 0))
    names = ctx.param_names()
    if len(done) < 2 or not names:
        return _note("Needs at least two completed trials and one sampled hyperparameter.")
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
            f"<br>{k} = {_fmt(r.values.get(k))}" for k in names) + f"<br>score = {scores[i]:.4f}"
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
    if all(_is_number(v) for v in values):
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
        return name, [norm(v) for v in nums], [(norm(v), _fmt(v)) for v in distinct]
    cats = sorted({json.dumps(v) for v in values})
    step = 1 / (len(cats) - 1) if len(cats) > 1 else 0.0
    where = {c: (i * step if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
    return name, [where[json.dumps(v)] for v in values], [(where[c], str(json.loads(c))) for c in cats]


_VIRIDIS = ((68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142), (31, 158, 137),
            (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37))


def _viridis(t: float) -> str:
    t = min(max(t, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(t), len(_VIRIDIS) - 2)
    f = t - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(_VIRIDIS[i], _VIRIDIS[i + 1], strict=True))
    return f"rgb({r},{g},{b})"


def _importance(ctx: _Context, page: _Page) -> str:
    done = ctx.complete
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE:
        return _note(f"Needs at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials ({len(done)} so far).")
    import optuna

    from search.dashboard import covering_distributions, frozen_trials, quiet_optuna_logging

    dists = covering_distributions(ctx.cfg, done)
    dists = {k: v for k, v in dists.items() if not getattr(v, "single", lambda: False)()}
    if not dists:
        return _note("No sampled hyperparameter varies between the completed trials.")
    with quiet_optuna_logging():
        mem = optuna.create_study(direction="maximize")
        mem.add_trials(frozen_trials(done, dists))
        scores = {float(r.score or 0) for r in done}
        if len(scores) < 2:
            return _note("Every completed trial has the same score; importance is undefined.")
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


def _curves(ctx: _Context, page: _Page) -> str:
    rows = [(r, ctx.histories.get(r.number) or []) for r in ctx.trials]
    rows = [(r, h) for r, h in rows if h]
    if not rows:
        return _note("No trial has finished an epoch yet.")
    best = ctx.best
    data: list[dict[str, Any]] = []
    for r, hist in rows:
        is_best = best is not None and r.number == best.number
        epochs = [h.get("epoch", i) for i, h in enumerate(hist)]
        style = {
            "width": 3 if is_best else 1.2,
            "dash": "dot" if r.status == "pruned" else ("dash" if r.status == "failed" else "solid"),
        }
        if is_best:
            style["color"] = COLORS["best"]
        label = f"trial {r.number}" + (" (best)" if is_best else "") + (" (baseline)" if r.baseline else "")
        common = {"type": "scatter", "mode": "lines", "legendgroup": f"t{r.number}", "name": label,
                  "opacity": 1.0 if is_best else 0.65}
        for key, axis, show in ((OBJECTIVE, "", True), ("loss", "2", False)):
            ys = [h.get(key) for h in hist]
            if not any(_is_number(y) for y in ys):
                continue
            data.append({**common, "x": epochs, "y": ys, "xaxis": f"x{axis}", "yaxis": f"y{axis}",
                         "showlegend": show, "line": dict(style),
                         "hovertemplate": f"{label}<br>epoch %{{x}}<br>{key} %{{y:.4f}}<extra></extra>"})
    legend = len(rows) <= MAX_LEGEND
    if not legend:
        for trace in data:
            trace["showlegend"] = False
    last = max((int(h.get("epoch", 0)) for _, hist in rows for h in hist if _is_number(h.get("epoch"))), default=0)
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


def _predictions(ctx: _Context, page: _Page) -> str:
    best = ctx.best
    if best is None:
        return _note("No completed trial yet.")
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
            parts.append(f"<h3>{html.escape(title)}</h3>" + _note("No saved predictions."))
            continue
        figs = "".join(
            f'<figure><img alt="{html.escape(p.stem)}" src="{_data_uri(p.read_bytes())}">'
            f"<figcaption>{html.escape(p.stem)}</figcaption></figure>"
            for p in files
        )
        parts.append(f"<h3>{html.escape(title)}</h3><div class=\"gallery\">{figs}</div>")
    return '<p class="muted">Each panel: image | truth | prediction (threshold 0.5), best epoch.</p>' + "".join(parts)


def _failures(ctx: _Context, page: _Page) -> str:
    bad = [r for r in ctx.trials if r.status in ("failed", "pruned")]
    if not bad:
        return '<p class="ok">No failed or pruned trials.</p>'
    rows = [
        [str(r.number), f'<span class="badge {r.status}">{r.status}</span>', str(r.epochs_run),
         _fmt(r.score) if _finite(r.score) else "", html.escape(r.reason or "")]
        for r in bad
    ]
    return _table(["trial", "status", "epochs", "score so far", "reason"], rows, raw=True)


def _model_from(final: dict[str, Any]) -> str:
    """How the final model was made (final.json ``model_from``; older studies retrained)."""
    return {"trial_weights": "the trial's own weights",
            "retrained_train_valid": "retrained on train+valid"}.get(str(final.get("model_from")), "retrained")


def _final(ctx: _Context, page: _Page) -> str:
    metrics = ctx.test_metrics
    final = ctx.final or {}
    if metrics is None and not final:
        return _note(f"No final model yet: run <code>python -m search final {html.escape(ctx.study.name)}</code> "
                     "to test the best trial's model.", raw=True)
    test = dict(final.get("test") or {})
    for k in ("hard_dice", "hard_iou", "soft_dice", "loss", "n_images"):
        if metrics and k not in test and k in metrics:
            test[k] = metrics[k]
    rows = [("final model", f"trial {final.get('trial', '?')}, {_model_from(final)}"),
            ("validation score of that trial", _fmt(final.get("valid_score")))]
    labels = {"hard_dice": "test hard dice (per image)", "hard_iou": "test IoU (per image)",
              "soft_dice": "test soft dice (reference, batch)", "loss": "test loss", "n_images": "test images"}
    rows += [(labels[k], _fmt(test[k])) for k in labels if k in test]
    out = _kv_table(rows)
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
            img = f'<img alt="{html.escape(p.stem)} overlay" src="{_data_uri(overlay)}">' if overlay else ""
            figs.append(f'<figure><div class="pair">{img}<img alt="{html.escape(p.stem)}" src="{_data_uri(data)}"></div>'
                        f"<figcaption>{html.escape(p.stem)}</figcaption></figure>")
        out += ('<h3>Test predictions</h3><p class="muted">Overlay: <span style="color:#2ca02c">green</span> truth '
                'outline, <span style="color:#d62728">red</span> prediction; then image | truth | prediction.</p>'
                f'<div class="gallery">{"".join(figs)}</div>')
    return out


def _trials_table(ctx: _Context, page: _Page) -> str:
    if not ctx.trials:
        return _note("No trial recorded yet.")
    names = ctx.param_names()
    head = ["trial", "status", "score", "best epoch", "epochs", "time (s)", *names]
    best = ctx.best
    rows = []
    for r in ctx.trials:
        mark = " ★" if best is not None and r.number == best.number else ""
        rows.append([
            f"{r.number}{mark}{' (baseline)' if r.baseline else ''}",
            f'<span class="badge {r.status}">{r.status}</span>',
            _fmt(r.score) if _finite(r.score) else "",
            "" if r.best_epoch is None else str(r.best_epoch),
            str(r.epochs_run),
            f"{r.duration_s:.0f}",
            *[html.escape(_fmt(r.values.get(k))) for k in names],
        ])
    return _table(head, rows, raw=True)


# --------------------------------------------------------------------------------------------- html


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#f3f4f6}
header{background:#1f2937;color:#fff;padding:14px 24px;position:sticky;top:0;z-index:10}
header h1{margin:0;font-size:20px} header nav a{color:#cbd5e1;margin-right:14px;font-size:13px;text-decoration:none}
header nav a:hover{color:#fff}
main{max-width:1200px;margin:0 auto;padding:12px 24px 48px}
section{background:#fff;border-radius:8px;padding:12px 20px 16px;margin:16px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{font-size:18px;margin:6px 0 12px} h3{font-size:15px;margin:16px 0 8px}
table{border-collapse:collapse;font-size:13px;margin:4px 0} td,th{padding:4px 10px;border-bottom:1px solid #e5e7eb;
text-align:left;vertical-align:top} th{background:#f9fafb}
table.kv td:first-child{color:#555;white-space:nowrap}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;color:#fff;background:#6b7280}
.badge.complete{background:#1f77b4}.badge.pruned{background:#9e9e9e}.badge.failed{background:#d62728}
.badge.running{background:#ff7f0e}
.muted{color:#6b7280;font-size:12px} .note{color:#6b7280;font-style:italic} .ok{color:#15803d}
.gallery{display:flex;flex-wrap:wrap;gap:14px} figure{margin:0} .pair{display:flex;gap:6px}
figure img{height:180px;width:auto;max-width:100%;display:block;image-rendering:pixelated;
border:1px solid #e5e7eb;margin-bottom:2px}
figcaption{font-size:12px;color:#555}
.scroll{overflow-x:auto}
"""

_INIT_JS = """
(function () {
  var figs = JSON.parse(document.getElementById("report-figures").textContent);
  Object.keys(figs).forEach(function (id) {
    var el = document.getElementById(id);
    if (el) { Plotly.newPlot(el, figs[id].data, figs[id].layout, {displaylogo: false, responsive: true}); }
  });
})();
"""


def _document(ctx: _Context, page: _Page, body: str) -> str:
    name = html.escape(ctx.study.name)
    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title in SECTIONS)
    figures = json.dumps(page.figures, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>unet-search · {name}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{_plotly_js()}</script></head>\n'
        f"<body><header><h1>unet-search · study {name}</h1><nav>{nav}</nav></header>\n<main>\n{body}\n</main>\n"
        f'<script type="application/json" id="report-figures">{figures}</script>\n'
        f"<script>{_INIT_JS}</script>\n</body></html>\n"
    )


@functools.lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def _table(head: list[str], rows: list[list[str]], *, raw: bool = False) -> str:
    esc = (lambda s: s) if raw else html.escape
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def _kv_table(rows: list[tuple[str, str]], *, raw: bool = False) -> str:
    esc = (lambda s: s) if raw else html.escape
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _note(text: str, *, raw: bool = False) -> str:
    return f'<p class="note">{text if raw else html.escape(text)}</p>'


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _overlay_from_panel(png: bytes) -> bytes | None:
    """A colour overlay (truth outline green, prediction red) from an image | truth | prediction panel."""
    import cv2

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


def _read_json_or(path: Path, default: Any) -> Any:
    try:
        return read_json(path) if path.is_file() else default
    except (OSError, ValueError):
        return default


def _hparam_value(v: Any) -> Any:
    return v if isinstance(v, (bool, int, float, str)) else json.dumps(v)


def _finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(float(v))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3g}"
        return f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v)


def _clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become null, numpy scalars become Python ones."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj

