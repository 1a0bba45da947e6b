"""Tests for xai_audit.fairness: point values, bootstrap, degenerate groups, flags, output."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    equalized_odds_difference,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
)
from scipy.stats import norm
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from xai_audit.fairness import (
    METRICS,
    Flag,
    SubgroupResult,
    SubgroupWarning,
    ThresholdChoice,
    bootstrap_replicates,
    choose_threshold,
    evaluate_subgroups,
    expected_calibration_error,
    make_plan,
    percentile_interval,
    reliability_bins,
)
from xai_audit.fairness.bootstrap import identity_metrics, plan_metrics

MI = {m: i for i, m in enumerate(METRICS)}


def _fixed_data(n: int = 900, seed: int = 3) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    age = rng.choice(["<40", "40-65", "65+"], n)
    y = (rng.random(n) < 0.35).astype(int)
    # Rounded scores: plenty of ties between and within classes.
    s = np.round(np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1), 2)
    return y, s, pd.DataFrame({"sex": sex, "age_group": age})


def _reference(y: np.ndarray, s: np.ndarray, thr: float) -> dict[str, float]:
    pred = (s >= thr).astype(int)
    return {
        "prevalence": y.mean(),
        "auroc": roc_auc_score(y, s),
        "auprc": average_precision_score(y, s),
        "sensitivity": recall_score(y, pred),
        "specificity": recall_score(y, pred, pos_label=0),
        "ppv": precision_score(y, pred),
        "npv": precision_score(y, pred, pos_label=0),
        "fpr": false_positive_rate(y, pred),
        "fnr": false_negative_rate(y, pred),
        "accuracy": accuracy_score(y, pred),
        "balanced_accuracy": balanced_accuracy_score(y, pred),
        "selection_rate": selection_rate(y, pred),
        "brier": brier_score_loss(y, s),
        "ece": _ece_loop(y, s, 10),
    }


def _ece_loop(y: np.ndarray, s: np.ndarray, n_bins: int) -> float:
    """Slow, obvious ECE on sklearn's calibration_curve bins (reference only)."""
    prob_true, prob_pred = calibration_curve(y, s, n_bins=n_bins, strategy="uniform")
    ids = np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], s)
    counts = np.array([np.sum(ids == b) for b in range(n_bins)])
    counts = counts[counts > 0]
    return float(np.sum(counts / len(y) * np.abs(prob_pred - prob_true)))


# --------------------------------------------------------------------------- point values


def test_point_values_equal_sklearn_and_fairlearn() -> None:
    y, s, attrs = _fixed_data()
    res = evaluate_subgroups(y, s, attrs, threshold=0.5, n_boot=0, min_group_size=10)
    assert isinstance(res, SubgroupResult)
    ov = res.overall.set_index("metric")["value"]
    for metric, expected in _reference(y, s, 0.5).items():
        assert ov[metric] == pytest.approx(expected, rel=1e-12, abs=1e-12), metric
    keys = attrs["sex"] + " | " + attrs["age_group"]
    cases = [("sex", attrs["sex"]), ("age_group", attrs["age_group"]), ("sex × age_group", keys)]
    for attribute, column in cases:
        for group in column.unique():
            rows = (column == group).to_numpy()
            got = res.by_group.query("attribute == @attribute and group == @group").set_index(
                "metric"
            )
            assert got["n"].iloc[0] == rows.sum() and got["n_pos"].iloc[0] == y[rows].sum()
            for metric, expected in _reference(y[rows], s[rows], 0.5).items():
                assert got.loc[metric, "value"] == pytest.approx(expected, rel=1e-12, abs=1e-12), (
                    attribute,
                    group,
                    metric,
                )
    pred = (s >= 0.5).astype(int)
    gaps = res.gaps.drop_duplicates("attribute").set_index("attribute")
    sf = {"sex": attrs["sex"], "age_group": attrs["age_group"], "sex × age_group": attrs}
    for attribute, feature in sf.items():
        eod = equalized_odds_difference(y, pred, sensitive_features=feature)
        dpd = demographic_parity_difference(y, pred, sensitive_features=feature)
        assert gaps.loc[attribute, "equalized_odds_difference"] == pytest.approx(eod)
        assert gaps.loc[attribute, "demographic_parity_difference"] == pytest.approx(dpd)


