"""Known-answer tests of the synthetic ground-truth data set (xai_audit.datasets)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xai_audit.datasets import (
    SyntheticConfig,
    SyntheticDataset,
    effect,
    generate_demo_dataset,
    load_card,
    make_synthetic_cxr,
    synthetic_card,
    to_uint8,
)
from xai_audit.datasets.__main__ import main as cli_main

N, SIZE = 1200, 128  # the demo set's size: the effects are measured where they are used


@pytest.fixture(scope="module")
def data() -> SyntheticDataset:
    return make_synthetic_cxr(n_samples=N, image_size=SIZE, seed=0)


@pytest.fixture(scope="module")
def control() -> SyntheticDataset:
    return make_synthetic_cxr(n_samples=N, image_size=SIZE, seed=0, control=True)


@pytest.fixture(scope="module")
def lesion_free() -> SyntheticDataset:
    # Same seed, zero lesion contrast: every random draw is the same, so the difference to a
    # data set of that seed is exactly its lesions (through site gain, blur and clipping).
    cfg = SyntheticConfig(lesion_contrast_range=(0.0, 0.0))
    return make_synthetic_cxr(n_samples=N, image_size=SIZE, seed=0, config=cfg)


@pytest.fixture(scope="module")
def volumes() -> SyntheticDataset:
    return make_synthetic_cxr(n_samples=40, image_size=32, seed=3, volume_depth=32)


def _pixel_contrast(ds: SyntheticDataset) -> pd.DataFrame:
    """Per positive image: mean inside the mask minus mean of a ring of local background."""
    meta = ds.metadata
    yy, xx = np.mgrid[: ds.masks.shape[1], : ds.masks.shape[2]]
    rows = []
    for i in np.flatnonzero(meta["label"].to_numpy() == 1):
        r = meta["lesion_radius"].iat[i]
        d = np.hypot(yy - meta["lesion_y"].iat[i], xx - meta["lesion_x"].iat[i])
        img = ds.images[i, 0]
        rows.append((i, img[ds.masks[i] == 1].mean() - img[(d >= r + 2) & (d <= r + 4)].mean()))
    idx, contrast = zip(*rows)
    return meta.iloc[list(idx)].assign(pixel_contrast=contrast)


def _lesion_intensity(ds: SyntheticDataset, lesion_free: SyntheticDataset) -> pd.DataFrame:
    """Per positive image: mean lesion intensity inside the mask, over the lesion-free image."""
    pos = np.flatnonzero(ds.metadata["label"].to_numpy() == 1)
    diff = ds.images[pos, 0] - lesion_free.images[pos, 0]
    inside = (diff * ds.masks[pos]).sum(axis=(1, 2)) / ds.masks[pos].sum(axis=(1, 2))
    return ds.metadata.iloc[pos].assign(pixel_contrast=inside)


def _group_ratio(meas: pd.DataFrame, column: str, group: str = "65+") -> float:
    faint = meas["age_group"] == group
    return float(meas.loc[faint, column].mean() / meas.loc[~faint, column].mean())


def _marker_brightness(ds: SyntheticDataset) -> np.ndarray:
    """Mean intensity over the marker's pixels, per image."""
    region = ds.marker_region()
    return ds.images[:, 0][:, region].mean(axis=1)


def _hash_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- structure -------------------------------------------------------------------------------


