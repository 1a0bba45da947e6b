"""Tests for xai_audit.data: manifests, readers, DICOM (PHI-free), validation, torch dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import tifffile
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from xai_audit.data import (
    ImageDataset,
    Manifest,
    ManifestError,
    image_shape,
    load_manifest,
    manifest_from_arrays,
    manifest_from_dicom,
    read_dicom,
    read_image,
)

# ----------------------------------------------------------------------------- helpers
A8 = (np.arange(12, dtype=np.uint8).reshape(3, 4) * 20).astype(np.uint8)
A16 = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
AF = np.linspace(-1.0, 2.0, 12, dtype=np.float32).reshape(3, 4)


def _write_folder(root: Path) -> pd.DataFrame:
    """Four 3x4 images of different formats, one mask, a CSV with labels and attributes."""
    Image.fromarray(A8).save(root / "a8.png")
    Image.fromarray(A16).save(root / "a16.png")
    (root / "sub").mkdir()
    tifffile.imwrite(root / "sub" / "t16.tif", A16)
    np.save(root / "f.npy", AF)
    Image.fromarray(np.where(A8 > 100, 255, 0).astype(np.uint8)).save(root / "m.png")
    table = pd.DataFrame(
        {
            "case_id": ["007", "c1", "c2", "c3"],
            "image": ["a8.png", "a16.png", "sub/t16.tif", "f.npy"],
            "label": [0, 1, 1, 0],
            "sex": ["F", "M", None, "F"],
            "site": ["A", "A", "B", "B"],
            "patient_id": ["p1", "p1", "p2", None],
            "mask": ["m.png", None, None, None],
        }
    )
    table.to_csv(root / "manifest.csv", index=False)
    return table


def _grey_png(path: Path, size: tuple[int, int] = (4, 4), value: int = 7) -> None:
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path)


def _write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME1",
    slope: float = 2.0,
    intercept: float = -100.0,
    window: tuple[float, float] | None = None,
) -> FileDataset:
    """A synthetic DICOM with known PHI, pixels and modality LUT."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-123456"
    ds.PatientBirthDate = "19700101"
    ds.OtherPatientIDs = "OTHER-778899"
    ds.AccessionNumber = "ACC987654"
    ds.InstitutionName = "St Elsewhere Hospital"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.PatientSex = "F"
    ds.PatientAge = "045Y"
    ds.Modality = "CR"
    ds.Manufacturer = "AcmeRad"
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


def _identifiers(ds) -> list[str]:
    """Identifying header strings (and name parts) that must never reach a manifest."""
    values = []
    for kw in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "OtherPatientIDs",
        "AccessionNumber",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "InstitutionName",
        "ReferringPhysicianName",
    ):
        text = str(ds.get(kw) or "").strip()
        values += [text, *text.split("^")]
    # MR_small's InstitutionName "TOSHIBA" is part of its allowed Manufacturer "TOSHIBA_MEC";
    # an identifier contained in an allow-listed value cannot be told apart from it.
    allowed = " ".join(str(ds.get(kw) or "") for kw in ("Manufacturer", "Modality")).lower()
    return sorted({v for v in values if len(v) >= 3 and v.lower() not in allowed})


def _assert_no_phi(manifest: Manifest, ds) -> None:
    text = (manifest.table.to_csv() + repr(manifest)).lower()
    for ident in _identifiers(ds):
        assert ident.lower() not in text, f"identifier {ident!r} leaked into the manifest"


PIXELS = np.array([[0, 100, 200, 300], [400, 500, 600, 1000]], dtype=np.uint16)


