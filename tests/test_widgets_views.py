"""The ipywidgets views: controls drive the state, images update, static fallbacks render."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_widgets_common import (
    FakeExplain,
    small_data,
    small_model,
    two_method_source,
)

from xai_audit.widgets import (
    CaseReview,
    CaseSource,
    ExplanationExplorer,
    SubgroupDashboard,
    case_review,
    dashboard,
    explorer,
)

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def data():
    return small_data(n=80)


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def source(model, data):
    return two_method_source(model, data)


def test_explorer_direct_mode_and_controls(model, data):
    ex = ExplanationExplorer(
        model, data.images, data.metadata, methods=["bright", "dark"], explain_fn=FakeExplain()
    )
    first = ex.image.value
    assert first[:4] == b"\x89PNG"
    ex.cmap.value = "viridis"
    assert ex.image.value != first and ex.state.cmap == "viridis"
    v = ex.image.value
    ex.alpha.value = 0.2
    assert ex.image.value != v
    v = ex.image.value
    ex.method_boxes["dark"].value = True
    assert ex.state.methods == ["bright", "dark"] and ex.image.value != v
    ex.method_boxes["bright"].value = False
    ex.method_boxes["dark"].value = False  # the last one cannot be unticked
    assert ex.method_boxes["dark"].value and ex.state.methods == ["dark"]
    v = ex.image.value
    ex.next_button.click()
    assert ex.case.value == ex.state.case_id and ex.image.value != v
    assert ex.error.value == ""


def test_explorer_filters_update_case_list(source):
    ex = ExplanationExplorer(source=source)
    n = len(ex.case.options)
    ex.attribute_filters["sex"].value = "F"
    assert 0 < len(ex.case.options) < n
    ex.outcome.value = "TN"
    ids = [v for _, v in ex.case.options]
    assert set(source.table.set_index("case_id").loc[ids, "outcome"]) == {"TN"}
    assert "TN" in ex.info.value
    ex.attribute_filters["site"].value = "C"
    ex.attribute_filters["age_group"].value = "18-39"
    if not ex.state.cases:
        assert "No case" in ex.info.value


def test_explorer_static_fallback(source):
    ex = ExplanationExplorer(source=source, show=["bright", "dark"])
    bundle = ex._repr_mimebundle_()
    assert WIDGET_MIME in bundle
    html = bundle["text/html"]
    assert "<img src='data:image/png;base64," in html and ex.state.case_id in html
    assert "static view" in html


def test_explorer_shows_errors_in_widget(source):
    def broken(*_a, **_k):
        raise RuntimeError("explainer exploded")

    src = CaseSource(
        source.table,
        attributes=source.attributes,
        class_names=source.class_names,
        positive_index=source.positive_index,
        threshold=source.threshold,
        methods=["bright", "x"],
        model=source.model,
        images=source._images,
        explain_fn=lambda m, x, method, target: (
            FakeExplain()(m, x, method, target) if method == "bright" else broken()
        ),
    )
    ex = ExplanationExplorer(source=src)
    ex.method_boxes["x"].value = True
    assert "explainer exploded" in ex.error.value


def test_dashboard_view(source):
    d = SubgroupDashboard(source=source, attributes=["sex"], min_group_size=10, n_boot=20)
    table0, forest0 = d.table_html.value, d.forest.value
    assert forest0[:4] == b"\x89PNG" and "overall" in table0
    d.threshold.value = round(source.threshold + 0.003, 3)
    assert d.table_html.value != table0 and d.forest.value != forest0
    d.ci_button.click()
    assert "bootstrap" in d.table_html.value
    d.attributes.value = ("sex", "site")
    assert "sex × site" in d.table_html.value
    d.metric.value = "fpr"
    assert "False positive rate" in d.table_html.value
    d.group.value = ("sex × site", "F | A")
    d.open_button.click()
    assert d.explorer is not None and d.error.value == ""
    ids = d.explorer.state.cases
    sub = source.table.set_index("case_id").loc[ids]
    assert set(sub["sex"]) == {"F"} and set(sub["site"]) == {"A"}
    html = d._repr_mimebundle_()["text/html"]
    assert "forest plot" in html and "<table" in html


def test_case_review_view(source):
    r = CaseReview(source=source, show=["bright", "dark"], deletion=False)
    header = r.header.value
    assert "model says" in header and r.image.value[:4] == b"\x89PNG"
    assert "bright" in r.quality.value and r.similar_image.value[:4] == b"\x89PNG"
    r.select_case(source.case_ids[3])
    assert r.header.value != header and source.case_ids[3] in r.header.value
    assert "–" in r.quality.value  # deletion test not run yet: shown as missing
    r.deletion_button.click()
    assert r.error.value == "" and set(r.state.run_deletion()) == {"bright", "dark"}
    r.methods.value = ("bright",)
    assert r.state.methods == ["bright"]
    html = r._repr_mimebundle_()["text/html"]
    assert "Most similar cases" in html and html.count("<img") == 2


def _fake_result(source):
    """An object shaped like the audit's AuditResult (duck-typed)."""
    pred = source.table[
        ["case_id", "patient_id", *source.attributes, "label", "score", "predicted", "outcome"]
    ]
    stored = {c: np.full((32, 32), 7.0, np.float32) for c in source.case_ids}
    by_group = pd.DataFrame(
        {
            "label": "label",
            "attribute": "sex",
            "group": ["F", "M"],
            "metric": "sensitivity",
            "value": 0.5,
            "ci_low": [0.2, 0.3],
            "ci_high": [0.8, 0.9],
        }
    )

    def maps(method, case_ids):
        if method != "stored":
            raise KeyError(method)
        return np.stack([stored[c] for c in case_ids])

    return SimpleNamespace(
        predictions=pred,
        subgroups=SimpleNamespace(by_group=by_group),
        maps=maps,
        methods=["stored", "bright"],
        sensitive=source.attributes,
        threshold=source.threshold,
        model=None,
    )