def test_calibration_bins_match_sklearn_calibration_curve() -> None:
    y, s, _ = _fixed_data()
    bins = reliability_bins(y, s, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, s, n_bins=10, strategy="uniform")
    nonempty = bins[bins["count"] > 0]
    np.testing.assert_allclose(nonempty["fraction_positive"], prob_true, rtol=1e-12)
    np.testing.assert_allclose(nonempty["mean_predicted"], prob_pred, rtol=1e-12)
    assert bins["count"].sum() == len(y)
    assert expected_calibration_error(y, s) == pytest.approx(_ece_loop(y, s, 10), rel=1e-12)


def test_vectorised_identity_resample_equals_point_estimates() -> None:
    y, s, _ = _fixed_data(700, seed=5)
    units = np.arange(y.size)
    plan = make_plan(y, s, units, 0.5)
    got = identity_metrics([[plan]], y.size)[0, 0]
    for metric, expected in _reference(y, s, 0.5).items():
        assert got[MI[metric]] == pytest.approx(expected, rel=1e-12, abs=1e-13), metric
    # Arbitrary integer weights = scikit-learn's sample_weight (ties included).
    w = np.random.default_rng(0).integers(0, 4, y.size).astype(float)
    got = plan_metrics(plan, w[None, :])[:, 0]
    assert got[MI["auroc"]] == pytest.approx(roc_auc_score(y, s, sample_weight=w), rel=1e-12)
    assert got[MI["auprc"]] == pytest.approx(
        average_precision_score(y, s, sample_weight=w), rel=1e-12
    )
    assert got[MI["brier"]] == pytest.approx(brier_score_loss(y, s, sample_weight=w), rel=1e-12)
    assert got[MI["sensitivity"]] == pytest.approx(
        recall_score(y, s >= 0.5, sample_weight=w), rel=1e-12
    )
    # float32 replicates agree with float64 ones.
    r64 = bootstrap_replicates([[plan]], y.size, 200, 1, dtype=np.float64)
    r32 = bootstrap_replicates([[plan]], y.size, 200, 1, dtype=np.float32)
    np.testing.assert_allclose(r32, r64, atol=1e-5)
    # Same resamples whatever the chunk size (memory budget), up to BLAS rounding.
    small = bootstrap_replicates([[plan]], y.size, 200, 1, dtype=np.float64, max_bytes=1e5)
    np.testing.assert_allclose(small, r64, rtol=1e-12, atol=1e-14)
    threaded = bootstrap_replicates(
        [[plan]], y.size, 200, 1, dtype=np.float64, max_bytes=1e5, n_jobs=2
    )
    np.testing.assert_array_equal(threaded, small)


# --------------------------------------------------------------------------- thresholds


def test_threshold_rules() -> None:
    y, s, _ = _fixed_data(800, seed=7)
    cands = np.unique(s)
    sens = np.array([recall_score(y, s >= t) for t in cands])
    spec = np.array([recall_score(y, s >= t, pos_label=0) for t in cands])
    f1 = np.array([f1_score(y, s >= t) for t in cands])

    youden = choose_threshold(y, s, "youden")
    assert isinstance(youden, ThresholdChoice) and youden.rule == "youden"
    assert sens[cands == youden.value] + spec[cands == youden.value] - 1 == pytest.approx(
        np.max(sens + spec - 1)
    )
    t_sens = choose_threshold(y, s, ("sensitivity", 0.9))
    assert t_sens.value == cands[sens >= 0.9].max() and t_sens.sensitivity >= 0.9
    assert t_sens.target == 0.9
    t_spec = choose_threshold(y, s, ("specificity", 0.8))
    assert t_spec.value == cands[spec >= 0.8].min() and t_spec.specificity >= 0.8
    t_f1 = choose_threshold(y, s, "max_f1")
    assert f1_score(y, s >= t_f1.value) == pytest.approx(f1.max())
    assert choose_threshold(y, s, 0.3).rule == "fixed"
    assert choose_threshold(y, s, None).rule == "youden"
    with pytest.raises(ValueError):
        choose_threshold(y, s, "bogus")
    res = evaluate_subgroups(
        y, s, {"a": np.repeat(["x", "y"], 400)}, threshold=("sensitivity", 0.9), n_boot=0
    )
    assert res.threshold.rule == "sensitivity" and res.threshold.value == t_sens.value
    assert res.to_dict()["thresholds"]["y"]["value"] == t_sens.value


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_coverage_of_true_auroc_and_sensitivity() -> None:
    d, thr, n = 1.2, 0.6, 300
    true_auc = norm.cdf(d / np.sqrt(2))
    true_sens = norm.cdf(d - thr)
    rng = np.random.default_rng(2024)
    hits = np.zeros(2)
    reps = 200
    for r in range(reps):
        y = (rng.random(n) < 0.5).astype(int)
        s = rng.normal(d * y, 1.0)
        plan = make_plan(y, s, np.arange(n), thr)
        boot = bootstrap_replicates([[plan]], n, n_boot=1000, random_state=r)
        lo, hi = percentile_interval(boot, 0.95)
        for k, (metric, truth) in enumerate((("auroc", true_auc), ("sensitivity", true_sens))):
            hits[k] += lo[0, 0, MI[metric]] <= truth <= hi[0, 0, MI[metric]]
    coverage = hits / reps
    assert np.all((coverage >= 0.90) & (coverage <= 0.99)), coverage


