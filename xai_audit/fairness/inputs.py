"""Turn user inputs (arrays, Series, DataFrames, dicts) into the arrays the audit works on."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._common import GROUP_SEP, INTERSECTION_SEP, MISSING_GROUP


@dataclass(frozen=True)
class GroupSpec:
    """One way of splitting the data: a single attribute or an intersection of several."""

    columns: tuple[str, ...]

    @property
    def name(self) -> str:
        """Display name, e.g. ``"sex"`` or ``"sex × age_group"``."""
        return INTERSECTION_SEP.join(self.columns)


@dataclass(frozen=True)
class Group:
    """One subgroup: its attribute (spec), its name and the rows it holds."""

    spec_index: int
    attribute: str
    name: str
    rows: np.ndarray  # int64 row indices, ascending


def as_label_matrix(
    y_true: Any, y_score: Any, label_names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return ``(Y, S, names)`` with ``Y`` int8 and ``S`` float64, both (N, L)."""
    names_from_frame = list(y_score.columns) if isinstance(y_score, pd.DataFrame) else None
    if names_from_frame is None and isinstance(y_true, pd.DataFrame):
        names_from_frame = list(y_true.columns)
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if s.ndim == 1:
        s = s[:, None]
    if y.ndim != 2 or s.ndim != 2 or y.shape != s.shape:
        raise ValueError(
            f"y_true and y_score must both have shape (N,) or (N, L); got {np.shape(y_true)} "
            f"and {np.shape(y_score)}"
        )
    if y.shape[0] == 0:
        raise ValueError("y_true is empty")
    if not np.isfinite(s).all():
        raise ValueError("y_score contains NaN or infinite values")
    yf = y.astype(np.float64)
    if not np.isin(yf, (0.0, 1.0)).all():
        raise ValueError("y_true must contain only 0 and 1 (one-vs-rest for multi-class models)")
    n_labels = y.shape[1]
    if label_names is not None:
        names = [str(n) for n in label_names]
    elif names_from_frame is not None:
        names = [str(n) for n in names_from_frame]
    elif n_labels == 1:
        names = ["y"]
    else:
        names = [f"label_{i}" for i in range(n_labels)]
    if len(names) != n_labels or len(set(names)) != n_labels:
        raise ValueError(f"label_names must be {n_labels} distinct names; got {names}")
    return yf.astype(np.int8), s, names


def as_attribute_frame(sensitive_features: Any, n_rows: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """Return attributes as a string DataFrame with NaN/None replaced by ``"missing"``.

    Also returns the number of missing values per attribute (so they can be reported, never
    dropped silently).
    """
    if isinstance(sensitive_features, pd.DataFrame):
        frame = sensitive_features.reset_index(drop=True)
    elif isinstance(sensitive_features, pd.Series):
        frame = sensitive_features.reset_index(drop=True).to_frame(
            name=sensitive_features.name if sensitive_features.name is not None else "attribute"
        )
    elif isinstance(sensitive_features, Mapping):
        frame = pd.DataFrame(
            {str(k): np.asarray(v, dtype=object) for k, v in sensitive_features.items()}
        )
    else:
        arr = np.asarray(sensitive_features, dtype=object)
        if arr.ndim == 1:
            arr = arr[:, None]
        frame = pd.DataFrame(arr, columns=[f"attribute_{i}" for i in range(arr.shape[1])])
    if frame.shape[1] == 0:
        raise ValueError("sensitive_features has no columns")
    if len(frame) != n_rows:
        raise ValueError(f"sensitive_features has {len(frame)} rows, y_true has {n_rows}")
    frame.columns = [str(c) for c in frame.columns]
    if len(set(frame.columns)) != frame.shape[1]:
        raise ValueError("sensitive_features has duplicate column names")
    out = {}
    n_missing = {}
    for col in frame.columns:
        values = frame[col].astype(object)
        missing = values.isna().to_numpy()
        n_missing[col] = int(missing.sum())
        as_str = values.map(str).to_numpy(dtype=object)
        as_str[missing] = MISSING_GROUP
        out[col] = as_str
    return pd.DataFrame(out), n_missing


def as_clusters(patient_id: Any, n_rows: int) -> tuple[np.ndarray, int]:
    """Map rows to resampling units: patients when given, else each row on its own.

    Rows with a missing patient id are treated as patients of their own.
    """
    if patient_id is None:
        return np.arange(n_rows, dtype=np.int64), n_rows
    pid = pd.Series(np.asarray(patient_id, dtype=object).ravel())
    if len(pid) != n_rows:
        raise ValueError(f"patient_id has {len(pid)} values, y_true has {n_rows}")
    codes, uniques = pd.factorize(pid, use_na_sentinel=True)
    codes = codes.astype(np.int64)
    missing = codes < 0
    n = len(uniques)
    codes[missing] = n + np.arange(int(missing.sum()))
    return codes, n + int(missing.sum())


def as_specs(columns: Sequence[str], intersections: Any) -> list[GroupSpec]:
    """Single attributes first, then the requested intersections."""
    specs = [GroupSpec((c,)) for c in columns]
    if intersections is True:
        combos = list(itertools.combinations(columns, 2))
    elif intersections is False or intersections is None:
        combos = []
    else:
        combos = [tuple(str(c) for c in combo) for combo in intersections]
    for combo in combos:
        unknown = [c for c in combo if c not in columns]
        if unknown:
            raise ValueError(f"intersection {combo} names unknown attributes {unknown}")
        if len(combo) < 2 or len(set(combo)) != len(combo):
            raise ValueError(f"an intersection needs two or more distinct attributes; got {combo}")
        spec = GroupSpec(tuple(combo))
        if spec not in specs:
            specs.append(spec)
    return specs


def enumerate_groups(attrs: pd.DataFrame, specs: Sequence[GroupSpec]) -> list[Group]:
    """All groups of all specs, in sorted group order (the order MetricFrame uses)."""
    groups: list[Group] = []
    for k, spec in enumerate(specs):
        keys = attrs[spec.columns[0]].to_numpy(dtype=object)
        for col in spec.columns[1:]:
            # object arrays concatenate element-wise; far faster than a row-wise apply
            keys = keys + GROUP_SEP + attrs[col].to_numpy(dtype=object)
        codes, uniques = pd.factorize(keys, sort=True)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
        for j, name in enumerate(uniques):
            rows = np.sort(order[bounds[j] : bounds[j + 1]])
            groups.append(Group(k, spec.name, str(name), rows))
    return groups
