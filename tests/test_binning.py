"""Numeric attributes binned into a few readable groups: one rule for API, config and DICOM."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from test_audit_helpers import tiny_model

from xai_audit.audit import Audit, ConfigError
from xai_audit.data import manifest_from_arrays
from xai_audit.data.binning import auto_edges, bin_labels, bin_values, check_attribute_bins
from xai_audit.fairness.inputs import group_keys

LIGHT = dict(
    methods={"gradcam": {}},
    n_boot=20,
    min_group_size=5,
    intersections=False,
    quality={"faithfulness": False, "sanity": False, "localisation": False, "shortcuts": False},
    exemplars_per_cell=1,
    batch_size=64,
)


def test_bin_labels_left_closed_with_open_ends() -> None:
    ages = [5, 39, 39.9, 40, 64.5, 65, 119, 120, np.nan]
    got = bin_labels(ages, [0, 40, 65, 120]).tolist()
    assert got[:8] == ["0-39", "0-39", "0-39", "40-64", "40-64", "65-119", "65-119", "120+"]
    assert pd.isna(got[8])
    assert bin_labels([-1.0], [0, 40]).tolist() == ["<0"]
    # Non-integral edges read as half-open intervals.
    assert bin_labels([1.0, 2.5, 9.0], [2.5, 4]).tolist() == ["<2.5", "2.5-<4", ">=4"]


def test_auto_rule_decades_for_age_quintiles_otherwise_none_for_few_values() -> None:
    rng = np.random.default_rng(0)
    age = rng.uniform(18, 96, 500).round(1)
    edges, rule = auto_edges(age, "age")
    assert rule == "decades" and edges == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    labels, info = bin_values(age, "age")
    assert set(labels) == {"10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79",
                           "80-89", "90-99"}  # fmt: skip
    assert "binned into 9 groups (decades: 10-19, 20-29" in info["note"]
    assert auto_edges(age, "patient_age")[1] == "decades"
    assert auto_edges(age, "page_count")[1] == "quintiles"  # "age" inside a word is not age
    bmi = rng.normal(27, 4, 1000)
    edges, rule = auto_edges(bmi, "bmi")
    assert rule == "quintiles" and len(edges) == 4
    groups = pd.Series(bin_labels(bmi, edges)).value_counts(normalize=True)
    assert np.allclose(groups, 0.2, atol=0.03)  # quintiles: about a fifth each
    assert all(len(str(e)) <= 4 for e in edges)  # rounded to 2 significant digits
    labels, info = bin_values(bmi, "bmi")
    assert all("-<" in g or g[0] in "<>" for g in info["groups"])  # decimals: "23-<26"
    assert bin_values(np.arange(100.0), "score")[1]["groups"][0] == "<20"  # whole numbers
    assert auto_edges(rng.integers(1, 4, 200), "site") is None  # few values: left alone
    assert auto_edges(["a", "b"] * 20, "age") is None  # not numeric
    assert bin_values(age, "age", False)[0] is None


def test_check_attribute_bins_messages() -> None:
    assert check_attribute_bins({"age": [0, 40, 65]}, ["age"]) == []
    assert check_attribute_bins({"age": False, "bmi": "auto"}, ["age", "bmi"]) == []
    assert "strictly increasing" in check_attribute_bins({"age": [40, 0]}, ["age"])[0]
    assert "not a sensitive attribute" in check_attribute_bins({"agee": [1]}, ["age"])[0]
    assert "expected a mapping" in check_attribute_bins([0, 40], ["age"])[0]


def _data(n: int = 150, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, 16, 16), dtype=np.float32)
    age = np.arange(n) * 0.5 + 20  # n distinct ages, 20.0 .. 94.5
    attrs = {"age": age, "sex": np.where(np.arange(n) % 2, "F", "M")}
    return manifest_from_arrays(images, labels=rng.integers(0, 2, n), attributes=attrs)


def test_audit_bins_numeric_age_and_honours_explicit_bins(tmp_path) -> None:
    data = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        audit = Audit(tiny_model(), data, sensitive=["age", "sex"], output_dir=tmp_path / "a",
                      **LIGHT)  # fmt: skip
    assert any("binned into 8 groups (decades" in str(w.message) for w in caught)
    result = audit.run(progress=False)
    groups = set(result.predictions["age"])
    assert groups == {"20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89", "90-99"}
    binned = result.data_summary["binned_attributes"]["age"]
    assert binned["rule"] == "decades" and binned["n_values"] == 150
    assert set(result.data_summary["subgroup_sizes"]["age"]) == groups
    assert any("'age'" in f["message"] and "binned" in f["message"] for f in result.findings)
    assert data.table["age"].dtype == np.float64  # the caller's manifest is left as it was

    explicit = Audit(
        tiny_model(),
        data,
        sensitive=["age", "sex"],
        attribute_bins={"age": [0, 40, 65, 120]},
        output_dir=tmp_path / "b",
        **LIGHT,
    ).run(progress=False)
    assert set(explicit.predictions["age"]) == {"0-39", "40-64", "65-119"}
    counts = explicit.data_summary["subgroup_sizes"]["age"]
    assert counts == {"0-39": 40, "40-64": 50, "65-119": 60}  # ages 20 + 0.5 k
    assert explicit.config["attribute_bins"] == {"age": [0, 40, 65, 120]}  # recorded


def test_raw_values_kept_on_request_and_bad_bins_refused(tmp_path) -> None:
    data = _data(n=40)
    audit = Audit(tiny_model(), data, sensitive=["age"], attribute_bins={"age": False},
                  output_dir=tmp_path / "c", **LIGHT)  # fmt: skip
    assert audit.binned_attributes == {}
    assert len(set(group_keys(audit.data.table["age"]))) == 40
    with pytest.raises(ConfigError, match="strictly increasing"):
        Audit(tiny_model(), data, sensitive=["age"], attribute_bins={"age": [65, 40]},
              output_dir=tmp_path / "d", **LIGHT).run(progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="not numeric"):
        Audit(tiny_model(), data, sensitive=["sex"], attribute_bins={"sex": [1, 2]},
              output_dir=tmp_path / "e", **LIGHT).run(progress=False)  # fmt: skip


def test_config_key_attribute_bins(tmp_path) -> None:
    from xai_audit.audit.config import load_config

    np.save(tmp_path / "a.npy", np.zeros((1, 8, 8), np.float32))
    pd.DataFrame(
        {"case_id": ["a", "b"], "image": ["a.npy", "a.npy"], "label": [0, 1], "age": [30, 70]}
    ).to_csv(tmp_path / "m.csv", index=False)
    good = tmp_path / "good.yaml"
    good.write_text("data: {manifest: m.csv}\nattributes: [age]\nattribute_bins: {age: [40, 65]}\n")
    assert load_config(good).attribute_bins == {"age": [40, 65]}
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {manifest: m.csv}\nattributes: [age]\nattribute_bins: {agee: [65, 40]}\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "not a sensitive attribute" in str(err.value)
    assert "strictly increasing" in str(err.value)
