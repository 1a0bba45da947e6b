"""Render an :class:`~xai_audit.audit.AuditResult` to one offline HTML file + JSON twin."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from ..audit._io import atomic_write_text, dumps
from .content import OUTCOMES, SECTIONS, build_figures, build_report_data

if TYPE_CHECKING:
    from ..audit.result import AuditResult

log = logging.getLogger(__name__)


def _fmt(v: Any, digits: int = 3) -> str:
    """A number for humans: ``0.853``; ``n/a`` for missing values."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if x != x:  # NaN
        return "n/a"
    return f"{x:.{digits}f}"


def _pct(v: Any, digits: int = 0) -> str:
    if v is None:
        return "n/a"
    return f"{100 * float(v):.{digits}f}%"


def _ci(row: dict[str, Any] | None, digits: int = 3) -> str:
    if not row or row.get("ci_low") is None or row.get("ci_high") is None:
        return ""
    return f"{_fmt(row['ci_low'], digits)}–{_fmt(row['ci_high'], digits)}"


def _raw(v: Any) -> str:
    """Full-precision value for ``data-value`` attributes (read back by tests and tools)."""
    if v is None:
        return ""
    return repr(float(v)) if isinstance(v, float) else str(v)


def environment() -> jinja2.Environment:
    """The Jinja2 environment: package templates, autoescaping on, strict undefined."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("xai_audit.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt=_fmt, pct=_pct, ci=_ci, raw=_raw)
    return env


def render_html(result: AuditResult, data: dict[str, Any] | None = None) -> str:
    """The report's HTML text (everything inlined)."""
    data = data if data is not None else build_report_data(result)
    figs = build_figures(result, data)
    template = environment().get_template("report.html.j2")
    return template.render(d=data, figs=figs, sections=SECTIONS, outcomes=OUTCOMES)


def write_report(result: AuditResult, path: str | Path, *, pdf: bool = False) -> Path:
    """Write ``path`` (HTML) and its JSON twin ``path.with_suffix('.json')``.

    Parameters
    ----------
    result : AuditResult
    path : str or Path
    pdf : bool, default False
        Also print a PDF next to it with headless Chromium (see :func:`export_pdf`).

    Returns
    -------
    Path
        The HTML file.
    """
    t0 = time.perf_counter()
    path = Path(path)
    data = build_report_data(result)
    html = render_html(result, data)
    atomic_write_text(path, html)
    atomic_write_text(path.with_suffix(".json"), dumps(data))
    log.info(
        "Report written to %s (%.1f kB) in %.1f s", path, len(html) / 1024, time.perf_counter() - t0
    )
    if pdf:
        export_pdf(path, path.with_suffix(".pdf"))
    return path


def export_pdf(
    html_path: str | Path, pdf_path: str | Path, chromium: str = "/usr/bin/chromium"
) -> Path:
    """Print the report to PDF with headless Chromium through playwright (optional extra)."""
    from playwright.sync_api import sync_playwright

    html_path, pdf_path = Path(html_path).resolve(), Path(pdf_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium if Path(chromium).exists() else None,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            page.goto(html_path.as_uri())
            page.pdf(
                path=str(pdf_path),
                format="A4",
                print_background=True,
                margin={"top": "12mm", "bottom": "12mm", "left": "10mm", "right": "10mm"},
            )
        finally:
            browser.close()
    return pdf_path
