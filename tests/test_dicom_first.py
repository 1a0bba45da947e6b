"""DICOM-first: non-image objects skipped, mixed sizes brought to one, ids from file names,
inconsistent patient attributes warned about, and no identifier ever printed."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xai_audit.data import DataWarning, ManifestError, load_manifest, manifest_from_dicom
from xai_audit.data.resize import fit_image

pydicom = pytest.importorskip("pydicom")
# pydicom's own test files (installed with it; read locally, never downloaded).
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
IMAGES = ("CT_small.dcm", "MR_small.dcm")  # 128 x 128 CT, 64 x 64 MR
NON_IMAGES = ("rtstruct.dcm", "rtplan.dcm", "reportsi.dcm")
# Identifying header values of these files, which must never be printed.
PHI = ("CompressedSamples", "1CT1", "4MR1", "Phantom30sep", "Last^First", "id00001")


def _folder(tmp_path: Path, names=IMAGES + NON_IMAGES) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    for n in names:
        shutil.copy(TEST_FILES / n, folder / n)
    return folder


def _messages(caught) -> list[str]:
    return [str(w.message) for w in caught]


def test_non_images_skipped_with_one_summary_and_mixed_sizes_resized(tmp_path) -> None:
    folder = _folder(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = manifest_from_dicom(folder, image_size=(64, 64), salt="s")
    skipped = [msg for msg in _messages(caught) if "skipped" in msg]
    assert len(skipped) == 1
    assert "3 non-image object(s) without pixel data" in skipped[0]
    for kind in ("RTSTRUCT (RT Structure Set Storage) x1", "RTPLAN (RT Plan Storage) x1",
                 "SR (Basic Text SR Storage) x1"):  # fmt: skip
        assert kind in skipped[0]
    assert not any(p in msg for msg in _messages(caught) for p in PHI)
    assert len(m) == 2 and sorted(m.table["modality"]) == ["CT", "MR"]
    images = m.load_images([0, 1])
    assert images.shape == (2, 1, 64, 64) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_mixed_sizes_refused_without_image_size_naming_the_option(tmp_path) -> None:
    folder = _folder(tmp_path, IMAGES)
    with pytest.raises(ManifestError, match=r"image_size=\(H, W\)") as err:
        manifest_from_dicom(folder, salt="s")
    assert "(1, 128, 128) x 1 row" in str(err.value)


def test_only_non_images_is_a_clear_error(tmp_path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ManifestError, match="None of the 3 DICOM files holds an image"):
            manifest_from_dicom(_folder(tmp_path, NON_IMAGES), salt="s")


def test_resize_modes_keep_geometry() -> None:
    wide = np.ones((1, 2, 4), np.float32)  # H=2, W=4
    padded = fit_image(wide, (4, 4), "pad")
    assert padded.shape == (1, 4, 4)
    np.testing.assert_allclose(padded[0, 1:3], 1.0, atol=1e-6)  # letterbox: rows 1-2 image
    np.testing.assert_allclose(padded[0, [0, 3]], 0.0)  # rows 0 and 3 zero padding
    ramp = np.tile(np.arange(8, dtype=np.float32), (4, 1))[None]  # H=4, W=8, value = column
    cropped = fit_image(ramp, (4, 4), "crop")
    np.testing.assert_allclose(cropped[0, 0], [2, 3, 4, 5])  # centre columns, no scaling
    stretched = fit_image(ramp, (4, 4), "resize")
    assert stretched.shape == (1, 4, 4) and stretched[0, 0, 0] < stretched[0, 0, -1]
    mask = np.zeros((4, 8), np.uint8)
    mask[:, 4:] = 1
    small = fit_image(mask, (2, 4), "resize", mask=True)
    assert small.dtype == np.uint8 and set(np.unique(small)) == {0, 1}
    np.testing.assert_array_equal(small, [[0, 0, 1, 1], [0, 0, 1, 1]])
    volume = fit_image(np.ones((1, 4, 8, 8), np.float32), (2, 4, 4), "resize")
    assert volume.shape == (1, 2, 4, 4)
    with pytest.raises(ValueError, match="has 2 axes but the image has spatial shape"):
        fit_image(np.ones((1, 4, 8, 8), np.float32), (4, 4))


def test_ids_from_file_names_and_duplicate_advice(tmp_path) -> None:
    folder = _folder(tmp_path, IMAGES)
    m = manifest_from_dicom(folder, image_size=(32, 32), ids_from="filename", salt="s")
    assert sorted(m.case_ids) == ["CT_small", "MR_small"]
    # The same instance exported twice: the UID pseudonyms collide, the advice names the fix.
    (folder / "copy").mkdir()
    shutil.copy(folder / "CT_small.dcm", folder / "copy" / "CT_small.dcm")
    with pytest.raises(ManifestError, match=r"ids_from='path'"):
        manifest_from_dicom(folder, image_size=(32, 32), salt="s")
    with pytest.raises(ManifestError, match="Duplicate case ids"):
        manifest_from_dicom(folder, image_size=(32, 32), ids_from="filename", salt="s")
    m = manifest_from_dicom(folder, image_size=(32, 32), ids_from="path", salt="s")
    assert sorted(m.case_ids) == ["CT_small", "MR_small", "copy/CT_small"]
    with pytest.raises(ValueError, match="path_policy='index'"):
        manifest_from_dicom(folder, ids_from="filename", path_policy="index")


def test_patient_attributes_that_differ_are_warned_without_identifiers(tmp_path) -> None:
    folder = tmp_path / "patient"
    folder.mkdir()
    for k, sex in enumerate(["M", "F"]):  # one patient (same PatientID), two sexes
        ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
        ds.PatientSex = sex
        ds.SOPInstanceUID = f"1.2.3.4.{k + 1}"
        ds.save_as(folder / f"img{k}.dcm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = manifest_from_dicom(folder, salt="s")
    notes = [msg for msg in _messages(caught) if "different values of 'sex'" in msg]
    assert len(notes) == 1 and "1 patient(s) (2 images)" in notes[0]
    assert any(str(c) in notes[0] for c in m.case_ids)  # named by pseudonymous case id
    assert not any(p in msg for msg in _messages(caught) for p in PHI)
    assert all(issubclass(w.category, DataWarning) for w in caught if "sex" in str(w.message))


def test_load_manifest_image_size_and_ids_from(tmp_path) -> None:
    for name, shape in [("a.npy", (1, 8, 8)), ("b.npy", (1, 16, 12))]:
        np.save(tmp_path / name, np.full(shape, 0.5, np.float32))
    table = pd.DataFrame({"image": ["a.npy", "b.npy"], "label": [0, 1]})
    with pytest.raises(ManifestError, match="image_size"):
        load_manifest(table, tmp_path, ids_from="filename")
    m = load_manifest(table, tmp_path, ids_from="filename", image_size=(8, 8), resize="pad")
    assert list(m.case_ids) == ["a", "b"]
    out = m.load_images([0, 1])
    assert out.shape == (2, 1, 8, 8)
    # b (16 x 12) fits as 8 x 6, centred: one zero column each side.
    np.testing.assert_allclose(out[1, 0, :, 0], 0.0)
    np.testing.assert_allclose(out[1, 0, :, 1:7], 0.5, atol=1e-6)
    assert m.subset([1]).load_image(0).shape == (1, 8, 8)  # the setting survives subsets
    plain = load_manifest(table.assign(case_id=["x", "y"]).iloc[:1], tmp_path)
    assert (
        plain.content_hash()
        != load_manifest(
            table.assign(case_id=["x", "y"]).iloc[:1], tmp_path, image_size=(4, 4)
        ).content_hash()
    )


def test_readme_dicom_example_runs(tmp_path, monkeypatch, capsys) -> None:
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## DICOM-first workflow") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "skipped 3 non-image object(s)" in out and "(2, 1, 64, 64)" in out
    assert "CT_small" in out and "MR_small" in out


def test_config_keys_image_size_resize_ids_from(tmp_path) -> None:
    from xai_audit.audit.config import ConfigError, DataConfig, load_config, load_data

    for name, shape in [("a.npy", (1, 8, 8)), ("b.npy", (1, 16, 12))]:
        np.save(tmp_path / name, np.full(shape, 0.5, np.float32))
    pd.DataFrame({"image": ["a.npy", "b.npy"], "label": [0, 1], "sex": ["F", "M"]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    d = DataConfig(manifest=str(tmp_path / "m.csv"), image_size=[8, 8], resize="crop",
                   ids_from="filename")  # fmt: skip
    m = load_data(d, ["sex"])
    assert list(m.case_ids) == ["a", "b"] and m.load_images([0, 1]).shape == (2, 1, 8, 8)
    cfg = tmp_path / "audit.yaml"
    cfg.write_text(
        "data:\n  manifest: m.csv\n  image_size: [8]\n  resize: squash\n  ids_from: name\n"
        "attributes: [sex]\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    assert "resize must be one of" in msg and "data.ids_from must be filename or path" in msg
    assert "data.id_col" not in msg  # ids built from paths: no id column needed