def test_shapes_dtypes_and_ranges(data: SyntheticDataset) -> None:
    assert data.images.shape == (N, 1, SIZE, SIZE) and data.images.dtype == np.float32
    assert data.masks.shape == (N, SIZE, SIZE) and data.masks.dtype == np.uint8
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0
    assert set(np.unique(data.masks)) == {0, 1}
    meta = data.metadata
    for col in ("case_id", "patient_id", "sex", "age_group", "site", "label", "marker",
                "lesion_contrast", "lesion_radius", "lesion_y", "lesion_x"):  # fmt: skip
        assert col in meta.columns
    assert len(meta) == N and meta["case_id"].is_unique
    assert meta["case_id"].iat[17] == "case_00017"
    assert set(meta["sex"]) == {"F", "M"}
    assert set(meta["age_group"]) == {"18-39", "40-64", "65+"}
    assert set(meta["site"]) == {"A", "B", "C"}
    assert set(meta["label"]) == {0, 1} and set(meta["marker"]) == {0, 1}
    assert meta["patient_id"].str.fullmatch(r"pat_\d{4,}").all()
    card = json.loads(json.dumps(data.card))  # JSON-serialisable and round-trips
    assert card == data.card
    assert card["n_samples"] == N and card["seed"] == 0 and card["control"] is False
    assert card["prevalence"] == pytest.approx(meta["label"].mean())
    assert card["image_size"] == SIZE and card["generator_version"]
    assert card["attributes"]["site"]["counts"] == meta["site"].value_counts().to_dict()


def test_masks_are_exactly_the_lesion_disks(data: SyntheticDataset) -> None:
    meta = data.metadata
    neg = meta["label"].to_numpy() == 0
    assert not data.masks[neg].any()
    assert (meta.loc[neg, "lesion_contrast"] == 0).all()
    assert meta.loc[~neg, "lesion_contrast"].gt(0).all()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in np.flatnonzero(~neg):
        y, x, r = meta.loc[i, ["lesion_y", "lesion_x", "lesion_radius"]]
        disk = (yy - y) ** 2 + (xx - x) ** 2 <= r**2
        assert np.array_equal(data.masks[i] == 1, disk)
        assert data.masks[i, int(round(y)), int(round(x))] == 1
    # Lesions are brighter than their surroundings, and never touch the marker's corner.
    # The ring measure is biased by nearby lung edges, which hides some of the deliberately
    # faint 65+ lesions; the lesion-free comparison in the effect tests is exact.
    ring = _pixel_contrast(data)
    faint = ring["age_group"] == "65+"
    assert (ring.loc[~faint, "pixel_contrast"] > 0).mean() > 0.95
    assert (ring.loc[faint, "pixel_contrast"] > 0).mean() > 0.80
    corner = np.zeros((SIZE, SIZE), dtype=bool)
    corner[:32, :32] = True
    assert not data.masks[:, corner].any()


def test_patients_have_several_consistent_images(data: SyntheticDataset) -> None:
    meta = data.metadata
    per_patient = meta.groupby("patient_id").size()
    assert (per_patient >= 2).sum() > 50 and per_patient.max() <= 4
    assert data.card["n_patients"] == per_patient.size
    shared = meta.groupby("patient_id")[["sex", "age_group", "site", "label"]].nunique()
    assert (shared == 1).all().all()


def test_attributes_independent_of_label(data: SyntheticDataset) -> None:
    meta = data.metadata
    overall = meta["label"].mean()
    for col in ("sex", "age_group", "site"):
        rates = meta.groupby(col)["label"].mean()
        assert (rates - overall).abs().max() < 0.1, (col, rates.to_dict())


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_same_arrays_different_seed_different() -> None:
    a = make_synthetic_cxr(n_samples=48, image_size=64, seed=7)
    b = make_synthetic_cxr(n_samples=48, image_size=64, seed=7)
    c = make_synthetic_cxr(n_samples=48, image_size=64, seed=8)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    pd.testing.assert_frame_equal(a.metadata, b.metadata)
    assert a.card == b.card
    assert not np.array_equal(a.images, c.images)
    assert not a.metadata["label"].equals(c.metadata["label"])