# ----------------------------------------------------------------------------- folder + CSV
def test_folder_csv_round_trip_exact_pixels_and_columns(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    m = load_manifest(tmp_path / "manifest.csv")

    assert len(m) == 4
    assert m.image_root == tmp_path
    assert list(m.case_ids) == ["007", "c1", "c2", "c3"]  # ids stay strings ("007")
    assert m.label_cols == ["label"] and m.attribute_cols == ["sex", "site"]
    assert m.patient_col == "patient_id" and m.mask_col == "mask"
    np.testing.assert_array_equal(m.labels, [[0], [1], [1], [0]])
    np.testing.assert_array_equal(m.label, [0, 1, 1, 0])
    assert m.attributes["sex"].isna().tolist() == [False, False, True, False]  # NaN kept
    assert list(m.patient_ids[:3]) == ["p1", "p1", "p2"] and pd.isna(m.patient_ids[3])

    expected = [
        A8.astype(np.float32) / np.float32(255),
        A16.astype(np.float32) / np.float32(65535),
        A16.astype(np.float32) / np.float32(65535),
        AF,  # float arrays are not rescaled
    ]
    for i, exp in enumerate(expected):
        img = m.load_image(i)
        assert img.dtype == np.float32 and img.shape == (1, 3, 4)
        np.testing.assert_array_equal(img[0], exp)
    assert m.load_images([0, 3]).shape == (2, 1, 3, 4)

    mask = m.load_mask(0)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, (A8 > 100).astype(np.uint8))
    assert m.load_mask(1) is None
    masks = m.load_masks([0, 1])
    assert masks.shape == (2, 3, 4) and masks[1].sum() == 0


