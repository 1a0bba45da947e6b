"""Binomial intervals for proportions where the percentile bootstrap degenerates.

A percentile bootstrap interval of a proportion collapses to a single point when the observed
proportion is 0 or 1: every resample of 40 detected positives detects all of them, so a
sensitivity of 1.000 gets the interval 1.000-1.000, which claims a certainty that 40 cases
cannot give. For those cells (and any other zero-width bootstrap interval of a proportion)
this module substitutes a binomial interval computed from the counts:

* ``"clopper-pearson"`` (default): the exact interval from beta quantiles; it never covers
  less than the nominal level, the conservative choice for a report a regulator reads.
* ``"wilson"``: the score interval (Wilson 1927).

Images of one patient are not independent. When patient ids are known, the binomial count is
the number of distinct patients among the images of the metric's denominator (the successes
scaled in proportion), which widens the interval: the count of independent units lies between
the two. The interior cells keep their (patient-level) bootstrap interval; each row records
which method produced it in ``ci_method``.

scipy's :func:`scipy.stats.binomtest` gives both intervals for one count at a time; the
vectorised forms here are written out (and tested against it) so that a table of hundreds of
cells needs one call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

#: Proportion metrics and the cases that form their denominator.
DENOMINATORS: dict[str, str] = {
    "prevalence": "all",
    "accuracy": "all",
    "selection_rate": "all",
    "sensitivity": "positive",
    "fnr": "positive",
    "specificity": "negative",
    "fpr": "negative",
    "ppv": "predicted_positive",
    "npv": "predicted_negative",
}
METHODS = ("clopper-pearson", "wilson")


def wilson_interval(k: Any, n: Any, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of ``k`` successes in ``n`` trials (vectorised).

    Parameters
    ----------
    k, n : array-like
        Successes and trials (``k`` may be fractional: scaled counts); NaN where ``n == 0``.
    ci : float
        Confidence level.

    Returns
    -------
    (ndarray, ndarray)
        Lower and upper bounds, clipped to [0, 1].
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = stats.norm.ppf(0.5 + ci / 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denom
        half = z * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    lo, hi = np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
    bad = ~(n > 0)
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def clopper_pearson_interval(k: Any, n: Any, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) interval of ``k`` successes in ``n`` trials (vectorised).

    ``lower = Beta(alpha/2; k, n-k+1)`` (0 when ``k == 0``) and
    ``upper = Beta(1-alpha/2; k+1, n-k)`` (1 when ``k == n``).
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    alpha = 1.0 - ci
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, stats.beta.ppf(alpha / 2.0, k, n - k + 1.0), 0.0)
        hi = np.where(k < n, stats.beta.ppf(1.0 - alpha / 2.0, k + 1.0, n - k), 1.0)
    bad = ~(n > 0)
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def proportion_interval(
    k: Any, n: Any, ci: float = 0.95, method: str = "clopper-pearson"
) -> tuple[np.ndarray, np.ndarray]:
    """Binomial interval by name (``"clopper-pearson"`` or ``"wilson"``)."""
    if method == "clopper-pearson":
        return clopper_pearson_interval(k, n, ci)
    if method == "wilson":
        return wilson_interval(k, n, ci)
    raise ValueError(f"unknown interval method {method!r}; choose from {list(METHODS)}")


def _denominator_masks(y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "all": np.ones(y.shape, dtype=bool),
        "positive": y == 1,
        "negative": y == 0,
        "predicted_positive": pred,
        "predicted_negative": ~pred,
    }


def _successes(metric: str, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-row success indicator of a proportion metric (within its denominator)."""
    return {
        "prevalence": y == 1,
        "accuracy": pred == (y == 1),
        "selection_rate": pred,
        "sensitivity": pred,
        "fnr": ~pred,
        "specificity": ~pred,
        "fpr": pred,
        "ppv": y == 1,
        "npv": y == 0,
    }[metric]


def cell_counts(
    y: np.ndarray, pred: np.ndarray, units: np.ndarray | None = None
) -> dict[str, tuple[float, float, int, int]]:
    """For each proportion metric: (effective successes, effective trials, k, n).

    With ``units`` (patient ids, one per row) the effective trials are the distinct units of
    the denominator and the effective successes ``k * units / n``.
    """
    y = np.asarray(y).astype(np.int64)
    pred = np.asarray(pred, dtype=bool)
    masks = _denominator_masks(y, pred)
    out = {}
    for metric, denom in DENOMINATORS.items():
        mask = masks[denom]
        n = int(mask.sum())
        k = int((_successes(metric, y, pred) & mask).sum())
        if units is not None and n:
            m = int(pd.unique(np.asarray(units, dtype=object)[mask]).size)
            out[metric] = (k * m / n, float(m), k, n)
        else:
            out[metric] = (float(k), float(n), k, n)
    return out


def degenerate(value: Any, low: Any, high: Any) -> np.ndarray:
    """Where a bootstrap interval of a proportion cannot be trusted: at 0 or 1, or zero width."""
    v, lo, hi = (np.asarray(a, dtype=np.float64) for a in (value, low, high))
    finite = np.isfinite(v) & np.isfinite(lo) & np.isfinite(hi)
    at_edge = np.isclose(v, 0.0, atol=1e-12) | np.isclose(v, 1.0, atol=1e-12)
    return finite & (at_edge | np.isclose(lo, hi, rtol=0.0, atol=1e-12))


