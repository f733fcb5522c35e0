"""A self-contained HTML report: headline numbers, tables, matplotlib figures and plotly meshes.

One file that opens offline in any browser: matplotlib figures are embedded as base64 PNG, the
first plotly figure carries plotly.js inline (about 4.6 MB) and later ones reuse it. Built from a
list of *blocks* (HTML strings) made by the helpers below; ``demo.run_demo`` writes
``runs/demo/report.html`` with them.
"""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

__all__ = ["figure_html", "plotly_html", "table_html", "numbers_html", "write_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
     padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em} h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.numbers{display:flex;flex-wrap:wrap;gap:.8em} .numbers div{border:1px solid #ddd;border-radius:6px;
     padding:.5em .9em;min-width:9em} .numbers b{display:block;font-size:1.4em}
.note{color:#555;font-size:.9em} img{max-width:100%}
"""


def figure_html(fig, dpi: int = 100, alt: str = "figure") -> str:
    """A matplotlib figure as an ``<img>`` with the PNG inline (base64); closes the figure."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def plotly_html(fig, first: bool) -> str:
    """A plotly figure as a ``<div>``; ``first=True`` embeds plotly.js (once per page)."""
    return fig.to_html(full_html=False, include_plotlyjs=True if first else False)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return html.escape(str(v))


def table_html(rows: list[dict], columns: dict | None = None) -> str:
    """An HTML table. rows: dicts; columns: key → header (default: the first row's keys)."""
    columns = columns or {k: k for k in rows[0]}
    head = "".join(f"<th>{html.escape(h)}</th>" for h in columns.values())
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(k, ''))}</td>" for k in columns) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def numbers_html(items: dict) -> str:
    """Headline numbers as cards: label → value (floats formatted)."""
    cards = "".join(f"<div>{html.escape(k)}<b>{_fmt(v)}</b></div>" for k, v in items.items())
    return f'<div class="numbers">{cards}</div>'


def write_html(path, title: str, blocks: list[str]) -> Path:
    """Write the page: ``<h1>title</h1>`` then the blocks in order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{''.join(blocks)}</body></html>")
    path.write_text(page, encoding="utf-8")
    return path
