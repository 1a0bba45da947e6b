"""Multi-label audits: several label columns audited in one Audit (xai_audit.audit.labels).

The audited model is analytic: label ``l``'s logit is the mean intensity in its own patch
(through a 3 x 3 conv, so Grad-CAM has a layer), so each label's score, and any subgroup
effect on it, is set by the data. The generator's multi-label mode is tested on its own.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from xai_audit import Audit, ModelAdapter
from xai_audit.audit.config import ConfigError, DataConfig, check_columns, load_data
from xai_audit.audit.labels import AUTO_EXPLAIN_MAX, LabelPlan, label_view, labels_of
from xai_audit.audit.result import AuditResult
from xai_audit.data import load_manifest, manifest_from_arrays
from xai_audit.datasets import make_multilabel_cxr, make_synthetic_cxr
from xai_audit.datasets.config import SyntheticConfig

NAMES = ["lesion", "effusion", "nodule"]
H = 32
QUICK = {"sanity": False, "faithfulness": False, "shortcuts": False}
#: Audit settings that keep the tests light (no slice discovery: not what is tested here).
LIGHT = {"n_boot": 200, "quality": QUICK, "slices": False}


def _boxes() -> torch.Tensor:
    m = torch.zeros(3, H, H)
    m[0, 4:12, 4:12] = 1
    m[1, 20:28, 4:12] = 1
    m[2, 12:20, 20:28] = 1
    return m


class MaskedConv(nn.Module):
    """Channel l = the image inside patch l (a 3 x 3 identity conv, then the patch mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, 0, 1, 1] = 1.0
            self.conv.bias.zero_()
        self.register_buffer("masks", _boxes())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)) * self.masks


class PatchModel(nn.Module):
    """Logit of label l = gain * (mean intensity in patch l - 0.6)."""

    def __init__(self, gain: float = 12.0) -> None:
        super().__init__()
        self.features = MaskedConv()
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.gain * (f.sum((2, 3)) / self.features.masks.sum((1, 2)) - 0.6)


