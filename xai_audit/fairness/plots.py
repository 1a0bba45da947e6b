"""Matplotlib figures: forest plot of a metric with CIs, ROC per group, reliability curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from ._common import DISPLAY

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, new_ax = plt.subplots(figsize=size)
    return fig, new_ax


def forest(
    by_group: pd.DataFrame,
    overall: pd.Series,
    metric: str,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Forest plot: one row per group with its point value and CI, overall as a band.

    Parameters
    ----------
    by_group : DataFrame
        Rows of ``SubgroupResult.by_group`` for one label and this metric.
    overall : Series
        The overall row (``value``, ``ci_low``, ``ci_high``).
    metric : str
    ax : matplotlib Axes, optional
    title : str, optional

    Returns
    -------
    matplotlib Figure
    """
    rows = by_group.reset_index(drop=True)
    fig, ax = _axes(ax, (6.5, 0.32 * len(rows) + 1.5))
    y = np.arange(len(rows))[::-1]
    ok = rows["status"].eq("ok").to_numpy() & np.isfinite(rows["value"].to_numpy(dtype=float))
    val = rows["value"].to_numpy(dtype=float)
    lo = rows["ci_low"].to_numpy(dtype=float)
    hi = rows["ci_high"].to_numpy(dtype=float)
    err = np.vstack(
        [np.where(np.isfinite(lo), val - lo, 0), np.where(np.isfinite(hi), hi - val, 0)]
    )
    if np.isfinite(overall["ci_low"]) and np.isfinite(overall["ci_high"]):
        ax.axvspan(
            overall["ci_low"], overall["ci_high"], color="0.85", zorder=0, label="overall CI"
        )
    if np.isfinite(overall["value"]):
        ax.axvline(overall["value"], color="0.4", lw=1, ls="--", label="overall")
    for mask, color in ((ok, "C0"), (~ok, "0.6")):
        if mask.any():
            ax.errorbar(val[mask], y[mask], xerr=err[:, mask], fmt="o", color=color, capsize=3)
    labels = [
        f"{a}: {g}  (n={n})" + ("" if s == "ok" else f" [{s}]")
        for a, g, n, s in zip(rows["attribute"], rows["group"], rows["n"], rows["status"])
    ]
    ax.set_yticks(y, labels, fontsize=8)
    for yi, v, s in zip(y, val, rows["status"]):
        if not np.isfinite(v):
            ax.annotate(
                f"n/a ({s})",
                (0.01, yi),
                xycoords=("axes fraction", "data"),
                fontsize=7,
                color="0.4",
                va="center",
            )
    ax.set_xlabel(DISPLAY.get(metric, metric))
    ax.set_title(title or f"{DISPLAY.get(metric, metric)} by group")
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    return fig


def roc_by_group(
    y_true: np.ndarray,
    y_score: np.ndarray,
    groups: Sequence[tuple[str, np.ndarray, bool]],
    threshold: float | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """ROC curve of the whole data set and of each group.

    Parameters
    ----------
    y_true, y_score : arrays (N,)
    groups : list of (name, row indices, drawable)
        Groups whose ``drawable`` is False (small or one class) are listed but not drawn.
    threshold : float, optional
        Operating threshold; its point is marked on each curve.
    """
    fig, ax = _axes(ax, (5.5, 5))
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls=":")
    for k, (name, rows, drawable) in enumerate(groups):
        yt, ys = y_true[rows], y_score[rows]
        if not drawable or yt.min() == yt.max():
            ax.plot([], [], color="0.6", ls="none", label=f"{name} (not drawn)")
            continue
        fpr, tpr, _ = roc_curve(yt, ys)
        color = "k" if k == 0 else f"C{(k - 1) % 10}"
        (line,) = ax.plot(fpr, tpr, color=color, lw=2 if k == 0 else 1.2, label=name)
        if threshold is not None:
            pred = ys >= threshold
            ax.plot(pred[yt == 0].mean(), pred[yt == 1].mean(), "o", color=line.get_color(), ms=5)
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("Sensitivity")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title(title or "ROC by group")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def reliability(
    calibration: pd.DataFrame,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Reliability curves (fraction positive vs mean predicted) per group.

    Parameters
    ----------
    calibration : DataFrame
        Rows of ``SubgroupResult.calibration`` for one label and one attribute (plus overall).
    """
    fig, ax = _axes(ax, (5.5, 5))
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls=":")
    for k, ((_, group), rows) in enumerate(calibration.groupby(["attribute", "group"], sort=False)):
        rows = rows[rows["count"] > 0]
        if rows.empty:
            continue
        color = "k" if k == 0 else f"C{(k - 1) % 10}"
        if "ci_low" in rows and rows["ci_low"].notna().any():  # binomial bands of each bin
            lo, hi = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
            fp = rows["fraction_positive"].to_numpy(float)
            if k == 0:
                ax.fill_between(rows["mean_predicted"], lo, hi, color="k", alpha=0.12, lw=0)
            else:
                ax.errorbar(rows["mean_predicted"], fp, yerr=[fp - lo, hi - fp], fmt="none",
                            ecolor=color, elinewidth=0.7, alpha=0.5, capsize=1.5)  # fmt: skip
        ax.plot(
            rows["mean_predicted"],
            rows["fraction_positive"],
            "o-",
            color=color,
            ms=3,
            lw=1.2,
            label=group,
        )
    ax.set_xlabel("Mean predicted probability")
    ax.set_ylabel("Fraction positive")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title or "Reliability by group")
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return fig