def test_reader_layouts_and_header_shapes(tmp_path: Path) -> None:
    rgba = np.random.default_rng(0).integers(0, 256, (5, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.save(tmp_path / "vol.npy", np.zeros((7, 5, 6), np.int16))
    np.save(tmp_path / "chw.npy", np.zeros((3, 5, 6), np.uint8))
    np.save(tmp_path / "cdhw.npy", np.zeros((2, 7, 5, 6), np.float32))
    tifffile.imwrite(tmp_path / "rgb.tif", rgba[..., :3])

    rgb = read_image(tmp_path / "rgba.png")
    assert rgb.shape == (3, 5, 6)  # alpha dropped, channels first
    np.testing.assert_array_equal(rgb, np.moveaxis(rgba[..., :3], -1, 0) / np.float32(255))
    expected = {
        "rgba.png": (3, 5, 6),
        "vol.npy": (1, 7, 5, 6),
        "chw.npy": (3, 5, 6),
        "cdhw.npy": (2, 7, 5, 6),
        "rgb.tif": (3, 5, 6),
    }
    for name, shape in expected.items():
        assert read_image(tmp_path / name).shape == shape, name
        assert image_shape(tmp_path / name) == shape, name  # header-only agrees with reader

    (tmp_path / "x.gif2").write_bytes(b"abc")
    with pytest.raises(ValueError, match="Unsupported image file type '.gif2'"):
        read_image(tmp_path / "x.gif2")


def test_nifti_without_nibabel_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "nibabel", None)  # import now fails
    (tmp_path / "v.nii.gz").write_bytes(b"\0" * 400)
    with pytest.raises(ImportError, match=r"xai_audit\[nifti\]"):
        read_image(tmp_path / "v.nii.gz")


def test_nifti_volumes_load_in_depth_height_width_order(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    xyz = np.arange(6 * 5 * 7, dtype=np.float32).reshape(6, 5, 7)  # X, Y, Z
    nib.save(nib.Nifti1Image(xyz, np.eye(4)), tmp_path / "a.nii.gz")
    # integers with a scale: the reader must apply scl_slope / scl_inter (CT in HU)
    raw = np.arange(6 * 5 * 7, dtype=np.int16).reshape(6, 5, 7)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(0.5, -10.0)
    nib.save(img, tmp_path / "b.nii")

    a = read_image(tmp_path / "a.nii.gz")
    assert a.shape == (1, 7, 5, 6) and image_shape(tmp_path / "a.nii.gz") == (1, 7, 5, 6)
    np.testing.assert_array_equal(a[0], np.transpose(xyz, (2, 1, 0)))  # [z, y, x] = xyz[x, y, z]
    b = read_image(tmp_path / "b.nii")
    np.testing.assert_allclose(b[0], np.transpose(raw * 0.5 - 10.0, (2, 1, 0)))

    pd.DataFrame({"case_id": ["a", "b"], "image": ["a.nii.gz", "b.nii"], "label": [0, 1]}).to_csv(
        tmp_path / "manifest.csv", index=False
    )
    m = load_manifest(tmp_path / "manifest.csv")
    assert m.load_images([0, 1]).shape == (2, 1, 7, 5, 6)


# ----------------------------------------------------------------------------- validation
def _csv(tmp_path: Path, rows: dict) -> Path:
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path / "manifest.csv"


def _four_pngs(tmp_path: Path) -> list[str]:
    names = [f"i{k}.png" for k in range(4)]
    for name in names:
        _grey_png(tmp_path / name)
    return names


def test_missing_file(tmp_path: Path) -> None:
    names = _four_pngs(tmp_path)
    names[2] = "nope.png"
    path = _csv(tmp_path, {"case_id": ["c0", "c1", "c2", "c3"], "image": names, "label": 0})
    with pytest.raises(ManifestError, match=r"not found for 1 row \(case ids: c2\)") as err:
        load_manifest(path)
    assert "nope.png" in str(err.value) and "image_root" in str(err.value)
    assert len(load_manifest(path, check_files=False)) == 4  # file checks can be turned off


def test_many_missing_files_name_first_five_and_count(tmp_path: Path) -> None:
    ids = [f"m{k}" for k in range(7)]
    path = _csv(tmp_path, {"case_id": ids, "image": [f"{i}.png" for i in ids], "label": 1})
    with pytest.raises(ManifestError, match=r"7 rows \(case ids: m0, m1, m2, m3, m4, \.\.\."):
        load_manifest(path)


def test_corrupt_image(tmp_path: Path) -> None:
    names = _four_pngs(tmp_path)
    (tmp_path / names[3]).write_bytes(b"this is not a png at all" * 10)
    path = _csv(tmp_path, {"case_id": ["c0", "c1", "c2", "c3"], "image": names, "label": 0})
    with pytest.raises(ManifestError, match=r"corrupt images for 1 row \(case ids: c3\)"):
        load_manifest(path)


def test_truncated_image_caught_by_deep_check(tmp_path: Path) -> None:
    names = _four_pngs(tmp_path)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "t.png")  # noise: the data does not fit 200 bytes
    names[1] = "t.png"
    (tmp_path / "t.png").write_bytes((tmp_path / "t.png").read_bytes()[:200])
    _grey_png(tmp_path / names[0], size=(64, 64))
    for n in names[2:]:
        _grey_png(tmp_path / n, size=(64, 64))
    path = _csv(tmp_path, {"case_id": ["c0", "c1", "c2", "c3"], "image": names, "label": 0})
    m = load_manifest(path)  # the header is intact, so the fast check passes
    with pytest.raises(ManifestError, match=r"corrupt images for 1 row \(case ids: c1\)"):
        m.validate(check_files="deep")
    with pytest.raises(ManifestError, match=r"case 'c1'"):
        m.load_image(1)


def test_inconsistent_shapes(tmp_path: Path) -> None:
    names = _four_pngs(tmp_path)
    _grey_png(tmp_path / names[1], size=(8, 8))
    path = _csv(tmp_path, {"case_id": ["c0", "c1", "c2", "c3"], "image": names, "label": 0})
    with pytest.raises(ManifestError, match="Inconsistent image shapes") as err:
        load_manifest(path)
    msg = str(err.value)
    assert "(1, 4, 4) x 3 rows" in msg and "(1, 8, 8) x 1 row" in msg
    assert "1 row (case ids: c1)" in msg


def test_missing_column_lists_available(tmp_path: Path) -> None:
    names = _four_pngs(tmp_path)
    path = _csv(tmp_path, {"case_id": ["c0", "c1", "c2", "c3"], "image": names, "label": 0})
    with pytest.raises(ManifestError, match="'diagnosis'") as err:
        load_manifest(path, label_cols=["diagnosis"])
    assert "Available columns: case_id, image, label" in str(err.value)


def test_non_binary_labels(tmp_path: Path) -> None:
    names = _four_pngs(tmp_path)
    rows = {"case_id": ["c0", "c1", "c2", "c3"], "image": names, "label": [0, 2, 1, 2]}
    with pytest.raises(ManifestError, match=r"Non-binary.*2 rows \(case ids: c1, c3\).*values 2"):
        load_manifest(_csv(tmp_path, rows))
    m = load_manifest(_csv(tmp_path, rows), binary_labels=False)
    np.testing.assert_array_equal(m.label, [0, 2, 1, 2])


def test_nan_labels(tmp_path: Path) -> None:
    names = _four_pngs(tmp_path)
    rows = {"case_id": ["c0", "c1", "c2", "c3"], "image": names, "label": [0, None, 1, 0]}
    with pytest.raises(ManifestError, match=r"Missing \(NaN\) labels.*1 row \(case ids: c1\)"):
        load_manifest(_csv(tmp_path, rows))


def test_duplicate_ids(tmp_path: Path) -> None:
    names = _four_pngs(tmp_path)
    rows = {"case_id": ["c0", "c1", "c0", "c3"], "image": names, "label": 0}
    with pytest.raises(ManifestError, match=r"Duplicate case ids.*2 rows \(case ids: c0, c0\)"):
        load_manifest(_csv(tmp_path, rows))


def test_several_problems_reported_together(tmp_path: Path) -> None:
    rows = {"case_id": ["a", "a"], "image": ["x.png", "y.png"], "label": [0, 5]}
    with pytest.raises(ManifestError, match="2 problems") as err:
        load_manifest(pd.DataFrame(rows), check_files=False)
    assert "Duplicate" in str(err.value) and "Non-binary" in str(err.value)


# ----------------------------------------------------------------------------- arrays + torch
def test_manifest_from_arrays_round_trip_subset_and_dataset() -> None:
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((6, 1, 8, 8), dtype=np.float32))
    masks = rng.random((6, 8, 8)) > 0.5
    m = manifest_from_arrays(
        images,
        labels=np.array([0, 1, 0, 1, 1, 0]),
        attributes={"site": list("aabbcc"), "age_group": [None, "old", "young"] * 2},
        masks=masks,
        patient_ids=["p0", "p0", "p1", "p2", "p3", "p3"],
    )
    assert m.label_cols == ["label"] and m.attribute_cols == ["site", "age_group"]
    np.testing.assert_array_equal(m.load_image(4), images[4].numpy())
    np.testing.assert_array_equal(m.load_mask(2), masks[2].astype(np.uint8))
    assert m.attributes["age_group"].isna().sum() == 2

    sub = m.subset([5, 1])
    assert list(sub.case_ids) == ["case_00005", "case_00001"]
    np.testing.assert_array_equal(sub.load_image(0), images[5].numpy())
    np.testing.assert_array_equal(sub.label, [0, 1])

    calls = []

    def preprocess(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape)
        return x * 2

    loader = torch.utils.data.DataLoader(
        m.to_dataset(preprocess=preprocess, with_masks=True), batch_size=4, num_workers=0
    )
    batches = list(loader)
    assert [b["image"].shape for b in batches] == [(4, 1, 8, 8), (2, 1, 8, 8)]
    first = batches[0]
    assert first["image"].dtype == torch.float32 and first["label"].shape == (4, 1)
    assert first["mask"].dtype == torch.uint8 and first["mask"].shape == (4, 8, 8)
    assert first["index"].tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(first["image"], images[:4] * 2)
    assert len(calls) == 6
    assert isinstance(m.to_dataset(), ImageDataset)


