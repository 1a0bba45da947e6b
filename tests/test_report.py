"""The HTML report and its JSON twin: sections, escaping, offline, PHI, browser rendering."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_audit_helpers import FAST, tiny_model

from xai_audit.audit import Audit, AuditResult
from xai_audit.data import load_manifest
from xai_audit.report import SECTIONS

EVIL = "<script>alert('x')</script> & Co"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def evil_audit(tmp_path_factory) -> tuple[AuditResult, Path]:
    """An audit whose class name and one site name contain markup and an ampersand."""
    from xai_audit.datasets import generate_demo_dataset

    root = tmp_path_factory.mktemp("evil")
    manifest_path = generate_demo_dataset(root / "data", n_samples=64, image_size=32, seed=1)
    table = pd.read_csv(manifest_path, dtype=str)
    table["site"] = table["site"].replace({"C": EVIL})
    table.to_csv(manifest_path, index=False)
    model = tiny_model()
    model._class_names = ["normal", EVIL]
    model._positive_class = 1
    result = Audit(
        model,
        load_manifest(manifest_path),
        sensitive=["sex", "age_group", "site"],
        output_dir=root / "audit",
        name=f"Audit {EVIL}",
        **FAST,
    ).run()
    html = result.report(root / "report.html")
    return result, html


def test_report_has_every_section_and_a_json_twin(evil_audit) -> None:
    result, html_path = evil_audit
    html = html_path.read_text()
    for sid, heading in SECTIONS:
        assert f'id="{sid}"' in html and heading in html
    twin = json.loads(html_path.with_suffix(".json").read_text())
    # the report's own SHA-256 exists only once the HTML is written (xai_audit.report.integrity)
    assert len(twin["integrity"].pop("report_sha256")) == 64
    expected = json.loads(result.to_json())
    assert expected["integrity"].pop("report_sha256") is None
    assert twin == expected
    assert twin["performance"]["threshold"]["value"] == pytest.approx(result.threshold)
    # every key number shown in the HTML is in the twin
    ov = {r["metric"]: r["value"] for r in twin["performance"]["headline"]}
    for key, value in re.findall(r'data-key="overall\.(\w+)" data-value="([^"]*)"', html):
        if key in ov and value:
            assert float(value) == pytest.approx(ov[key], rel=1e-12)
    assert html_path.stat().st_size < 5 * 2**20


def test_markup_in_names_renders_as_text(evil_audit) -> None:
    _, html_path = evil_audit
    html = html_path.read_text()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co" in html
    assert "<script" not in html.lower()  # the report needs no script at all


def test_report_is_self_contained(evil_audit) -> None:
    _, html_path = evil_audit
    html = html_path.read_text()
    assert not re.search(r'(src|href)\s*=\s*"(?!data:|#)', html)
    assert "http://" not in html and "https://" not in html
    assert "@media print" in html


def test_report_rebuilds_from_a_loaded_result(evil_audit, tmp_path: Path) -> None:
    result, html_path = evil_audit
    loaded = AuditResult.load(result.result_dir)
    again = loaded.report(tmp_path / "again.html")
    assert json.loads(again.with_suffix(".json").read_text()) == json.loads(
        html_path.with_suffix(".json").read_text()
    )


# ------------------------------------------------------------------------------ PHI
def _dicom_folder(root: Path, n: int = 40) -> pd.DataFrame:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    from xai_audit.datasets import make_synthetic_cxr

    data = make_synthetic_cxr(n, 32, 3)
    labels = {}
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(root / f"img{i:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = f"Doe^Jane{i % 7}"
        ds.PatientID = f"MRN-55{i % 7:04d}"
        ds.PatientSex = "F" if i % 2 else "M"
        ds.PatientAge = f"{30 + (i * 7) % 60:03d}Y"
        ds.Modality = "CR"
        ds.Manufacturer = "AcmeRad"
        px = (data.images[i, 0] * 4000).astype(np.uint16)
        ds.Rows, ds.Columns = px.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = px.tobytes()
        pydicom.dcmwrite(ds.filename, ds, enforce_file_format=True)
        labels[f"img{i:03d}.dcm"] = int(data.metadata["label"].iat[i])
    return pd.DataFrame({"label": labels.values()}, index=list(labels))


def test_no_patient_identifier_anywhere(tmp_path: Path) -> None:
    from xai_audit.data import manifest_from_dicom

    labels = _dicom_folder(tmp_path / "dicom")
    manifest = manifest_from_dicom(tmp_path / "dicom", labels=labels["label"], salt="test-salt")
    out = tmp_path / "audit"
    fast = {**FAST, "methods": {"gradcam": {}}, "min_group_size": 5}
    result = Audit(
        tiny_model(), manifest, sensitive=["sex", "age_group"], output_dir=out, **fast
    ).run()
    html = result.report(tmp_path / "report.html")
    forbidden = (
        [f"Doe^Jane{k}" for k in range(7)]
        + [f"MRN-55{k:04d}" for k in range(7)]
        + ["Doe^Jane", "MRN-55"]
    )
    files = [html, html.with_suffix(".json"), *[p for p in out.rglob("*") if p.is_file()]]
    for path in files:
        blob = path.read_bytes()
        if path.suffix == ".npz":  # compressed: check the decoded arrays' text too
            with np.load(path) as z:
                blob += b"".join(
                    str(z[k].tolist()).encode() for k in z.files if z[k].dtype.kind in "USO"
                )
        for s in forbidden:
            assert s.encode() not in blob, f"{s!r} found in {path.name}"


# ------------------------------------------------------------------------------ browser
@pytest.mark.browser
@pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)",
)
def test_report_in_headless_chromium(evil_audit, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    result, html_path = evil_audit
    requests: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(html_path.resolve().as_uri(), wait_until="load")
            headings = page.locator("h2").all_inner_texts()
            values = page.eval_on_selector_all(
                "[data-key]", "els => els.map(e => [e.dataset.key, e.dataset.value, e.textContent])"
            )
            shot = page.screenshot(full_page=False)
        finally:
            browser.close()
    assert errors == []
    non_file = [u for u in requests if not u.startswith(("file://", "data:"))]
    assert non_file == [] and sum(u.startswith("file://") for u in requests) == 1
    assert [h.strip() for h in headings] == [h for _, h in SECTIONS]
    # the screenshot is not blank
    from io import BytesIO

    from PIL import Image

    pixels = np.asarray(Image.open(BytesIO(shot)).convert("L"), dtype=np.float64)
    assert pixels.std() > 10
    # numbers shown equal the AuditResult's
    shown = {k: (v, t) for k, v, t in values}
    ov = result.subgroups["overall"].set_index("metric")["value"]
    for metric in ("auroc", "sensitivity", "specificity", "ppv", "npv"):
        value, text = shown[f"overall.{metric}"]
        assert float(value) == pytest.approx(float(ov[metric]), rel=1e-12)
        assert text.strip() == f"{float(ov[metric]):.3f}"
    assert float(shown["threshold"][0]) == pytest.approx(result.threshold, rel=1e-12)
    assert int(shown["data.n_images"][0]) == len(result.predictions)
    counts = result.predictions["outcome"].value_counts()
    for o in ("TP", "FP", "FN", "TN"):
        assert int(shown[f"confusion.{o}"][0]) == int(counts.get(o, 0))
    bg = result.subgroups["by_group"]
    row = bg[
        (bg["attribute"] == "site") & (bg["group"] == EVIL) & (bg["metric"] == "sensitivity")
    ].iloc[0]
    key = f"group.site.{EVIL}.sensitivity"
    if np.isfinite(row["value"]):
        assert float(shown[key][0]) == pytest.approx(float(row["value"]), rel=1e-12)


@pytest.mark.browser
@pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)",
)
def test_pdf_export_prints_every_page(evil_audit, tmp_path: Path) -> None:
    pytest.importorskip("playwright.sync_api")
    from xai_audit.cli import main

    result, _ = evil_audit
    assert (
        main(["report", str(result.result_dir), "--output", str(tmp_path / "r.html"), "--pdf"]) == 0
    )
    data = (tmp_path / "r.pdf").read_bytes()
    assert data.startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert pages >= 3, f"a full audit report prints to several A4 pages, got {pages}"
