"""Subgroups for breakdowns: single attributes and pairwise intersections.

Naming follows the fairness module's convention so that tables line up: an intersection's
attribute label is ``"sex × age_group"`` and its group label ``"F | 65+"``; a missing value
is its own explicit group ``"missing"`` (never silently dropped).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

MISSING = "missing"
ATTRIBUTE_SEP = " × "
GROUP_SEP = " | "


@dataclass(frozen=True)
class Group:
    """One subgroup: its attribute label, group label and row mask."""

    attribute: str
    group: str
    mask: np.ndarray

    @property
    def n(self) -> int:
        return int(self.mask.sum())


def group_labels(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """String labels per row (missing -> ``"missing"``) and the groups in display order.

    Categorical columns keep their category order; others are sorted; ``"missing"`` is last.
    """
    from ..fairness.inputs import group_keys, normalise_attribute

    values = column.reset_index(drop=True)
    isna = values.isna().to_numpy()
    # Group names follow the one rule of xai_audit.fairness.inputs.normalise_attribute.
    labels = group_keys(values)
    if isinstance(values.dtype, pd.CategoricalDtype):
        order = list(dict.fromkeys(normalise_attribute(values.cat.categories.to_series())))
    else:  # each group sorted by the raw value of its first case (numbers numerically)
        names, first = np.unique(labels[~isna].astype(str), return_index=True)
        raw = values[~isna].to_numpy(dtype=object)[first]
        try:
            ranked = sorted(zip(raw, names))
        except TypeError:
            ranked = sorted(zip(raw, names), key=lambda p: (str(p[0]), p[1]))
        order = [str(name) for _, name in ranked]
    present = set(labels.tolist())
    order = [o for o in order if o in present]
    if isna.any():
        order.append(MISSING)
    return labels, order


def iter_groups(
    attributes: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    intersections: bool | Sequence[tuple[str, str]] = True,
) -> Iterator[Group]:
    """Yield every subgroup of each attribute, then of each pairwise intersection.

    Parameters
    ----------
    attributes : DataFrame
        One row per image (row order is what counts; the index is ignored).
    columns : sequence of str, optional
        Attributes to use; default all columns.
    intersections : bool or sequence of (str, str), default True
        ``True``: all pairs of ``columns``; a list: those pairs only; ``False``: none.
        Empty intersections are skipped.
    """
    if not isinstance(attributes, pd.DataFrame):
        raise TypeError(f"attributes must be a pandas DataFrame, got {type(attributes).__name__}.")
    columns = list(attributes.columns if columns is None else columns)
    missing = [c for c in columns if c not in attributes.columns]
    if missing:
        raise KeyError(
            f"Attributes {missing} are not columns of the table ({list(attributes.columns)})."
        )
    labelled = {c: group_labels(attributes[c]) for c in columns}
    for c in columns:
        labels, order = labelled[c]
        for g in order:
            yield Group(c, g, labels == g)
    if intersections is True:
        pairs: list[tuple[str, str]] = list(combinations(columns, 2))
    elif intersections is False or intersections is None:
        pairs = []
    else:
        pairs = [tuple(p) for p in intersections]  # type: ignore[misc]
    for a, b in pairs:
        for col in (a, b):
            if col not in labelled:
                if col not in attributes.columns:
                    raise KeyError(f"Intersection attribute {col!r} is not a column.")
                labelled[col] = group_labels(attributes[col])
        (la, oa), (lb, ob) = labelled[a], labelled[b]
        for ga in oa:
            for gb in ob:
                mask = (la == ga) & (lb == gb)
                if mask.any():
                    yield Group(f"{a}{ATTRIBUTE_SEP}{b}", f"{ga}{GROUP_SEP}{gb}", mask)