def test_multi_label_arrays_uint8_scaling() -> None:
    images = np.full((3, 1, 2, 2), 255, dtype=np.uint8)
    m = manifest_from_arrays(images, labels=np.array([[0, 1], [1, 1], [0, 0]]))
    assert m.labels.shape == (3, 2) and m.label_cols == ["label_0", "label_1"]
    assert m.load_image(0).max() == 1.0
    with pytest.raises(ManifestError, match="exactly one label column"):
        _ = m.label


def test_iter_batches_covers_all_rows_in_order(tmp_path: Path) -> None:
    images = np.arange(7, dtype=np.float32)[:, None, None, None] * np.ones((7, 1, 3, 3), np.float32)
    m = manifest_from_arrays(images, labels=np.zeros(7))
    seen_idx, seen_vals = [], []
    for idx, batch in m.iter_batches(3):
        assert batch.shape == (len(idx), 1, 3, 3) and len(idx) <= 3
        seen_idx += idx.tolist()
        seen_vals += batch[:, 0, 0, 0].tolist()
    assert seen_idx == list(range(7)) and seen_vals == list(range(7))


def test_content_hash_stable_and_sensitive(tmp_path: Path) -> None:
    table = _write_folder(tmp_path)
    m1 = load_manifest(tmp_path / "manifest.csv")
    m2 = load_manifest(tmp_path / "manifest.csv")
    assert m1.content_hash() == m2.content_hash()
    assert len(m1.content_hash()) == 64
    h_files = m1.content_hash(include_files=True)
    assert h_files == m2.content_hash(include_files=True) != m1.content_hash()

    changed = table.copy()
    changed.loc[2, "label"] = 0
    m3 = load_manifest(changed, image_root=tmp_path)
    assert m3.content_hash() != m1.content_hash()

    np.save(tmp_path / "f.npy", AF + 1)  # same table, different pixels
    assert load_manifest(tmp_path / "manifest.csv").content_hash() == m1.content_hash()
    assert m1.content_hash(include_files=True) != h_files

    arrays = np.zeros((2, 1, 2, 2), np.float32)
    a1 = manifest_from_arrays(arrays, labels=[0, 1]).content_hash()
    assert a1 == manifest_from_arrays(arrays.copy(), labels=[0, 1]).content_hash()
    arrays[1, 0, 0, 0] = 0.5
    assert manifest_from_arrays(arrays, labels=[0, 1]).content_hash() != a1


