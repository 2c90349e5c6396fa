"""Small HTML builders for the report: escaped text, tables whose cells carry their exact values as
``data-*`` attributes (so tests and scripts read the numbers the page shows), inline images."""

from __future__ import annotations

import base64
import html
import math
from typing import Iterable, Sequence

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:0 auto;
padding:1em 1.5em;color:#222;line-height:1.4}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} th,td{border:1px solid #ccc;padding:.25em .5em}
th{background:#f3f3f3;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.warning{background:#fde2e1;border:2px solid #c0392b;color:#7b1d14;padding:.6em 1em;font-weight:bold;margin:.5em 0}
.note{background:#fff6d6;border:1px solid #e0c060;padding:.5em 1em;margin:.5em 0}
.better{color:#1e7a34;font-weight:bold} .worse{color:#b03a2e;font-weight:bold} .spread{color:#666}
ul.verdict li{margin:.2em 0} img{max-width:100%;height:auto} pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:.85em}
.muted{color:#777;font-size:.9em}
"""


def esc(value: object) -> str:
    """Text and attribute values, HTML-escaped."""
    return html.escape(str(value), quote=True)


def fmt(value: object, digits: int = 3) -> str:
    """A number for people: integers as they are, floats with ``digits`` significant digits (trailing
    zeros kept: 1.00) or without decimals from 1000 on; "–" for missing or NaN."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        text = f"{value:#.{digits}g}".rstrip(".")
        return f"{value:,.0f}" if "e+" in text else text
    return str(value)


def data_value(value: object) -> str:
    """The exact value for a ``data-value`` attribute (floats with repr precision, NaN as "nan")."""
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def cell(value: object, key: str | None = None, digits: int = 3) -> str:
    """One ``<td>``: numbers right-aligned, shown with ``digits`` significant digits, exact in data-value."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    attrs = f' data-key="{esc(key)}"' if key else ""
    if number:
        attrs += f' class="num" data-value="{esc(data_value(value))}"'
    return f"<td{attrs}>{esc(fmt(value, digits))}</td>"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], keys: Sequence[str] | None = None,
          table_id: str | None = None, row_attrs: Iterable[dict] | None = None) -> str:
    """An HTML table; ``keys`` name the cells (``data-key``), ``row_attrs`` add ``data-*`` to each row."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    rows = list(rows)
    attrs = list(row_attrs) if row_attrs is not None else [{} for _ in rows]
    body = []
    for row, extra in zip(rows, attrs):
        tr = "".join(f' data-{esc(k)}="{esc(data_value(v))}"' for k, v in extra.items())
        cells = "".join(cell(v, keys[j] if keys else None) for j, v in enumerate(row))
        body.append(f"<tr{tr}>{cells}</tr>")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def image(png: bytes | None, alt: str) -> str:
    """An inline PNG (base64 data URI); a note when there is no figure."""
    if png is None:
        return f'<p class="note">{esc(alt)}: no data yet</p>'
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def section(title: str, body: str, ident: str) -> str:
    """A ``<section id=ident>`` with its heading."""
    return f'<section id="{esc(ident)}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def page(title: str, body: str) -> str:
    """A complete, self-contained HTML document (no scripts, no external resources)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")
