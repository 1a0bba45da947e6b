"""ExplanationExplorer: browse cases and their explanations in a notebook.

A thin ipywidgets view over :class:`~xai_audit.widgets.explorer_state.ExplorerState`: every
control calls one state setter and re-renders; all logic lives in the state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets as w
import pandas as pd

from ._base import StaticFallbackBox
from ._clinical import OUTCOME_WORDS
from ._render import COLORMAPS
from ._source import OUTCOMES, CaseSource, ExplainFn
from ._static import STYLE, esc, img_tag, kv_table, panel
from .explorer_state import ExplorerState

ALL_LABEL = "All"


class ExplanationExplorer(StaticFallbackBox):
    """Interactive explanation explorer.

    Filter cases by subgroup and by outcome (TP/FP/FN/TN), pick one or several methods side
    by side, the target class, overlay opacity and colormap (and the slice of a volume); the
    image, prediction, probability and ground truth of the case are shown.

    Parameters
    ----------
    model : ModelAdapter, optional
        Direct mode: the model to predict and explain with.
    images : array, tensor or Manifest, optional
        Direct mode: the images ``N x C x H x W`` (or a Manifest).
    metadata : DataFrame, optional
        One row per image: ``case_id``, attributes, ``label``...
    labels : array, optional
        Ground truth (default ``metadata["label"]``).
    methods : sequence of str, default ("gradcam",)
        Explanation methods offered; maps are computed on first view and cached.
    source : CaseSource, optional
        Instead of ``model``/``images``: an existing source (shared between widgets).
    show : sequence of str, optional
        Methods shown initially (default: the first one).
    threshold : float, default 0.5
        Direct mode: operating threshold on the positive-class probability.
    attributes : sequence of str, optional
        Direct mode: subgroup attributes (default: categorical metadata columns).
    masks : array, optional
        Direct mode: lesion masks, outlined on the panels.
    explain_fn : callable, optional
        Direct mode: replaces :func:`xai_audit.explain.explain`.
    cmap, alpha, size : str, float, int
        Initial colormap, opacity and panel height (px).

    Examples
    --------
    >>> explorer = ExplanationExplorer(model, data.images, data.metadata,
    ...                                methods=["gradcam", "integrated_gradients"])
    >>> explorer  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any = None,
        images: Any = None,
        metadata: pd.DataFrame | None = None,
        labels: Any = None,
        *,
        methods: Sequence[str] = ("gradcam",),
        source: CaseSource | None = None,
        show: Sequence[str] | None = None,
        threshold: float = 0.5,
        attributes: Sequence[str] | None = None,
        masks: Any = None,
        explain_fn: ExplainFn | None = None,
        cmap: str = "jet",
        alpha: float = 0.5,
        size: int = 256,
    ) -> None:
        source = CaseSource.given_or_from_model(
            source,
            model,
            images,
            metadata,
            labels,
            masks=masks,
            attributes=attributes,
            methods=methods,
            threshold=threshold,
            explain_fn=explain_fn,
        )
        self.state = ExplorerState(source, methods=show, cmap=cmap, alpha=alpha, size=size)
        self._building = True
        controls = self._build_controls()
        super().__init__(children=controls)
        self.add_class("xai-audit-explorer")
        self._building = False
        self._sync_cases()
        self.refresh()

    @classmethod
    def from_result(
        cls,
        result: Any,
        model: Any = None,
        data: Any = None,
        *,
        methods: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> ExplanationExplorer:
        """Explorer over an :class:`AuditResult` (stored maps are reused).

        Parameters
        ----------
        result : AuditResult
        model : ModelAdapter, optional
            Needed for maps the audit did not store (default ``result.model``).
        data : Manifest or array, optional
            The images the audit ran on (default ``result.data``).
        methods : sequence of str, optional
            Default: the audit's methods.
        **kwargs
            Passed to the constructor (``show``, ``cmap``, ``alpha``, ``size``).
        """
        source = CaseSource.from_result(result, model, data, methods=methods)
        return cls(source=source, **kwargs)

    # ------------------------------------------------------------------ building
    def _build_controls(self) -> list[w.Widget]:
        s = self.state
        src = s.source
        narrow = w.Layout(width="170px")
        self.attribute_filters: dict[str, w.Dropdown] = {}
        for a in src.attributes:
            dd = w.Dropdown(
                options=[(ALL_LABEL, None)] + [(v, v) for v in s.levels(a)],
                value=None,
                description=a,
                layout=narrow,
                style={"description_width": "70px"},
            )
            dd.observe(lambda ch, a=a: self._on(lambda: s.set_filter(a, ch["new"])), "value")
            self.attribute_filters[a] = dd
        self.outcome = w.ToggleButtons(
            options=[ALL_LABEL, *OUTCOMES],
            value=ALL_LABEL,
            description="outcome",
            disabled=not src.has_labels,
            style={"button_width": "48px", "description_width": "60px"},
        )
        self.outcome.observe(
            lambda ch: self._on(
                lambda: s.set_outcomes([] if ch["new"] == ALL_LABEL else [ch["new"]])
            ),
            "value",
        )

        self.case = w.Dropdown(
            description="case", layout=w.Layout(width="330px"), style={"description_width": "40px"}
        )
        self.case.observe(
            lambda ch: (
                self._on(lambda: s.select_case(ch["new"]), refilter=False) if ch["new"] else None
            ),
            "value",
        )
        self.prev_button = w.Button(
            description="◀", layout=w.Layout(width="36px"), tooltip="previous case"
        )
        self.next_button = w.Button(
            description="▶", layout=w.Layout(width="36px"), tooltip="next case"
        )
        self.prev_button.on_click(lambda _b: self._step(-1))
        self.next_button.on_click(lambda _b: self._step(1))
        self.n_cases = w.HTML()

        self.method_boxes = {
            m: w.Checkbox(
                value=m in s.methods, description=m, indent=False, layout=w.Layout(width="auto")
            )
            for m in src.methods
        }
        for m, box in self.method_boxes.items():
            box.observe(lambda ch, m=m: self._on_method(), "value")
        self.target = w.Dropdown(
            options=[(n, i) for i, n in enumerate(src.class_names)],
            value=s.target,
            description="target",
            layout=narrow,
            style={"description_width": "50px"},
        )
        self.target.observe(
            lambda ch: self._on(lambda: s.set_target(ch["new"]), refilter=False), "value"
        )
        self.cmap = w.Dropdown(
            options=list(dict.fromkeys([s.cmap, *COLORMAPS])),
            value=s.cmap,
            description="colormap",
            layout=narrow,
            style={"description_width": "65px"},
        )
        self.cmap.observe(
            lambda ch: self._on(lambda: s.set_cmap(ch["new"]), refilter=False), "value"
        )
        self.alpha = w.FloatSlider(
            value=s.alpha,
            min=0.0,
            max=1.0,
            step=0.05,
            description="opacity",
            continuous_update=False,
        )
        self.alpha.observe(
            lambda ch: self._on(lambda: s.set_alpha(ch["new"]), refilter=False), "value"
        )
        n_slices = s.n_slices
        self.slice = w.IntSlider(
            value=n_slices // 2,
            min=0,
            max=max(n_slices - 1, 0),
            description="slice",
            continuous_update=False,
            layout=w.Layout(display="" if n_slices > 1 else "none"),
        )
        self.slice.observe(
            lambda ch: self._on(lambda: s.set_slice(ch["new"]), refilter=False), "value"
        )

        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.image.add_class("xai-audit-explorer-image")
        self.info = w.HTML()
        self.error = w.HTML()
        return [
            w.HBox(list(self.attribute_filters.values()), layout=w.Layout(flex_flow="row wrap")),
            self.outcome,
            w.HBox([self.prev_button, self.case, self.next_button, self.n_cases]),
            w.HBox(
                [w.HTML("<b>methods</b>&nbsp;"), *self.method_boxes.values()],
                layout=w.Layout(flex_flow="row wrap"),
            ),
            w.HBox([self.target, self.cmap, self.alpha]),
            self.slice,
            self.image,
            self.info,
            self.error,
        ]

    # ------------------------------------------------------------------ events
    def _on(self, action: Any, refilter: bool = True) -> None:
        if self._building:
            return

        def run() -> None:
            action()
            if refilter:
                self._sync_cases()
            self.refresh()

        self._guard(self.error, run)

    def _on_method(self) -> None:
        chosen = [m for m, box in self.method_boxes.items() if box.value]
        if not chosen:  # keep at least one method: re-tick the last one shown
            self.method_boxes[self.state.methods[-1]].value = True
            return
        self._on(lambda: self.state.set_methods(chosen), refilter=False)

    def _step(self, offset: int) -> None:
        self.state.step(offset)
        self._set_case_value()
        self.refresh()

    def _set_case_value(self) -> None:
        # Update the dropdown without triggering its observer a second render.
        self._building = True
        try:
            self.case.value = self.state.case_id
        finally:
            self._building = False

    def _sync_cases(self) -> None:
        s = self.state
        table = s.source.table.set_index("case_id")
        ids = s.cases
        self._building = True
        try:
            self.case.options = [
                (f"{c} · {table.at[c, 'outcome'] or '?'} · p={table.at[c, 'score']:.2f}", c)
                for c in ids
            ]
            self.case.value = s.case_id if s.case_id in ids else None
            counts = s.counts()
            self.outcome.tooltips = [
                f"{sum(counts.values())} cases",
                *(f"{counts[o]} cases" for o in OUTCOMES),
            ]
        finally:
            self._building = False
        self.n_cases.value = f"<span style='{STYLE}'>{len(ids)} cases</span>"

    def refresh(self) -> None:
        """Re-render the current selection into the image and info panel."""
        rendered = self.state.render()
        if rendered is None:
            self.image.value = b""
            self.info.value = f"<p style='{STYLE}'><i>No case matches these filters.</i></p>"
            return
        self.image.value = rendered.png
        self.info.value = self._info_html(rendered.info)

    @staticmethod
    def _info_html(info: dict[str, Any]) -> str:
        colour = {"TP": "#3c763d", "TN": "#3c763d", "FP": "#a94442", "FN": "#a94442"}.get(
            info.get("outcome", ""), "#333"
        )
        outcome = info.get("outcome") or ""
        words = f" ({OUTCOME_WORDS[outcome]})" if outcome in OUTCOME_WORDS else ""
        head = (
            f"<span style='{STYLE}'><b>{esc(info['case_id'])}</b> — prediction <b>{esc(info['predicted'])}</b> "
            f"(score {info['probability']:.3f}), truth <b>{esc(info['ground_truth'] or 'unknown')}</b>, "
            f"<b style='color:{colour}'>{esc(outcome)}{esc(words)}</b></span>"
        )
        rest = {
            k: v
            for k, v in info.items()
            if k not in ("case_id", "predicted", "probability", "ground_truth", "outcome")
        }
        return head + kv_table(rest)

    # ------------------------------------------------------------------ programmatic use
    def show_group(self, group: dict[str, Any], outcome: str | None = None) -> None:
        """Filter to one subgroup (e.g. ``{"sex": "F", "age_group": "65+"}``) and outcome."""
        self.state.set_group(group)
        self.state.set_outcomes([] if outcome is None else [outcome])
        self._building = True
        try:
            for a, dd in self.attribute_filters.items():
                dd.value = self.state.filters[a]
            self.outcome.value = outcome or ALL_LABEL
        finally:
            self._building = False
        self._sync_cases()
        self.refresh()

    def static_html(self) -> str:
        """The current case's panels and information as static HTML."""
        rendered = self.state.render()
        if rendered is None:
            return panel("Explanation explorer", "<i>No case matches these filters.</i>")
        filters = {a: v for a, v in self.state.filters.items() if v is not None}
        if self.state.outcomes:
            filters["outcome"] = ", ".join(sorted(self.state.outcomes))
        body = (
            f"<p>{len(self.state.cases)} cases"
            + (f" ({esc(filters)})" if filters else "")
            + "</p>"
            + img_tag(rendered.png, f"explanations of {rendered.case_id}")
            + self._info_html(rendered.info)
        )
        return panel("Explanation explorer", body)