def _ci_width(res: SubgroupResult, metric: str) -> float:
    row = res.overall.set_index("metric").loc[metric]
    return float(row["ci_high"] - row["ci_low"])


@pytest.mark.parametrize("correlated", [True, False])
def test_patient_bootstrap_width(correlated: bool) -> None:
    rng = np.random.default_rng(11)
    n_patients, per = 200, 4
    pid = np.repeat(np.arange(n_patients), per)
    if correlated:
        # Images of a patient share label and (almost) score.
        y = np.repeat((rng.random(n_patients) < 0.4).astype(int), per)
        s = 1 / (1 + np.exp(-(np.repeat(rng.normal(0, 1.2, n_patients), per) + 1.5 * y - 0.6)))
        s = np.clip(s + rng.normal(0, 0.02, s.size), 0, 1)
    else:
        y = (rng.random(pid.size) < 0.4).astype(int)
        s = 1 / (1 + np.exp(-(rng.normal(0, 1.2, pid.size) + 1.5 * y - 0.6)))
    attrs = {"site": np.where(pid % 2 == 0, "A", "B")}
    kw = {"threshold": 0.5, "n_boot": 1000, "intersections": False}
    image = evaluate_subgroups(y, s, attrs, **kw)
    patient = evaluate_subgroups(y, s, attrs, patient_id=pid, **kw)
    assert (
        patient.config["resampling_unit"] == "patient" and patient.config["n_units"] == n_patients
    )
    for metric in ("auroc", "sensitivity", "specificity"):
        ratio = _ci_width(patient, metric) / _ci_width(image, metric)
        if correlated:
            assert ratio > 1.5, (metric, ratio)
        else:
            assert 0.85 < ratio < 1.15, (metric, ratio)


# --------------------------------------------------------------------------- degenerate groups


def test_small_one_class_constant_and_missing_groups() -> None:
    rng = np.random.default_rng(1)
    n = 600
    y = (rng.random(n) < 0.4).astype(int)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    group = np.array(["big"] * n, dtype=object)
    group[:20] = "tiny"  # small
    group[20:80] = "healthy"  # one class
    y[20:80] = 0
    group[80:140] = "alarm"  # every case predicted positive
    s[80:140] = np.clip(s[80:140], 0.6, 1)
    group[140:170] = None  # missing attribute values
    with pytest.warns(SubgroupWarning) as record:
        res = evaluate_subgroups(y, s, {"g": group}, threshold=0.5, n_boot=200, min_group_size=25)
    messages = [str(w.message) for w in record]
    assert any("tiny" in m and "20 cases" in m and "minimum 25" in m for m in messages)
    assert any("healthy" in m and "no positive cases" in m for m in messages)
    assert any("alarm" in m and "predicted positive" in m for m in messages)
    assert any("30 of 600 values missing" in m for m in messages)
    assert res.warnings == messages

    bg = res.by_group.set_index(["group", "metric"])
    assert set(res.by_group["group"]) == {"big", "tiny", "healthy", "alarm", "missing"}
    assert bg.loc[("missing", "auroc"), "n"] == 30
    assert (res.by_group.query("group == 'tiny'")["status"] == "small").all()
    assert res.by_group.query("group == 'tiny'")[["value", "ci_low", "ci_high"]].isna().all().all()
    assert "minimum 25" in bg.loc[("tiny", "auroc"), "reason"]
    assert bg.loc[("healthy", "auroc"), "status"] == "one_class"
    for m in ("auroc", "auprc", "sensitivity", "fnr", "balanced_accuracy"):
        assert np.isnan(bg.loc[("healthy", m), "value"]) and np.isnan(
            bg.loc[("healthy", m), "ci_low"]
        )
    for m in ("specificity", "fpr", "accuracy", "brier", "ece"):
        assert np.isfinite(bg.loc[("healthy", m), "value"]) and np.isfinite(
            bg.loc[("healthy", m), "ci_low"]
        )
    assert bg.loc[("alarm", "npv"), "status"] == "constant_prediction"
    assert (
        np.isnan(bg.loc[("alarm", "npv"), "value"])
        and "NPV undefined" in bg.loc[("alarm", "npv"), "reason"]
    )
    assert np.isfinite(bg.loc[("alarm", "sensitivity"), "value"])
    assert (res.by_group.query("group in ['big', 'missing']")["status"] == "ok").all()
    assert not any(f.group == "tiny" for f in res.flags)
    json.dumps(res.to_dict())