def test_from_result_reads_stored_maps_and_cis(source, data):
    result = _fake_result(source)
    src = CaseSource.from_result(result, data=data.images, explain_fn=FakeExplain())
    assert src.methods == ["stored", "bright"] and src.threshold == source.threshold
    np.testing.assert_array_equal(src.attribution(src.case_ids[0], "stored"), 7.0)
    with pytest.raises(RuntimeError, match="no model"):
        src.attribution(src.case_ids[0], "bright")  # not stored and no model to compute it
    ex = explorer(result, data.images)
    assert isinstance(ex, ExplanationExplorer) and ex.image.value[:4] == b"\x89PNG"
    d = dashboard(result, data.images)
    assert "audit" in d.table_html.value
    no_images = CaseSource.from_result(result)  # enough for the dashboard
    assert len(no_images) == len(source)
    with pytest.raises(ValueError, match="data="):
        no_images.image(no_images.case_ids[0])


def test_helpers_direct_mode(model, data):
    kw = {"methods": ["bright"], "explain_fn": FakeExplain()}
    assert isinstance(explorer(model, data.images, data.metadata, **kw), ExplanationExplorer)
    assert isinstance(dashboard(model, data.images, data.metadata, **kw), SubgroupDashboard)
    r = case_review(model, data.images, data.metadata, masks=data.masks, deletion=False, **kw)
    assert isinstance(r, CaseReview)


def test_real_explainer_if_available(model, data):
    explain = pytest.importorskip("xai_audit.explain")
    if "gradcam" not in explain.available_methods():
        pytest.skip("gradcam not offered by xai_audit.explain yet")
    ex = ExplanationExplorer(model, data.images[:6], data.metadata[:6], methods=["gradcam"])
    a = ex.image.value
    ex.next_button.click()
    assert a[:4] == b"\x89PNG" and ex.image.value != a
