"""The report's "Discovered slices" section: its data (JSON twin) and its figures."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: Slices shown in the report (significant ones first; the table has them all).
MAX_SHOWN = 8

NOTE = (
    "Slices are hypotheses to review, not findings: groups of images that the model's own "
    "representation puts together and on which it did worse than on the rest. Check the "
    "typical images for what they share (a device, an acquisition, a subtype) before acting."
)


def _plain(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    return v


def _records(df: Any) -> list[dict[str, Any]]:
    if df is None or not len(df):
        return []
    return [{k: _plain(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def report_data(result: Any) -> dict[str, Any]:
    """Plain data of the section: status, settings, slice table, descriptions, typical cases."""
    sd = getattr(result, "slice_discovery", None) or {}
    table = sd.get("table")
    settings = {
        k: _plain(v)
        for k, v in (sd.get("settings") or {}).items()
        if not isinstance(v, (dict, list))
    }
    enr = sd.get("enrichment")
    stats = sd.get("image_stats")
    typical = sd.get("typical")
    slices = []
    for row in _records(table)[:MAX_SHOWN]:
        sl = int(row["slice"])
        row["description"] = (sd.get("descriptions") or {}).get(str(sl), "")
        row["enrichment"] = _records(
            enr[enr["slice"] == sl].head(4) if enr is not None and len(enr) else None
        )
        row["image_stats"] = _records(
            stats[stats["slice"] == sl] if stats is not None and len(stats) else None
        )
        row["typical_cases"] = (
            typical[typical["slice"] == sl]["case_id"].astype(str).tolist()
            if typical is not None and len(typical)
            else []
        )
        slices.append(row)
    status = sd.get("status") or "not run (result written before slice discovery)"
    return {
        # The report shows the section only when discovery ran (the JSON always has it).
        "ran": not status.startswith(("not run", "off")),
        "status": status,
        "note": NOTE,
        "settings": settings,
        "n_significant": int(table["significant"].sum()) if table is not None else 0,
        "table": _records(table),
        "shown": slices,
    }


def figures(result: Any, thumb: int = 72) -> dict[str, Any]:
    """``{slice: {"typical": [uri, ...], "maps": {method: uri}}}`` for the shown slices."""
    from ..report import figures as F

    sd = getattr(result, "slice_discovery", None) or {}
    table = sd.get("table")
    out: dict[str, Any] = {}
    if table is None or not len(table):
        return out
    typical = sd.get("typical")
    thumbs = sd.get("thumbnails")
    maps = sd.get("mean_maps") or {}
    order = [int(s) for s in table["slice"]]
    for sl in order[:MAX_SHOWN]:
        entry: dict[str, Any] = {"typical": [], "maps": {}}
        if typical is not None and thumbs is not None and len(typical):
            for i in np.flatnonzero(typical["slice"].to_numpy() == sl):
                img = np.asarray(thumbs[i], dtype=np.float32)
                entry["typical"].append(F.array_to_uri(F.overlay_rgb(_fit(img, thumb), None)))
        for m, stack in maps.items():
            j = order.index(sl)
            if j < len(stack):
                entry["maps"][m] = F.mean_map_tile(np.asarray(stack[j], dtype=np.float32))
        out[str(sl)] = entry
    return out


def _fit(a: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    h, w = a.shape
    if max(h, w) <= size:
        return a
    scale = size / max(h, w)
    im = Image.fromarray(a.astype(np.float32), mode="F").resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR
    )
    return np.asarray(im)
