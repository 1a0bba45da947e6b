"""Small statistics used by every quality metric: bootstrap CIs, Holm, map similarity."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage, stats


def bootstrap_ci(
    values: np.ndarray,
    *,
    ci: float = 0.95,
    n_boot: int = 1000,
    random_state: int | np.random.Generator | None = 0,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[float, float, float]:
    """Percentile bootstrap CI of the mean (or ``statistic``) across items, ignoring NaN.

    Parameters
    ----------
    values : array-like, shape (N,)
    ci : float, default 0.95
    n_boot : int, default 1000
    random_state : int or Generator, default 0
    statistic : callable, optional
        Reduces a ``n_boot x n`` array along axis 1; default the mean.

    Returns
    -------
    (estimate, ci_low, ci_high)
        NaN when no finite values remain; the CI is NaN for fewer than two values.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    stat = statistic or (lambda a: np.mean(a, axis=-1))
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    estimate = float(stat(x[None])[0])
    if x.size < 2:
        return estimate, float("nan"), float("nan")
    rng = np.random.default_rng(random_state)
    # All resamples at once: n_boot x n indices (n is images, so this stays small).
    draws = stat(x[rng.integers(0, x.size, size=(n_boot, x.size))])
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return estimate, float(low), float(high)


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN entries stay NaN and are not counted)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation between matching rows of two ``N x ...`` arrays.

    Vectorised: ranks (ties averaged) per row, then Pearson per row. Rows where either map
    is constant give NaN (a rank correlation is undefined there).
    """
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    ra = stats.rankdata(a, axis=1)
    rb = stats.rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ra * rb).sum(axis=1) / denom
    r[denom == 0] = np.nan
    return r


def normalise_unit(maps: np.ndarray) -> np.ndarray:
    """``|map| / max |map|`` per image (all-zero maps stay zero)."""
    a = np.abs(np.asarray(maps, dtype=np.float64))
    peak = a.reshape(len(a), -1).max(axis=1)
    peak = np.where(peak > 0, peak, 1.0)
    return a / peak.reshape((-1,) + (1,) * (a.ndim - 1))


def ssim_rows(
    a: np.ndarray, b: np.ndarray, *, sigma: float = 1.5, data_range: float = 1.0
) -> np.ndarray:
    """Mean structural similarity (Wang et al., 2004) between matching maps.

    Hand-written with a Gaussian window (sigma 1.5, truncated at 11 px, K1=0.01, K2=0.03,
    as in the paper and scikit-image's ``gaussian_weights=True``) so that the package does
    not depend on scikit-image for this one function. Maps are compared as given, so
    normalise them first (see :func:`normalise_unit`).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    spatial = a.ndim - 1
    sig = (0.0,) + (sigma,) * spatial  # no smoothing across images

    def filt(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, sigma=sig, truncate=3.5, mode="reflect")

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_a, mu_b = filt(a), filt(b)
    # Population (not sample) covariance, as Wang et al. and skimage's gaussian_weights=True.
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).reshape(len(a), -1).mean(axis=1)


def mann_whitney_greater(x: np.ndarray, y: np.ndarray) -> float:
    """One-sided Mann–Whitney U p-value for ``x`` tending to exceed ``y`` (NaN if undefined)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:
        return float("nan")
    if np.ptp(np.concatenate([x, y])) == 0:
        return 1.0
    return float(stats.mannwhitneyu(x, y, alternative="greater").pvalue)


def format_p(p: float) -> str:
    """``p<0.001`` / ``p=0.012`` for plain-language messages."""
    if not np.isfinite(p):
        return "p=n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"
