"""DashboardState: the subgroup dashboard's logic, without any widget.

Chosen attributes (each alone, plus their intersection) and a metric give a table of groups
with point estimates, confidence intervals, statuses and warnings, and a forest plot. Moving
the threshold recomputes only the point estimates (vectorised, sub-millisecond); confidence
intervals come from the audit's precomputed table when the threshold is the audit's, and are
recomputed with the bootstrap only on request (:meth:`DashboardState.compute_cis`).

A group's status is ``"high"`` when it carries a disparity flag, by the audit's own rule
(:mod:`xai_audit.widgets._flags`): the audit's stored flags at its threshold, the audit's
function at any other threshold once CIs are computed. Intersections are matched whatever the
order in which their attributes were chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..fairness.inputs import group_keys
from ._flags import (
    GroupKey,
    audit_settings,
    compute_flags,
    covered_groups,
    flag_reason,
    group_key,
    index_flags,
    stored_flags,
)
from ._metrics import (
    DISPLAY,
    FREE_METRICS,
    METRICS,
    OVERALL,
    Grouping,
    GroupMetrics,
    bootstrap_cis,
    make_grouping,
    status,
)
from ._render import figure_png
from ._source import _LRU, CaseSource

TABLE_COLUMNS = (
    "attribute",
    "group",
    "n",
    "n_pos",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "ci_source",
    "status",
    "reason",
)


def _precomputed(subgroups: Any) -> pd.DataFrame | None:
    """The tidy ``by_group`` table of a SubgroupResult (or the table itself)."""
    if subgroups is None:
        return None
    table = getattr(subgroups, "by_group", subgroups)
    if not isinstance(table, pd.DataFrame) or not {"attribute", "group", "metric"} <= set(
        table.columns
    ):
        return None
    overall = getattr(subgroups, "overall", None)
    if (
        isinstance(overall, pd.DataFrame)
        and "metric" in overall.columns
        and "attribute" not in overall.columns
    ):
        # The audit keeps the whole-data-set row apart; the dashboard shows it on top.
        table = pd.concat(
            [overall.assign(attribute=OVERALL[0], group=OVERALL[1]), table], ignore_index=True
        )
    if "label" in table.columns and table["label"].nunique() > 1:
        table = table[table["label"] == table["label"].iloc[0]]
    return table


class DashboardState:
    """Attributes, metric and threshold of the subgroup dashboard, and what they produce.

    Parameters
    ----------
    source : CaseSource
    subgroups : SubgroupResult or DataFrame, optional
        The audit's subgroup result (its ``by_group`` table supplies the CIs at the audit's
        threshold). Default: the source's audit result, if any.
    attributes : sequence of str, optional
        Attributes selected initially (default: the first one).
    metric : str, default "sensitivity"
    threshold : float, optional
        Default: the source's operating threshold.
    intersect : bool, default True
        With several attributes selected, also show their intersection.
    min_group_size : int, optional
        Smaller groups are marked ("interpret with caution") and drawn hollow. Default: the
        audit's setting, else 30.
    n_boot, ci : int, float
        Bootstrap settings of :meth:`compute_cis` (``ci`` defaults to the audit's level).
    auto_ci : bool, optional
        Compute bootstrap CIs whenever the selected attributes change (not on threshold
        moves). Default: True when no precomputed table is available.
    """

    def __init__(
        self,
        source: CaseSource,
        subgroups: Any = None,
        *,
        attributes: Sequence[str] | None = None,
        metric: str = "sensitivity",
        threshold: float | None = None,
        intersect: bool = True,
        min_group_size: int | None = None,
        n_boot: int = 200,
        ci: float | None = None,
        auto_ci: bool | None = None,
    ) -> None:
        self.source = source
        if subgroups is None and source.result is not None:
            subgroups = getattr(source.result, "subgroups", None)
        self._pre = _precomputed(subgroups)
        self._pre_ci = self._index_precomputed(self._pre)
        # The audit's disparity flags (valid at its threshold) and the settings of its rule.
        pre_flags = stored_flags(subgroups)
        if pre_flags and self._pre is not None and "label" in self._pre.columns and len(self._pre):
            shown_label = str(self._pre["label"].iloc[0])  # the label whose table is shown
            pre_flags = [f for f in pre_flags if str(f.get("label", shown_label)) == shown_label]
        self._pre_flags = index_flags(pre_flags) if pre_flags is not None else None
        self._pre_covered = covered_groups(self._pre) if pre_flags is not None else set()
        self.flag_settings = audit_settings(subgroups)
        self._flags: dict[tuple[tuple[str, ...], float], tuple[dict, set]] = {}
        self.base_threshold = source.threshold
        self.threshold = float(source.threshold if threshold is None else threshold)
        self.metric = metric
        self._check_metric(metric)
        self.intersect = bool(intersect)
        # Default to the audit's own settings, so that statuses match its report.
        self.min_group_size = int(
            min_group_size
            if min_group_size is not None
            else self.flag_settings.get("min_group_size", 30)
        )
        self.n_boot = int(n_boot)
        self.ci = float(ci if ci is not None else self.flag_settings.get("ci", 0.95))
        self.auto_ci = self._pre is None if auto_ci is None else bool(auto_ci)
        self.selected: list[str] = []
        self._groupings = _LRU(64)
        self._metrics = _LRU(64)
        self._boot: dict[tuple[str, float], dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        self._forest = _LRU(64)
        self.set_attributes(list(attributes) if attributes else source.attributes[:1])

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _index_precomputed(
        table: pd.DataFrame | None,
    ) -> dict[tuple[GroupKey, str], tuple[float, float]]:
        if table is None or "ci_low" not in table.columns:
            return {}
        return {
            (group_key(r.attribute, r.group), str(r.metric)): (float(r.ci_low), float(r.ci_high))
            for r in table.itertuples(index=False)
        }

    @staticmethod
    def _key(grouping: Grouping, k: int) -> GroupKey:
        if grouping.columns == ():
            return group_key(*OVERALL)
        return tuple(sorted(zip(grouping.columns, grouping.values[k])))

    def _check_metric(self, metric: str) -> None:
        if metric not in METRICS:
            raise ValueError(f"Unknown metric {metric!r}; choose from {METRICS}.")

    def set_attributes(self, attributes: Sequence[str]) -> None:
        """Attributes to break down by (each alone, plus the intersection when enabled)."""
        unknown = [a for a in attributes if a not in self.source.attributes]
        if unknown:
            raise ValueError(
                f"Unknown attribute(s) {unknown}; attributes: {self.source.attributes}."
            )
        self.selected = list(dict.fromkeys(attributes))
        self._maybe_auto_ci()

    def set_intersect(self, intersect: bool) -> None:
        """Show the intersection of the selected attributes too."""
        self.intersect = bool(intersect)
        self._maybe_auto_ci()

    def set_metric(self, metric: str) -> None:
        """Metric shown in the plot and table."""
        self._check_metric(metric)
        self.metric = metric

    def set_threshold(self, threshold: float) -> None:
        """Operating threshold: point estimates follow at once, CIs only on request."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}.")
        self.threshold = float(threshold)

    def _maybe_auto_ci(self) -> None:
        if self.auto_ci:
            self.compute_cis()

    # ------------------------------------------------------------------ groupings
    def groupings(self) -> list[Grouping]:
        """Overall, each selected attribute, and (optionally) their intersection."""
        keys: list[tuple[str, ...]] = [()] + [(a,) for a in self.selected]
        if self.intersect and len(self.selected) > 1:
            keys.append(tuple(self.selected))
        return [
            self._groupings.get_or(k, lambda k=k: make_grouping(self.source.table, k)) for k in keys
        ]

    def _group_metrics(self, grouping: Grouping) -> GroupMetrics:
        t = self.source.table
        return self._metrics.get_or(
            grouping.columns,
            lambda: GroupMetrics(
                grouping, t["label"].to_numpy(np.float64), t["score"].to_numpy(np.float64)
            ),
        )

    def compute_cis(self) -> None:
        """Bootstrap CIs for the current groupings at the current threshold (cached)."""
        pids = (
            self.source.table["patient_id"].to_numpy(object)
            if "patient_id" in self.source.table
            else None
        )
        t = self.source.table
        self._compute_flags(pids)
        for g in self.groupings():
            key = (g.attribute, round(self.threshold, 6))
            if key not in self._boot:
                self._boot[key] = bootstrap_cis(
                    g,
                    t["label"].to_numpy(np.float64),
                    t["score"].to_numpy(np.float64),
                    self.threshold,
                    patient_ids=pids,
                    n_boot=self.n_boot,
                    ci=self.ci,
                )

    def _compute_flags(self, patient_ids: np.ndarray | None) -> None:
        """Disparity flags of the current groupings at the current threshold (cached)."""
        inter = tuple(self.selected) if self.intersect and len(self.selected) > 1 else ()
        key = (tuple(self.selected), inter, round(self.threshold, 6))
        if key in self._flags or not self.selected:
            return
        self._flags[key] = compute_flags(
            self.source.table,
            self.selected,
            inter,
            self.threshold,
            patient_ids=patient_ids,
            # the audit's rule settings; without an audit, this dashboard's own
            settings={"min_group_size": self.min_group_size, "ci": self.ci, **self.flag_settings},
            n_boot=self.n_boot,
        )

    @property
    def at_audit_threshold(self) -> bool:
        """Whether the threshold is the audit's own (where its flags and CIs apply)."""
        return abs(self.threshold - self.base_threshold) < 1e-9

    def flags(self, grouping: Grouping, k: int) -> list[dict[str, Any]] | None:
        """Disparity flags of one group at the current threshold; None when not assessed.

        The audit's stored flags at its threshold (for the groups it assessed), else flags
        computed by :meth:`compute_cis` at this threshold, else None (unknown).
        """
        key = self._key(grouping, k)
        if self._pre_flags is not None and self.at_audit_threshold and key in self._pre_covered:
            return self._pre_flags.get(key, [])
        t = round(self.threshold, 6)
        for (_sel, _inter, thr), (found, covered) in self._flags.items():
            if thr == t and key in covered:
                return found.get(key, [])
        return None

    def _ci(self, grouping: Grouping, k: int, metric: str) -> tuple[float, float, str]:
        boot = self._boot.get((grouping.attribute, round(self.threshold, 6)))
        if boot is None and metric in FREE_METRICS:
            # Threshold-free metrics: any threshold's bootstrap of this grouping will do.
            boot = next((v for (a, _), v in self._boot.items() if a == grouping.attribute), None)
        if boot is not None and metric in boot:
            lo, hi = boot[metric]
            return float(lo[k]), float(hi[k]), "bootstrap"
        if self.at_audit_threshold or metric in FREE_METRICS:
            pre = self._pre_ci.get((self._key(grouping, k), metric))
            if pre is not None:
                return pre[0], pre[1], "audit"
        return float("nan"), float("nan"), ""

    # ------------------------------------------------------------------ outputs
    def table(self, metric: str | None = None) -> pd.DataFrame:
        """One row per group: size, value, CI (and where it came from), status and reason."""
        metric = metric or self.metric
        self._check_metric(metric)
        rows = []
        for g in self.groupings():
            gm = self._group_metrics(g)
            values = gm.at(self.threshold)
            for k, name in enumerate(g.names):
                n, n_pos = int(gm.n[k]), int(gm.n_pos[k])
                st, reason = status(n, n_pos, int(values["n_pred_pos"][k]), self.min_group_size)
                if g.columns == ():
                    st, reason = ("ok", "") if st == "small" else (st, reason)
                else:
                    flagged = self.flags(g, k)
                    if flagged:  # the audit's rule: a key finding ("high")
                        why = flag_reason(flagged, metric)
                        st, reason = "high", why + (f" ({reason})" if reason else "")
                    elif flagged is None and st == "ok":
                        st = "not_assessed"
                lo, hi, src = self._ci(g, k, metric)
                rows.append(
                    (
                        g.attribute,
                        name,
                        n,
                        n_pos,
                        metric,
                        float(values[metric][k]),
                        lo,
                        hi,
                        src,
                        st,
                        reason,
                    )
                )
        return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))

    def warnings(self) -> list[str]:
        """Plain-language warnings for small or degenerate groups in the current view."""
        table = self.table()
        out = []
        shown = table[~table["status"].isin(["ok", "not_assessed"])]
        # Flagged groups first: they are the audit's key findings.
        shown = pd.concat([shown[shown["status"] == "high"], shown[shown["status"] != "high"]])
        for r in shown.itertuples(index=False):
            label = "flagged" if r.status == "high" else r.status.replace("_", " ")
            out.append(f"{r.attribute} = {r.group} ({label}): {r.reason}")
        if table["ci_source"].eq("").any() and not table.empty:
            out.append(
                "Confidence intervals are not available at this threshold: press "
                "'Compute CIs' (bootstrap) to recompute them."
            )
        if table["status"].eq("not_assessed").any():
            out.append(
                "Disparity flags at this threshold need confidence intervals: press "
                "'Compute CIs' to assess the groups marked not_assessed."
            )
        return out

    def group_filter(self, attribute: str, group: str) -> dict[str, str]:
        """Explorer filter ``{column: value}`` selecting one group of the table."""
        if (attribute, group) == OVERALL:
            return {}
        for g in self.groupings():
            if g.attribute == attribute and group in g.names:
                return dict(zip(g.columns, g.values[g.names.index(group)]))
        raise KeyError(f"No group {group!r} of {attribute!r} in the current view.")

    def group_cases(self, attribute: str, group: str) -> list[str]:
        """Case ids of one group of the table."""
        mask = np.ones(len(self.source.table), dtype=bool)
        for col, value in self.group_filter(attribute, group).items():
            col_values = self.source.table[col]
            mask &= (
                col_values.isna().to_numpy()
                if value == "missing"
                else group_keys(col_values) == value
            )
        return [str(c) for c in self.source.table["case_id"].to_numpy()[mask]]

    def forest_png(self, metric: str | None = None, width: float = 6.5) -> bytes:
        """Forest plot of the current table (cached per table content)."""
        table = self.table(metric)
        key = (metric or self.metric, pd.util.hash_pandas_object(table, index=False).sum(), width)
        return self._forest.get_or(key, lambda: figure_png(forest_figure(table, width=width)))


