"""The result of a subgroup audit: tidy tables, flags, warnings, JSON summary and plots."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import plots
from ._common import OVERALL_ATTRIBUTE, OVERALL_GROUP
from .disparity import Flag
from .threshold import ThresholdChoice

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy/pandas values to plain Python; NaN and inf become None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, pd.DataFrame):
        return [to_jsonable(r) for r in obj.to_dict(orient="records")]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    if obj is pd.NA or obj is pd.NaT:
        return None
    return str(obj)


@dataclass
class SubgroupResult:
    """Subgroup performance, disparities and calibration with bootstrap CIs.

    Attributes
    ----------
    threshold : ThresholdChoice or dict
        The operating threshold (a dict label -> ThresholdChoice for multi-label models).
    thresholds : dict
        label -> ThresholdChoice (always a dict).
    overall : DataFrame
        label, metric, value, ci_low, ci_high.
    by_group : DataFrame
        label, attribute, group, n, n_pos, metric, value, ci_low, ci_high, status, reason.
    disparities : DataFrame
        One row per (label, group, metric): value, overall, diff_to_overall (+ diff_ci_low,
        diff_ci_high), ratio_to_overall; plus the attribute-level columns max_gap (+ CI:
        selection-aware, see :func:`~xai_audit.fairness.disparity.range_interval`),
        best_group, worst_group, equalized_odds_difference, demographic_parity_difference
        repeated on every row of the attribute.
    gaps : DataFrame
        The attribute-level part alone: one row per (label, attribute, metric).
    flags : list of Flag
    calibration : DataFrame
        Reliability bins per group (attribute ``"overall"`` / group ``"all"`` included).
    warnings : list of str
    config : dict
        The settings used (bootstrap size, seed, level, tolerances, ...).
    """

    threshold: ThresholdChoice | dict[str, ThresholdChoice]
    thresholds: dict[str, ThresholdChoice]
    overall: pd.DataFrame
    by_group: pd.DataFrame
    disparities: pd.DataFrame
    gaps: pd.DataFrame
    flags: list[Flag]
    calibration: pd.DataFrame
    warnings: list[str]
    config: dict[str, Any]
    _y_true: np.ndarray = field(repr=False, default_factory=lambda: np.empty((0, 0)))
    _y_score: np.ndarray = field(repr=False, default_factory=lambda: np.empty((0, 0)))
    _group_rows: dict[tuple[str, str], np.ndarray] = field(repr=False, default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """Label names, in order."""
        return list(self.thresholds)

    def _label(self, label: str | None) -> str:
        if label is None:
            return self.labels[0]
        if label not in self.thresholds:
            raise KeyError(f"unknown label {label!r}; labels are {self.labels}")
        return label

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (``json.dumps`` works: plain types, NaN -> None)."""
        return to_jsonable(
            {
                "config": self.config,
                "thresholds": {k: v.to_dict() for k, v in self.thresholds.items()},
                "overall": self.overall,
                "by_group": self.by_group,
                "disparities": self.disparities,
                "gaps": self.gaps,
                "flags": [f.to_dict() for f in self.flags],
                "calibration": self.calibration,
                "warnings": list(self.warnings),
            }
        )

    def plot_forest(
        self, metric: str = "sensitivity", label: str | None = None, ax: Axes | None = None
    ) -> Figure:
        """Forest plot of one metric with CIs across all groups; returns the Figure."""
        label = self._label(label)
        rows = self.by_group[
            (self.by_group["label"] == label) & (self.by_group["metric"] == metric)
        ]
        if rows.empty:
            raise KeyError(f"unknown metric {metric!r}")
        ov = self.overall[
            (self.overall["label"] == label) & (self.overall["metric"] == metric)
        ].iloc[0]
        title = None if len(self.labels) == 1 else f"{metric} by group ({label})"
        return plots.forest(rows, ov, metric, ax=ax, title=title)

    def plot_roc(self, attribute: str, label: str | None = None, ax: Axes | None = None) -> Figure:
        """ROC curves of every group of ``attribute`` and of the whole data set."""
        label = self._label(label)
        li = self.labels.index(label)
        status = self.by_group[
            (self.by_group["label"] == label) & (self.by_group["metric"] == "auroc")
        ]
        status = status[status["attribute"] == attribute]
        if status.empty:
            raise KeyError(f"unknown attribute {attribute!r}")
        groups = [("overall", self._group_rows[(OVERALL_ATTRIBUTE, OVERALL_GROUP)], True)]
        for row in status.itertuples(index=False):
            groups.append(
                (
                    f"{row.group} (n={row.n})",
                    self._group_rows[(attribute, row.group)],
                    row.status != "small",
                )
            )
        return plots.roc_by_group(
            self._y_true[:, li],
            self._y_score[:, li],
            groups,
            threshold=self.thresholds[label].value,
            ax=ax,
            title=f"ROC by {attribute}" + ("" if len(self.labels) == 1 else f" ({label})"),
        )

    def plot_reliability(
        self, attribute: str, label: str | None = None, ax: Axes | None = None
    ) -> Figure:
        """Reliability curves of every group of ``attribute`` and of the whole data set."""
        label = self._label(label)
        cal = self.calibration[self.calibration["label"] == label]
        rows = pd.concat(
            [cal[cal["attribute"] == OVERALL_ATTRIBUTE], cal[cal["attribute"] == attribute]]
        )
        if not (cal["attribute"] == attribute).any():
            raise KeyError(f"no calibration data for attribute {attribute!r}")
        return plots.reliability(rows, ax=ax, title=f"Reliability by {attribute}")

    def __repr__(self) -> str:
        return (
            f"SubgroupResult(labels={self.labels}, groups={self.by_group[['attribute', 'group']].drop_duplicates().shape[0]}, "
            f"flags={len(self.flags)}, warnings={len(self.warnings)})"
        )