def test_same_seed_same_files(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        make_synthetic_cxr(n_samples=30, image_size=48, seed=seed).write(tmp_path / name)
    a, b, c = (_hash_tree(tmp_path / name) for name in "abc")
    assert a == b and len(a) == 2 * 30 + 3
    assert a["manifest.csv"] != c["manifest.csv"] and a["card.json"] != c["card.json"]
    assert a["images/case_00000.png"] != c["images/case_00000.png"]


# --- injected effects ------------------------------------------------------------------------


def test_faint_lesion_effect_has_recorded_size(
    data: SyntheticDataset, lesion_free: SyntheticDataset
) -> None:
    eff = effect(data.card, "faint_lesions")
    assert eff is not None and eff["attribute"] == "age_group" and eff["group"] == "65+"
    assert eff["size"]["lesion_contrast_ratio"] == 0.30
    meas = _lesion_intensity(data, lesion_free)
    # The truth column: an exact multiplier, but patient-level draws make the realised ratio vary.
    col_ratio = _group_ratio(meas, "lesion_contrast")
    assert col_ratio == pytest.approx(eff["measured"]["lesion_contrast_ratio"])
    assert col_ratio == pytest.approx(0.30, abs=0.05)
    # The pixels: lesion intensity in 65+ vs others is the recorded ratio.
    assert _group_ratio(meas, "pixel_contrast") == pytest.approx(col_ratio, abs=0.02)
    # Per image the pixels follow the recorded contrast times the site's gain (a projected
    # sphere's mean over its disk is 2/3 of its peak; blur takes a little more).
    gain = meas["site"].map({s: a.contrast_gain for s, a in data.config.sites.items()})
    per_unit = meas["pixel_contrast"] / (meas["lesion_contrast"] * gain)
    assert per_unit.between(0.55, 0.75).all()
    # The usual local measurement (mask mean minus a surrounding ring) sees the same ordering.
    ring = _pixel_contrast(data)
    assert _group_ratio(ring, "pixel_contrast") < 0.6


def test_marker_shortcut_has_recorded_size(data: SyntheticDataset) -> None:
    eff = effect(data.card, "site_marker_shortcut")
    assert eff is not None and eff["attribute"] == "site" and eff["group"] == "C"
    assert eff["size"] == {
        "p_marker_given_positive": 0.9,
        "p_marker_given_negative": 0.05,
        "p_marker_other_sites": 0.0,
    }
    meta = data.metadata
    # The marker's pixels are bright exactly where the truth table says a marker is drawn.
    bright = _marker_brightness(data)
    has = meta["marker"].to_numpy() == 1
    assert bright[has].min() > 0.7 and bright[~has].max() < 0.3
    at_c = meta["site"] == "C"
    pos, neg = at_c & (meta["label"] == 1), at_c & (meta["label"] == 0)
    p_pos, p_neg = meta.loc[pos, "marker"].mean(), meta.loc[neg, "marker"].mean()
    # 4 binomial standard deviations.
    assert abs(p_pos - 0.9) < 4 * np.sqrt(0.9 * 0.1 / pos.sum())
    assert abs(p_neg - 0.05) < 4 * np.sqrt(0.05 * 0.95 / neg.sum())
    assert meta.loc[~at_c, "marker"].sum() == 0
    assert eff["measured"]["p_marker_given_positive"] == pytest.approx(p_pos)
    assert eff["measured"]["p_marker_given_negative"] == pytest.approx(p_neg)
    assert eff["measured"]["p_marker_other_sites"] == 0.0
    assert eff["region"]["corner"] == "top-left" and eff["region"]["size"] == 10


def test_control_has_no_effects(
    data: SyntheticDataset, control: SyntheticDataset, lesion_free: SyntheticDataset
) -> None:
    assert control.card["control"] is True and control.card["effects"] == []
    assert control.metadata["marker"].sum() == 0
    assert _marker_brightness(control).max() < 0.3
    meas = _lesion_intensity(control, lesion_free)
    col_ratio = _group_ratio(meas, "lesion_contrast")
    assert col_ratio == pytest.approx(1.0, abs=0.1)
    assert _group_ratio(meas, "pixel_contrast") == pytest.approx(col_ratio, abs=0.02)
    assert _group_ratio(_pixel_contrast(control), "pixel_contrast") > 0.85
    # Same cases as the non-control set of the seed: only the injected effects differ.
    same = ["case_id", "patient_id", "sex", "age_group", "site", "label", "lesion_radius"]
    pd.testing.assert_frame_equal(control.metadata[same], data.metadata[same])
    assert control.card["prevalence"] == data.card["prevalence"]
    assert control.card["attributes"] == data.card["attributes"]
    untouched = (data.metadata["marker"] == 0) & (data.metadata["age_group"] != "65+")
    assert np.array_equal(control.images[untouched], data.images[untouched])


# --- files -----------------------------------------------------------------------------------


def test_write_png_round_trip(tmp_path: Path) -> None:
    ds = make_synthetic_cxr(n_samples=40, image_size=64, seed=2)
    manifest_path = ds.write(tmp_path, fmt="png")
    assert manifest_path == tmp_path / "manifest.csv"
    manifest = pd.read_csv(manifest_path)
    assert list(manifest.columns) == [
        "case_id", "image", "mask", "label", "sex", "age_group", "site", "patient_id"
    ]  # fmt: skip
    assert manifest["image"].iat[3] == f"images/{ds.metadata['case_id'].iat[3]}.png"
    truth = pd.read_csv(tmp_path / "truth.csv")
    assert "marker" in truth.columns and "marker" not in manifest.columns
    assert truth["marker"].tolist() == ds.metadata["marker"].tolist()
    for i, row in manifest.iterrows():
        img = np.asarray(Image.open(tmp_path / row["image"]))
        mask = np.asarray(Image.open(tmp_path / row["mask"]))
        assert img.dtype == np.uint8 and img.shape == (64, 64)
        assert np.array_equal(img, to_uint8(ds.images[i, 0]))
        assert np.array_equal(mask > 0, ds.masks[i] == 1)
    card = load_card(tmp_path)
    assert card == load_card(manifest_path)
    assert {k: v for k, v in card.items() if k != "files"} == ds.card
    assert card["files"]["format"] == "png"


def test_write_npy_round_trip_is_exact(tmp_path: Path) -> None:
    ds = make_synthetic_cxr(n_samples=12, image_size=48, seed=4)
    manifest = pd.read_csv(ds.write(tmp_path, fmt="npy"))
    for i, row in manifest.iterrows():
        assert np.array_equal(np.load(tmp_path / row["image"]), ds.images[i])
        assert np.array_equal(np.load(tmp_path / row["mask"]), ds.masks[i])


def test_volumes(volumes: SyntheticDataset, tmp_path: Path) -> None:
    assert volumes.images.shape == (40, 1, 32, 32, 32) and volumes.images.dtype == np.float32
    assert volumes.masks.shape == (40, 32, 32, 32) and volumes.masks.dtype == np.uint8
    assert volumes.images.min() >= 0.0 and volumes.images.max() <= 1.0
    meta = volumes.metadata
    pos = meta["label"].to_numpy() == 1
    assert pos.any() and not volumes.masks[~pos].any()
    for i in np.flatnonzero(pos):
        z, y, x = (int(round(meta[c].iat[i])) for c in ("lesion_z", "lesion_y", "lesion_x"))
        assert volumes.masks[i, z, y, x] == 1
        assert volumes.images[i, 0][volumes.masks[i] == 1].mean() > np.median(volumes.images[i])
    region = volumes.marker_region()
    assert region.shape == (32, 32, 32) and region.any()
    has = meta["marker"].to_numpy() == 1
    bright = volumes.images[:, 0][:, region].mean(axis=1)
    assert has.any() and bright[has].min() > 0.6 and bright[~has].max() < 0.3
    with pytest.raises(ValueError, match="npy"):
        volumes.write(tmp_path / "png", fmt="png")
    manifest = pd.read_csv(volumes.write(tmp_path / "npy"))
    assert np.array_equal(np.load(tmp_path / "npy" / manifest["image"].iat[0]), volumes.images[0])


def test_generate_demo_dataset_reuses_and_regenerates(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    manifest = generate_demo_dataset(root, n_samples=24, image_size=32, seed=1)
    expected = synthetic_card(n_samples=24, image_size=32, seed=1)
    card = load_card(root)
    assert {k: v for k, v in card.items() if k != "files"} == expected
    stamp = manifest.stat().st_mtime_ns
    assert generate_demo_dataset(root, n_samples=24, image_size=32, seed=1) == manifest
    assert manifest.stat().st_mtime_ns == stamp  # identical set: not rewritten
    generate_demo_dataset(root, n_samples=10, image_size=32, seed=2)
    assert load_card(root)["seed"] == 2
    assert len(list((root / "images").iterdir())) == 10  # stale files removed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp folder gone


def test_cli_writes_a_data_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--out", str(tmp_path / "d"), "--seed", "3", "--n", "8", "--size", "32",
                     "--control"]) == 0  # fmt: skip
    card = load_card(tmp_path / "d")
    assert card["seed"] == 3 and card["control"] is True and card["n_samples"] == 8
    assert "manifest.csv" in capsys.readouterr().out


