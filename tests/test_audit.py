"""The audit runner: results, save/load, resume, fresh starts, config errors, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_audit_helpers import FAST, arrays_equal, small_dataset, tiny_model

from xai_audit.audit import Audit, AuditResult, ConfigError, load_config, run_config
from xai_audit.data import load_manifest

SENSITIVE = ["sex", "age_group", "site"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return small_dataset(tmp_path_factory.mktemp("data") / "demo", n=64, size=32)


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory) -> AuditResult:
    out = tmp_path_factory.mktemp("full") / "audit"
    return Audit(
        tiny_model(), load_manifest(data), sensitive=SENSITIVE, output_dir=out, **FAST
    ).run()


def test_result_holds_every_part(full_run: AuditResult) -> None:
    r = full_run
    pred = r.predictions
    assert len(pred) == 64
    assert list(pred.columns[:2]) == ["row", "case_id"]
    assert {"label", "score", "predicted", "outcome", *SENSITIVE} <= set(pred.columns)
    assert "patient_id" not in pred.columns  # identifiers stay out of the result
    assert set(pred["outcome"]) <= {"TP", "FP", "FN", "TN"}
    thr = r.threshold
    assert np.array_equal(pred["predicted"], (pred["score"] >= thr).astype(int))
    assert {"overall", "by_group", "disparities", "calibration", "flags", "threshold"} <= set(
        r.subgroups
    )
    assert set(r.quality["faithfulness"]) == {"gradcam", "integrated_gradients"}
    assert set(r.quality["shortcuts"]) == {"gradcam", "integrated_gradients"}
    assert r.quality["sample"]["n"] <= 8
    assert r.findings and all({"severity", "kind", "message"} <= set(f) for f in r.findings)
    prov = r.provenance
    assert {"torch", "numpy", "xai_audit", "captum", "fairlearn"} <= set(prov["packages"])
    assert {"model_hash", "data_hash", "config_hash", "task_hash"} <= set(prov["hashes"])
    assert prov["batches"] == {"total": 4, "computed": 4, "reused": 0}
    assert r.model_info["sha256"] == tiny_model().model_hash()
    assert r.data_summary["n_images"] == 64
    # exemplars are bounded: at most 1 per (attribute, group, outcome)
    ex = r.exemplars["table"]
    assert ex.groupby(["attribute", "group", "outcome"]).size().max() <= 1
    assert r.exemplars["images"].shape[0] == len(np.unique(ex["row"]))


def test_maps_are_stored_compactly_and_read_lazily(full_run: AuditResult) -> None:
    r = full_run
    shard = np.load(r.result_dir / "shards" / "batch_00000.npz")
    assert shard["maps__gradcam"].dtype == np.float16
    ids = list(r.predictions["case_id"].iloc[[3, 40, 17]])
    maps = r.maps("integrated_gradients", ids)
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    with pytest.raises(KeyError, match="Unknown method"):
        r.maps("occlusion", ids)


def test_save_load_round_trip(full_run: AuditResult, tmp_path: Path) -> None:
    loaded = AuditResult.load(full_run.result_dir)
    pd.testing.assert_frame_equal(loaded.predictions, full_run.predictions)
    for key in ("overall", "by_group", "disparities", "calibration"):
        pd.testing.assert_frame_equal(
            loaded.subgroups[key], full_run.subgroups[key], check_dtype=False
        )
    assert loaded.findings == json.loads(json.dumps(full_run.findings, default=float))
    assert loaded.subgroups.threshold == full_run.subgroups.threshold
    assert arrays_equal(loaded.exemplars["images"], full_run.exemplars["images"])
    pd.testing.assert_frame_equal(
        loaded.quality["faithfulness"]["gradcam"]["summary"],
        full_run.quality["faithfulness"]["gradcam"]["summary"],
    )
    assert loaded.to_json() == full_run.to_json()
    # saving the loaded result elsewhere and loading again changes nothing
    again = AuditResult.load(loaded.save(tmp_path / "copy"))
    pd.testing.assert_frame_equal(again.predictions, full_run.predictions)
    assert again.to_json() == full_run.to_json()


def test_interrupted_run_resumes_without_recomputing(
    data, full_run: AuditResult, tmp_path: Path
) -> None:
    out = tmp_path / "audit"
    calls: list[tuple[int, str]] = []

    def stop_after_two(k: int, n: int, status: str) -> None:
        calls.append((k, status))
        if len([c for c in calls if c[1] == "computed"]) == 2:
            raise KeyboardInterrupt

    manifest = load_manifest(data)
    with pytest.raises(KeyboardInterrupt) as info:
        Audit(
            tiny_model(),
            manifest,
            sensitive=SENSITIVE,
            output_dir=out,
            on_batch=stop_after_two,
            **FAST,
        ).run()
    assert any("resumes" in note for note in getattr(info.value, "__notes__", []))
    assert sorted(p.name for p in (out / "shards").glob("batch_*.npz")) == [
        "batch_00000.npz",
        "batch_00001.npz",
    ]
    assert not list((out / "shards").glob("*.tmp"))

    calls.clear()
    result = Audit(
        tiny_model(),
        manifest,
        sensitive=SENSITIVE,
        output_dir=out,
        on_batch=lambda k, n, s: calls.append((k, s)),
        **FAST,
    ).run()
    assert sorted(calls) == [(0, "reused"), (1, "reused"), (2, "computed"), (3, "computed")]
    assert result.provenance["batches"] == {"total": 4, "computed": 2, "reused": 2}
    pd.testing.assert_frame_equal(result.predictions, full_run.predictions)
    for m in ("gradcam", "integrated_gradients"):
        assert arrays_equal(result.maps(m), full_run.maps(m))
    assert result.to_json().replace(str(out), "") != ""  # renders
    assert [f["message"] for f in result.findings] == [f["message"] for f in full_run.findings]


@pytest.mark.slow
def test_changed_model_or_settings_start_afresh(
    data, full_run: AuditResult, tmp_path: Path, caplog
) -> None:
    out = tmp_path / "audit"
    manifest = load_manifest(data)
    Audit(tiny_model(), manifest, sensitive=SENSITIVE, output_dir=out, **FAST).run()
    calls: list[str] = []
    with caplog.at_level("INFO", logger="xai_audit.audit.store"):
        r = Audit(
            tiny_model(seed=1),
            manifest,
            sensitive=SENSITIVE,
            output_dir=out,
            on_batch=lambda k, n, s: calls.append(s),
            **FAST,
        ).run()
    assert calls == ["computed"] * 4 and "model weights changed" in caplog.text
    assert not r.predictions["score"].equals(full_run.predictions["score"])
    calls.clear()
    fast = {**FAST, "methods": {"gradcam": {}}}
    Audit(
        tiny_model(seed=1),
        manifest,
        sensitive=SENSITIVE,
        output_dir=out,
        on_batch=lambda k, n, s: calls.append(s),
        **fast,
    ).run()
    assert calls == ["computed"] * 4
    # aggregation-only settings (the tolerance) reuse every batch
    calls.clear()
    Audit(
        tiny_model(seed=1),
        manifest,
        sensitive=SENSITIVE,
        output_dir=out,
        tolerance=0.2,
        on_batch=lambda k, n, s: calls.append(s),
        **fast,
    ).run()
    assert calls == ["reused"] * 4


@pytest.mark.slow
def test_max_images_explains_a_bounded_sample(data, tmp_path: Path) -> None:
    fast = {
        **FAST,
        "methods": {"gradcam": {}, "integrated_gradients": {"n_steps": 4, "max_images": 20}},
    }
    r = Audit(
        tiny_model(), load_manifest(data), sensitive=SENSITIVE, output_dir=tmp_path / "a", **fast
    ).run()
    shares = r.quality["per_image"]["shortcut__integrated_gradients"]
    assert shares.notna().sum() == 20
    assert r.quality["per_image"]["shortcut__gradcam"].notna().sum() == 64
    # exemplars get maps of every method even outside the sample
    assert r.exemplars["maps"]["integrated_gradients"].shape[0] == len(r.exemplars["rows"])


def test_batches_without_an_explained_image_are_kept(data, tmp_path: Path) -> None:
    # 2 explained images over 4 batches of 16: most batches explain nothing with gradcam.
    fast = {**FAST, "methods": {"gradcam": {"max_images": 2}}}
    fast["quality"] = {**FAST["quality"], "sanity": False, "faithfulness": False}
    r = Audit(
        tiny_model(), load_manifest(data), sensitive=SENSITIVE, output_dir=tmp_path / "a", **fast
    ).run()
    assert r.quality["per_image"]["shortcut__gradcam"].notna().sum() == 2
    assert len(r.predictions) == 64


# ------------------------------------------------------------------------------ config
def _write_config(tmp_path: Path, manifest: Path, **over) -> Path:
    cfg = {
        "name": "Test audit",
        "output_dir": "out",
        "model": {"loader": "test_audit_helpers:tiny_model"},
        "data": {"manifest": str(manifest)},
        "attributes": ["sex", "site"],
        "intersections": False,
        "methods": {"gradcam": {}},
        "threshold": {"sensitivity": 0.8},
        "tolerance": 0.1,
        "n_boot": 30,
        "min_group_size": 5,
        "batch_size": 32,
        "quality": {"sample_size": 4, "sanity_sample_size": 2, "n_steps": 3, "sanity": False},
        "model_card": {"intended_use": "Testing <the> audit & report", "limitations": ["tiny"]},
    }
    cfg.update(over)
    import yaml

    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_config_and_cli(data, tmp_path: Path) -> None:
    from xai_audit.cli import main

    path = _write_config(tmp_path, data)
    out = run_config(path)
    assert out.result_dir == tmp_path / "out"
    assert out.report_path.is_file() and out.report_path.with_suffix(".json").is_file()
    assert out.result.subgroups.threshold["rule"] == "sensitivity"
    assert out.result.model_info["card"]["intended_use"] == "Testing <the> audit & report"
    # the CLI resumes (every batch reused) and rebuilds the report from the saved result
    assert main(["run", str(path)]) == 0
    assert AuditResult.load(tmp_path / "out").provenance["batches"]["reused"] == 2
    assert main(["report", str(tmp_path / "out"), "--output", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").is_file()


def test_toml_config(data, tmp_path: Path) -> None:
    path = tmp_path / "audit.toml"
    path.write_text(
        f'attributes = ["sex"]\nthreshold = 0.5\n[data]\nmanifest = "{data}"\n'
        '[model]\nloader = "test_audit_helpers:tiny_model"\n[methods.gradcam]\n'
    )
    cfg = load_config(path)
    assert cfg.methods == {"gradcam": {}} and cfg.threshold == 0.5


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            {"methods": {"gradcam": {}, "deeplift_magic": {}}},
            r"Unknown explanation method 'deeplift_magic'.*gradcam",
        ),
        ({"methods": {"gradcam": {"n_stepz": 3}}}, r"unknown parameter 'n_stepz'"),
        (
            {"attributes": ["sex", "ethnicity"]},
            r"\['ethnicity'\] are not columns.*available columns.*age_group",
        ),
        ({"data": {"manifest": "nope.csv"}}, r"file not found"),
        (
            {"data": {"manifest": None, "label_col": "diagnosis"}},
            r"'diagnosis' is not in the manifest",
        ),
        ({"tolerance": 1.5}, r"tolerance must be a number in \(0, 1\)"),
        ({"tolerance": {"sensitivty": 0.1}}, r"unknown metric.*sensitivty"),
        ({"threshold": "median"}, r"unknown threshold rule 'median'"),
        ({"threshold": {"sensitivity": 1.4}}, r"must be in \[0, 1\]"),
        ({"model_card": {"intended_purpose": "x"}}, r"model_card: unknown field"),
        ({"colour": "blue"}, r"unknown key\(s\) \['colour'\]"),
    ],
)
def test_config_errors_before_any_computation(data, tmp_path: Path, override, expected) -> None:
    if "data" in override:
        d = override["data"]
        override = {
            **override,
            "data": {
                "manifest": d["manifest"] if d["manifest"] else str(data),
                **{k: v for k, v in d.items() if k != "manifest"},
            },
        }
    path = _write_config(tmp_path, data, **override)
    with pytest.raises(ConfigError, match=expected):
        run_config(path)
    assert not (tmp_path / "out").exists()  # nothing was computed or written


def test_audit_api_errors_are_collected(data) -> None:
    with pytest.raises(ConfigError) as info:
        Audit(
            tiny_model(),
            load_manifest(data),
            sensitive=["sex", "race"],
            methods=["gradcam", "magic"],
            tolerance=-1,
        )
    text = str(info.value)
    assert "race" in text and "magic" in text and "tolerance" in text


def test_sanity_random_label_step_explains_the_other_class():
    """The audit's explainer wrapper must honour the targets the sanity check passes.

    It once ignored them, so the random-label step compared a class's maps with themselves
    (Spearman 1.0) and the report wrongly said Grad-CAM was not class-specific.
    """
    from xai_audit.audit.aggregate import _sanity
    from xai_audit.audit.batch import MethodSpec
    from xai_audit.datasets import make_synthetic_cxr
    from xai_audit.model import load_demo_model
    from xai_audit.quality import sanity_check

    model = load_demo_model(device="cpu")
    images = make_synthetic_cxr(6, seed=3).images
    out = _sanity(model, images, MethodSpec("gradcam", {}), 1, 0, sanity_check)
    check = out["label_check"].set_index("method").loc["gradcam"]
    # Two-class softmax head: the other logit's Grad-CAM highlights different regions.
    assert check["spearman_median"] < 0.5
    assert bool(check["class_sensitive"])


def test_result_opens_widgets_on_its_stored_maps(full_run: AuditResult, data) -> None:
    """The widgets read the result's numbers: stored maps, the audit threshold and its CIs."""
    pytest.importorskip("ipywidgets")
    loaded = AuditResult.load(full_run.result_dir)  # no model attached: maps must come from disk
    manifest = load_manifest(data)
    ex = loaded.explorer(manifest)
    case = ex.state.case_id
    shown = ex.state.source.attribution(case, "gradcam")
    stored = loaded.maps("gradcam", [case])[0]
    np.testing.assert_allclose(shown, stored, atol=1e-3)
    assert ex.image.value[:4] == b"\x89PNG"
    dash = loaded.dashboard(manifest)
    assert dash.state.threshold == pytest.approx(loaded.threshold)
    review = loaded.case_review(manifest, case_id=case)
    assert review.state.case_id == case


