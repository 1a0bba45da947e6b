"""Turn user inputs (arrays, Series, DataFrames, dicts) into the arrays the audit works on."""

from __future__ import annotations

import itertools
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._common import GROUP_SEP, INTERSECTION_SEP, MISSING_GROUP, SubgroupWarning

#: A numeric attribute with more distinct values than this is probably a measurement (age in
#: years, a lab value) that needs binning before it can define subgroups.
MAX_NUMERIC_GROUPS = 20


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


# ------------------------------------------------------------------------------ group keys
def _value_kind(t: type) -> str:
    if issubclass(t, (bool, np.bool_)):
        return "bool"
    if issubclass(t, numbers.Real):  # int, float, numpy numbers, Fraction, ...
        return "number"
    if issubclass(t, (str, np.str_)):
        return "str"
    return "other"


def _number_text(x: Any) -> str:
    """Shortest decimal text of a real number; integral values without a decimal point."""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, np.floating) and x.dtype != np.float64:
        x = float(str(x))  # float32 0.1 -> 0.1, not 0.10000000149011612
    f = float(x)
    if np.isfinite(f) and f.is_integer() and abs(f) < 2**63:
        return str(int(f))
    return repr(f)


def _as_number(text: str) -> float | None:
    try:
        f = float(text)
    except ValueError:
        return None
    return f if np.isfinite(f) else None


_ONE_KIND = {
    "string": "str",
    "boolean": "bool",
    "integer": "number",
    "floating": "number",
    "mixed-integer-float": "number",
}


def _kinds(values: pd.Series) -> list[str]:
    """Kinds of the non-missing values ("bool", "number", "str", "other"), in a fixed order."""
    if values.dtype == object:
        # pandas' C-level inference answers the common one-kind columns without a row loop.
        inferred = pd.api.types.infer_dtype(values, skipna=True)
        if inferred in _ONE_KIND:
            found = {_ONE_KIND[inferred]}
        else:
            types = pd.unique(values[values.notna()].map(type))
            found = {_value_kind(t) for t in types}
    elif pd.api.types.is_bool_dtype(values.dtype):
        found = {"bool"}
    elif pd.api.types.is_numeric_dtype(values.dtype):
        found = {"number"}
    elif pd.api.types.is_string_dtype(values.dtype):
        found = {"str"}
    else:
        found = {"other"}
    if not values.notna().any():
        found = set()
    return [k for k in ("bool", "number", "str", "other") if k in found]


def normalise_attribute(values: Any) -> np.ndarray:
    """The canonical group name of every value of one attribute column (NaN where missing).

    This is the one rule by which xai_audit turns attribute values into subgroups (the audit,
    :func:`~xai_audit.fairness.evaluate_subgroups`, the report and the widgets all use it):

    * Missing values (None, NaN, ``pd.NA``, NaT) stay missing (:func:`group_keys` names them
      ``"missing"``).
    * Numbers are written in their shortest decimal form, integral values without a decimal
      point: ``1``, ``1.0`` and ``np.int64(1)`` all become ``"1"``; ``2.50`` becomes
      ``"2.5"``.
    * Booleans become ``"True"``/``"False"`` in a column of booleans only; in a column that
      also holds numbers (or strings that read as numbers) they are the numbers 1 and 0, so
      ``1``, ``1.0`` and ``True`` form the one group ``"1"``.
    * Strings are kept as they are, less surrounding whitespace. In a column that also holds
      numbers or booleans, a string that reads as a finite number joins that number
      (``"1"`` and ``1`` -> ``"1"``); in a column of strings only, strings are labels and are
      never reinterpreted (``"01"`` and ``"1"`` stay two groups).
    * Anything else (dates, ...) is written with ``str``.

    Categorical columns are normalised through their categories. A column that mixes kinds
    (numbers, booleans, strings) is legal but suspicious: :func:`attribute_notes` warns about
    it, naming the column.

    Parameters
    ----------
    values : array-like or pandas.Series
        One attribute column.

    Returns
    -------
    numpy.ndarray
        Object array of str, NaN where the value is missing.
    """
    s = pd.Series(values).reset_index(drop=True)
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = normalise_attribute(pd.Series(s.cat.categories.to_numpy(dtype=object)))
        out = np.full(len(s), np.nan, dtype=object)
        codes = s.cat.codes.to_numpy()
        out[codes >= 0] = cats[codes[codes >= 0]]
        return out
    missing = s.isna().to_numpy()
    out = np.full(len(s), np.nan, dtype=object)
    if missing.all():
        return out
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        # A numeric column: one name per distinct value (keeps float32 values' short form).
        uniq, inv = np.unique(s.to_numpy()[~missing], return_inverse=True)
        out[~missing] = np.asarray([_number_text(u) for u in uniq], dtype=object)[inv]
        return out
    s = s.astype(object)
    kinds = set(_kinds(s))
    present = s[~missing]
    # Group equal values first so the per-value Python work below is per distinct value only.
    # (factorize treats 1, 1.0 and True as one value, which the rule merges anyway.)
    codes, uniques = pd.factorize(present.to_numpy(dtype=object))
    numeric_strings = False
    if "str" in kinds and kinds & {"number", "bool"}:
        numeric_strings = any(
            isinstance(u, (str, np.str_)) and _as_number(u) is not None for u in uniques
        )
    numbers_present = "number" in kinds or numeric_strings
    names = []
    for u in uniques:
        kind = _value_kind(type(u))
        if kind == "bool":
            names.append(str(int(u)) if numbers_present else str(bool(u)))
        elif kind == "number":
            names.append(_number_text(u))
        elif kind == "str":
            text = str(u).strip()
            number = _as_number(text) if kinds & {"number", "bool"} else None
            names.append(_number_text(number) if number is not None else text)
        else:
            names.append(str(u))
    out[~missing] = np.asarray(names, dtype=object)[codes]
    return out


