"""Widget logic without a browser: state changes produce the expected cases, images, tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_widgets_common import (
    FakeExplain,
    small_data,
    small_model,
    two_method_source,
)

from xai_audit.widgets import CaseReviewState, CaseSource, DashboardState, ExplorerState
from xai_audit.widgets._metrics import GroupMetrics, make_grouping

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data():
    return small_data()


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def source(model, data):
    return two_method_source(model, data)


# ---------------------------------------------------------------------- source
def test_source_table_and_outcomes(source, data):
    t = source.table
    assert source.attributes == ["sex", "age_group", "site"]
    assert list(t["case_id"]) == list(data.metadata["case_id"])
    assert set(t["outcome"]) <= {"TP", "FP", "FN", "TN"}
    assert t["outcome"].nunique() >= 3  # the median threshold gives a mix
    pred = (t["score"] >= source.threshold).astype(int)
    assert (t["predicted"] == pred).all()
    tp = (t["label"] == 1) & (pred == 1)
    assert (t.loc[tp, "outcome"] == "TP").all()
    fn = (t["label"] == 1) & (pred == 0)
    assert (t.loc[fn, "outcome"] == "FN").all()


def test_source_caches_maps(model, data):
    fake = FakeExplain()
    src = CaseSource.from_model(
        model, data.images[:10], data.metadata[:10], methods=["bright"], explain_fn=fake
    )
    a = src.attribution("case_00000", "bright")
    b = src.attribution("case_00000", "bright")
    assert a is b and len(fake.calls) == 1
    src.attribution("case_00000", "bright", target=0)
    assert len(fake.calls) == 2
    np.testing.assert_allclose(a, data.images[0, 0] * 2)  # target 1 (lesion) scales by 2


def test_source_rejects_bad_inputs(model, data):
    with pytest.raises(ValueError, match="labels"):
        CaseSource.from_model(model, data.images[:5], labels=[0, 1])
    with pytest.raises(ValueError, match="not columns"):
        CaseSource.from_model(model, data.images[:5], data.metadata[:5], attributes=["height"])


# ---------------------------------------------------------------------- explorer
def test_explorer_filters(source):
    s = ExplorerState(source)
    n_all = len(s.cases)
    assert n_all == len(source)
    s.set_filter("sex", "F")
    assert 0 < len(s.cases) < n_all
    assert set(source.table.set_index("case_id").loc[s.cases, "sex"]) == {"F"}
    s.set_outcomes(["FN"])
    sub = source.table.set_index("case_id").loc[s.cases]
    assert set(sub["outcome"]) == {"FN"} and set(sub["sex"]) == {"F"}
    assert s.case_id in s.cases
    counts = s.counts()
    assert counts["FN"] == len(s.cases)
    s.set_group({"site": "C", "age_group": "65+"})
    sub = source.table.set_index("case_id").loc[s.cases]
    assert set(sub["site"]) <= {"C"} and set(sub["age_group"]) <= {"65+"}
    assert s.filters["sex"] is None
    with pytest.raises(KeyError):
        s.set_filter("height", "tall")
    with pytest.raises(ValueError):
        s.set_outcomes(["XX"])


def test_explorer_empty_filter_has_no_case(source):
    s = ExplorerState(source)
    s.set_group({"sex": "F"})
    s.set_filter("site", "nowhere")
    assert s.cases == [] and s.case_id is None and s.render() is None


def test_explorer_render_reacts_to_every_control(source):
    s = ExplorerState(source, methods=["bright"])
    first = s.render()
    assert first.png.startswith(PNG_MAGIC)
    assert s.render() is first  # cached
    seen = {first.png}

    s.set_cmap("viridis")
    seen.add(s.render().png)
    s.set_alpha(0.9)
    seen.add(s.render().png)
    s.set_target("normal")
    seen.add(s.render().png)
    s.set_methods(["bright", "dark"])
    two = s.render()
    seen.add(two.png)
    assert two.methods == ("bright", "dark")
    s.step(1)
    seen.add(s.render().png)
    assert len(seen) == 6  # every change produced a different image

    import io

    from PIL import Image

    w1 = Image.open(io.BytesIO(first.png)).width
    w2 = Image.open(io.BytesIO(two.png)).width
    assert w2 > w1  # a second method adds a panel


def test_explorer_info(source):
    s = ExplorerState(source)
    cid = s.cases[0]
    info = s.info(cid)
    row = source.case(cid)
    assert info["probability"] == pytest.approx(row["score"])
    assert info["ground_truth"] == ("lesion" if row["label"] == 1 else "normal")
    assert info["outcome"] == row["outcome"]
    assert info["sex"] == row["sex"]


def test_explorer_step_wraps(source):
    s = ExplorerState(source)
    s.set_filter("site", "A")
    first = s.case_id
    s.step(-1)
    assert s.case_id == s.cases[-1]
    s.step(1)
    assert s.case_id == first


def test_explorer_validates(source):
    s = ExplorerState(source)
    with pytest.raises(ValueError):
        s.set_methods([])
    with pytest.raises(ValueError):
        s.set_methods(["nope"])
    with pytest.raises(ValueError):
        s.set_alpha(2)
    with pytest.raises(ValueError):
        s.set_cmap("not_a_cmap")
    with pytest.raises(ValueError):
        s.set_slice(3)  # 2D: one slice only


def test_explorer_3d_slices(model):
    vol = small_data(n=12, size=32, volume_depth=6)
    import torch

    from xai_audit.model import ModelAdapter

    net3d = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool3d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )
    m3 = ModelAdapter(net3d, class_names=["normal", "lesion"], device="cpu")
    src = CaseSource.from_model(
        m3, vol.images, vol.metadata, methods=["bright"], explain_fn=FakeExplain()
    )
    assert src.is_volume
    s = ExplorerState(src)
    assert s.n_slices == 6
    s.set_slice(0)
    a = s.render().png
    s.set_slice(5)
    b = s.render().png
    assert a != b


# ---------------------------------------------------------------------- dashboard
def test_point_metrics_match_fairness_definitions(source):
    from xai_audit.fairness._common import METRIC_INDEX
    from xai_audit.fairness.bootstrap import identity_metrics, make_plan

    t = source.table
    g = make_grouping(t, ["sex"])
    y, s = t["label"].to_numpy(float), t["score"].to_numpy(float)
    thr = source.threshold
    ours = GroupMetrics(g, y, s).at(thr)
    for k, name in enumerate(g.names):
        sel = g.codes == k
        plan = make_plan(y[sel], s[sel], np.arange(sel.sum()), thr)
        ref = identity_metrics([[plan]], int(sel.sum()))[0, 0]
        for m in (
            "sensitivity",
            "specificity",
            "ppv",
            "npv",
            "fpr",
            "accuracy",
            "auroc",
            "brier",
            "prevalence",
        ):
            assert ours[m][k] == pytest.approx(ref[METRIC_INDEX[m]], nan_ok=True), (name, m)


def test_dashboard_threshold_moves_point_estimates_only(source):
    d = DashboardState(source, attributes=["sex"], min_group_size=10, n_boot=50)
    before = d.table()
    assert list(before["attribute"].unique()) == ["overall", "sex"]
    assert (before["ci_source"] == "bootstrap").all()  # direct mode: CIs computed up front
    d.set_threshold(min(1.0, source.threshold + 0.002))
    after = d.table()
    assert not np.allclose(before["value"], after["value"], equal_nan=True)
    assert after["ci_low"].isna().all()  # stale CIs are not shown
    assert any("Compute CIs" in w for w in d.warnings())
    d.compute_cis()
    done = d.table()
    assert (done["ci_source"] == "bootstrap").all()
    ok = done["value"].notna() & done["ci_low"].notna()
    assert (done.loc[ok, "ci_low"] <= done.loc[ok, "value"] + 1e-9).all()
    assert (done.loc[ok, "value"] <= done.loc[ok, "ci_high"] + 1e-9).all()
    # threshold-free metrics keep their CIs whatever the threshold
    d.set_threshold(0.01)
    assert d.table("auroc")["ci_low"].notna().any()


def test_dashboard_uses_precomputed_cis_at_audit_threshold(source):
    pre = pd.DataFrame(
        {
            "label": "label",
            "attribute": ["sex", "sex"],
            "group": ["F", "M"],
            "metric": "sensitivity",
            "value": [0.5, 0.5],
            "ci_low": [0.11, 0.12],
            "ci_high": [0.91, 0.92],
        }
    )
    d = DashboardState(source, pre, attributes=["sex"])
    assert not d.auto_ci
    t = d.table().set_index("group")
    assert t.loc["F", "ci_low"] == 0.11 and t.loc["M", "ci_high"] == 0.92
    assert t.loc["F", "ci_source"] == "audit"
    d.set_threshold(source.threshold + 0.05)
    assert d.table().set_index("group").loc["F", "ci_source"] == ""


def test_dashboard_intersections_and_warnings(source):
    d = DashboardState(source, attributes=["sex", "age_group"], min_group_size=30, n_boot=20)
    t = d.table()
    inter = t[t["attribute"] == "sex × age_group"]
    assert len(inter) == 6 and "F | 65+" in set(inter["group"])
    assert inter["n"].sum() == len(source)
    small = t[t["n"] < 30]
    assert len(small) and (small["status"] == "small").all()
    assert any("minimum 30" in w for w in d.warnings())
    d.set_intersect(False)
    assert "sex × age_group" not in set(d.table()["attribute"])
    assert d.group_filter("sex × age_group", "F | 65+") if d.intersect else True


def test_dashboard_group_selection(source):
    d = DashboardState(source, attributes=["sex", "site"], n_boot=20)
    assert d.group_filter("sex × site", "M | B") == {"sex": "M", "site": "B"}
    ids = d.group_cases("sex × site", "M | B")
    sub = source.table.set_index("case_id").loc[ids]
    assert len(ids) and set(sub["sex"]) == {"M"} and set(sub["site"]) == {"B"}
    assert d.group_filter("overall", "all") == {}
    with pytest.raises(KeyError):
        d.group_filter("sex", "X")


def test_dashboard_forest_and_metric(source):
    d = DashboardState(source, attributes=["site"], n_boot=20)
    a = d.forest_png()
    assert a.startswith(PNG_MAGIC)
    d.set_metric("specificity")
    assert d.table()["metric"].eq("specificity").all()
    assert d.forest_png() != a
    with pytest.raises(ValueError):
        d.set_metric("nope")
    with pytest.raises(ValueError):
        d.set_attributes(["height"])


# ---------------------------------------------------------------------- case review
def test_case_review_confidence_is_leave_one_out_bin_rate(source):
    cid = source.case_ids[7]
    r = CaseReviewState(source, cid, methods=["bright", "dark"], deletion=False)
    c = r.confidence()
    t = source.table
    s = t["score"].to_numpy()
    i = source.row(cid)
    same = (s > c.bin_low) & (s <= c.bin_high) if c.bin_low > 0 else (s <= c.bin_high)
    same[i] = False
    assert c.n_similar == int(same.sum())
    assert c.observed_rate == pytest.approx(t["label"].to_numpy()[same].mean())
    assert c.bin_low <= c.score <= c.bin_high
    assert "score" in c.caption and "lesion" in c.caption


def test_case_review_similar_cases(source, data):
    cid = source.case_ids[0]
    r = CaseReviewState(source, cid, methods=["bright"], k_similar=5, deletion=False)
    sim = r.similar()
    assert len(sim) == 5 and cid not in set(sim["case_id"])
    pid = source.case(cid)["patient_id"]
    assert not (source.table.set_index("case_id").loc[sim["case_id"], "patient_id"] == pid).any()
    # distance: Euclidean in features standardised over the data set (by hand), relative to
    # the median distance to the other patients' cases
    emb = source.embeddings().astype(np.float64)
    emb = emb[:, emb.std(axis=0) > 0]  # constant (dead) features carry no information
    z = (emb - emb.mean(axis=0)) / emb.std(axis=0)
    i = source.row(cid)
    d = np.linalg.norm(z - z[i], axis=1)
    others = source.table["patient_id"].to_numpy() != pid
    j = source.row(sim["case_id"].iloc[0])
    assert d[j] == pytest.approx(d[others].min())
    assert sim["distance"].iloc[0] == pytest.approx(d[j] / np.median(d[others]), rel=1e-6)
    assert sim["distance"].is_monotonic_increasing
    # closer_than: share of the other cases (not this patient's) that are farther away
    expected = (d[others] > d[j]).sum() / (others.sum() - 1)
    assert sim["closer_than"].iloc[0] == pytest.approx(expected)
    assert sim["closer_than"].is_monotonic_decreasing and sim["closer_than"].iloc[0] > 0.9
    assert r.similar_png().startswith(PNG_MAGIC)


def test_case_review_quality_and_captions(source):
    positive = source.table.loc[source.table["label"] == 1, "case_id"].iloc[0]
    r = CaseReviewState(source, positive, methods=["bright", "dark"], deletion=True)
    q = r.quality()
    assert list(q["method"]) == ["bright", "dark"]
    assert q["mass_in_mask"].between(0, 1).all()  # a positive case has a lesion mask
    assert q["shortcut_share"].between(0, 1).all()
    assert q["deletion_advantage"].notna().all()
    assert all(c.startswith(m) for c, m in zip(q["caption"], q["method"]))
    assert len(r.captions()) == 2
    assert r.explanations_png().startswith(PNG_MAGIC)
    negative = source.table.loc[source.table["label"] == 0, "case_id"].iloc[0]
    lazy = CaseReviewState(source, positive, methods=["bright"])
    assert lazy.quality()["deletion_advantage"].isna().all()  # on request only
    lazy.run_deletion()
    assert lazy.quality()["deletion_advantage"].notna().all()
    r.select_case(negative)
    assert r.quality()["pointing_game"].isna().all()  # nothing to localise
    assert r.summary()["ground_truth"] == "normal"
