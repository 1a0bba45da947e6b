"""A report a regulatory reviewer can file (issue 16).

Binomial intervals where the bootstrap degenerates, calibration-bin bands, three-way
intersections, documentation fields with a "not provided" checklist, the compliance map
computed from the result, document control and the report's own SHA-256, the published JSON
Schema of the twin, and the A4 print layout in headless Chromium.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from test_audit_helpers import FAST, tiny_model

from xai_audit.audit import Audit, AuditResult
from xai_audit.audit.config import ConfigError, check_intersections
from xai_audit.audit.documentation import FIELD_KEYS, normalise_documentation
from xai_audit.data import load_manifest
from xai_audit.fairness import evaluate_subgroups
from xai_audit.fairness.inputs import as_specs
from xai_audit.fairness.intervals import (
    apply_to_subgroups,
    clopper_pearson_interval,
    wilson_interval,
)
from xai_audit.report.integrity import ONE_LINER, verify_report
from xai_audit.report.regulatory import SCHEMA_VERSION, report_schema

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
#: A4 portrait at 96 dpi is 794 px; the PDF export's 10 mm side margins leave 190 mm = 718 px.
A4_CONTENT_PX = 718


# ------------------------------------------------------------------------------ intervals
def test_binomial_intervals_match_hand_values_and_scipy() -> None:
    z = norm.ppf(0.975)
    # k = n: Wilson lower bound n / (n + z^2); Clopper-Pearson lower bound (alpha/2)^(1/n)
    lo, hi = wilson_interval(40, 40)
    assert float(lo) == pytest.approx(40 / (40 + z * z), abs=1e-12) and float(hi) == 1.0
    lo, hi = clopper_pearson_interval(40, 40)
    assert float(lo) == pytest.approx(0.025 ** (1 / 40), abs=1e-12) and float(hi) == 1.0
    lo, hi = clopper_pearson_interval(0, 40)
    assert float(lo) == 0.0 and float(hi) == pytest.approx(1 - 0.025 ** (1 / 40), abs=1e-12)
    k = np.array([0, 1, 13, 39, 40, 5])
    n = np.array([40, 7, 40, 40, 40, 5])
    wl, wh = wilson_interval(k, n, 0.9)
    cl, ch = clopper_pearson_interval(k, n, 0.9)
    for i in range(k.size):
        w = binomtest(int(k[i]), int(n[i])).proportion_ci(0.9, "wilson")
        c = binomtest(int(k[i]), int(n[i])).proportion_ci(0.9, "exact")
        assert (wl[i], wh[i]) == pytest.approx((w.low, w.high), abs=1e-9)
        assert (cl[i], ch[i]) == pytest.approx((c.low, c.high), abs=1e-9)
    assert np.isnan(wilson_interval(0, 0)[0]) and np.isnan(clopper_pearson_interval(0, 0)[1])


def _boundary_data(seed: int, patients: bool):
    """Group A: 40 positives all detected (sensitivity 1); group B: an interior sensitivity."""
    rng = np.random.default_rng(seed)
    n = 200
    group = np.array(["A"] * 100 + ["B"] * 100, dtype=object)
    y = np.zeros(n, dtype=int)
    y[:40] = 1
    y[100:150] = 1
    s = rng.uniform(0.0, 0.45, n)
    s[:40] = rng.uniform(0.6, 1.0, 40)  # every positive of A detected
    s[100:150] = np.where(rng.random(50) < 0.7, rng.uniform(0.6, 1.0, 50), rng.uniform(0, 0.4, 50))
    pid = np.repeat(np.arange(n // 2), 2) if patients else None
    res = evaluate_subgroups(
        y, s, {"g": group}, threshold=0.5, patient_id=pid, n_boot=300, min_group_size=10,
        random_state=seed,
    )  # fmt: skip
    return res, pid


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("patients", [False, True])
def test_degenerate_bootstrap_cells_get_clopper_pearson(seed: int, patients: bool) -> None:
    res, pid = _boundary_data(seed, patients)
    bg = res.by_group.set_index(["group", "metric"])
    a = bg.loc[("A", "sensitivity")]
    assert a["value"] == 1.0 and a["ci_low"] == a["ci_high"] == 1.0  # the bootstrap collapses
    safe = apply_to_subgroups(res, pid)["by_group"].set_index(["group", "metric"])
    a = safe.loc[("A", "sensitivity")]
    # 40 positives; with patient ids, 20 distinct patients (two images each)
    n_eff = 20 if patients else 40
    assert a["ci_method"] == "clopper-pearson"
    assert a["ci_low"] == pytest.approx(0.025 ** (1 / n_eff), abs=1e-12) and a["ci_high"] == 1.0
    # control: interior cells keep their bootstrap interval untouched
    b = safe.loc[("B", "sensitivity")]
    assert 0.0 < b["value"] < 1.0 and b["ci_method"] == "bootstrap"
    assert b["ci_low"] == bg.loc[("B", "sensitivity"), "ci_low"]
    interior = (safe["value"] > 0) & (safe["value"] < 1) & (safe["ci_high"] > safe["ci_low"])
    assert (safe.loc[interior, "ci_method"] == "bootstrap").all()
    # non-proportions (AUROC, ECE) are never replaced
    assert (
        safe.loc[(slice(None), ["auroc", "ece", "brier"]), "ci_method"] != "clopper-pearson"
    ).all()


def test_calibration_bins_carry_counts_and_exact_bands() -> None:
    res, _ = _boundary_data(0, False)
    cal = apply_to_subgroups(res)["calibration"]
    rows = cal[(cal["attribute"] == "overall") & (cal["count"] > 0)]
    assert rows["count"].sum() == 200
    for r in rows.itertuples():
        k = round(r.fraction_positive * r.count)
        c = binomtest(int(k), int(r.count)).proportion_ci(0.95, "exact")
        assert (r.ci_low, r.ci_high) == pytest.approx((c.low, c.high), abs=1e-9)


def test_three_way_intersections_on_request() -> None:
    names = [s.name for s in as_specs(["a", "b", "c"], 3)]
    assert names[-1] == "a × b × c" and len(names) == 3 + 3 + 1
    assert [s.name for s in as_specs(["a", "b", "c"], True)][-1] == "b × c"
    assert check_intersections(3, ["a", "b", "c"]) == []
    assert check_intersections(1, ["a"]) and check_intersections([["a", "zz"]], ["a"])
    with pytest.raises(ValueError, match=">= 2"):
        as_specs(["a", "b"], 1)


# ------------------------------------------------------------------------------ documentation
def test_documentation_fields_are_validated() -> None:
    doc = normalise_documentation(
        {"manufacturer": "  ACME  ", "training_data_demographics": {"sex": "F 50%"},
         "standards_applied": ["ISO 14971", ""], "document_control": {"revision": 2}}
    )  # fmt: skip
    assert doc == {
        "manufacturer": "ACME",
        "training_data_demographics": {"sex": "F 50%"},
        "standards_applied": ["ISO 14971"],
        "document_control": {"revision": "2"},
    }
    with pytest.raises(ConfigError, match="unknown field.*manufactuer"):
        normalise_documentation({"manufactuer": "typo"})
    with pytest.raises(ConfigError, match="document_control.*unknown"):
        normalise_documentation({"document_control": {"signature": "x"}})
    with pytest.raises(ConfigError, match="give text"):
        normalise_documentation({"risk_management": True})


# ------------------------------------------------------------------------------ a real audit
DOC = {
    "manufacturer": "ACME Imaging",
    "reference_standard": "Consensus of two radiologists.",
    "document_control": {"document_id": "QA-016", "revision": "B", "author": "A. Author"},
}


@pytest.fixture(scope="module")
def audit(tmp_path_factory) -> tuple[AuditResult, Path]:
    """A small audit (64 px so that the galleries are wide) with some documentation."""
    from xai_audit.datasets import generate_demo_dataset

    root = tmp_path_factory.mktemp("regulatory")
    manifest = generate_demo_dataset(root / "data", n_samples=64, image_size=64, seed=3)
    settings = {**FAST, "exemplars_per_cell": 2, "methods": {"gradcam": {}, "saliency": {}}}
    result = Audit(
        tiny_model(),
        load_manifest(manifest),
        sensitive=["sex", "age_group", "site"],
        intersections=3,
        documentation=DOC,
        output_dir=root / "audit",
        **settings,
    ).run()
    return result, result.report(root / "report.html")


def _status(twin: dict, framework: str, item: str) -> str:
    fw = next(f for f in twin["compliance"]["frameworks"] if f["id"] == framework)
    return next(i for i in fw["items"] if i["id"] == item)["status"]


def test_checklist_shows_every_missing_field_as_not_provided(audit) -> None:
    result, html_path = audit
    twin = json.loads(html_path.with_suffix(".json").read_text())
    doc = twin["documentation"]
    provided = {f["key"] for f in doc["fields"] if f["provided"]}
    assert provided == {"manufacturer", "reference_standard"}
    assert doc["n_fields"] == len(doc["fields"]) >= len(FIELD_KEYS)
    html = html_path.read_text()
    for f in doc["fields"]:
        want = "provided" if f["provided"] else "not provided"
        assert f'data-key="documentation.{f["key"]}" data-value="{want}"' in html
    assert "Consensus of two radiologists." in html and "QA-016" in html
    dc = {f["key"]: f["value"] for f in doc["document_control"]["fields"]}
    assert dc["revision"] == "B" and dc["reviewer"] is None
    assert not doc["document_control"]["signed_off"]


def test_compliance_status_follows_the_result_not_a_table(audit, tmp_path: Path) -> None:
    result, html_path = audit
    twin = json.loads(html_path.with_suffix(".json").read_text())
    assert _status(twin, "gmlp", "5") == "covered"  # reference standard given
    assert _status(twin, "gmlp", "4") == "not provided"  # no independence statement
    assert _status(twin, "annex_iv", "5") == "not provided"
    assert _status(twin, "annex_iv", "2(g)") == "partly"  # measured, but not signed
    # the reviewer signs and the manufacturer adds statements when the report is rebuilt
    signed = result.report(
        tmp_path / "signed.html",
        documentation={
            "independence_statement": "Audit sites never used in training.",
            "risk_management": "RMF-12",
            "document_control": {"reviewer": "R. Reviewer", "review_date": "2026-12-01"},
        },
    )
    t2 = json.loads(signed.with_suffix(".json").read_text())
    assert _status(t2, "gmlp", "4") == "covered" and _status(t2, "annex_iv", "5") == "covered"
    assert _status(t2, "annex_iv", "2(g)") == "covered"
    assert t2["documentation"]["document_control"]["signed_off"]
    dc = {f["key"]: f["value"] for f in t2["documentation"]["document_control"]["fields"]}
    assert dc["document_id"] == "QA-016" and dc["reviewer"] == "R. Reviewer"  # merged
    # every status is one of the three and the counts add up
    for fw in t2["compliance"]["frameworks"]:
        assert sum(fw["counts"].values()) == len(fw["items"])
    assert len(t2["compliance"]["frameworks"][1]["items"]) == 10  # the ten GMLP principles


def test_three_way_cells_and_interval_method_reach_the_report(audit) -> None:
    result, html_path = audit
    twin = json.loads(html_path.with_suffix(".json").read_text())
    names = [a["attribute"] for a in twin["subgroups"]["attributes"]]
    assert "sex × age_group × site" in names
    html = html_path.read_text()
    assert "Clopper-Pearson" in html and "target_layer=None" not in html
    layer = result.model_info["target_layer"]
    assert layer and f"target_layer={layer}" in html
    methods = {r.get("ci_method") for r in twin["performance"]["all"]}
    assert methods <= {"bootstrap", "clopper-pearson", None}
    bins = twin["calibration"]["bins"]
    assert sum(b["count"] for b in bins) == len(result.predictions)


# ------------------------------------------------------------------------------ integrity
def test_report_hash_verifies_and_tampering_is_detected(audit, tmp_path: Path) -> None:
    from xai_audit.cli import main

    _, html_path = audit
    twin = json.loads(html_path.with_suffix(".json").read_text())
    digest = twin["integrity"]["report_sha256"]
    html = html_path.read_text(encoding="utf-8")
    assert html.count(f'<code class="report-sha256">{digest}</code>') == 2  # footer + control
    v = verify_report(html_path)
    assert v.ok and v.recorded == digest == v.twin
    assert main(["verify-report", str(html_path)]) == 0
    one = subprocess.run([sys.executable, "-c", ONE_LINER, str(html_path)], capture_output=True)
    assert one.stdout.decode().strip() == "True"
    # change one shown number: the verdict flips, with the CLI and with the one-liner
    copy = tmp_path / "copy.html"
    shutil.copy(html_path.with_suffix(".json"), copy.with_suffix(".json"))
    i = html.index('data-key="data.n_images"')
    j = html.index(">", i) + 1
    copy.write_text(html[:j] + "9" + html[j:], encoding="utf-8")
    assert not verify_report(copy).ok and "MODIFIED" in verify_report(copy).message
    assert main(["verify-report", str(copy)]) == 1
    one = subprocess.run([sys.executable, "-c", ONE_LINER, str(copy)], capture_output=True)
    assert one.stdout.decode().strip() == "False"
    # an intact copy whose twin belongs to another report is flagged too
    copy.write_text(html, encoding="utf-8")
    other = dict(twin, integrity={**twin["integrity"], "report_sha256": "0" * 64})
    copy.with_suffix(".json").write_text(json.dumps(other))
    assert not verify_report(copy).ok


# ------------------------------------------------------------------------------ schema
def test_twin_validates_against_the_published_schema(audit) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    result, html_path = audit
    schema = report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    twin = json.loads(html_path.with_suffix(".json").read_text())
    assert twin["schema_version"] == SCHEMA_VERSION
    jsonschema.validate(twin, schema)
    jsonschema.validate(json.loads(result.to_json()), schema)  # hash still null: valid too
    # other keys may be added at top level; listed keys are strict
    jsonschema.validate({**twin, "slices": {"anything": 1}}, schema)
    broken = {k: v for k, v in twin.items() if k != "performance"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    bad = json.loads(json.dumps(twin))
    bad["performance"]["confusion"]["TP"] = "19"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_demo_twin_validates_when_present() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    path = ROOT / "reports" / "demo_audit.json"
    if not path.is_file():
        pytest.skip("no demo report (run `make demo`)")
    twin = json.loads(path.read_text())
    if "schema_version" not in twin:
        pytest.skip("the demo report predates the schema (run `make demo`)")
    jsonschema.validate(twin, report_schema())


# ------------------------------------------------------------------------------ print layout
PRINT_JS = """() => {
  const W = window.innerWidth, out = {};
  for (const s of document.querySelectorAll('section, header.top, footer')) {
    let right = 0;
    for (const el of s.querySelectorAll('*')) right = Math.max(right, el.getBoundingClientRect().right);
    out[s.id || s.tagName] = right;
  }
  const wrapped = [...document.querySelectorAll('.ci')].filter(e => e.getClientRects().length > 1).length;
  const conf = document.querySelector('table.confusion');
  const rows = conf ? [...conf.querySelectorAll('tr')].map(r => r.getBoundingClientRect().height) : [];
  return {W, page: document.documentElement.scrollWidth, sections: out, wrapped, rows};
}"""


@pytest.mark.browser
@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"needs chromium at {CHROMIUM}")
def test_every_section_fits_a4_portrait_in_print(audit, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    _, html_path = audit
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": A4_CONTENT_PX, "height": 1000})
            page.emulate_media(media="print")
            page.goto(html_path.resolve().as_uri(), wait_until="load")
            m = page.evaluate(PRINT_JS)
        finally:
            browser.close()
    over = {k: round(v) for k, v in m["sections"].items() if v > m["W"] + 1}
    assert over == {}, f"sections wider than A4 ({m['W']} px): {over}"
    assert m["page"] <= m["W"] + 1
    assert m["wrapped"] == 0, "a confidence interval wraps onto two lines"
    assert m["rows"] and max(m["rows"]) < 60, f"confusion-matrix rows stretched: {m['rows']}"
    assert {"explanations", "documentation", "compliance"} <= set(m["sections"])


@pytest.mark.browser
@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"needs chromium at {CHROMIUM}")
def test_pdf_export_prints_a4_portrait(audit, tmp_path: Path) -> None:
    import re

    pytest.importorskip("playwright.sync_api")
    result, _ = audit
    html = result.report(tmp_path / "p.html", pdf=True)
    data = html.with_suffix(".pdf").read_bytes()
    boxes = re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", data)
    assert boxes, "no page found in the PDF"
    for w, h in boxes:  # A4 portrait: 595.3 x 841.9 pt
        assert abs(float(w) - 595.3) < 2 and abs(float(h) - 841.9) < 2, (w, h)
    assert verify_report(html).ok  # the PDF export leaves the sealed HTML intact


def test_readme_verification_snippet_works(audit, tmp_path: Path) -> None:
    import re

    text = (ROOT / "README.md").read_text()
    section = text[text.index("**Report integrity.**") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = tmp_path / "verify.py"
    script.write_text(code)
    _, html_path = audit
    ok = subprocess.run([sys.executable, str(script), str(html_path)], capture_output=True)
    assert ok.stdout.decode().strip() == "True"
    bad = tmp_path / "bad.html"
    bad.write_text(html_path.read_text().replace("Key findings", "Key finding", 1))
    no = subprocess.run([sys.executable, str(script), str(bad)], capture_output=True)
    assert no.stdout.decode().strip() == "False"
