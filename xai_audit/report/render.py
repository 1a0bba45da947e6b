"""Render an :class:`~xai_audit.audit.AuditResult` to one offline HTML file + JSON twin."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from ..audit._io import atomic_write_text, dumps
from .content import OUTCOMES, SECTIONS, build_figures, build_report_data
from .integrity import seal

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


def written_by_xai_audit(path: str | Path) -> bool:
    """Whether the file at ``path`` is a report (or JSON twin) that xai_audit wrote.

    The HTML carries ``<meta name="generator" content="xai_audit ...">`` near its top, the
    twin ``{"meta": {"generator": "xai_audit ..."}}``.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            meta = data.get("meta") if isinstance(data, dict) else None
            return isinstance(meta, dict) and str(meta.get("generator", "")).startswith("xai_audit")
        with open(path, "rb") as fh:
            head = fh.read(4096)
        return b'<meta name="generator" content="xai_audit' in head
    except (OSError, ValueError):
        return False


def check_report_paths(path: str | Path, *, pdf: bool = False, overwrite: bool = False) -> None:
    """Refuse to replace files at the report's paths that xai_audit did not write.

    The HTML and its twin may replace an earlier xai_audit report (recognised by its
    generator tag); a PDF may replace one printed from such a report (the HTML at the same
    path was xai_audit's). Anything else raises :class:`NotOwnedError` unless ``overwrite``.
    """
    from ..audit.store import NotOwnedError

    if overwrite:
        return
    path = Path(path)
    html_ours = path.is_file() and written_by_xai_audit(path)
    twin = path.with_suffix(".json")
    targets = [path, twin] + ([path.with_suffix(".pdf")] if pdf else [])
    foreign = [
        str(p)
        for p in targets
        if p.exists() and not (written_by_xai_audit(p) if p == twin else html_ours)
    ]
    if foreign:
        raise NotOwnedError(
            f"Not writing the report: {', '.join(foreign)} already exist(s) and xai_audit did "
            "not write it. Choose another report path, or pass overwrite=True (CLI: "
            "--overwrite) to replace it."
        )


def write_report(
    result: AuditResult,
    path: str | Path,
    *,
    pdf: bool = False,
    overwrite: bool = False,
    documentation: dict[str, Any] | None = None,
) -> Path:
    """Write ``path`` (HTML) and its JSON twin ``path.with_suffix('.json')``.

    An earlier xai_audit report at these paths is replaced; a file xai_audit did not write
    is not (see :func:`check_report_paths`) unless ``overwrite`` is True.

    Parameters
    ----------
    result : AuditResult
    path : str or Path
    pdf : bool, default False
        Also print a PDF next to it with headless Chromium (see :func:`export_pdf`).
    overwrite : bool, default False
        Replace existing files at these paths even if xai_audit did not write them.
    documentation : dict, optional
        Documentation fields (e.g. the reviewer's sign-off under ``document_control``) laid
        over the ones recorded with the result, for this report only.

    Returns
    -------
    Path
        The HTML file. Its SHA-256 (see :mod:`xai_audit.report.integrity`) is written in its
        footer and in the twin's ``integrity.report_sha256``.

    Raises
    ------
    NotOwnedError
        A file at the report's paths was not written by xai_audit (and ``overwrite`` is
        False); nothing is written then.
    """
    t0 = time.perf_counter()
    path = Path(path)
    check_report_paths(path, pdf=pdf, overwrite=overwrite)
    data = build_report_data(result)
    if documentation:
        from .regulatory import add_regulatory

        data = add_regulatory(data, result, documentation)
    html, data["integrity"]["report_sha256"] = seal(render_html(result, data))
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