def test_config_validation_and_custom_effect_sizes() -> None:
    with pytest.raises(ValueError):
        SyntheticConfig(site_probs={"A": 0.5, "B": 0.2})
    with pytest.raises(ValueError):
        SyntheticConfig(faint_age_group="90+")
    cfg = SyntheticConfig(faint_factor=0.6, p_marker_positive=0.5, p_marker_negative=0.0)
    ds = make_synthetic_cxr(n_samples=16, image_size=32, seed=0, config=cfg)
    assert effect(ds.card, "faint_lesions")["size"]["lesion_contrast_ratio"] == 0.6
    assert effect(ds.card, "site_marker_shortcut")["size"]["p_marker_given_positive"] == 0.5
    assert ds.card["config"]["faint_factor"] == 0.6


# --- knobs added for the findings benchmark (bench/findings.py) ------------------------------
# Each must leave the default output byte-identical and do exactly what it says.

#: SHA-256 of a small default set (60 images, 48 px, seed 11) as generator 1.0.0 wrote it
#: before any knob was added: metadata CSV, card JSON, 8-bit images, masks.
GOLDEN_60_48_11 = {
    "metadata": "d8f5498085b4e6cae66c7a121b6753c32f375358ff8e3c163295a0b1b647ea51",
    "card": "2d286179833c28e55656212b2c3bef09d1c0c78b44e3bc166a1ee77f06a6d9b2",
    "images": "be5213dad1b938eff91dd54521017aa9e844e007377e31173fc687efd4dd0879",
    "masks": "44aa48e0e721593ba5fa6ff9ecafa012232ea9e83d0a5565c5201c80cc19cbf7",
}