def group_keys(values: Any) -> np.ndarray:
    """Group name of every row of one attribute column: :func:`normalise_attribute`, with
    missing values named ``"missing"``.

    Parameters
    ----------
    values : array-like or pandas.Series
        One attribute column.

    Returns
    -------
    numpy.ndarray
        Object array of str.
    """
    out = normalise_attribute(values)
    out[pd.isna(out)] = MISSING_GROUP
    return out


def attribute_notes(values: Any, name: str, keys: np.ndarray | None = None) -> list[str]:
    """Warnings about one attribute column used to define subgroups.

    * the column mixes value kinds (numbers, booleans, strings): the groups follow
      :func:`normalise_attribute`, which may not be what was meant;
    * every case has the same value: no disparity can be assessed;
    * a numeric column with more than :data:`MAX_NUMERIC_GROUPS` distinct values: every
      value would be its own subgroup (e.g. age in years); bin it first.

    Parameters
    ----------
    values : array-like or pandas.Series
        The column.
    name : str
        Its name, used in the messages.
    keys : numpy.ndarray, optional
        ``group_keys(values)`` when already computed.

    Returns
    -------
    list of str
        One message per problem; empty when there is none.
    """
    s = pd.Series(values).reset_index(drop=True)
    notes = []
    kinds = _kinds(s.astype(object) if not isinstance(s.dtype, pd.CategoricalDtype) else s)
    if len(kinds) > 1:
        notes.append(
            f"Attribute {name!r} mixes value types ({', '.join(kinds)}); values equal as "
            "numbers or booleans were put in one group (1, 1.0, True and '1' -> '1'). Convert "
            "the column to one type (e.g. df[col].astype(str) or pd.to_numeric) to make the "
            "groups explicit."
        )
    keys = group_keys(s) if keys is None else np.asarray(keys, dtype=object)
    distinct = pd.unique(keys)
    if len(distinct) == 1 and len(keys):
        notes.append(
            f"Disparity for {name} cannot be assessed: every case has {name}={distinct[0]}. "
            "Audit a data set with more than one group, or drop the attribute."
        )
    n_numeric = len(pd.unique(keys[keys != MISSING_GROUP]))
    if kinds == ["number"] and n_numeric > MAX_NUMERIC_GROUPS:
        notes.append(
            f"Attribute {name!r} has {n_numeric} distinct numeric values, so every value "
            f"would be its own subgroup; bin it first: Audit(..., attribute_bins={{'{name}': "
            "'auto'}) (config key attribute_bins) or e.g. "
            f"attribute_bins={{'{name}': [0, 40, 65, 120]}}."
        )
    return notes


def as_attribute_frame(sensitive_features: Any, n_rows: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """Return attributes as group names (:func:`group_keys`), missing values as ``"missing"``.

    Also returns the number of missing values per attribute (so they can be reported, never
    dropped silently). Emits a :class:`SubgroupWarning` for each problem
    :func:`attribute_notes` finds (mixed value types, a single group, a numeric column with
    many values).
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
        values = frame[col]
        n_missing[col] = int(values.isna().sum())
        out[col] = group_keys(values)
        for note in attribute_notes(values, col, out[col]):
            warnings.warn(note, SubgroupWarning, stacklevel=3)
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
    elif isinstance(intersections, int):  # up to that many attributes: 3 adds three-way cells
        if intersections < 2:
            raise ValueError(f"intersections as a number must be >= 2, got {intersections}")
        combos = [
            c for k in range(2, intersections + 1) for c in itertools.combinations(columns, k)
        ]
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
