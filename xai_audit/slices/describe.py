"""Describe discovered slices: recorded attributes and simple image statistics vs the rest."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.ndimage import convolve, laplace

from ..fairness.inputs import group_keys

#: Per-image statistics computed by :func:`image_statistics`.
IMAGE_STATISTICS = ("brightness", "contrast", "sharpness", "noise")
#: Immerkaer's noise kernel: the difference of two Laplacians, blind to linear ramps.
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def _planes(images: np.ndarray) -> np.ndarray:
    """``N x H x W`` grey planes: channels averaged, the middle slice of volumes."""
    a = np.asarray(images, dtype=np.float32)
    if a.ndim == 3:
        return a
    if a.ndim == 4:  # N x C x H x W
        return a.mean(axis=1)
    if a.ndim == 5:  # N x C x D x H x W
        return a.mean(axis=1)[:, a.shape[2] // 2]
    raise ValueError(f"images must be N x H x W, N x C x H x W or N x C x D x H x W; got {a.shape}")


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Brightness, contrast, sharpness and noise of each image (batched).

    Parameters
    ----------
    images : numpy.ndarray
        ``N x H x W``, ``N x C x H x W`` or ``N x C x D x H x W`` (channels are averaged, the
        middle slice of a volume is used), in the model's input intensity scale.

    Returns
    -------
    dict of str to numpy.ndarray
        float32 arrays of length N: ``brightness`` (mean), ``contrast`` (standard deviation),
        ``sharpness`` (variance of the Laplacian, the common focus measure of Pech-Pacheco et
        al. 2000) and ``noise`` (Immerkaer 1996 fast estimate of the Gaussian noise sigma).
    """
    a = _planes(images)
    n, h, w = a.shape
    if n == 0:
        return {k: np.zeros(0, np.float32) for k in IMAGE_STATISTICS}
    flat = a.reshape(n, -1)
    lap = laplace(a, mode="nearest", axes=(1, 2))[:, 1:-1, 1:-1]
    conv = convolve(a, _NOISE_KERNEL[None], mode="nearest")[:, 1:-1, 1:-1]
    noise = np.sqrt(np.pi / 2.0) * np.abs(conv).reshape(n, -1).sum(axis=1)
    noise /= 6.0 * max(h - 2, 1) * max(w - 2, 1)
    return {
        "brightness": flat.mean(axis=1).astype(np.float32),
        "contrast": flat.std(axis=1).astype(np.float32),
        "sharpness": lap.reshape(n, -1).var(axis=1).astype(np.float32),
        "noise": noise.astype(np.float32),
    }


def enrichment_table(slices: np.ndarray, attributes: pd.DataFrame | None) -> pd.DataFrame:
    """Share of each recorded group inside each slice vs in the rest.

    Returns
    -------
    pandas.DataFrame
        ``slice, attribute, group, share_slice, share_rest, difference``, sorted by slice and
        by the size of the difference.
    """
    cols = ["slice", "attribute", "group", "share_slice", "share_rest", "difference"]
    if attributes is None or attributes.shape[1] == 0 or len(slices) == 0:
        return pd.DataFrame(columns=cols)
    out = []
    ids = np.asarray(slices)
    for attr in attributes.columns:
        # Group names as in the subgroup tables (1.0 and 1 -> "1", missing -> "missing").
        onehot = pd.get_dummies(pd.Series(group_keys(attributes[attr]), dtype=str))
        dummies = onehot.to_numpy(np.float64)  # N x groups
        groups = onehot.columns
        for sl in sorted(set(ids.tolist())):
            inside = ids == sl
            if inside.all():
                continue
            a, b = dummies[inside].mean(axis=0), dummies[~inside].mean(axis=0)
            for g, sa, sb in zip(groups, a, b, strict=True):
                out.append((int(sl), str(attr), str(g), float(sa), float(sb), float(sa - sb)))
    df = pd.DataFrame(out, columns=cols)
    df["_abs"] = df["difference"].abs()
    return (
        df.sort_values(["slice", "_abs"], ascending=[True, False], kind="stable")
        .drop(columns="_abs")
        .reset_index(drop=True)
    )


def image_stats_table(slices: np.ndarray, stats: pd.DataFrame | None) -> pd.DataFrame:
    """Mean of each image statistic inside each slice vs the rest, and the standardised gap.

    ``effect`` is Cohen's d with the pooled standard deviation: about 0.2 small, 0.5 medium,
    0.8 large.
    """
    cols = ["slice", "statistic", "mean_slice", "mean_rest", "effect"]
    if stats is None or stats.shape[1] == 0 or len(slices) == 0:
        return pd.DataFrame(columns=cols)
    ids = np.asarray(slices)
    out = []
    for stat in stats.columns:
        v = stats[stat].to_numpy(np.float64)
        ok = np.isfinite(v)
        for sl in sorted(set(ids.tolist())):
            inside, rest = ok & (ids == sl), ok & (ids != sl)
            if inside.sum() < 2 or rest.sum() < 2:
                continue
            a, b = v[inside], v[rest]
            pooled = np.sqrt(
                ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1))
                / (len(a) + len(b) - 2)
            )
            d = (a.mean() - b.mean()) / pooled if pooled > 0 else 0.0
            out.append((int(sl), str(stat), float(a.mean()), float(b.mean()), float(d)))
    return pd.DataFrame(out, columns=cols)


def describe_slice(
    slice_id: int, enrichment: pd.DataFrame, image_stats: pd.DataFrame, top: int = 3
) -> str:
    """One sentence on what sets a slice apart (largest attribute shifts, image statistics)."""
    parts = []
    enr = enrichment[enrichment["slice"] == slice_id] if len(enrichment) else enrichment
    for _, r in enr.head(top).iterrows():
        if abs(r["difference"]) >= 0.10:
            parts.append(
                f"{r['attribute']}={r['group']} {r['share_slice']:.0%} vs {r['share_rest']:.0%}"
            )
    st = image_stats[image_stats["slice"] == slice_id] if len(image_stats) else image_stats
    if len(st):
        st = st.reindex(st["effect"].abs().sort_values(ascending=False).index)
        for _, r in st.head(2).iterrows():
            if abs(r["effect"]) >= 0.5:
                word = "higher" if r["effect"] > 0 else "lower"
                parts.append(f"{word} {r['statistic']} (d = {r['effect']:+.1f})")
    return "; ".join(parts) if parts else "no recorded attribute or image statistic stands out"