def _digests(ds: SyntheticDataset) -> dict[str, str]:
    from xai_audit.datasets.io import card_json

    def sha(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()

    return {
        "metadata": sha(ds.metadata.to_csv(index=False, lineterminator="\n").encode()),
        "card": sha(card_json(ds.card).encode()),
        "images": sha(to_uint8(ds.images).tobytes()),
        "masks": sha(ds.masks.tobytes()),
    }


def test_defaults_unchanged_by_the_new_knobs() -> None:
    default = make_synthetic_cxr(n_samples=60, image_size=48, seed=11)
    assert _digests(default) == GOLDEN_60_48_11
    explicit = SyntheticConfig(
        faint_where=None, marker_shape="L", marker_width=None, marker_position=None
    )
    same = make_synthetic_cxr(n_samples=60, image_size=48, seed=11, config=explicit)
    assert _digests(same) == GOLDEN_60_48_11
    for key in ("faint_where", "marker_shape", "marker_width", "marker_position"):
        assert key not in default.card["config"]  # recorded only when set
    # The age-group disparity written as faint_where is the same data (only the card says so).
    as_where = SyntheticConfig(faint_where={"age_group": "65+"})
    ds = make_synthetic_cxr(n_samples=60, image_size=48, seed=11, config=as_where)
    assert np.array_equal(ds.images, default.images)
    pd.testing.assert_frame_equal(ds.metadata, default.metadata)


@pytest.mark.parametrize("shape", ["L", "square", "ring", "text"])
def test_marker_lands_where_configured(shape: str) -> None:
    # 128 px units: a box of 8 x 24 (text) or 12 x 12 at row 60, column 30 over the body.
    h, w = (8, 24) if shape == "text" else (12, 12)
    cfg = SyntheticConfig(
        marker_site="A",
        p_marker_positive=1.0,
        p_marker_negative=1.0,
        marker_shape=shape,
        marker_size=h,
        marker_width=w,
        marker_position=(60.0, 30.0),
    )
    ds = make_synthetic_cxr(n_samples=60, image_size=64, seed=3, config=cfg)
    region = ds.marker_region()
    rows, cols = np.nonzero(region)
    # Scaled to 64 px: top-left (30, 15), box h/2 x w/2, and the token inside it.
    assert rows.min() >= 30 and cols.min() >= 15
    assert rows.max() < 30 + h // 2 and cols.max() < 15 + w // 2
    eff = effect(ds.card, "site_marker_shortcut")
    assert eff["region"]["box"] == [15, 30, 15 + w // 2, 30 + h // 2]  # x0, y0, x1, y1
    assert eff["region"]["shape"] == shape and ds.card["config"]["marker_position"] == [60, 30]
    meta = ds.metadata
    has = meta["marker"].to_numpy() == 1
    assert np.array_equal(has, (meta["site"] == "A").to_numpy())
    # The token's pixels are set to its intensity (through site A's gain 1 and noise sd 0.02).
    tok = ds.images[:, 0][:, region]
    assert np.abs(tok[has] - 0.92).mean() < 0.03
    # Nowhere else is changed: same seed without any marker differs only inside the region.
    clean = make_synthetic_cxr(
        n_samples=60, image_size=64, seed=3, config=replace(cfg, p_marker_positive=0.0,
                                                            p_marker_negative=0.0)
    )  # fmt: skip
    diff = (ds.images != clean.images)[:, 0]
    assert not diff[:, ~region].any() and diff[has][:, region].any()
    assert not diff[~has].any()


def test_marker_patterns() -> None:
    from xai_audit.datasets.render import marker_pattern

    # The default "L" is unchanged: a left stroke and a bottom stroke of 35% of the side.
    ell = marker_pattern(10)
    assert ell[:, :4].all() and ell[6:, :].all() and not ell[:6, 4:].any()
    ring = marker_pattern(12, "ring")
    assert ring[0, 6] and ring[6, 0] and not ring[6, 6] and not ring[0, 0]  # hole, round
    assert marker_pattern(4, "square").all()
    text = marker_pattern(6, "text", width=20)
    assert text.shape == (6, 20)
    assert (~text.any(axis=0)).sum() >= 3  # gaps between characters
    assert len(set(text.sum(axis=0)[text.any(axis=0)])) >= 2  # characters of several heights


def test_marker_on_an_edge_keeps_the_box_in_the_image() -> None:
    cfg = SyntheticConfig(marker_shape="square", marker_size=8, marker_position=(120.0, 64.0))
    geo = make_synthetic_cxr(n_samples=4, image_size=64, seed=0, config=cfg).card
    box = effect(geo, "site_marker_shortcut")["region"]["box"]
    assert box == [32, 60, 36, 64]


@pytest.mark.parametrize(
    "where",
    [
        {"sex": "F"},
        {"site": "B"},
        {"sex": "F", "age_group": "65+"},
        {"age_group": "40-64", "site": "A"},
    ],
)
def test_faint_factor_applies_only_to_the_chosen_group(where: dict[str, str]) -> None:
    base = SyntheticConfig(faint_factor=1.0, p_marker_positive=0.0, p_marker_negative=0.0)
    cfg = replace(base, faint_factor=0.3, faint_where=where)
    ds = make_synthetic_cxr(n_samples=400, image_size=32, seed=9, config=cfg)
    ref = make_synthetic_cxr(n_samples=400, image_size=32, seed=9, config=base)
    meta = ds.metadata
    inside = np.ones(len(meta), dtype=bool)
    for a, g in where.items():
        inside &= (meta[a] == g).to_numpy()
    pos = meta["label"].to_numpy() == 1
    ratio = (
        meta["lesion_contrast"].to_numpy()[pos] / ref.metadata["lesion_contrast"].to_numpy()[pos]
    )
    assert np.allclose(ratio[inside[pos]], 0.3) and np.allclose(ratio[~inside[pos]], 1.0)
    assert inside[pos].sum() >= 10 and (~inside[pos]).sum() >= 10
    # Pixels change only in the chosen group's positive images.
    changed = (ds.images != ref.images).reshape(len(meta), -1).any(axis=1)
    assert np.array_equal(changed, inside & pos)
    eff = effect(ds.card, "faint_lesions")
    names = [a for a in ("sex", "age_group", "site") if a in where]
    assert eff["attribute"] == " × ".join(names)
    assert eff["group"] == " | ".join(where[a] for a in names)
    assert eff["measured"]["lesion_contrast_ratio"] == pytest.approx(
        meta.loc[inside & pos, "lesion_contrast"].mean()
        / meta.loc[~inside & pos, "lesion_contrast"].mean()
    )
    assert ds.card["config"]["faint_where"] == where


def test_new_knobs_switched_off_in_control_mode() -> None:
    cfg = SyntheticConfig(
        faint_where={"sex": "F", "age_group": "65+"},
        marker_shape="ring",
        marker_position=(50.0, 50.0),
    )
    ds = make_synthetic_cxr(n_samples=200, image_size=32, seed=4, config=cfg, control=True)
    plain = make_synthetic_cxr(n_samples=200, image_size=32, seed=4, control=True)
    assert ds.card["effects"] == [] and ds.metadata["marker"].sum() == 0
    assert np.array_equal(ds.images, plain.images)
    pd.testing.assert_frame_equal(ds.metadata, plain.metadata)


def test_new_knobs_same_seed_same_bytes(tmp_path: Path) -> None:
    cfg = SyntheticConfig(
        faint_where={"site": "C"}, marker_shape="text", marker_size=8, marker_width=28,
        marker_position=(4.0, 40.0),
    )  # fmt: skip
    for name, seed in (("a", 2), ("b", 2), ("c", 3)):
        make_synthetic_cxr(n_samples=20, image_size=32, seed=seed, config=cfg).write(
            tmp_path / name
        )
    a, b, c = (_hash_tree(tmp_path / name) for name in "abc")
    assert a == b and a["card.json"] != c["card.json"]


def test_new_knob_validation() -> None:
    with pytest.raises(ValueError, match="unknown attribute"):
        SyntheticConfig(faint_where={"race": "x"})
    with pytest.raises(ValueError, match="not a group of sex"):
        SyntheticConfig(faint_where={"sex": "X"})
    with pytest.raises(ValueError, match="at least one"):
        SyntheticConfig(faint_where={})
    with pytest.raises(ValueError, match="marker_shape"):
        SyntheticConfig(marker_shape="star")
    with pytest.raises(ValueError, match="outside the 128 x 128"):
        SyntheticConfig(marker_position=(125.0, 10.0))
    with pytest.raises(ValueError, match="outside the 128 x 128"):
        SyntheticConfig(marker_width=30, marker_position=(10.0, 100.0))