# ----------------------------------------------------------------------------- DICOM
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_real_dicom_pixels_attributes_and_no_phi(tmp_path: Path, name: str) -> None:
    src = get_testdata_file(name)
    ds = pydicom.dcmread(src)
    (tmp_path / "scans").mkdir()
    shutil.copy(src, tmp_path / "scans" / "scan_a.dcm")
    m = manifest_from_dicom(tmp_path / "scans", labels={"scan_a.dcm": 1}, salt="secret")

    slope = float(ds.get("RescaleSlope", 1))
    intercept = float(ds.get("RescaleIntercept", 0))
    hu = ds.pixel_array.astype(np.float64) * slope + intercept
    if "WindowCenter" in ds:  # MR_small: window 600/1600, DICOM LINEAR function
        c, w = float(ds.WindowCenter), float(ds.WindowWidth)
        expected = np.clip((hu - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    else:  # CT_small: no window -> min-max of the rescaled values
        expected = (hu - hu.min()) / (hu.max() - hu.min())
    img = m.load_image(0)
    assert img.shape == (1, *ds.pixel_array.shape) and img.dtype == np.float32
    np.testing.assert_allclose(img[0], expected, atol=1e-6)
    # An explicit window checks that the intercept was applied (CT soft-tissue window).
    windowed = read_dicom(src, window=(40, 400))[0]
    np.testing.assert_allclose(windowed, np.clip((hu - 39.5) / 399 + 0.5, 0, 1), atol=1e-6)

    row = m.table.iloc[0]
    assert row["sex"] == ds.PatientSex and row["modality"] == ds.Modality
    assert row["manufacturer"] == ds.Manufacturer
    if name == "CT_small.dcm":
        assert row["age"] == 0.0 and row["age_group"] == "<18"
    assert m.label_cols == ["label"] and m.label.tolist() == [1.0]
    assert m.patient_col == "patient_id" and len(row["patient_id"]) == 16
    _assert_no_phi(m, ds)


def test_synthetic_dicom_values_inversion_and_no_phi(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    ds = _write_dicom(folder / "img001.dcm", PIXELS)
    ds_win = _write_dicom(folder / "img002.dcm", PIXELS, window=(700.0, 801.0))

    hu = PIXELS.astype(np.float64) * 2.0 - 100.0
    minmax = (hu - hu.min()) / (hu.max() - hu.min())
    np.testing.assert_allclose(read_dicom(folder / "img001.dcm")[0], 1 - minmax, atol=1e-6)
    np.testing.assert_allclose(
        read_dicom(folder / "img001.dcm", window=None)[0], 1 - minmax, atol=1e-6
    )
    by_window = np.clip((hu - 699.5) / 800 + 0.5, 0, 1)
    np.testing.assert_allclose(read_dicom(folder / "img002.dcm")[0], 1 - by_window, atol=1e-6)
    # The brightest stored value is darkest after MONOCHROME1 inversion.
    assert read_dicom(folder / "img001.dcm")[0, 1, 3] == 0.0

    m = manifest_from_dicom(folder, salt="k1")
    assert list(m.table.columns) == [
        "case_id",
        "image",
        "sex",
        "age",
        "age_group",
        "manufacturer",
        "modality",
        "view_position",
        "body_part",
        "patient_id",
    ]
    row = m.table.iloc[0]
    assert (row["sex"], row["age"], row["age_group"]) == ("F", 45.0, "40-59")
    assert (row["view_position"], row["body_part"], row["modality"]) == ("PA", "CHEST", "CR")
    assert m.image_root == folder and list(m.table["image"]) == ["img001.dcm", "img002.dcm"]
    # Same patient -> same pseudonym; stable for a fixed salt, different for another salt.
    assert m.patient_ids[0] == m.patient_ids[1]
    assert manifest_from_dicom(folder, salt="k1").content_hash() == m.content_hash()
    assert manifest_from_dicom(folder, salt="k2").patient_ids[0] != m.patient_ids[0]
    for d in (ds, ds_win):
        _assert_no_phi(m, d)


def test_dicom_path_with_patient_name_is_refused_or_indexed(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    ds = _write_dicom(folder / "doe_jane_chest.dcm", PIXELS)
    with pytest.raises(ManifestError, match="PatientName") as err:
        manifest_from_dicom(folder, salt="k")
    assert "doe" not in str(err.value).lower()  # the error does not echo the identifier
    assert "path_policy='index'" in str(err.value)

    (folder / "doe_jane_chest.dcm").rename(folder / "MRN-123456.dcm")
    with pytest.raises(ManifestError, match="PatientID"):
        manifest_from_dicom(folder, salt="k")

    m = manifest_from_dicom(folder, labels={"MRN-123456.dcm": 0}, salt="k", path_policy="index")
    assert list(m.table["image"]) == ["ref:0"] and m.image_root is None
    np.testing.assert_allclose(m.load_image(0), read_dicom(folder / "MRN-123456.dcm"))
    assert m.subset([0]).load_image(0).shape == (1, 2, 4)
    _assert_no_phi(m, ds)


def test_dicom_labels_must_cover_every_file(tmp_path: Path) -> None:
    _write_dicom(tmp_path / "a.dcm", PIXELS)
    _write_dicom(tmp_path / "b.dcm", PIXELS)
    with pytest.raises(ManifestError, match=r"No labels for 1 row"):
        manifest_from_dicom([tmp_path / "a.dcm", tmp_path / "b.dcm"], labels={"a.dcm": 1})


# ----------------------------------------------------------------------------- patients
def test_patient_conflicts_compare_values_as_the_audit_groups_them() -> None:
    from xai_audit.data.validation import patient_conflicts

    m = manifest_from_arrays(
        np.zeros((6, 1, 4, 4), np.float32),
        [0, 0, 1, 1, 0, 1],
        attributes={
            "grade": pd.Series([1, 1.0, 2, None, 3, 4], dtype=object),  # 1 == 1.0; NaN is no value
            "sex": ["F", "F", "M", "M", "F", "M"],
        },
        patient_ids=["MRN-1", "MRN-1", "MRN-2", "MRN-2", "MRN-3", "MRN-3"],
    )
    notes = patient_conflicts(m)
    assert len(notes) == 3  # label: MRN-3; grade: MRN-3 (3 vs 4); sex: MRN-3
    assert notes[0].startswith("1 patient(s) (2 images) have images with different labels")
    assert all("cases case_00004" in n for n in notes)
    assert not any("MRN" in n for n in notes)  # raw patient ids never appear
    assert patient_conflicts(m.subset([0, 1, 2, 3])) == []
    no_patients = manifest_from_arrays(np.zeros((2, 1, 4, 4), np.float32), [0, 1])
    assert patient_conflicts(no_patients) == []


def test_not_regular_reason_names_what_a_path_is(tmp_path: Path) -> None:
    from xai_audit.data.readers import not_regular_reason

    f = tmp_path / "a.npy"
    np.save(f, np.zeros((2, 2)))
    assert not_regular_reason(f) is None
    assert not_regular_reason(tmp_path / "nope.png") == "missing"
    assert not_regular_reason(tmp_path) == "a folder"
    if Path("/dev/null").exists():
        assert not_regular_reason("/dev/null") == "a device"