def _data(n: int = 400, seed: int = 0, faint: float = 0.3):
    """Label l brightens patch l by 0.2; for effusion only 0.2 * faint when sex=F."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    site = rng.choice(["A", "B"], n)
    y = (rng.random((n, 3)) < 0.4).astype(int)
    amp = np.full((n, 3), 0.2)
    amp[:, 1] = np.where(sex == "F", 0.2 * faint, 0.2)
    x = 0.5 + rng.normal(0, 0.15, (n, 1, H, H)).astype(np.float32)
    boxes = _boxes().numpy()
    for j in range(3):
        x[:, 0] += (y[:, j] * amp[:, j])[:, None, None].astype(np.float32) * boxes[j]
        x[:, 0] += rng.normal(0, 0.08, n)[:, None, None].astype(np.float32) * boxes[j]
    attrs = {"sex": sex, "site": site}
    return manifest_from_arrays(x.clip(0, 1), y, attrs, label_names=NAMES)


def _model(**kw) -> ModelAdapter:
    return ModelAdapter(
        PatchModel(),
        class_names=NAMES,
        multi_label=True,
        device="cpu",
        target_layer="features",
        **kw,
    )


def _audit(man, out, **kw) -> Audit:
    kw = {**LIGHT, "fresh": True, **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Audit(_model(), man, ["sex", "site"], ["gradcam"], output_dir=out, **kw)


@pytest.fixture(scope="module")
def ml_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("ml") / "audit"
    res = _audit(_data(), out, explain_labels=["lesion", "effusion"]).run(progress=False)
    return res, out


# ---------------------------------------------------------------------------- the audit
def test_gap_flagged_on_its_label_only_and_named(ml_result):
    res, _ = ml_result
    gaps = [f for f in res.findings if f["kind"] == "disparity"]
    assert [(f["label"], f["where"]) for f in gaps] == [("effusion", "sex=F")]
    assert gaps[0]["title"] == "Performance gap for sex=F on 'effusion'"
    assert gaps[0]["evidence"]["label"] == "effusion"
    assert "Sensitivity (effusion)" in gaps[0]["message"]
    assert {f["label"] for f in res.subgroups["flags"]} == {"effusion"}
    # every label has its own threshold, tables and predictions columns
    assert set(res.subgroups["thresholds"]) == set(NAMES)
    assert set(res.subgroups["by_group"]["label"]) == set(NAMES)
    for name in NAMES:
        assert {f"{k}__{name}" for k in ("label", "score", "predicted", "outcome")} <= set(
            res.predictions.columns
        )
    info = {e["name"]: e for e in res.data_summary["labels"]}
    assert [info[n]["explained"] for n in NAMES] == [True, True, False]
    assert info["lesion"]["result_dir"] == "." and info["effusion"]["result_dir"] == (
        "labels/effusion"
    )
    assert info["effusion"]["n_flags"] > 0 and info["nodule"]["n_flags"] == 0
    # the primary label's columns are the single-label ones
    assert np.array_equal(res.predictions["score"], res.predictions["score__lesion"])
    cov = next(f for f in res.findings if f["kind"] == "coverage")["message"]
    assert "not explained (explain_labels): nodule" in cov


def test_label_tables_equal_a_single_label_audit(ml_result, tmp_path):
    """One evaluation of all labels gives each label the numbers a single-label audit gives."""
    res, _ = ml_result
    man = _data()
    single = copy.copy(man)
    single.label_cols = ["effusion"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r1 = Audit(
            _model(positive_class="effusion"),
            single,
            ["sex", "site"],
            ["gradcam"],
            output_dir=tmp_path / "single",
            **LIGHT,
        ).run(progress=False)
    view = label_view(res, "effusion")
    for key in ("overall", "by_group", "disparities"):
        pd.testing.assert_frame_equal(
            r1.subgroups[key].reset_index(drop=True), view.subgroups[key].reset_index(drop=True)
        )
    assert view.threshold == r1.threshold
    # same finding, the label named only in the multi-label one
    (a,) = [f for f in r1.findings if f["kind"] == "disparity"]
    (b,) = [f for f in view.findings if f["kind"] == "disparity"]
    assert b["title"] == a["title"] + " on 'effusion'"
    assert b["message"] == a["message"].replace("Sensitivity", "Sensitivity (effusion)", 1)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_effect_no_flag_on_any_label(seed, tmp_path):
    res = _audit(_data(seed=seed, faint=1.0), tmp_path / "c", explain_labels=["lesion"]).run(
        progress=False
    )
    assert not [f for f in res.findings if f["kind"] == "disparity"]
    assert not [f for f in res.findings if f["severity"] in ("high", "medium")]
    (ok,) = [f for f in res.findings if f["severity"] == "ok"]
    assert "3 labels (lesion, effusion, nodule)" in ok["message"]


def test_round_trip_and_label_views(ml_result):
    res, out = ml_result
    loaded = AuditResult.load(out)
    assert [f["title"] for f in loaded.findings] == [f["title"] for f in res.findings]
    assert loaded.data_summary["labels"] == res.data_summary["labels"]
    assert loaded.subgroups["thresholds"] == res.subgroups["thresholds"]
    pd.testing.assert_frame_equal(loaded.predictions, res.predictions, check_dtype=False)
    assert labels_of(loaded) == NAMES
    eff = label_view(loaded, "effusion")  # explained: read from labels/effusion
    assert eff.method_names == ["gradcam"]
    assert eff.predictions["score"].equals(loaded.predictions["score__effusion"])
    assert set(eff.subgroups["by_group"]["label"]) == {"effusion"}
    assert {f.get("label") for f in eff.findings} <= {None, "effusion"}
    # Grad-CAM of the effusion output lights the effusion patch, not the lesion one
    case = eff.predictions.loc[eff.predictions["label"] == 1, "case_id"].iloc[0]
    cam = eff.maps("gradcam", [case])[0]
    boxes = _boxes().numpy().astype(bool)
    assert cam[boxes[1]].mean() > 5 * max(cam[boxes[0]].mean(), 1e-6)
    nod = label_view(loaded, "nodule")  # not explained: tables only
    assert nod.method_names == [] and not [f for f in nod.findings if f["kind"] == "disparity"]
    assert label_view(loaded, "lesion").quality is not None
    with pytest.raises(KeyError, match="Unknown label 'x'"):
        label_view(loaded, "x")


def test_reports_render_per_label(ml_result, tmp_path):
    res, _ = ml_result
    path = res.report(tmp_path / "report.html")
    html = path.read_text(encoding="utf-8")
    for name in NAMES:
        assert f"'{name}'" in html or name in html
    assert "Performance gap for sex=F on &#39;effusion&#39;" in html or (
        "Performance gap for sex=F on 'effusion'" in html
    )
    assert 'id="labels"' in html and "report_effusion.html" in html
    for name in NAMES:  # one report per label next to the main one, each on its own label
        page = (tmp_path / f"report_{name}.html").read_text(encoding="utf-8")
        assert f"This report shows the label <strong>{name}</strong>" in page
    eff = (tmp_path / "report_effusion.html").read_text(encoding="utf-8")
    nod = (tmp_path / "report_nodule.html").read_text(encoding="utf-8")
    assert "on &#39;effusion&#39;" in eff and "on &#39;effusion&#39;" not in nod
    assert label_view(res, "nodule").report(tmp_path / "nodule_alone.html").is_file()


# ---------------------------------------------------------------------------- settings
def test_bad_multilabel_settings_are_explained(tmp_path):
    man = _data(n=40)
    with pytest.raises(ConfigError, match="not among the model's class names"):
        Audit(
            ModelAdapter(PatchModel(), class_names=["a", "b", "c"], multi_label=True),
            man,
            ["sex"],
            output_dir=tmp_path / "a",
        )
    with pytest.raises(ConfigError, match="mutually exclusive classes"):
        Audit(ModelAdapter(PatchModel(), device="cpu"), man, ["sex"], output_dir=tmp_path / "b")
    with pytest.raises(ConfigError, match="not label columns"):
        Audit(_model(), man, ["sex"], explain_labels=["pneumonia"], output_dir=tmp_path / "c")
    two = copy.copy(man)
    two.label_cols = ["lesion", "effusion"]
    with pytest.raises(ConfigError, match="2 label columns .* but the model has 3 outputs"):
        Audit(
            ModelAdapter(PatchModel(), multi_label=True, device="cpu"),
            two,
            ["sex"],
            output_dir=tmp_path / "d",
        )


def test_auto_explains_all_up_to_five_then_first_and_flagged():
    few = LabelPlan(["a", "b", "c"], [0, 1, 2])
    assert few.explained() == ["a", "b", "c"]
    names = [f"l{i}" for i in range(14)]
    many = LabelPlan(names, list(range(14)))
    assert many.explained() == ["l0"]
    flags = [{"label": "l9"}, {"label": "l3"}, {"label": "l9"}]
    assert many.explained(flags) == ["l0", "l3", "l9"]
    lots = [{"label": n} for n in names]
    assert len(many.explained(lots)) == AUTO_EXPLAIN_MAX
    assert LabelPlan(names, list(range(14)), "all").explained() == names
    assert LabelPlan(names, list(range(14)), ["l5", "l2"]).primary == "l2"


# ---------------------------------------------------------------------------- generator
def test_generator_multilabel_mode(tmp_path):
    data = make_multilabel_cxr(n_samples=240, image_size=64, seed=3)
    assert data.label_names == ["lesion", "effusion", "nodule"]
    assert data.labels.shape == (240, 3) and set(np.unique(data.labels)) == {0, 1}
    meta = data.metadata
    # the recorded effect: effusion fainter for sex=F, on that label only
    (eff,) = [e for e in data.card["effects"] if e["kind"] == "disparity"]
    assert (eff["label"], eff["attribute"], eff["group"]) == ("effusion", "sex", "F")
    pos = meta[meta["effusion"] == 1]
    ratio = (
        pos.loc[pos["sex"] == "F", "effusion_contrast"].mean()
        / pos.loc[pos["sex"] == "M", "effusion_contrast"].mean()
    )
    assert ratio == pytest.approx(eff["measured"]["contrast_ratio"])
    assert 0.2 < ratio < 0.4
    nod = meta[meta["nodule"] == 1]
    n_ratio = (
        nod.loc[nod["sex"] == "F", "nodule_contrast"].mean()
        / nod.loc[nod["sex"] == "M", "nodule_contrast"].mean()
    )
    assert 0.85 < n_ratio < 1.15
    # patient-level labels: a patient's images agree
    assert (meta.groupby("patient_id")[["effusion", "nodule"]].nunique() == 1).all().all()
    # findings are painted where their masks are, and nowhere else
    base = make_synthetic_cxr(240, 64, seed=3, config=SyntheticConfig().as_control())
    clean = (data.labels[:, 1:] == 0).all(axis=1)
    assert np.array_equal(base.images[clean], data.images[clean])
    k = int(
        np.flatnonzero((meta["effusion"] == 1) & (meta["sex"] == "M") & (meta["nodule"] == 0))[0]
    )
    diff = data.images[k, 0] - base.images[k, 0]
    inside = data.finding_masks["effusion"][k].astype(bool)
    assert diff[inside].mean() > 0.05 and diff[inside].mean() > 5 * abs(diff[~inside].mean())
    control = make_multilabel_cxr(n_samples=240, image_size=64, seed=3, control=True)
    assert control.card["effects"] == []
    assert np.array_equal(control.labels, data.labels)
    # written: one manifest column per label, loadable as a multi-label manifest
    path = data.write(tmp_path / "ml")
    header = pd.read_csv(path, nrows=0).columns.tolist()
    assert header[:6] == ["case_id", "image", "mask", "lesion", "effusion", "nodule"]
    assert "effusion" not in pd.read_csv(tmp_path / "ml" / "truth.csv", nrows=0).columns
    man = load_manifest(path, label_cols=data.label_names)
    assert man.label_cols == data.label_names
    assert np.array_equal(man.labels, data.labels)


def test_config_label_cols(tmp_path):
    data = make_multilabel_cxr(n_samples=12, image_size=32, seed=0)
    path = data.write(tmp_path / "d")
    cols = pd.read_csv(path, nrows=0).columns.tolist()
    d = DataConfig(manifest=str(path), label_cols=["lesion", "effusion"])
    assert check_columns(cols, d, ["sex"]) == []
    assert load_data(d, ["sex"]).label_cols == ["lesion", "effusion"]
    bad = DataConfig(manifest=str(path), label_cols=["lesion", "pleural"])
    (msg,) = check_columns(cols, bad, ["sex"])
    assert "data.label_cols[1]: column 'pleural' is not in the manifest" in msg
    assert "non-empty list" in check_columns(cols, DataConfig(label_cols=[]), [])[0]


def test_manifest_from_arrays_label_names():
    x = np.zeros((4, 1, 8, 8), np.float32)
    y = np.array([[0, 1], [1, 0], [1, 1], [0, 0]])
    man = manifest_from_arrays(x, y, {"sex": list("FMFM")}, label_names=["a", "b"])
    assert man.label_cols == ["a", "b"] and np.array_equal(man.labels, y)


def test_label_selector_switches_the_dashboard(ml_result):
    from xai_audit.widgets.labels import LabelSelector

    res, _ = ml_result
    sel = LabelSelector(res, "dashboard", data=_data(), model=_model())
    assert sel.selector.options == tuple(NAMES) and sel.selector.value == "lesion"
    thr = {e["name"]: e["threshold"] for e in res.data_summary["labels"]}
    assert sel.view.state.base_threshold == pytest.approx(thr["lesion"])
    sel.selector.value = "effusion"
    assert sel.view.state.base_threshold == pytest.approx(thr["effusion"])
    assert sel.children[1] is sel.view


def _with_split(man, val_rows):
    """The manifest with a 'split' column: 'val' on ``val_rows``, 'test' elsewhere."""
    table = man.table.copy()
    table["split"] = np.where(np.isin(np.arange(len(table)), val_rows), "val", "test")
    return type(man)(
        table,
        id_col=man.id_col,
        image_col=man.image_col,
        label_cols=man.label_cols,
        attribute_cols=man.attribute_cols,
        store=man._store,
    )


def test_threshold_from_a_validation_split_chooses_one_threshold_per_label(tmp_path):
    from xai_audit.fairness.threshold import choose_threshold

    man = _data(n=400, seed=3)
    val = np.arange(0, 400, 4)  # every fourth image
    res = _audit(
        _with_split(man, val),
        tmp_path / "split",
        explain_labels=["lesion"],
        threshold_from={"split_column": "split", "split": "val", "rule": "youden"},
    ).run(progress=False)
    assert len(res.predictions) == 300  # the validation rows are not audited
    scores = _model().predict_proba(man.load_images(val))
    for k, label in enumerate(NAMES):
        t = res.subgroups["thresholds"][label]
        assert t["source"]["kind"] == "validation_split" and t["source"]["n_validation"] == 100
        y = man.labels[val, k].astype(int)
        assert t["value"] == pytest.approx(choose_threshold(y, scores[:, k], "youden").value)


def test_threshold_from_a_split_with_one_class_for_a_label_is_explained(tmp_path):
    man = _data(n=200, seed=4)
    table = man.table.copy()
    val = np.flatnonzero(table["nodule"].to_numpy() == 0)[:40]  # nodule-negative rows only
    with pytest.raises(ConfigError, match="one class only for label 'nodule'"):
        _audit(
            _with_split(man, val),
            tmp_path / "bad",
            threshold_from={"split_column": "split", "split": "val", "rule": "youden"},
        )
