"""Self-contained HTML audit reports (Jinja2 templates, inlined figures) with a JSON twin.

>>> from xai_audit.report import write_report
>>> write_report(result, "reports/audit.html")   # also writes reports/audit.json
"""

from __future__ import annotations

from .content import SECTIONS, build_report_data
from .render import export_pdf, render_html, write_report

__all__ = ["SECTIONS", "build_report_data", "export_pdf", "render_html", "write_report"]
