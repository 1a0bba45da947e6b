"""Any per-image quality number broken down by subgroup and intersection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .groups import iter_groups
from .stats import bootstrap_ci


def by_subgroup(
    per_image: pd.DataFrame,
    attributes: pd.DataFrame,
    value_cols: Sequence[str],
    intersections: bool | Sequence[tuple[str, str]] = True,
    *,
    columns: Sequence[str] | None = None,
    overall: bool = True,
    ci: float = 0.95,
    n_boot: int = 1000,
    random_state: int = 0,
) -> pd.DataFrame:
    """Mean of each per-image metric per subgroup, with a bootstrap CI across images.

    Parameters
    ----------
    per_image : DataFrame
        One row per image, in the same order as ``attributes`` (e.g.
        :meth:`FaithfulnessResult.wide`, :attr:`LocalisationResult.per_image`, or a frame
        of shortcut shares).
    attributes : DataFrame
        Subgroup attributes per image (row order is what counts).
    value_cols : sequence of str
        Metric columns of ``per_image``.
    intersections : bool or sequence of pairs, default True
        Pairwise intersections too (labels ``"sex × age_group"`` / ``"F | 65+"``).
    columns : sequence of str, optional
        Attributes to use (default all of ``attributes``).
    overall : bool, default True
        Add a first row per metric with attribute ``"overall"`` and group ``"all"``.
    ci, n_boot, random_state
        Bootstrap settings. NaN values (undefined metrics) are left out and counted in
        ``n_missing``.

    Returns
    -------
    DataFrame
        Tidy: ``attribute, group, n, metric, mean, ci_low, ci_high, n_missing``.
    """
    if len(per_image) != len(attributes):
        raise ValueError(
            f"per_image has {len(per_image)} rows but attributes has {len(attributes)}; "
            "give one row per image in both, in the same order."
        )
    value_cols = [value_cols] if isinstance(value_cols, str) else list(value_cols)
    missing = [c for c in value_cols if c not in per_image.columns]
    if missing:
        raise KeyError(f"Columns {missing} are not in per_image ({list(per_image.columns)}).")
    values = {c: per_image[c].to_numpy(dtype=np.float64) for c in value_cols}
    groups: list[tuple[str, str, np.ndarray]] = []
    if overall:
        groups.append(("overall", "all", np.ones(len(per_image), dtype=bool)))
    groups += [
        (g.attribute, g.group, g.mask)
        for g in iter_groups(attributes, columns, intersections=intersections)
    ]
    rows: list[dict[str, Any]] = []
    for metric in value_cols:
        v = values[metric]
        for attribute, group, mask in groups:
            sel = v[mask]
            est, low, high = bootstrap_ci(sel, ci=ci, n_boot=n_boot, random_state=random_state)
            finite = int(np.isfinite(sel).sum())
            rows.append(
                {
                    "attribute": attribute,
                    "group": group,
                    "n": finite,
                    "metric": metric,
                    "mean": est,
                    "ci_low": low,
                    "ci_high": high,
                    "n_missing": int(sel.size - finite),
                }
            )
    return pd.DataFrame(rows)
