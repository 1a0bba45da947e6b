"""A small notebook control: pick a discovered slice, see its cases (beside the dashboard)."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd


def slice_label(row: pd.Series) -> str:
    """Dropdown text of one slice row."""
    sig = "significant" if bool(row["significant"]) else "not significant"
    metric = row["metric"] if isinstance(row["metric"], str) else "untested"
    gap = "" if pd.isna(row["gap"]) else f" gap {row['gap']:+.3f}"
    return f"slice {int(row['slice'])}: {metric}{gap}, n={int(row['n'])}, {sig}"


def slice_cases_table(result: Any, slice_id: int, limit: int = 50) -> pd.DataFrame:
    """The slice's cases (most typical first) with label, score and outcome."""
    ids = result.slice_cases(slice_id)[:limit]
    pred = result.predictions.set_index(result.predictions["case_id"].astype(str))
    cols = [c for c in ("label", "score", "outcome") if c in pred.columns]
    return pred.loc[ids, cols].reset_index()


def slice_picker(result: Any, limit: int = 50) -> Any:
    """An ipywidgets box: a dropdown of the discovered slices and the chosen slice's cases.

    ``result.slice_cases(k)`` gives the ids programmatically; open one in
    ``result.case_review(...)`` or filter the dashboard's explorer with them.
    """
    import ipywidgets as w

    table = result.slices
    status = (getattr(result, "slice_discovery", None) or {}).get("status", "")
    if not len(table):
        return w.HTML(f"<p>No discovered slices ({html.escape(str(status))}).</p>")
    options = [(slice_label(r), int(r["slice"])) for _, r in table.iterrows()]
    pick = w.Dropdown(options=options, description="slice", layout=w.Layout(width="480px"))
    out = w.HTML()
    descriptions = (result.slice_discovery.get("descriptions") or {}) if status else {}

    def show(_change: Any = None) -> None:
        sl = int(pick.value)
        cases = slice_cases_table(result, sl, limit)
        note = html.escape(str(descriptions.get(str(sl), "")))
        out.value = (
            "<p><em>A hypothesis to review, not a finding.</em> "
            + note
            + "</p>"
            + cases.to_html(index=False, float_format=lambda v: f"{v:.3f}")
        )

    pick.observe(show, "value")
    show()
    return w.VBox([pick, out])
