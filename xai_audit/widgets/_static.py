"""HTML pieces shared by the live views and their static fallbacks.

The static fallback is what an exported notebook (nbconvert without widget state, GitHub's
viewer) shows in place of a live widget: the current image inlined as PNG and the tables.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ._render import png_data_uri

STYLE = "font-family:sans-serif;font-size:13px;line-height:1.4"


def esc(value: Any) -> str:
    """HTML-escaped text of a value (numbers rounded for reading)."""
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.3g}"
    return html.escape(str(value))


def img_tag(png: bytes | None, alt: str, max_width: str = "100%") -> str:
    """An inline ``<img>`` (or an empty note when there is nothing to show)."""
    if not png:
        return f"<p style='{STYLE}'><i>{esc(alt)}: nothing to show</i></p>"
    return f"<img src='{png_data_uri(png)}' alt='{esc(alt)}' style='max-width:{max_width}'/>"


def kv_table(values: Mapping[str, Any]) -> str:
    """A two-column key/value table."""
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:12px'>{esc(k)}</th><td>{esc(v)}</td></tr>"
        for k, v in values.items()
    )
    return f"<table style='{STYLE}'>{rows}</table>"


def frame_table(frame: pd.DataFrame, max_rows: int = 60) -> str:
    """A compact HTML table of a DataFrame (numbers to 3 significant digits)."""
    shown = frame.head(max_rows)
    head = "".join(
        f"<th style='text-align:left;padding:2px 8px'>{esc(c)}</th>" for c in shown.columns
    )
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:2px 8px'>{esc(v)}</td>" for v in row) + "</tr>"
        for row in shown.itertuples(index=False)
    )
    more = (
        f"<p style='{STYLE}'><i>{len(frame) - max_rows} more rows not shown</i></p>"
        if len(frame) > max_rows
        else ""
    )
    return f"<table style='{STYLE};border-collapse:collapse'><tr>{head}</tr>{body}</table>{more}"


def notes(lines: list[str], colour: str = "#8a6d3b") -> str:
    """A list of warnings/notes (empty string when there are none)."""
    if not lines:
        return ""
    items = "".join(f"<li>{esc(line)}</li>" for line in lines)
    return f"<ul style='{STYLE};color:{colour};margin:4px 0'>{items}</ul>"


def panel(title: str, body: str) -> str:
    """A titled block, used to assemble static fallbacks."""
    return (
        f"<div style='{STYLE};border:1px solid #ddd;padding:8px;margin:4px 0'>"
        f"<b>{esc(title)}</b> <span style='color:#888'>(static view: run the notebook for the "
        f"interactive widget)</span><br/>{body}</div>"
    )
