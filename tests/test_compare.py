"""Model-vs-model comparison (xai_audit.compare): paired intervals, contract, verdicts, CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from xai_audit.audit.result import AuditResult
from xai_audit.compare import DIFFERENCE_COLUMNS, Comparison, ComparisonError, compare_audits
from xai_audit.compare.behaviour import flips_table
from xai_audit.compare.paired import paired_mean_difference, paired_metrics
from xai_audit.fairness.inputs import Group, as_clusters

NONINF = """\
criteria:
  - compare_to: reference
    metric: sensitivity
    groups: all
    non_inferiority_margin: 0.02
  - compare_to: reference
    metric: auroc
    groups: all
    non_inferiority_margin: 0.02
"""


def cohort(n_patients: int = 260, seed: int = 0) -> pd.DataFrame:
    """Patients with 1-3 images each, two attributes, a label and a patient effect."""
    rng = np.random.default_rng(seed)
    k = rng.integers(1, 4, n_patients)
    pid = np.repeat(np.arange(n_patients), k)
    sex = np.array(["F", "M"])[rng.integers(0, 2, n_patients)][pid]
    age = np.array(["18-39", "40-64", "65+"])[rng.integers(0, 3, n_patients)][pid]
    y = (rng.random(pid.size) < 0.4).astype(int)
    return pd.DataFrame(
        {
            "case_id": [f"c{i:05d}" for i in range(pid.size)],
            "patient_id": [f"p{p:04d}" for p in pid],
            "sex": sex,
            "age_group": age,
            "label": y,
            "u": rng.normal(0, 0.7, n_patients)[pid],  # shared by a patient's images
        }
    )


def scores(df: pd.DataFrame, strength: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logit = strength * (df["label"].to_numpy() - 0.5) + df["u"].to_numpy()
    logit = logit + rng.normal(0, noise, len(df))
    return 1.0 / (1.0 + np.exp(-logit))


def make_result(df: pd.DataFrame, s: np.ndarray, name: str, threshold: float = 0.5) -> AuditResult:
    """A small audit result built with the audit's own subgroup evaluation."""
    from xai_audit.fairness import evaluate_subgroups

    attrs = df[["sex", "age_group"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate_subgroups(
            df["label"], s, attrs, threshold=threshold, patient_id=df["patient_id"], n_boot=100
        )
    pred = df[["case_id", "sex", "age_group", "label"]].copy()
    pred.insert(0, "row", np.arange(len(df)))
    pred["score"] = s
    pred["predicted"] = (s >= threshold).astype(int)
    pred["outcome"] = np.where(pred["predicted"] == 1, "P", "N")
    subgroups = {
        "threshold": res.threshold.to_dict(),
        "overall": res.overall,
        "by_group": res.by_group,
        "settings": dict(res.config),
    }
    return AuditResult(
        name=name,
        config={},
        provenance={},
        model_info={"name": name},
        data_summary={"patient_level_bootstrap": True},
        predictions=pred,
        subgroups=subgroups,
        quality={},
        findings=[],
        exemplars={},
    )


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return cohort()


@pytest.fixture(scope="module")
def reference(data: pd.DataFrame) -> AuditResult:
    return make_result(data, scores(data, 3.0, 1.0, seed=1), "v1")


@pytest.fixture(scope="module")
def worse(data: pd.DataFrame) -> AuditResult:
    # much weaker signal: lower AUROC and sensitivity everywhere
    return make_result(data, scores(data, 1.2, 1.0, seed=2), "v2-worse")


def patients(df: pd.DataFrame) -> pd.Series:
    return pd.Series(df["patient_id"].to_numpy(), index=df["case_id"].to_numpy())


# ---------------------------------------------------------------------------- contract
def test_self_comparison_is_exactly_zero_and_passes_non_inferiority(data, reference, tmp_path):
    from xai_audit.audit.criteria import evaluate_criteria, overall_verdict

    cmp = compare_audits(reference, reference, patients=patients(data), n_boot=200)
    d = cmp.differences
    assert list(d.columns[: len(DIFFERENCE_COLUMNS)]) == DIFFERENCE_COLUMNS
    assert ((d.attribute == "overall") == (d.group == "overall")).all()
    defined = d[np.isfinite(d["reference"])]
    assert len(defined) > 50
    assert (defined["diff"] == 0).all()
    assert (defined["ci_low"] == 0).all() and (defined["ci_high"] == 0).all()
    assert (cmp.flips["flipped"] == 0).all()
    assert cmp.settings["resampling_unit"] == "patient"
    assert cmp.settings["n_units"] == data["patient_id"].nunique()
    path = tmp_path / "noninf.yaml"
    path.write_text(NONINF)
    table = evaluate_criteria(reference, path, comparison=cmp)
    assert overall_verdict(table) == "pass", table


def test_reference_values_match_the_audit_tables(data, reference):
    """Same groups (names, intersections) and the same numbers as result.subgroups."""
    cmp = compare_audits(reference, reference, patients=patients(data), n_boot=0)
    bg = reference.subgroups.by_group
    merged = cmp.differences.merge(bg, on=["attribute", "group", "metric"])
    groups_audit = set(zip(bg.attribute, bg.group))
    groups_cmp = set(zip(cmp.differences.attribute, cmp.differences.group)) - {("overall",) * 2}
    assert groups_cmp == groups_audit
    np.testing.assert_allclose(merged["reference"], merged["value"], rtol=1e-12, equal_nan=True)
    ov = reference.subgroups.overall.set_index("metric")["value"]
    mine = cmp.overall().set_index("metric")["reference"]
    np.testing.assert_allclose(mine, ov.loc[mine.index], rtol=1e-12)


def test_point_differences_match_scikit_learn(data, reference, worse):
    from sklearn.metrics import recall_score, roc_auc_score

    cmp = compare_audits(reference, worse, patients=patients(data), n_boot=0)
    ov = cmp.overall().set_index("metric")
    y = data["label"].to_numpy()
    sa, sb = reference.predictions["score"], worse.predictions["score"]
    assert ov.loc["auroc", "diff"] == pytest.approx(roc_auc_score(y, sb) - roc_auc_score(y, sa))
    sens = recall_score(y, sb >= 0.5) - recall_score(y, sa >= 0.5)
    assert ov.loc["sensitivity", "diff"] == pytest.approx(sens)


def test_worse_model_fails_non_inferiority(data, reference, worse, tmp_path):
    from xai_audit.audit.criteria import evaluate_criteria, overall_verdict

    cmp = compare_audits(reference, worse, patients=patients(data), n_boot=300)
    ov = cmp.overall().set_index("metric")
    assert ov.loc["auroc", "ci_high"] < 0 and ov.loc["sensitivity", "ci_high"] < 0
    path = tmp_path / "noninf.yaml"
    path.write_text(NONINF)
    table = evaluate_criteria(worse, path, comparison=cmp)
    assert overall_verdict(table) == "fail"
    failed = table[(table.verdict == "fail") & (table.group == "overall")]
    assert set(failed.metric) == {"auroc", "sensitivity"}


def test_case_order_does_not_matter(data, reference, worse):
    shuffled = make_result(data, worse.predictions["score"].to_numpy(), "v2-worse")
    order = np.random.default_rng(3).permutation(len(data))
    shuffled.predictions = shuffled.predictions.iloc[order].reset_index(drop=True)
    a = compare_audits(reference, worse, patients=patients(data), n_boot=100)
    b = compare_audits(reference, shuffled, patients=patients(data), n_boot=100)
    pd.testing.assert_frame_equal(a.differences, b.differences)


def test_mismatched_case_sets_raise_a_clear_error(data, reference, worse):
    short = make_result(data.iloc[5:], worse.predictions["score"].to_numpy()[5:], "short")
    with pytest.raises(ComparisonError, match=r"5 of the reference's \d+ cases are not in the new"):
        compare_audits(reference, short, n_boot=0)
    relabelled = make_result(data.assign(label=1 - data["label"]), scores(data, 3, 1, 1), "x")
    with pytest.raises(ComparisonError, match="different label"):
        compare_audits(reference, relabelled, n_boot=0)
    with pytest.raises(ComparisonError, match="no patient id"):
        compare_audits(reference, worse, patients=patients(data).iloc[3:], n_boot=0)


def test_without_patient_ids_it_warns_and_resamples_images(reference, worse):
    with pytest.warns(UserWarning, match="keep no patient ids"):
        cmp = compare_audits(reference, worse, n_boot=0)
    assert cmp.settings["resampling_unit"] == "image"
    assert any("too narrow" in n for n in cmp.notes)


def test_flips_are_counted_per_group():
    y = np.array([1, 1, 0, 0, 1, 0])
    a = np.array([1, 0, 0, 1, 1, 0])
    b = np.array([0, 1, 1, 1, 1, 0])
    groups = [Group(-1, "overall", "overall", np.arange(6)), Group(0, "sex", "F", np.arange(3))]
    t = flips_table(y, a, b, groups).set_index("group")
    # case 0: TP->FN (pos->neg, became error); case 1: FN->TP (corrected); case 2: TN->FP
    assert t.loc["overall", ["pos_to_neg", "neg_to_pos", "flipped"]].tolist() == [1, 2, 3]
    assert t.loc["overall", ["became_error", "became_correct"]].tolist() == [2, 1]
    assert t.loc["overall", ["errors_reference", "errors_new"]].tolist() == [2, 3]
    assert t.loc["F", ["flipped", "became_error"]].tolist() == [3, 2]


def test_explanation_changes_are_paired_per_case(data, reference):
    """Per-case shortcut share and localisation: the difference is over the cases both audits
    measured, exact when every case moves by the same amount; a shortcut group gets its row."""
    rng = np.random.default_rng(5)
    x = rng.random(len(data))
    loc = np.where(data["label"] == 1, rng.random(len(data)), np.nan)

    def with_quality(result, shift, candidates):
        r = make_result(data, result.predictions["score"].to_numpy(), result.name)
        r.methods = [{"name": "gradcam"}]
        r.quality = type(r.quality)(
            per_image=pd.DataFrame(
                {
                    "case_id": data["case_id"],
                    "shortcut__gradcam": x + shift,
                    "loc__gradcam__mass_in_mask": loc - shift,
                }  # fmt: skip
            ),
            shortcuts={"gradcam": {"candidates": candidates}},
        )
        return r

    a = with_quality(reference, 0.0, [])
    b = with_quality(reference, 0.1, [{"attribute": "sex", "group": "F", "confirmed": True}])
    e = compare_audits(a, b, patients=patients(data), n_boot=200).explanations
    e = e.set_index("measure")
    share = e.loc["mean attribution share in the corners"]
    assert share["diff"] == pytest.approx(0.1) and share["n"] == len(data)
    assert share["ci_low"] == pytest.approx(0.1) and share["ci_high"] == pytest.approx(0.1)
    assert e.loc["mass_in_mask", "diff"] == pytest.approx(-0.1)
    assert e.loc["mass_in_mask", "n"] == int(data["label"].sum())
    group = e.loc["mean attribution share in the corners, sex=F"]
    assert group["n"] == int((data["sex"] == "F").sum()) and group["diff"] == pytest.approx(0.1)
    confirmed = e.loc["confirmed shortcut regions"]
    assert (confirmed["reference"], confirmed["new"]) == (0, 1)


# ---------------------------------------------------------------------------- coverage
@pytest.mark.slow
def test_paired_difference_intervals_cover_the_true_difference():
    """Seeded simulation: 1000 data sets of 150 patients (1-3 images, patient effect). The 95%
    paired patient-level intervals of the AUROC and sensitivity differences and of a per-case
    mean difference must cover the population difference in 93-97% of the data sets; for the
    per-case measure, whose difference has a patient effect, image-level intervals (patients
    ignored) must under-cover (the reason to resample patients)."""
    from sklearn.metrics import roc_auc_score

    from xai_audit.compare.paired import diff_interval
    from xai_audit.fairness._common import METRIC_INDEX

    strength_a, strength_b, thr = 2.0, 2.6, 0.5

    def draw(n_patients, rng):
        k = rng.integers(1, 4, n_patients)
        pid = np.repeat(np.arange(n_patients), k)
        y = (rng.random(pid.size) < 0.4).astype(int)
        u = rng.normal(0, 0.8, n_patients)[pid]
        e = rng.normal(0, 1.0, (2, pid.size))
        la = strength_a * (y - 0.5) + u + e[0]
        lb = strength_b * (y - 0.5) + u + 0.6 * e[0] + 0.8 * e[1]  # correlated with model A
        return y, pid, 1 / (1 + np.exp(-la)), 1 / (1 + np.exp(-lb))

    big = np.random.default_rng(12345)
    y, _pid, sa, sb = draw(150_000, big)
    true_auc = roc_auc_score(y, sb) - roc_auc_score(y, sa)
    true_sens = (sb[y == 1] >= thr).mean() - (sa[y == 1] >= thr).mean()
    true_mean = 0.1  # per-case measure: x_new - x_ref has mean 0.1 by construction

    rng = np.random.default_rng(0)
    hits = np.zeros(4)
    n_rep = 1000
    for _ in range(n_rep):
        y, pid, sa, sb = draw(150, rng)
        units, n_units = as_clusters(pid, y.size)
        g = [Group(-1, "overall", "overall", np.arange(y.size))]
        seed = int(rng.integers(2**31))
        pm = paired_metrics(y, (sa, sb), (thr, thr), units, n_units, g, n_boot=400, seed=seed)
        _, lo, hi = diff_interval(pm)
        for j, (m, truth) in enumerate((("auroc", true_auc), ("sensitivity", true_sens))):
            i = METRIC_INDEX[m]
            hits[j] += lo[0, i] <= truth <= hi[0, i]
        xa = rng.normal(0, 1, y.size)
        patient_shift = rng.normal(0, 1, pid.max() + 1)[pid]
        xb = xa + true_mean + 0.6 * patient_shift + 0.3 * rng.normal(0, 1, y.size)
        r = paired_mean_difference(xa, xb, units, n_units, n_boot=400, seed=seed)
        hits[2] += r["ci_low"] <= true_mean <= r["ci_high"]
        rows = np.arange(y.size)
        r = paired_mean_difference(xa, xb, rows, y.size, n_boot=400, seed=seed)
        hits[3] += r["ci_low"] <= true_mean <= r["ci_high"]
    coverage = hits / n_rep
    print("coverage (auroc, sensitivity, mean, mean image-level):", coverage)
    assert np.all((coverage[:3] >= 0.93) & (coverage[:3] <= 0.97)), coverage
    assert coverage[3] < 0.91, coverage


@pytest.mark.slow
def test_group_changes_are_not_named_by_chance():
    """Clean controls: two equally good models (independent noise) over 6 seeds; per-row 95%
    intervals exclude 0 for several of the 77 group rows, the listed group changes
    (simultaneous intervals) stay empty in at least 5 of 6. With a real effect (weaker signal
    only in age_group=65+) the 65+ loss is listed in every seed, and nothing is listed for
    groups that hold no 65+ case."""
    from xai_audit.compare.text import largest_changes

    listed_null, per_row_null, hits, disjoint = 0, 0, 0, 0
    for seed in range(6):
        df = cohort(seed=100 + seed)
        s = scores(df, 3.0, 1.0, seed=1000 + seed)
        a = make_result(df, s, "a")
        b = make_result(df, scores(df, 3.0, 1.0, seed=2000 + seed), "b")
        c = compare_audits(a, b, patients=patients(df), n_boot=300, seed=seed)
        listed_null += bool(len(largest_changes(c.differences)))
        rows = c.differences[c.differences.attribute != "overall"]
        per_row_null += int(((rows.ci_low > 0) | (rows.ci_high < 0)).sum())
        old = (df.age_group == "65+").to_numpy()
        s2 = s.copy()
        s2[old] = scores(df, 1.0, 1.0, seed=3000 + seed)[old]
        c2 = compare_audits(a, make_result(df, s2, "e"), patients=patients(df), n_boot=300,
                            seed=seed)  # fmt: skip
        lc = largest_changes(c2.differences, k=999)
        hits += bool(((lc.attribute == "age_group") & (lc.group == "65+")
                      & (lc.verdict == "worse")).any())  # fmt: skip
        disjoint += int(lc.group.str.contains("18-39|40-64").sum())
    assert per_row_null >= 6  # the multiplicity problem is real here
    assert listed_null <= 1
    assert hits == 6
    assert disjoint == 0


# ---------------------------------------------------------------------------- outputs
def test_save_load_and_report(data, reference, worse, tmp_path):
    cmp = compare_audits(reference, worse, patients=patients(data), n_boot=100)
    back = Comparison.load(cmp.save(tmp_path / "cmp"))
    pd.testing.assert_frame_equal(back.differences, cmp.differences)
    pd.testing.assert_frame_equal(back.flips, cmp.flips)
    assert back.settings["thresholds"] == cmp.settings["thresholds"]
    html = cmp.report(tmp_path / "cmp.html").read_text()
    twin = json.loads((tmp_path / "cmp.json").read_text())
    for heading in ("Overall differences", "Differences by group", "Decisions that flipped"):
        assert heading in html
    assert "http://" not in html and "https://" not in html and 'src="data:' in html
    assert not any(c in html or c in json.dumps(twin) for c in data["case_id"].iloc[:50])
    assert not any(p in html for p in data["patient_id"].iloc[:50])
    auroc = next(r for r in twin["overall"] if r["metric"] == "auroc")
    assert auroc["diff"] == pytest.approx(cmp.overall().set_index("metric").loc["auroc", "diff"])
    assert f'data-key="overall.auroc" data-value="{auroc["diff"]!r}"' in html
    with pytest.raises(ComparisonError, match="not a comparison"):
        Comparison.load(reference.save(tmp_path / "audit"))


def test_summary_names_the_main_differences(data, reference, worse):
    cmp = compare_audits(reference, worse, patients=patients(data), n_boot=100)
    text = cmp.summary()
    assert "AUROC" in text and "worse" in text and "Decisions flipped" in text


# ---------------------------------------------------------------------------- CLI
def _cli(*args: str) -> int:
    from xai_audit.cli import main

    return main(list(args))


def test_cli_exit_codes(data, reference, worse, tmp_path, capsys):
    ref_dir, new_dir, same_dir = tmp_path / "ref", tmp_path / "new", tmp_path / "same"
    reference.save(ref_dir)
    worse.save(new_dir)
    reference.save(same_dir)
    manifest = tmp_path / "manifest.csv"
    data[["case_id", "patient_id"]].to_csv(manifest, index=False)
    crit = tmp_path / "crit.yaml"
    crit.write_text(NONINF)
    common = ["--manifest", str(manifest), "--n-boot", "100"]
    assert _cli("compare", str(ref_dir), str(same_dir), *common) == 0
    assert "AUROC" in capsys.readouterr().out
    assert _cli("compare", str(ref_dir), str(same_dir), *common, "--criteria", str(crit)) == 0
    assert "PASS" in capsys.readouterr().out
    report = tmp_path / "out" / "cmp.html"
    code = _cli("compare", str(ref_dir), str(new_dir), *common, "--criteria", str(crit),
                "--report", str(report))  # fmt: skip
    assert code == 1
    assert "FAIL" in capsys.readouterr().out
    assert report.is_file() and report.with_suffix(".json").is_file()
    assert json.loads(report.with_suffix(".json").read_text())["criteria"]["verdict"] == "fail"
    # a group the data do not have: inconclusive -> 2
    odd = tmp_path / "odd.yaml"
    odd.write_text(
        "criteria:\n  - compare_to: reference\n    metric: auroc\n    groups: site=Z\n"
        "    non_inferiority_margin: 0.02\n"
    )
    assert _cli("compare", str(ref_dir), str(same_dir), *common, "--criteria", str(odd)) == 2
    capsys.readouterr()
    # different case sets: one message, no traceback, exit 2
    short_dir = tmp_path / "short"
    make_result(data.iloc[7:], worse.predictions["score"].to_numpy()[7:], "s").save(short_dir)
    assert _cli("compare", str(ref_dir), str(short_dir), *common) == 2
    err = capsys.readouterr().err
    assert "7 of the reference's" in err and "Traceback" not in err
    assert _cli("compare", str(ref_dir), str(tmp_path / "missing")) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("criteria:\n  - metric: nonsense\n")
    assert _cli("compare", str(ref_dir), str(same_dir), "--criteria", str(bad)) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_either_model_is_reachable_for_the_widgets(data, reference, worse, tmp_path):
    from xai_audit.compare import open_widget

    reference.save(tmp_path / "ref")
    worse.save(tmp_path / "new")
    cmp = compare_audits(tmp_path / "ref", tmp_path / "new", patients=patients(data), n_boot=0)
    back = Comparison.load(cmp.save(tmp_path / "cmp"))
    assert back.reference is None  # not saved with the comparison: reloaded from its folder
    assert back.result("reference").name == "v1" and back.result("new").name == "v2-worse"
    with pytest.raises(ValueError, match="kind must be one of"):
        open_widget(back, "new", "histogram")
    with pytest.raises(ValueError, match="'reference' or 'new'"):
        back.result("v3")


def test_report_replaces_its_own_files_only(data, reference, tmp_path):
    from xai_audit.audit.store import NotOwnedError

    cmp = compare_audits(reference, reference, patients=patients(data), n_boot=0)
    path = cmp.report(tmp_path / "c.html")
    assert cmp.report(path) == path  # an earlier comparison report is replaced
    mine = tmp_path / "mine.html"
    mine.write_text("<p>my notes</p>")
    with pytest.raises(NotOwnedError):
        cmp.report(mine)
    assert mine.read_text() == "<p>my notes</p>"


def test_candidate_groups_select_rows_by_the_audit_s_group_names():
    """A shortcut candidate 'site=2' of an audit whose sites are coded 1.0/2.0 (and missing)."""
    from xai_audit.compare.behaviour import _group_mask

    attrs = pd.DataFrame({"site": [1.0, 2.0, np.nan, 2.0], "sex": ["F", "M", "F", "M"]})
    np.testing.assert_array_equal(_group_mask(attrs, "site", "2"), [False, True, False, True])
    np.testing.assert_array_equal(_group_mask(attrs, "site", "missing"), [0, 0, 1, 0])
    np.testing.assert_array_equal(_group_mask(attrs, "site × sex", "2 | M"), [0, 1, 0, 1])
    assert _group_mask(attrs, "scanner", "x") is None
