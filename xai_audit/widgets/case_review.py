"""CaseReview: one case, large, for a clinician reviewer.

A thin ipywidgets view over :class:`~xai_audit.widgets.case_review_state.CaseReviewState`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets as w
import pandas as pd

from ._base import StaticFallbackBox
from ._clinical import OUTCOME_WORDS, closer_text
from ._source import CaseSource, ExplainFn
from ._static import STYLE, esc, frame_table, img_tag, panel
from .case_review_state import CaseReviewState

#: Columns of the similar-case table, with the names shown to a clinician.
SIMILAR_COLUMNS = {
    "case_id": "case",
    "truth": "truth",
    "prediction": "prediction",
    "score": "score",
    "closer_than": "closeness (rank among all cases)",
    "distance": "distance (1 = a typical case)",
}


class CaseReview(StaticFallbackBox):
    """Case review: prediction with calibrated confidence, explanations, quality, similar cases.

    Parameters
    ----------
    model, images, metadata, labels
        Direct mode, as for :class:`ExplanationExplorer`.
    case_id : str, optional
        Case shown first (default: the first case).
    source : CaseSource, optional
        An existing source instead.
    methods : sequence of str, default ("gradcam",)
        Direct mode: methods computed. Two or three are shown side by side.
    show : sequence of str, optional
        Methods shown (default: up to three of the offered ones).
    cases : sequence of str, optional
        Cases offered in the selector (default: all).
    k_similar : int, default 4
    masks : array, optional
        Direct mode: lesion masks (outlined; enable the localisation indicators).
    deletion : bool, default False
        Run the per-case deletion test on every opened case; otherwise it runs when the
        "Deletion test" button is pressed (it costs hundreds of milliseconds).
    """

    def __init__(
        self,
        model: Any = None,
        images: Any = None,
        metadata: pd.DataFrame | None = None,
        labels: Any = None,
        *,
        case_id: str | None = None,
        source: CaseSource | None = None,
        methods: Sequence[str] = ("gradcam",),
        show: Sequence[str] | None = None,
        cases: Sequence[str] | None = None,
        k_similar: int = 4,
        masks: Any = None,
        threshold: float = 0.5,
        explain_fn: ExplainFn | None = None,
        deletion: bool = False,
        size: int = 320,
    ) -> None:
        source = CaseSource.given_or_from_model(
            source,
            model,
            images,
            metadata,
            labels,
            masks=masks,
            methods=methods,
            threshold=threshold,
            explain_fn=explain_fn,
        )
        self.state = CaseReviewState(
            source, case_id, methods=show, k_similar=k_similar, deletion=deletion, size=size
        )
        self._building = True
        ids = list(cases) if cases is not None else source.case_ids
        if self.state.case_id not in ids:
            ids = [self.state.case_id, *ids]
        table = source.table.set_index("case_id")
        self.case = w.Dropdown(
            options=[(f"{c} · p={table.at[c, 'score']:.2f}", c) for c in ids],
            value=self.state.case_id,
            description="case",
            layout=w.Layout(width="320px"),
            style={"description_width": "40px"},
        )
        self.case.observe(lambda ch: self._on(lambda: self.state.select_case(ch["new"])), "value")
        self.methods = w.SelectMultiple(
            options=source.methods,
            value=tuple(self.state.methods),
            description="methods",
            rows=min(4, len(source.methods)),
        )
        self.methods.observe(lambda ch: self._on(lambda: self._set_methods(ch["new"])), "value")
        self.deletion_button = w.Button(
            description="Deletion test",
            tooltip="does erasing the highlighted areas lower the score faster than random erasing?",
        )
        self.deletion_button.on_click(lambda _b: self._on(self.state.run_deletion))
        self.header = w.HTML()
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.captions = w.HTML()
        self.quality = w.HTML()
        self.similar_image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.similar_table = w.HTML()
        self.error = w.HTML()
        super().__init__(
            children=[
                w.HBox([self.case, self.methods]),
                self.header,
                self.image,
                self.captions,
                w.HBox(
                    [
                        w.HTML(
                            f"<b style='{STYLE}'>Can this explanation be trusted for this case?</b>&nbsp;"
                        ),
                        self.deletion_button,
                    ]
                ),
                self.quality,
                w.HTML(
                    f"<b style='{STYLE}'>Most similar cases in the data set (by the model's features)</b>"
                ),
                self.similar_image,
                self.similar_table,
                self.error,
            ]
        )
        self.add_class("xai-audit-case-review")
        self._building = False
        self.refresh()

    @classmethod
    def from_result(
        cls, result: Any, model: Any = None, data: Any = None, **kwargs: Any
    ) -> CaseReview:
        """Case review over an :class:`AuditResult`."""
        source = CaseSource.from_result(result, model, data)
        return cls(source=source, **kwargs)

    def _set_methods(self, methods: Sequence[str]) -> None:
        if not methods:
            raise ValueError("Choose at least one method.")
        self.state.methods = list(methods)[:3]

    def _on(self, action: Any) -> None:
        if self._building:
            return

        def run() -> None:
            action()
            self.refresh()

        self._guard(self.error, run)

    def select_case(self, case_id: str) -> None:
        """Show another case."""
        self.case.value = str(case_id)

    # ------------------------------------------------------------------ rendering
    def _header_html(self) -> str:
        s = self.state
        info = s.summary()
        conf = s.confidence()
        attrs = ", ".join(f"{a} {esc(info[a])}" for a in s.source.attributes)
        truth = info["ground_truth"] or "unknown"
        return (
            f"<div style='{STYLE}'><span style='font-size:16px'><b>{esc(info['case_id'])}</b>: "
            f"model says <b>{esc(info['prediction'])}</b> (score {conf.score:.2f}, threshold "
            f"{info['threshold']:.2f}); ground truth <b>{esc(truth)}</b></span><br/>"
            f"<span style='color:#555'>{attrs}</span><br/>{esc(conf.caption)}</div>"
        )

    def _quality_html(self) -> str:
        q = self.state.quality()
        caps = "".join(f"<li>{esc(c)}</li>" for c in q["caption"])
        return frame_table(self.state.plain_quality()) + f"<ul style='{STYLE}'>{caps}</ul>"

    def similar_cases_table(self) -> pd.DataFrame:
        """The similar cases in plain words (truth, prediction, score, how close)."""
        s = self.state
        sim = s.similar()
        out = pd.DataFrame(
            {
                "case_id": sim["case_id"],
                "truth": ["unknown" if pd.isna(v) else s._class_word(int(v)) for v in sim["label"]],
                "prediction": [
                    s._class_word(int(v >= s.source.threshold)) for v in sim["score"].astype(float)
                ],
                "score": sim["score"].astype(float).round(2),
                "closer_than": [closer_text(v) for v in sim["closer_than"]],
                "distance": sim["distance"].astype(float).round(2),
            }
        )
        out["prediction"] += [
            f" ({OUTCOME_WORDS[o]})" if o in OUTCOME_WORDS else "" for o in sim["outcome"]
        ]
        for a in s.source.attributes:
            out[a] = sim[a].to_numpy()
        return out.rename(columns=SIMILAR_COLUMNS)

    def _captions_html(self) -> str:
        items = "".join(f"<li>{esc(c)}</li>" for c in self.state.captions())
        return f"<ul style='{STYLE}'>{items}</ul>"

    def refresh(self) -> None:
        """Render the selected case."""
        s = self.state
        self.header.value = self._header_html()
        self.image.value = s.explanations_png()
        self.captions.value = self._captions_html()
        self.quality.value = self._quality_html()
        try:
            sim = s.similar()
        except RuntimeError as exc:  # no model and no stored features: say so, show the rest
            self.similar_image.value = b""
            self.similar_table.value = f"<i style='{STYLE}'>{esc(exc)}</i>"
            return
        del sim
        self.similar_image.value = s.similar_png()
        self.similar_table.value = frame_table(self.similar_cases_table())

    def static_html(self) -> str:
        """The review as static HTML."""
        s = self.state
        try:
            similar = img_tag(s.similar_png(), "similar cases") + frame_table(
                self.similar_cases_table()
            )
        except RuntimeError as exc:
            similar = f"<i>{esc(exc)}</i>"
        body = (
            self._header_html()
            + img_tag(s.explanations_png(), f"explanations of {s.case_id}")
            + self._captions_html()
            + self._quality_html()
            + "<p><b>Most similar cases</b></p>"
            + similar
        )
        return panel("Case review", body)
