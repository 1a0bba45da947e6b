"""The comparison report: plain data (the JSON twin) and one self-contained HTML file.

It reuses the audit report's stylesheet, macros and number filters
(:func:`xai_audit.report.render.environment`), with its own templates in this package.
No case or patient identifier is shown: only group names, counts and statistics.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np
import pandas as pd

from .._version import __version__
from ..audit._io import atomic_write_text, dumps
from ..report.content import DISPLAY
from .text import verdict

if TYPE_CHECKING:
    from .comparison import Comparison

#: Sections of the comparison report: (id, heading).
SECTIONS = (
    ("summary", "1. Overall differences"),
    ("models", "2. Models and method"),
    ("criteria", "3. Acceptance criteria"),
    ("groups", "4. Differences by group"),
    ("gaps", "5. Gap changes"),
    ("flips", "6. Decisions that flipped"),
    ("explanations", "7. Explanation behaviour"),
    ("findings", "8. Findings: resolved and new"),
)
#: Metrics of the per-group tables (the rest are in the JSON twin).
GROUP_METRICS = ("auroc", "sensitivity", "specificity", "ppv", "npv", "ece")
FIGURE_METRICS = ("auroc", "sensitivity", "specificity")
#: Gap changes listed in the HTML (largest first; all rows are in ``differences``/the twin).
MAX_GAP_ROWS = 25


def _f(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def _row(r: dict[str, Any]) -> dict[str, Any]:
    out = {k: (_f(v) if isinstance(v, (float, np.floating)) else v) for k, v in r.items()}
    for k in ("n", "n_pos"):
        if k in out and out[k] is not None:
            out[k] = int(out[k])
    if "metric" in out:
        out["name"] = DISPLAY.get(out["metric"], out["metric"])
        if "ci_low" in r and "diff" in r:
            # groups: simultaneous intervals (no chance findings among many rows); overall:
            # the row's own interval (the pre-specified headline comparison)
            sim = "sim_low" in r and r.get("attribute") != "overall"
            lo, hi = (r["sim_low"], r["sim_high"]) if sim else (r["ci_low"], r["ci_high"])
            out["verdict"] = verdict(out["metric"], float(lo), float(hi))
    return out


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [_row(r) for r in df.to_dict("records")] if df is not None and len(df) else []


def _criteria(table: Any) -> dict[str, Any] | None:
    """Criteria verdicts (the table of :func:`xai_audit.audit.criteria.evaluate_criteria`)."""
    if table is None:
        return None
    from ..audit.criteria import overall_verdict

    items = [
        {k: (_f(v) if isinstance(v, (float, np.floating)) else v) for k, v in r.items()}
        for r in table.to_dict("records")
    ]
    return {"verdict": overall_verdict(table), "items": items}


def build_comparison_data(cmp: Comparison, criteria: Any = None) -> dict[str, Any]:
    """Everything the comparison report shows, as plain data (the JSON twin)."""
    s = dict(cmp.settings)
    s.pop("folders", None)  # local paths are not part of the report
    diffs = cmp.differences
    groups = []
    body = diffs[diffs["attribute"] != "overall"]
    for attribute in dict.fromkeys(body["attribute"]):
        sub = body[(body["attribute"] == attribute) & body["metric"].isin(GROUP_METRICS)]
        rows = []
        for group in dict.fromkeys(sub["group"]):
            g = sub[sub["group"] == group]
            first = g.iloc[0]
            rows.append(
                {
                    "group": str(group),
                    "n": int(first["n"]),
                    "n_pos": int(first["n_pos"]),
                    "status": str(first["status"]),
                    "metrics": {r["metric"]: r for r in _records(g)},
                }
            )
        groups.append({"attribute": str(attribute), "rows": rows})
    gaps = cmp.gap_changes
    lo_c, hi_c = ("sim_low", "sim_high") if "sim_low" in gaps else ("ci_low", "ci_high")
    gap_rows = gaps[np.isfinite(gaps[lo_c]) & ((gaps[lo_c] > 0) | (gaps[hi_c] < 0))].copy()
    gap_rows["size"] = gap_rows["change"].abs()
    gap_rows = gap_rows.sort_values("size", ascending=False).drop(columns="size")
    return {
        "meta": {
            "title": f"Model comparison: {cmp.reference_name} vs {cmp.new_name}",
            "generator": f"xai_audit {__version__}",
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "kind": "comparison",
            "sections": [list(x) for x in SECTIONS],
        },
        "reference": cmp.reference_name,
        "new": cmp.new_name,
        "settings": s,
        "notes": list(cmp.notes),
        "overall": _records(cmp.overall()),
        "groups": groups,
        "group_metrics": [m for m in GROUP_METRICS if m in set(diffs["metric"])],
        "differences": _records(diffs),
        "gap_changes": _records(gap_rows.head(MAX_GAP_ROWS)),
        "n_gap_changed": int(len(gap_rows)),
        "n_gap_rows": int(len(gaps)),
        "flips": _records(cmp.flips),
        "explanations": _records(cmp.explanations),
        "findings": dict(cmp.findings or {}),
        "criteria": _criteria(criteria),
    }


def diff_figure(cmp: Comparison, metric: str) -> str | None:
    """Forest plot of ``new - reference`` for one metric: overall and single-attribute groups."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..report.figures import fig_to_uri

    d = cmp.differences
    d = d[(d["metric"] == metric) & ~d["attribute"].str.contains(" × ", regex=False)]
    d = d[np.isfinite(d["diff"])]
    if d.empty:
        return None
    labels = [
        "overall" if r.attribute == "overall" else f"{r.attribute}={r.group}"
        for r in d.itertuples()
    ]
    y = np.arange(len(d))[::-1]
    fig, ax = plt.subplots(figsize=(4.6, 0.32 * len(d) + 0.9))
    lo = (d["diff"] - d["ci_low"]).clip(lower=0).to_numpy()
    hi = (d["ci_high"] - d["diff"]).clip(lower=0).to_numpy()
    ax.errorbar(d["diff"], y, xerr=np.nan_to_num(np.vstack([lo, hi])), fmt="o", ms=4, capsize=2,
                color="#2e6da4")  # fmt: skip
    ax.axvline(0, color="#1d2330", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(f"{DISPLAY.get(metric, metric)}: new - reference", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig_to_uri(fig)


def _dci(row: dict[str, Any] | None, digits: int = 3) -> str:
    """An interval of a difference, ``[-0.092, -0.049]`` (signs stay readable)."""
    if not row or row.get("ci_low") is None or row.get("ci_high") is None:
        return ""
    return f"[{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]"


def environment() -> jinja2.Environment:
    """The audit report's Jinja2 environment with this package's templates in front."""
    from ..report.render import environment as report_env

    env = report_env()
    env.filters["dci"] = _dci
    env.globals["DISPLAY"] = DISPLAY
    env.loader = jinja2.ChoiceLoader(
        [jinja2.PackageLoader("xai_audit.compare", "templates"), env.loader]
    )
    return env


def render_comparison_html(cmp: Comparison, data: dict[str, Any] | None = None) -> str:
    """The comparison report's HTML text (everything inlined)."""
    data = data if data is not None else build_comparison_data(cmp)
    figs = {m: diff_figure(cmp, m) for m in FIGURE_METRICS}
    return (
        environment()
        .get_template("compare_report.html.j2")
        .render(d=data, figs=figs, sections=SECTIONS)
    )


def write_comparison_report(
    cmp: Comparison, path: str | Path, *, criteria: Any = None, overwrite: bool = False
) -> Path:
    """Write the HTML report to ``path`` and its JSON twin to ``path.with_suffix('.json')``.

    Files at these paths that xai_audit did not write are not replaced unless ``overwrite``.
    """
    from ..report.render import check_report_paths

    path = Path(path)
    check_report_paths(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = build_comparison_data(cmp, criteria)
    atomic_write_text(path, render_comparison_html(cmp, data))
    atomic_write_text(path.with_suffix(".json"), dumps(data))
    return path