def test_nothing_crashes_on_tiny_or_one_class_data() -> None:
    y = np.array([0, 0, 0, 0, 0])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SubgroupWarning)
        res = evaluate_subgroups(y, s, {"a": ["x", "x", "y", None, "y"]}, n_boot=50)
    assert res.threshold.value == 0.5 and any("falling back" in w for w in res.warnings)
    assert res.by_group["value"].isna().all()
    json.dumps(res.to_dict())


# --------------------------------------------------------------------------- demo-like data


def _demo_like(seed: int, gap: bool, n_patients: int = 1500) -> tuple[pd.DataFrame, float]:
    """Mimics the ground-truth demo: patients with 1-3 images, lesions fainter in age 65+.

    A fast, model-free simulation; the same checks on the real generator and the bundled
    demo model are in ``tests/test_fairness_demo.py``.
    """
    rng = np.random.default_rng(seed)
    n_img = rng.integers(1, 4, n_patients)
    pid = np.repeat(np.arange(n_patients), n_img)
    age = np.repeat(rng.choice(["<40", "40-65", "65+"], n_patients, p=[0.3, 0.4, 0.3]), n_img)
    sex = np.repeat(rng.choice(["F", "M"], n_patients), n_img)
    site = rng.choice(["A", "B"], pid.size)
    y = np.repeat((rng.random(n_patients) < 0.3).astype(int), n_img)
    patient_effect = np.repeat(rng.normal(0, 0.5, n_patients), n_img)
    strength = np.where(gap & (age == "65+"), 1.2, 2.4)  # fainter lesions in 65+
    logit = -1.2 + y * strength + patient_effect + rng.normal(0, 0.8, pid.size)
    df = pd.DataFrame(
        {
            "pid": pid,
            "sex": sex,
            "age_group": age,
            "site": site,
            "y": y,
            "score": 1 / (1 + np.exp(-logit)),
        }
    )
    return df, 0.0


def test_injected_age_gap_is_flagged() -> None:
    df, _ = _demo_like(seed=0, gap=True)
    res = evaluate_subgroups(
        df["y"], df["score"], df[["sex", "age_group", "site"]], patient_id=df["pid"]
    )
    sens = [f for f in res.flags if f.metric == "sensitivity" and f.kind == "vs_overall"]
    assert any(f.attribute == "age_group" and f.group == "65+" for f in sens), [
        f.message for f in res.flags
    ]
    flag = next(f for f in sens if f.attribute == "age_group" and f.group == "65+")
    assert isinstance(flag, Flag) and flag.ci_high < -flag.tolerance < 0
    assert (
        flag.message.startswith("Sensitivity for age_group=65+ is ")
        and "below overall (95% CI" in flag.message
    )
    # Only age-related groups are flagged for sensitivity.
    assert all("age_group" in f.attribute for f in res.flags if f.metric == "sensitivity")
    json.dumps(res.to_dict())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_control_data_flags_nothing(seed: int) -> None:
    df, _ = _demo_like(seed=seed, gap=False)
    res = evaluate_subgroups(
        df["y"], df["score"], df[["sex", "age_group", "site"]], patient_id=df["pid"]
    )
    assert res.flags == [], [f.message for f in res.flags]


# --------------------------------------------------------------------------- output


