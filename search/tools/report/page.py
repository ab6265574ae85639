"""The report page's HTML: the figure collector, styles, tables, notes and value formatting."""

from __future__ import annotations

import base64
import functools
import html
import json
import math
from typing import Any

import numpy as np

__all__ = ["COLORS", "Page", "data_uri", "document", "finite", "fmt", "is_number", "kv_table", "note", "table"]

COLORS = {"complete": "#1f77b4", "pruned": "#9e9e9e", "failed": "#d62728", "running": "#ff7f0e", "best": "#2ca02c"}


class Page:
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
.bad{color:#d62728}
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


def document(study_name: str, page: Page, body: str, *, sections: tuple[tuple[str, str], ...]) -> str:
    """The whole HTML page: header with one link per (id, title) of ``sections``, the body, the figures."""
    name = html.escape(study_name)
    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title in sections)
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


def table(head: list[str], rows: list[list[str]], *, raw: bool = False) -> str:
    esc = (lambda s: s) if raw else html.escape
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def kv_table(rows: list[tuple[str, str]], *, raw: bool = False) -> str:
    esc = (lambda s: s) if raw else html.escape
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def note(text: str, *, raw: bool = False) -> str:
    return f'<p class="note">{text if raw else html.escape(text)}</p>'


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def finite(v: Any) -> bool:
    return is_number(v) and math.isfinite(float(v))


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(v: Any) -> str:
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