def replace_degenerate(
    table: pd.DataFrame,
    counts: Mapping[tuple[str, str], Mapping[str, tuple[float, float, int, int]]],
    ci: float = 0.95,
    method: str = "clopper-pearson",
    key_cols: tuple[str, str] = ("attribute", "group"),
) -> pd.DataFrame:
    """A copy of a metric table with binomial intervals where the bootstrap degenerates.

    Parameters
    ----------
    table : DataFrame
        Rows with ``metric``, ``value``, ``ci_low``, ``ci_high`` and the ``key_cols``.
    counts : mapping
        ``(attribute, group) -> cell_counts(...)`` for every group of the table.
    ci : float
        Confidence level.
    method : {"clopper-pearson", "wilson"}
    key_cols : (str, str)
        Columns naming the group of a row.

    Returns
    -------
    DataFrame
        With the interval replaced where :func:`degenerate`, and a ``ci_method`` column:
        ``"bootstrap"``, ``method`` for a replaced interval, or ``None`` without interval.
    """
    out = table.copy()
    if out.empty:
        out["ci_method"] = pd.Series(dtype=object)
        return out
    has_ci = np.isfinite(out["ci_low"].to_numpy(dtype=np.float64))
    ci_method = np.where(has_ci, "bootstrap", None).astype(object)
    mask = (
        degenerate(out["value"], out["ci_low"], out["ci_high"])
        & out["metric"].isin(DENOMINATORS).to_numpy()
    )
    idx = np.flatnonzero(mask)
    if idx.size:
        keys = out[list(key_cols)].to_numpy(dtype=object)[idx]
        metrics = out["metric"].to_numpy(dtype=object)[idx]
        kn = np.array(
            [counts[(str(a), str(g))][m][:2] for (a, g), m in zip(keys, metrics)],
            dtype=np.float64,
        ).reshape(-1, 2)
        lo, hi = proportion_interval(kn[:, 0], kn[:, 1], ci, method)
        out.iloc[idx, out.columns.get_loc("ci_low")] = lo
        out.iloc[idx, out.columns.get_loc("ci_high")] = hi
        ci_method[idx] = method
    out["ci_method"] = ci_method
    return out


def calibration_bands(
    calibration: pd.DataFrame, ci: float = 0.95, method: str = "clopper-pearson"
) -> pd.DataFrame:
    """Add a binomial interval of each bin's observed fraction positive (``ci_low/ci_high``).

    Image-level counts (a bin's cases are rarely several images of one patient); empty bins
    get NaN.
    """
    out = calibration.copy()
    n = out["count"].to_numpy(dtype=np.float64)
    k = np.round(out["fraction_positive"].to_numpy(dtype=np.float64) * n)
    lo, hi = proportion_interval(np.where(n > 0, k, 0.0), n, ci, method)
    out["ci_low"], out["ci_high"] = lo, hi
    out["ci_method"] = np.where(n > 0, method, None).astype(object)
    return out


def apply_to_subgroups(
    res: Any, patient_ids: Any = None, method: str = "clopper-pearson"
) -> dict[str, pd.DataFrame]:
    """Boundary-safe ``overall``, ``by_group`` and ``calibration`` tables of a SubgroupResult.

    Post-processes :func:`~xai_audit.fairness.evaluate_subgroups`' output (the bootstrap
    itself is untouched, and so are the gap intervals and flags).

    Returns
    -------
    dict
        ``{"overall", "by_group", "calibration"}`` DataFrames.
    """
    from ._common import OVERALL_ATTRIBUTE, OVERALL_GROUP

    ci = float(res.config.get("ci", 0.95))
    labels = list(res.config.get("labels") or [])
    units = None if patient_ids is None else np.asarray(patient_ids, dtype=object)
    overall_parts, group_parts = [], []
    for li, label in enumerate(labels):
        y = res._y_true[:, li]
        pred = res._y_score[:, li] >= res.thresholds[label].value
        counts = {
            key: cell_counts(y[rows], pred[rows], None if units is None else units[rows])
            for key, rows in res._group_rows.items()
        }
        ov = res.overall[res.overall["label"] == label].assign(
            attribute=OVERALL_ATTRIBUTE, group=OVERALL_GROUP
        )
        ov = replace_degenerate(ov, counts, ci, method).drop(columns=["attribute", "group"])
        overall_parts.append(ov)
        group_parts.append(
            replace_degenerate(res.by_group[res.by_group["label"] == label], counts, ci, method)
        )
    overall = pd.concat(overall_parts) if overall_parts else res.overall.assign(ci_method=None)
    by_group = pd.concat(group_parts) if group_parts else res.by_group.assign(ci_method=None)
    cal = res.calibration
    if len(cal):
        cal = calibration_bands(cal, ci, method)
    return {
        "overall": overall.sort_index(),
        "by_group": by_group.sort_index(),
        "calibration": cal,
    }