def test_atomic_writes_respect_the_umask(tmp_path: Path) -> None:
    """Reports are written through mkstemp (0600); they must end up as open() would make them."""
    import os

    from xai_audit.audit._io import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "report.html", "<p>x</p>")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.read_text() == "<p>x</p>"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_quality_checks_are_kept_when_a_run_stops_during_aggregation(
    data, full_run: AuditResult, tmp_path: Path, monkeypatch
) -> None:
    """Batches are done; the sanity check fails: a rerun reuses the faithfulness results."""
    import xai_audit.quality as quality

    out = tmp_path / "audit"
    manifest = load_manifest(data)
    real_di, real_sanity = quality.deletion_insertion, quality.sanity_check
    counts = {"deletion_insertion": 0}

    def counting_di(*args, **kwargs):
        counts["deletion_insertion"] += 1
        return real_di(*args, **kwargs)

    def broken_sanity(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(quality, "deletion_insertion", counting_di)
    monkeypatch.setattr(quality, "sanity_check", broken_sanity)
    with pytest.raises(KeyboardInterrupt):
        Audit(tiny_model(), manifest, sensitive=SENSITIVE, output_dir=out, **FAST).run()
    assert counts["deletion_insertion"] == 1  # gradcam's, then the sanity check stopped the run

    def counting_sanity(*args, **kwargs):
        counts["sanity_check"] = counts.get("sanity_check", 0) + 1
        return real_sanity(*args, **kwargs)

    monkeypatch.setattr(quality, "sanity_check", counting_sanity)
    result = Audit(tiny_model(), manifest, sensitive=SENSITIVE, output_dir=out, **FAST).run()
    assert counts["deletion_insertion"] == 2  # only integrated_gradients' was computed now
    for m in ("gradcam", "integrated_gradients"):
        pd.testing.assert_frame_equal(
            result.quality["faithfulness"][m]["summary"],
            full_run.quality["faithfulness"][m]["summary"],
        )
        assert result.quality["sanity"][m]["passed"] == full_run.quality["sanity"][m]["passed"]

    # Other faithfulness settings: that check is recomputed, not taken from the checkpoint.
    settings = {**FAST, "quality": {**FAST["quality"], "n_steps": 5}}
    sanity_runs = counts["sanity_check"]
    Audit(tiny_model(), manifest, sensitive=SENSITIVE, output_dir=out, **settings).run()
    assert counts["deletion_insertion"] == 4
    assert counts["sanity_check"] == sanity_runs  # n_steps is not a sanity-check setting


def test_outcome_labels_every_cell_and_leaves_missing_labels_blank() -> None:
    from xai_audit.audit.aggregate import outcome

    got = outcome(np.array([1, 0, 1, 0, np.nan]), np.array([1, 1, 0, 0, 1]))
    assert list(got) == ["TP", "FP", "FN", "TN", ""]
