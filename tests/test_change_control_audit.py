"""Change control in a real (small) audit: the threshold from a validation split, the
absolute-performance finding of a random-weight model, criteria in the run and `check`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_audit_helpers import small_dataset, tiny_model

from xai_audit.audit import Audit, AuditResult, ConfigError
from xai_audit.cli import main
from xai_audit.data import load_manifest
from xai_audit.fairness.threshold import choose_threshold

LIGHT = dict(
    sensitive=["sex", "age_group"],
    methods={"gradcam": {}},
    intersections=False,
    n_boot=50,
    min_group_size=8,
    quality={"faithfulness": False, "sanity": False, "localisation": False, "shortcuts": False},
    exemplars_per_cell=1,
    batch_size=32,
)
CRITERIA = """\
criteria:
  - metric: auroc
    groups: overall
    lower_ci_at_least: 0.0
  - no_findings: high
"""


@pytest.fixture(scope="module")
def split_manifest(tmp_path_factory) -> Path:
    """The small demo data with a patient-level split column (about a third validation)."""
    path = small_dataset(tmp_path_factory.mktemp("data") / "demo", n=96, size=32)
    table = pd.read_csv(path)
    codes = pd.factorize(table["patient_id"])[0]
    table["split"] = np.where(codes % 3 == 0, "validation", "test")
    out = path.with_name("manifest_split.csv")
    table.to_csv(out, index=False)
    return out


@pytest.fixture(scope="module")
def audited(split_manifest: Path, tmp_path_factory) -> AuditResult:
    crit = tmp_path_factory.mktemp("crit") / "gate.yaml"
    crit.write_text(CRITERIA, encoding="utf-8")
    return Audit(
        tiny_model(),
        load_manifest(split_manifest),
        threshold_from={"split_column": "split", "split": "validation", "rule": "youden"},
        performance_floor={"auroc": 0.7},
        criteria=crit,
        output_dir=tmp_path_factory.mktemp("out") / "audit",
        **LIGHT,
    ).run()


def test_threshold_is_chosen_on_the_validation_rows_which_leave_the_audit(
    audited: AuditResult, split_manifest: Path
) -> None:
    full = load_manifest(split_manifest)
    is_val = (full.table["split"] == "validation").to_numpy()
    src = audited.subgroups["threshold"]["source"]
    assert src["kind"] == "validation_split" and not src["optimistic"]
    assert src["n_validation"] == int(is_val.sum()) > 10
    assert src["patients_in_both"] == 0  # the split is by patient
    pred = audited.predictions
    assert len(pred) == int((~is_val).sum()) == audited.data_summary["n_images"]
    assert not set(pred["case_id"]) & set(full.table.loc[is_val, "case_id"].astype(str))
    # the value is Youden's threshold on the validation rows' scores, computed independently
    val = full.subset(np.flatnonzero(is_val))
    scores = tiny_model().positive_scores(val.load_images(np.arange(len(val))))
    expected = choose_threshold(val.label, scores, "youden").value
    assert audited.threshold == pytest.approx(expected, rel=1e-6)
    assert np.array_equal(pred["predicted"], (pred["score"] >= audited.threshold).astype(int))
    op = [f for f in audited.findings if f["kind"] == "operating_point"]
    assert "set outside the audited data" in op[0]["title"]
    assert f"on the {src['n_validation']} rows with split = validation" in op[0]["message"]
    assert audited.config["threshold_from"]["split"] == "validation"


def test_random_weight_model_gets_the_absolute_performance_finding(audited: AuditResult) -> None:
    auroc = audited.subgroups["overall"].set_index("metric").loc["auroc"]
    assert auroc["ci_low"] <= 0.5  # an untrained network ranks at chance
    high = [f for f in audited.findings if f["kind"] == "performance"]
    assert high and high[0]["severity"] == "high" and high[0]["where"] == "overall"
    assert f"{auroc['value']:.3f}" in high[0]["message"]
    assert not [f for f in audited.findings if f["severity"] == "ok"]
    checks = {c["check"]: c for c in audited.findings[-1]["evidence"]["checks"]}
    assert checks["absolute performance"]["ran"]
    assert "auroc >= 0.7: NOT met" in checks["absolute performance"]["detail"]


def test_criteria_in_the_run_are_saved_and_reported(audited: AuditResult, tmp_path: Path) -> None:
    c = audited.criteria
    assert c["file"] == "gate.yaml" and c["verdict"] == "fail"  # the high finding fails it
    assert list(c["table"]["verdict"]) == ["pass", "fail"]
    loaded = AuditResult.load(audited.result_dir)
    assert loaded.criteria["verdict"] == "fail"
    pd.testing.assert_frame_equal(loaded.criteria["table"], c["table"])
    html = loaded.report(tmp_path / "r.html").read_text(encoding="utf-8")
    assert '<section id="criteria">' in html and 'data-value="fail"' in html
    assert 'id="threshold-source"' in html and "rows with split = validation" in html


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_check_exit_codes(audited: AuditResult, tmp_path: Path, capsys) -> None:
    d = str(audited.result_dir)
    ok = _write(tmp_path, "criteria:\n  - metric: auroc\n    lower_ci_at_least: 0.0\n", "ok.yaml")
    out = tmp_path / "v.json"
    assert main(["check", d, "--criteria", ok, "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["verdict"] == "pass" and payload["exit_code"] == 0
    assert payload["rows"][0]["group"] == "overall" and payload["rows"][0]["verdict"] == "pass"
    assert main(["check", d, "--criteria", _write(tmp_path, CRITERIA)]) == 1
    text = capsys.readouterr().out
    assert "[    FAIL    ] no high finding" in text and "Overall: FAIL" in text
    missing = "criteria:\n  - metric: sensitivity\n    groups: race\n    lower_ci_at_least: 0.5\n"
    assert main(["check", d, "--criteria", _write(tmp_path, missing, "m.yaml")]) == 2
    assert "'race' was not audited" in capsys.readouterr().out


def test_check_errors_are_one_message_without_traceback(
    audited: AuditResult, tmp_path: Path, capsys
) -> None:
    bad = _write(tmp_path, "criteria:\n  - metric: auroc\n", "bad.yaml")
    assert main(["check", str(audited.result_dir), "--criteria", bad]) == 2
    err = capsys.readouterr().err
    assert "line 2 (criterion 1): give exactly one bound" in err and "Traceback" not in err
    assert main(["check", str(tmp_path / "none"), "--criteria", _write(tmp_path, CRITERIA)]) == 2
    err = capsys.readouterr().err
    assert "No audit result" in err and "Traceback" not in err


def test_change_control_settings_are_checked_before_any_work(split_manifest: Path) -> None:
    data = load_manifest(split_manifest)
    with pytest.raises(ConfigError) as err:
        Audit(
            tiny_model(),
            data,
            threshold=0.3,
            threshold_from={"split_column": "split", "split": "val"},
            performance_floor={"ece": 0.1},
            criteria=Path("/nonexistent/criteria.yaml"),
            **LIGHT,
        )
    text = str(err.value)
    assert "threshold is a number (0.3) and threshold_from is given too" in text
    assert "unknown or unsupported metric 'ece'" in text
    assert "criteria: criteria file not found" in text
    with pytest.raises(ConfigError, match=r"no row has split == 'val'; values found: \['test', "):
        Audit(tiny_model(), data, threshold_from={"split_column": "split", "split": "val"}, **LIGHT)
    with pytest.raises(ConfigError, match="column 'fold' is not in the manifest"):
        Audit(tiny_model(), data, threshold_from={"split_column": "fold", "split": "v"}, **LIGHT)


def test_config_keys_are_validated_and_resolved(split_manifest: Path, tmp_path: Path) -> None:
    from xai_audit.audit.config import parse_config

    (tmp_path / "gate.yaml").write_text(CRITERIA, encoding="utf-8")
    base = {"data": {"manifest": str(split_manifest)}, "attributes": ["sex"]}
    cfg = parse_config(
        {
            **base,
            "threshold_from": {"split_column": "split", "split": "validation"},
            "performance_floor": {"auroc": 0.8},
            "criteria": "gate.yaml",
        },
        base_dir=tmp_path,
    )
    assert cfg.criteria == str((tmp_path / "gate.yaml").resolve())
    assert cfg.threshold_from == {"split_column": "split", "split": "validation"}
    (tmp_path / "bad.yaml").write_text("criteria:\n  - metric: auroc\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                **base,
                "threshold": 0.4,
                "threshold_from": {"split_column": "fold", "split": "v", "rule": 0.3},
                "performance_floor": {"auroc": 2},
                "criteria": "bad.yaml",
            },
            base_dir=tmp_path,
        )
    text = str(err.value)
    assert "threshold_from.split_column: column 'fold' is not in the manifest" in text
    assert "threshold_from.rule must be a rule" in text
    assert "threshold is a number (0.4) and threshold_from is given too" in text
    assert "performance_floor: auroc must be a number in [0, 1], got 2" in text
    assert "criteria: line 2 (criterion 1): give exactly one bound" in text


@pytest.mark.slow
@pytest.mark.skipif(
    not (Path(__file__).resolve().parents[1] / "xai_audit/model/weights/demo_cnn.pt").is_file(),
    reason="the demo weights are not trained",
)
def test_demo_result_fails_65plus_sensitivity_and_passes_overall_auroc(tmp_path: Path) -> None:
    """The issue's acceptance example on the demo model and data (the demo's own threshold and
    subgroup settings; explanation checks off, which these criteria do not read)."""
    from xai_audit.datasets import generate_demo_dataset
    from xai_audit.demo import demo_threshold
    from xai_audit.model import load_demo_model

    manifest = generate_demo_dataset(tmp_path / "data")
    threshold, note = demo_threshold()
    assert threshold == pytest.approx(0.3422, abs=1e-4)  # the model card's validation threshold
    result = Audit(
        load_demo_model(device="cpu"),
        load_manifest(manifest),
        sensitive=["sex", "age_group", "site"],
        methods={"gradcam": {}},
        threshold=threshold,
        threshold_note=note,
        n_boot=200,
        quality={"faithfulness": False, "sanity": False, "localisation": False, "shortcuts": False},
        batch_size=64,
        output_dir=tmp_path / "audit",
    ).run()
    crit = tmp_path / "c.yaml"
    crit.write_text(
        "criteria:\n"
        "  - metric: sensitivity\n    groups: age_group\n    lower_ci_at_least: 0.85\n"
        "  - metric: auroc\n    groups: overall\n    lower_ci_at_least: 0.90\n",
        encoding="utf-8",
    )
    from xai_audit.audit.criteria import evaluate_criteria

    t = evaluate_criteria(result, crit)
    sens = t[t["metric"] == "sensitivity"].set_index("group")
    assert sens.loc["age_group=65+", "verdict"] == "fail"
    assert sens.loc["age_group=65+", "ci_low"] < 0.85
    assert (sens.drop("age_group=65+")["verdict"] == "pass").all()
    assert t[t["metric"] == "auroc"]["verdict"].tolist() == ["pass"]
    assert main(["check", str(tmp_path / "audit"), "--criteria", str(crit)]) == 1
    # a working model: no absolute-performance finding; the threshold is not called optimistic
    assert not [f for f in result.findings if f["kind"] == "performance"]
    assert result.subgroups["threshold"]["source"]["kind"] == "given"
