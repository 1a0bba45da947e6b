"""Numeric attributes (age, BMI, a lab value) turned into a few readable subgroups.

One rule for every path (DICOM manifests, ``Audit(attribute_bins=...)``, config files):

* Bins are left-closed ``[lo, hi)`` with open ends, labelled by :func:`bin_labels`: integral
  edges on whole-number or age data read ``"<40"``, ``"40-64"``, ``"65+"`` (``"40-64"`` holds
  40 <= x < 65, the convention for ages); otherwise ``"<2.5"``, ``"2.5-<4"``, ``">=4"`` (so
  that 25.7 is not read as outside ``"23-25"``).
* Given edges are used as they are (``attribute_bins={"age": [0, 40, 65, 120]}``).
* Without edges, a numeric column with more than :data:`MAX_UNBINNED_VALUES` distinct values
  is binned automatically: an age-like column (name ``age``, ``*_age``, ``age_*``, values in
  0-130) in decades (``"60-69"``), any other in quintiles (edges rounded to 2 significant
  digits, duplicates merged). Columns with few values (``0/1``, a site number) are left alone.
* ``False`` (or ``"none"``) for a column keeps its raw values.

The group names then go through :func:`xai_audit.fairness.inputs.group_keys` like any other
attribute (strings are kept as written, missing values become ``"missing"``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MAX_UNBINNED_VALUES",
    "auto_edges",
    "bin_attributes",
    "bin_labels",
    "bin_manifest",
    "bin_values",
    "check_attribute_bins",
]

#: A numeric attribute with more distinct values than this is binned automatically.
MAX_UNBINNED_VALUES = 10
_AGE_NAME = re.compile(r"(^|[_\W])age($|[_\W])", re.IGNORECASE)


def _edge_text(x: float) -> str:
    return f"{x:g}"


def _labels(edges: Sequence[float], whole: bool = True) -> list[str]:
    integral = whole and all(float(e).is_integer() for e in edges)
    if integral:
        inner = [f"{lo:g}-{hi - 1:g}" for lo, hi in zip(edges[:-1], edges[1:])]
        return [f"<{edges[0]:g}", *inner, f"{edges[-1]:g}+"]
    inner = [f"{_edge_text(lo)}-<{_edge_text(hi)}" for lo, hi in zip(edges[:-1], edges[1:])]
    return [f"<{_edge_text(edges[0])}", *inner, f">={_edge_text(edges[-1])}"]


def bin_labels(values: Any, edges: Sequence[float], *, whole: bool = True) -> pd.Series:
    """Left-closed bins with open ends: each value's label, NaN where it is missing.

    Parameters
    ----------
    values : array-like
        Numbers (missing values stay missing).
    edges : sequence of float
        Strictly increasing inner edges, e.g. ``[40, 65]`` -> ``"<40"``, ``"40-64"``,
        ``"65+"``.
    whole : bool, default True
        Label integral edges as whole-number ranges (``"40-64"``); False writes ``"40-<65"``
        (for measurements with decimals).

    Returns
    -------
    pandas.Series
        Object series of labels.
    """
    edges = [float(e) for e in edges]
    x = pd.Series(pd.to_numeric(pd.Series(values).reset_index(drop=True), errors="coerce"))
    groups = pd.cut(x, [-np.inf, *edges, np.inf], right=False, labels=_labels(edges, whole))
    return groups.astype(object).where(x.notna(), np.nan)


def _nice(x: float, digits: int = 2) -> float:
    """``x`` rounded to ``digits`` significant digits (readable quantile edges)."""
    if x == 0 or not np.isfinite(x):
        return float(x)
    return float(round(x, digits - 1 - int(math.floor(math.log10(abs(x))))))


def _is_age(name: str, x: np.ndarray) -> bool:
    return bool(_AGE_NAME.search(name)) and x.min() >= 0 and x.max() <= 130


def auto_edges(values: Any, name: str = "") -> tuple[list[float], str] | None:
    """Default inner edges and the rule used (``"decades"``/``"quintiles"``), or None.

    None when the column is not numeric or has at most :data:`MAX_UNBINNED_VALUES` distinct
    values.
    """
    x = _numeric(values)
    if x is None:
        return None
    x = x[np.isfinite(x)]
    if len(np.unique(x)) <= MAX_UNBINNED_VALUES:
        return None
    if _is_age(name, x):
        # Closed decades around the data ("20-29" ... "90-99"); the open ends stay empty.
        lo = math.floor(x.min() / 10) * 10
        hi = math.floor(x.max() / 10) * 10 + 10
        return [float(e) for e in range(lo, hi + 1, 10)], "decades"
    qs = np.quantile(x, [0.2, 0.4, 0.6, 0.8])
    edges = sorted({_nice(q) for q in qs} - {_nice(x.min())} if len(qs) else set())
    edges = [e for e in edges if x.min() < e <= x.max()]
    return (edges, "quintiles") if edges else None


def _numeric(values: Any) -> np.ndarray | None:
    """The column as float64 when every non-missing value is a number (not bool), else None."""
    s = pd.Series(values).reset_index(drop=True)
    if isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(s.dtype):
        return None
    if not pd.api.types.is_numeric_dtype(s.dtype):
        kind = pd.api.types.infer_dtype(s, skipna=True)
        if kind not in ("integer", "floating", "mixed-integer-float", "decimal"):
            return None
    x = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
    return x if np.isfinite(x).any() else None


def check_attribute_bins(bins: Any, columns: Sequence[str] | None = None) -> list[str]:
    """Problems with an ``attribute_bins`` setting (one message each, empty when fine)."""
    if bins is None:
        return []
    if not isinstance(bins, Mapping):
        return [
            "attribute_bins: expected a mapping column -> edges (e.g. {'age': [0, 40, 65, 120]}"
            f"), got {type(bins).__name__}"
        ]
    problems = []
    for col, edges in bins.items():
        where = f"attribute_bins[{col!r}]"
        if columns is not None and col not in columns:
            problems.append(f"{where}: {col!r} is not a sensitive attribute ({list(columns)})")
        if edges is None or edges is False or edges == "auto" or edges == "none":
            continue
        if isinstance(edges, (str, bytes)) or not isinstance(edges, Sequence):
            problems.append(
                f"{where}: expected a list of increasing numbers, 'auto' or false, got {edges!r}"
            )
            continue
        try:
            e = [float(v) for v in edges]
        except (TypeError, ValueError):
            problems.append(f"{where}: edges must be numbers, got {list(edges)!r}")
            continue
        if not e or not all(np.isfinite(e)) or any(b <= a for a, b in zip(e, e[1:])):
            problems.append(f"{where}: edges must be finite and strictly increasing, got {e}")
    return problems


def bin_values(values: Any, name: str, edges: Any = "auto") -> tuple[pd.Series | None, dict]:
    """Bin one column: ``(labels or None when left alone, description)``.

    Parameters
    ----------
    values : array-like
        The column.
    name : str
        Its name (decides whether the age rule applies).
    edges : "auto", None, False, "none" or sequence of float
        ``"auto"``/None: the default rule; False/"none": no binning; numbers: these edges.
    """
    if edges is False or edges == "none":
        return None, {}
    if edges is None or edges == "auto":
        found = auto_edges(values, name)
        if found is None:
            return None, {}
        inner, rule = found
    else:
        if _numeric(values) is None:
            raise ValueError(f"attribute_bins[{name!r}]: the column {name!r} is not numeric.")
        inner, rule = [float(e) for e in edges], "given"
    x = _numeric(values)
    finite = x[np.isfinite(x)] if x is not None else np.zeros(0)
    whole = bool(_AGE_NAME.search(name)) or bool(np.all(finite == np.round(finite)))
    labels = bin_labels(values, inner, whole=whole)
    present = [g for g in _labels(inner, whole) if (labels == g).any()]
    n_values = int(pd.Series(values).nunique(dropna=True))
    note = (
        f"Attribute {name!r} ({n_values} distinct numeric values) was binned into "
        f"{len(present)} groups ({rule}: {', '.join(present)})"
        + (
            f"; set attribute_bins={{'{name}': [edges]}} to choose the bins, or false to keep "
            "the raw values."
            if rule != "given"
            else "."
        )
    )
    return labels, {
        "rule": rule,
        "edges": [float(e) for e in inner],
        "groups": present,
        "n_values": n_values,
        "note": note,
    }


def bin_attributes(
    table: pd.DataFrame, columns: Sequence[str], bins: Mapping[str, Any] | None = None
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Bin the numeric ``columns`` of ``table`` (a copy is returned when any changes).

    Returns
    -------
    (DataFrame, dict)
        The table (binned columns hold labels such as ``"60-69"``) and, per binned column,
        ``{"rule", "edges", "groups", "n_values", "note"}``.
    """
    bins = dict(bins or {})
    out = table
    done: dict[str, dict] = {}
    for col in columns:
        if col not in table.columns:
            continue  # reported by the caller's column check
        labels, info = bin_values(table[col], col, bins.get(col, "auto"))
        if labels is None:
            continue
        if out is table:
            out = table.copy()
        out[col] = labels.to_numpy(dtype=object)
        done[col] = info
    return out, done


def bin_manifest(manifest: Any, columns: Sequence[str], bins: Mapping[str, Any] | None = None):
    """A shallow copy of ``manifest`` with its numeric ``columns`` binned (see module rules).

    Returns ``(manifest, info)``; the manifest itself when nothing is binned.
    """
    import copy

    table, info = bin_attributes(manifest.table, columns, bins)
    if not info:
        return manifest, info
    out = copy.copy(manifest)
    out.table = table
    return out, info
