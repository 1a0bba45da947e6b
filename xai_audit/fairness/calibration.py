"""Calibration: reliability-curve bins and expected calibration error (ECE).

Binning follows :func:`sklearn.calibration.calibration_curve` with ``strategy="uniform"``:
``n_bins`` equal-width bins on [0, 1]; a score on an inner edge goes to the lower bin (so bin 0
is ``[0, 1/n]`` and bin b > 0 is ``(b/n, (b+1)/n]``).

ECE is the count-weighted mean absolute gap between mean predicted probability and observed
fraction of positives over the non-empty bins::

    ECE = sum_b (n_b / N) * |mean_predicted_b - fraction_positive_b|

Empty bins contribute nothing. Scores must be probabilities in [0, 1].
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def bin_edges(n_bins: int) -> np.ndarray:
    """Equal-width bin edges on [0, 1] (``n_bins + 1`` values)."""
    return np.linspace(0.0, 1.0, n_bins + 1)


def bin_ids(y_score: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index of each score, using calibration_curve's convention."""
    return np.searchsorted(bin_edges(n_bins)[1:-1], np.asarray(y_score, dtype=np.float64))


def reliability_bins(y_true: np.ndarray, y_score: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Reliability-curve data for one set of cases.

    Parameters
    ----------
    y_true : array of shape (N,)
        Binary labels.
    y_score : array of shape (N,)
        Predicted probabilities in [0, 1].
    n_bins : int
        Number of equal-width bins.

    Returns
    -------
    DataFrame
        One row per bin: ``bin``, ``bin_low``, ``bin_high``, ``count``, ``mean_predicted``,
        ``fraction_positive`` (NaN for empty bins). For the non-empty bins the last two equal
        :func:`sklearn.calibration.calibration_curve`'s ``prob_pred`` and ``prob_true``.
    """
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    ids = bin_ids(s, n_bins)
    count = np.bincount(ids, minlength=n_bins).astype(np.float64)
    sum_score = np.bincount(ids, weights=s, minlength=n_bins)
    sum_pos = np.bincount(ids, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.where(count > 0, sum_score / count, np.nan)
        frac_pos = np.where(count > 0, sum_pos / count, np.nan)
    edges = bin_edges(n_bins)
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins),
            "bin_low": edges[:-1],
            "bin_high": edges[1:],
            "count": count.astype(np.int64),
            "mean_predicted": mean_pred,
            "fraction_positive": frac_pos,
        }
    )


def expected_calibration_error(y_true: np.ndarray, y_score: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error with equal-width bins (see the module docstring).

    Parameters
    ----------
    y_true : array of shape (N,)
        Binary labels.
    y_score : array of shape (N,)
        Predicted probabilities in [0, 1].
    n_bins : int
        Number of equal-width bins.

    Returns
    -------
    float
        ECE in [0, 1]; NaN for an empty input.
    """
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    if y.size == 0:
        return float("nan")
    ids = bin_ids(s, n_bins)
    # sum_b (n_b/N)|sum_s/n_b - sum_y/n_b| = sum_b |sum_s - sum_y| / N: no division per bin.
    gap = np.bincount(ids, weights=s, minlength=n_bins) - np.bincount(
        ids, weights=y, minlength=n_bins
    )
    return float(np.abs(gap).sum() / y.size)
