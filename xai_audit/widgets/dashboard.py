"""SubgroupDashboard: subgroup and intersectional performance with a live threshold.

A thin ipywidgets view over :class:`~xai_audit.widgets.dashboard_state.DashboardState`.
Choosing a group opens its cases at once in an :class:`ExplanationExplorer` below the
dashboard (sharing the same cases and cached maps).

The threshold slider starts at the audit's exact threshold: its grid of 0.01 steps is laid
through that value (not through 0), so stepping back lands on it again, and "audit
threshold" returns to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets as w
import numpy as np
import pandas as pd

from ._base import StaticFallbackBox
from ._metrics import DISPLAY, METRICS
from ._source import CaseSource, ExplainFn
from ._static import STYLE, esc, frame_table, img_tag, notes, panel
from .dashboard_state import DashboardState

PICK_GROUP = "— pick a group to see its cases —"
THRESHOLD_STEP = 0.01


def slider_range(anchor: float, step: float) -> tuple[float, float]:
    """``(min, max)`` of a slider in [0, 1] whose grid ``min + k * step`` passes ``anchor``."""
    anchor = float(min(max(anchor, 0.0), 1.0))
    low = anchor - np.floor(anchor / step + 1e-9) * step
    high = low + np.floor((1.0 - low) / step + 1e-9) * step
    return float(low), float(high)


SHOWN_COLUMNS = [
    "attribute",
    "group",
    "n",
    "n_pos",
    "value",
    "ci_low",
    "ci_high",
    "ci_source",
    "status",
]


class SubgroupDashboard(StaticFallbackBox):
    """Interactive subgroup dashboard: forest plot, table, threshold slider, warnings.

    Parameters
    ----------
    model, images, metadata, labels
        Direct mode, as for :class:`ExplanationExplorer`.
    source : CaseSource, optional
        An existing source instead.
    subgroups : SubgroupResult or DataFrame, optional
        Precomputed subgroup table (CIs at the audit's threshold).
    attributes : sequence of str, optional
        Attributes selected initially (default: the first).
    metric : str, default "sensitivity"
    threshold : float, optional
        Initial threshold (default: the operating threshold).
    min_group_size : int, optional
        Default: the audit's setting, else 30.
    n_boot : int, default 200
        Bootstrap resamples when CIs are recomputed.
    methods : sequence of str, default ("gradcam",)
        Direct mode: methods offered in the linked explorer.
    """

    def __init__(
        self,
        model: Any = None,
        images: Any = None,
        metadata: pd.DataFrame | None = None,
        labels: Any = None,
        *,
        source: CaseSource | None = None,
        subgroups: Any = None,
        attributes: Sequence[str] | None = None,
        metric: str = "sensitivity",
        threshold: float | None = None,
        intersect: bool = True,
        min_group_size: int | None = None,
        n_boot: int = 200,
        methods: Sequence[str] = ("gradcam",),
        sensitive: Sequence[str] | None = None,
        explain_fn: ExplainFn | None = None,
        base_threshold: float = 0.5,
    ) -> None:
        source = CaseSource.given_or_from_model(
            source,
            model,
            images,
            metadata,
            labels,
            attributes=sensitive,
            methods=methods,
            threshold=base_threshold,
            explain_fn=explain_fn,
        )
        self.state = DashboardState(
            source,
            subgroups,
            attributes=attributes,
            metric=metric,
            threshold=threshold,
            intersect=intersect,
            min_group_size=min_group_size,
            n_boot=n_boot,
        )
        self.explorer: Any = None
        self._building = True
        children = self._build()
        super().__init__(children=children)
        self.add_class("xai-audit-dashboard")
        self._building = False
        self.refresh()

    @classmethod
    def from_result(
        cls, result: Any, model: Any = None, data: Any = None, **kwargs: Any
    ) -> SubgroupDashboard:
        """Dashboard over an :class:`AuditResult` (its subgroup table supplies the CIs)."""
        source = CaseSource.from_result(result, model, data)
        return cls(source=source, **kwargs)

    # ------------------------------------------------------------------ building
    def _build(self) -> list[w.Widget]:
        s = self.state
        self.attributes = w.SelectMultiple(
            options=s.source.attributes,
            value=tuple(s.selected),
            description="attributes",
            rows=min(4, max(2, len(s.source.attributes))),
            style={"description_width": "70px"},
        )
        self.attributes.observe(
            lambda ch: self._on(lambda: s.set_attributes(list(ch["new"]))), "value"
        )
        self.intersect = w.Checkbox(value=s.intersect, description="intersection", indent=False)
        self.intersect.observe(lambda ch: self._on(lambda: s.set_intersect(ch["new"])), "value")
        self.metric = w.Dropdown(
            options=[(DISPLAY[m], m) for m in METRICS],
            value=s.metric,
            description="metric",
            style={"description_width": "50px"},
        )
        self.metric.observe(lambda ch: self._on(lambda: s.set_metric(ch["new"])), "value")
        # continuous_update: the point estimates follow the slider while it moves.
        low, high = slider_range(s.base_threshold, THRESHOLD_STEP)
        self.threshold = w.FloatSlider(
            value=s.threshold,
            min=low,
            max=high,
            step=THRESHOLD_STEP,
            description="threshold",
            continuous_update=True,
            readout_format=".3f",
        )
        self.threshold.observe(
            lambda ch: self._on(lambda: s.set_threshold(self._snap(ch["new"]))), "value"
        )
        self.reset_button = w.Button(
            description="audit threshold",
            tooltip=f"back to the audit's own threshold ({s.base_threshold:.4f})",
        )
        self.reset_button.on_click(lambda _b: self.reset_threshold())
        self.ci_button = w.Button(
            description="Compute CIs",
            tooltip="bootstrap the confidence intervals at this threshold",
        )
        self.ci_button.on_click(lambda _b: self._on(s.compute_cis))
        self.forest = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.table_html = w.HTML()
        self.warnings_html = w.HTML()
        self.group = w.Dropdown(
            options=[(PICK_GROUP, None)],
            value=None,
            description="group",
            layout=w.Layout(width="360px"),
            style={"description_width": "45px"},
        )
        # Picking a group shows its cases at once (the button re-opens the current one).
        self.group.observe(lambda _ch: None if self._building else self._open_selected(), "value")
        self.open_button = w.Button(
            description="Open cases", tooltip="show this group's cases in the explorer"
        )
        self.open_button.on_click(lambda _b: self._open_selected())
        self.explorer_slot = w.VBox()
        self.error = w.HTML()
        return [
            w.HBox(
                [
                    self.attributes,
                    w.VBox(
                        [
                            self.intersect,
                            self.metric,
                            self.threshold,
                            w.HBox([self.reset_button, self.ci_button]),
                        ]
                    ),
                ]
            ),
            self.forest,
            self.warnings_html,
            self.table_html,
            w.HBox([self.group, self.open_button]),
            self.error,
            self.explorer_slot,
        ]

    # ------------------------------------------------------------------ events
    def _snap(self, value: float) -> float:
        """The audit's exact threshold for a slider value on its grid point (float noise)."""
        base = self.state.base_threshold
        return float(base) if abs(float(value) - base) < 1e-6 else float(value)

    def reset_threshold(self) -> None:
        """Back to the audit's own threshold (where its CIs and flags apply)."""
        self.threshold.value = self.state.base_threshold
        self._on(lambda: self.state.set_threshold(self.state.base_threshold))

    def _on(self, action: Any) -> None:
        if self._building:
            return

        def run() -> None:
            action()
            self.refresh()

        self._guard(self.error, run)

    def refresh(self) -> None:
        """Recompute the table and plot for the current settings."""
        s = self.state
        table = s.table()
        self.forest.value = s.forest_png()
        self.table_html.value = frame_table(
            table[SHOWN_COLUMNS].rename(columns={"value": DISPLAY[s.metric]})
        )
        self.warnings_html.value = notes(s.warnings())
        options = [(PICK_GROUP, None)] + [
            (f"{a} = {g} (n={n})" + (" ⚑ flagged" if st == "high" else ""), (a, g))
            for a, g, n, st in table[["attribute", "group", "n", "status"]].itertuples(index=False)
        ]
        if [o for o in options] != list(self.group.options):
            self._building = True
            try:
                current = self.group.value
                self.group.options = options
                self.group.value = current if current in [o[1] for o in options] else None
            finally:
                self._building = False

    def _open_selected(self) -> None:
        if self.group.value is None:
            return
        attribute, group = self.group.value
        self._guard(self.error, lambda: self.open_group(attribute, group))

    def open_group(self, attribute: str, group: str, outcome: str | None = None) -> Any:
        """Show one group's cases in the linked explorer (created on first use).

        Returns
        -------
        ExplanationExplorer
        """
        from .explorer import ExplanationExplorer

        if self.explorer is None:
            self.explorer = ExplanationExplorer(source=self.state.source)
            self.explorer_slot.children = [
                w.HTML(f"<b style='{STYLE}'>Cases of the selected group</b>"),
                self.explorer,
            ]
        self.explorer.show_group(self.state.group_filter(attribute, group), outcome)
        return self.explorer

    def static_html(self) -> str:
        """Forest plot, warnings and table as static HTML."""
        s = self.state
        table = s.table()
        body = (
            f"<p>{esc(DISPLAY[s.metric])} at threshold {s.threshold:.4f}"
            + (" (the audit's)" if s.at_audit_threshold else "")
            + "</p>"
            + img_tag(s.forest_png(), "forest plot")
            + notes(s.warnings())
            + frame_table(table[SHOWN_COLUMNS])
        )
        return panel("Subgroup dashboard", body)