def test_multilabel_tables_json_and_plots() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rng = np.random.default_rng(4)
    n = 500
    Y = (rng.random((n, 2)) < [0.3, 0.5]).astype(int)
    S = np.clip(rng.normal(0.3 + 0.4 * Y, 0.2), 0, 1)
    attrs = pd.DataFrame({"sex": rng.choice(["F", "M"], n), "age_group": rng.choice(["a", "b"], n)})
    res = evaluate_subgroups(
        Y,
        S,
        attrs,
        label_names=["nodule", "effusion"],
        n_boot=100,
        threshold={"nodule": 0.5, "effusion": "youden"},
    )
    assert set(res.overall["label"]) == {"nodule", "effusion"}
    assert isinstance(res.threshold, dict) and res.threshold["nodule"].value == 0.5
    assert res.threshold["effusion"].rule == "youden"
    assert set(res.by_group["attribute"]) == {"sex", "age_group", "sex × age_group"}
    assert "F | a" in set(res.by_group["group"])
    assert len(res.by_group) == 2 * (2 + 2 + 4) * len(METRICS)
    for col in (
        "label",
        "attribute",
        "group",
        "n",
        "n_pos",
        "metric",
        "value",
        "ci_low",
        "ci_high",
        "status",
        "reason",
    ):
        assert col in res.by_group.columns
    for col in (
        "diff_to_overall",
        "diff_ci_low",
        "diff_ci_high",
        "ratio_to_overall",
        "max_gap",
        "max_gap_ci_low",
        "worst_group",
        "equalized_odds_difference",
        "demographic_parity_difference",
    ):
        assert col in res.disparities.columns
    for col in ("bin", "mean_predicted", "fraction_positive", "count"):
        assert col in res.calibration.columns
    ok = res.by_group.dropna(subset=["value"])
    assert (
        (ok["ci_low"] <= ok["value"] + 1e-9) & (ok["value"] <= ok["ci_high"] + 1e-9)
    ).mean() > 0.95
    text = json.dumps(res.to_dict())
    assert "NaN" not in text
    for fig in (
        res.plot_forest("sensitivity", label="effusion"),
        res.plot_roc("sex"),
        res.plot_reliability("age_group", label="nodule"),
    ):
        assert isinstance(fig, Figure)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_best_vs_worst_interval_accounts_for_choosing_the_groups() -> None:
    from xai_audit.fairness.disparity import range_interval

    # No sampling noise: the interval collapses on the true gap.
    fixed = np.tile([0.9, 0.8, 0.7], (200, 1))
    assert range_interval(fixed, np.array([0.9, 0.8, 0.7]), 0.95) == pytest.approx((0.2, 0.2))
    # Nine equal groups (true gap 0) measured with noise: the percentile interval of the
    # point-selected pair often excludes small gaps; the selection-aware interval rarely does.
    rng = np.random.default_rng(0)
    sd, tol, false_sel, false_fixed, covered = 0.03, 0.05, 0, 0, 0
    for _ in range(200):
        observed = rng.normal(0.8, sd, 9)
        reps = observed + rng.normal(0, sd, (500, 9))
        lo, hi = range_interval(reps, observed, 0.95)
        best, worst = observed.argmax(), observed.argmin()
        fixed_lo = np.percentile(reps[:, best] - reps[:, worst], 2.5)
        false_sel += lo > tol
        false_fixed += fixed_lo > tol
        covered += lo <= 0.0 <= hi
    assert false_sel <= 0.05 * 200
    assert false_sel < false_fixed
    # All equal: the interval is the simultaneous max-t interval of all 36 pairs, so it holds
    # the true gap 0 about 95% of the time (binomial SE 1.5% at 200 trials).
    assert 0.91 <= covered / 200 <= 0.99


def test_range_interval_is_the_pair_interval_when_one_pair_stands_out() -> None:
    from scipy.stats import norm

    from xai_audit.fairness.disparity import range_interval, range_intervals

    # Three groups far apart (gaps of 20 SE): only the best-worst pair can be the range, so
    # the interval is that pair's studentised interval, ±z * se with z the 97.5% quantile.
    rng = np.random.default_rng(1)
    sd = 0.01
    observed = np.array([0.9, 0.6, 0.3])
    reps = observed + rng.normal(0, sd, (20000, 3))
    lo, hi = range_interval(reps, observed, 0.95)
    se = np.std(reps[:, 0] - reps[:, 2], ddof=1)
    z = norm.ppf(0.975)
    assert lo == pytest.approx(0.6 - z * se, abs=0.1 * se)
    assert hi == pytest.approx(0.6 + z * se, abs=0.1 * se)
    # Vectorised over metrics; a group without a point estimate takes no part; one group: NaN.
    stacked = np.stack([reps, reps[:, ::-1]], axis=2)
    obs = np.stack([observed, observed[::-1]], axis=1)
    obs[2, 1] = np.nan  # second metric: group 3 (value 0.9) undefined -> range 0.6 - 0.3
    lo2, hi2 = range_intervals(stacked, obs, 0.95)
    assert lo2[0] == pytest.approx(lo) and hi2[0] == pytest.approx(hi)
    assert 0.25 < lo2[1] < 0.3 < hi2[1] < 0.35
    assert np.isnan(range_interval(reps[:, :1], observed[:1], 0.95)[0])