def forest_figure(table: pd.DataFrame, width: float = 6.5) -> Any:
    """A matplotlib Figure: one row per group, point and CI, overall as a dashed line."""
    from matplotlib.figure import Figure

    n = len(table)
    height = 0.8 + 0.28 * max(n, 1)
    fig = Figure(figsize=(width, height))
    # Fixed margins, not a layout engine: the plot is redrawn while the threshold slider
    # moves, and constrained layout doubles the drawing time.
    fig.subplots_adjust(left=0.3, right=0.97, bottom=0.55 / height, top=1 - 0.3 / height)
    ax = fig.add_subplot()
    metric = str(table["metric"].iloc[0]) if n else ""
    ys = np.arange(n)[::-1]
    overall = table[table["attribute"] == OVERALL[0]]
    if len(overall) and np.isfinite(overall["value"].iloc[0]):
        ax.axvline(overall["value"].iloc[0], color="0.5", ls="--", lw=1)
    colours = {}
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    for y, r in zip(ys, table.itertuples(index=False)):
        c = colours.setdefault(
            r.attribute,
            palette[len(colours) % len(palette)] if r.attribute != OVERALL[0] else "black",
        )
        if np.isfinite(r.ci_low) and np.isfinite(r.ci_high):
            ax.plot([r.ci_low, r.ci_high], [y, y], color=c, lw=2, alpha=0.8)
        hollow = r.status not in ("ok", "high", "not_assessed")
        ax.plot(r.value, y, "o", color=c, mfc="white" if hollow else c, ms=6)
        if r.status == "high":  # flagged by the audit's rule, as in its key findings
            ax.plot(r.value, y, "o", mfc="none", mec="#d62728", ms=11, mew=1.8)
    labels = [
        "overall" if r.attribute == OVERALL[0] else f"{r.group} (n={r.n})"
        for r in table.itertuples(index=False)
    ]
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_xlabel(DISPLAY.get(metric, metric))
    ax.set_xlim(-0.02, 1.02) if metric != "brier" else None
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(
        f"{DISPLAY.get(metric, metric)} by subgroup (red ring: flagged; hollow: small or "
        "degenerate)",
        fontsize=9,
    )
    return fig
