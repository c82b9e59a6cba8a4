"""The report as one self-contained HTML page.

Figures and thumbnails are embedded as ``data:image/png;base64`` URIs, the style and the
few lines of script that sort the well table are inline: the page loads nothing from
elsewhere and can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import json
import math
from typing import Any

import pandas as pd

SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-value"), y = b.cells[col].getAttribute("data-value");
        var nx = parseFloat(x), ny = parseFloat(y);
        var cmp = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return asc ? cmp : -cmp;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; vertical-align: middle; }
th { background: #f3f3f3; cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
td.text, th.text { text-align: left; }
img.figure { max-width: 100%; display: block; margin: 0.5em 0; }
img.thumb { width: var(--thumb); image-rendering: pixelated; }
.flag { color: #a33; } .ok { color: #262; }
.legend span { display: inline-block; padding: 0 6px; margin-right: 6px; color: #fff; border-radius: 3px; }
pre { background: #f7f7f7; padding: 0.6em; font-size: 0.8em; overflow-x: auto; }
"""


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _cell(value: Any, digits: int = 3) -> tuple[str, str, bool]:
    """Shown text, sort value, is-text for one table cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "", "", False
    if isinstance(value, bool):
        return ("yes" if value else ""), str(int(value)), True
    if isinstance(value, (int,)) or (hasattr(value, "dtype") and getattr(value, "dtype").kind in "iu"):
        return f"{int(value)}", str(int(value)), False
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value, "dtype").kind == "f"):
        return f"{float(value):.{digits}g}", repr(float(value)), False
    return html.escape(str(value)), html.escape(str(value)), True


def table_html(table: pd.DataFrame, *, table_id: str, sortable: bool = True, images: dict[str, str] | None = None, image_column: str | None = None, labels: dict[str, str] | None = None) -> str:
    """An HTML table of ``table``; with ``images`` a thumbnail column (``image_column`` values as keys)."""
    labels = labels or {}
    cols = list(table.columns)
    head = "".join(f'<th class="{"text" if table[c].dtype == object else ""}">{html.escape(labels.get(c, c))}</th>' for c in cols)
    if images is not None:
        head = "<th class=\"text\">thumbnail</th>" + head
    rows = []
    for record in table.itertuples(index=False):
        cells = []
        if images is not None:
            key = getattr(record, image_column)
            src = images.get(key)
            cells.append(f'<td class="text" data-value="{html.escape(str(key))}">' + (f'<img class="thumb" alt="{html.escape(str(key))}" src="{src}">' if src else "") + "</td>")
        for value in record:
            text, sort, is_text = _cell(value)
            cells.append(f'<td class="{"text" if is_text else ""}" data-value="{sort}">{text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cls = "sortable" if sortable else ""
    return f'<table id="{table_id}" class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def page(title: str, sections: list[tuple[str, str]], *, thumb_px: int = 160, provenance: dict[str, Any] | None = None) -> str:
    """The whole page: a title, the ``(heading, html)`` sections, the provenance, the script."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, content in sections:
        anchor = "".join(ch if ch.isalnum() else "-" for ch in heading.lower()).strip("-")
        body.append(f'<h2 id="{anchor}">{html.escape(heading)}</h2>\n{content}')
    if provenance is not None:
        body.append("<h2 id=\"provenance\">Provenance</h2><pre>" + html.escape(json.dumps(provenance, indent=1, default=str)) + "</pre>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><link rel=\"icon\" href=\"data:,\"><style>:root {{ --thumb: {int(thumb_px)}px; }}{STYLE}</style></head>"
        f"<body>{''.join(body)}<script>{SORT_SCRIPT}</script></body></html>\n"
    )


def figure_html(uri: str, alt: str) -> str:
    """An embedded figure."""
    return f'<img class="figure" alt="{html.escape(alt)}" src="{uri}">'
