"""``report``: one self-contained HTML page about a study (``results/<study>/report.html``).

The page opens from disk without a network: plotly.js is inlined once, figures are plain JSON drawn by
``Plotly.newPlot``, images are base64 PNG data URIs. The runner refreshes it after every trial, so it must
cope with any partial study and stay fast (no TensorFlow, no plotly Python figure objects); a section that
cannot be drawn shows a note instead of breaking the page.

Loading is in ``context``, the sections in ``sections`` and ``figures``, the HTML in ``page``. TensorBoard
HParams summaries are :mod:`search.tools.tensorboard`.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable
from pathlib import Path

from search.results import StudyDir, atomic_write_text
from search.tools.report import figures, sections
from search.tools.report.context import ReportContext
from search.tools.report.page import Page, document, note

__all__ = ["SECTIONS", "build_report_html", "write_report"]

logger = logging.getLogger(__name__)

SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("history", "Optimisation history"),
    ("anytime", "Best score against time"),
    ("parallel", "Hyperparameters vs score"),
    ("importance", "Hyperparameter importance"),
    ("families", "Model families"),
    ("curves", "Learning curves"),
    ("predictions", "Validation predictions"),
    ("failures", "Failed and pruned trials"),
    ("final", "Final model on the test split"),
    ("trials", "All trials"),
)


def write_report(study: StudyDir) -> Path:
    """Write ``results/<study>/report.html`` atomically and return its path."""
    t0 = time.perf_counter()
    text = build_report_html(study)
    atomic_write_text(study.report_html, text)
    logger.debug("report %s written in %.2f s", study.report_html, time.perf_counter() - t0)
    return study.report_html


def refresh_report(study: StudyDir) -> None:
    """Rewrite the report after a trial or at the end of a run; a problem is logged, never raised (a report
    must not stop a search). ``run`` and ``worker`` hand it to the driver (search/study/runner.py)."""
    try:
        write_report(study)
    except Exception:  # noqa: BLE001
        logger.warning("could not refresh %s", study.report_html, exc_info=True)


def build_report_html(study: StudyDir) -> str:
    """The report page of ``study`` as one HTML string."""
    ctx = ReportContext.load(study)
    page = Page()
    builders: dict[str, Callable[[ReportContext, Page], str]] = {
        "summary": sections.summary,
        "history": figures.history,
        "anytime": figures.anytime,
        "parallel": figures.parallel,
        "importance": figures.importance,
        "families": figures.families,
        "curves": figures.curves,
        "predictions": sections.predictions,
        "failures": sections.failures,
        "final": sections.final,
        "trials": sections.trials_table,
    }
    body = []
    for sid, title in SECTIONS:
        try:
            content = builders[sid](ctx, page)
        except Exception as e:  # noqa: BLE001 - one broken section must not cost the whole page
            logger.warning("report section %s of %s failed: %s", sid, study.name, e, exc_info=logger.isEnabledFor(10))
            content = note(f"This section could not be drawn ({type(e).__name__}: {e}).")
        body.append(f'<section id="{sid}"><h2>{html.escape(title)}</h2>\n{content}\n</section>')
    return document(study.name, page, "\n".join(body), sections=SECTIONS)
