"""Region-free shortcut discovery and its causal confirmation: known answers and controls.

Light by design: 64 px synthetic maps (no model) for discovery, analytic torch models for the
edits, one tiny audit for the end-to-end mask region.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage, stats

from xai_audit.audit.findings import shortcut_findings
from xai_audit.quality import (
    analyse_shortcuts,
    attribution_grid,
    check_region,
    confirm_region,
    discover_regions,
    region_mask,
)
from xai_audit.quality.shortcut_discovery import describe_box, off_peak_excess, patches_to_box

SIZE = 64
SPOTS = {  # (x0, y0, x1, y1) of the injected token, and the words for where it is
    "interior": ((44, 28, 52, 36), "interior, mid-right"),
    "edge": ((24, 0, 40, 6), "top edge, centre"),
    "corner": ((0, 56, 8, 64), "bottom-left corner"),
}


def _maps(
    seed: int,
    n: int = 300,
    spot: tuple[int, int, int, int] | None = None,
    spread: float = 0.0,
    share_with_spot: float = 0.8,
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Maps like a CAM: a blob at a random 'lesion' place plus noise; site C may differ.

    ``spot``: in ``share_with_spot`` of site C's positive predictions a hot token sits there.
    ``spread``: site C's maps get that much extra uniform mass everywhere (acquisition-like:
    diffuse, a little everywhere) and are blurred (faint lesions spread maps out).
    """
    rng = np.random.default_rng(seed)
    site = rng.choice(["A", "B", "C"], n)
    sex = rng.choice(["F", "M"], n)
    pred = rng.integers(0, 2, n)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy = rng.uniform(16, 48, n)[:, None, None]
    cx = rng.uniform(12, 52, n)[:, None, None]
    maps = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 6.0**2))
    maps += 0.02 * rng.random((n, SIZE, SIZE))
    c = site == "C"
    if spread:
        maps[c] = ndimage.gaussian_filter(maps[c], sigma=(0, 4, 4)) + spread
    if spot is not None:
        x0, y0, x1, y1 = spot
        hit = c & (pred == 1) & (rng.random(n) < share_with_spot)
        maps[hit, y0:y1, x0:x1] += 3.0
    return maps.astype(np.float32), pd.DataFrame({"site": site, "sex": sex}), pred


# ------------------------------------------------------------------------------ grid
def test_grid_is_a_share_per_patch():
    maps = np.zeros((2, 64, 64), np.float32)
    maps[0, :4, :4] = 1.0  # patch (0, 0) at 16 x 16
    maps[1, 60:, 60:] = -2.0  # abs relevance: the last patch
    maps[1, 0, 0] = 2.0
    g = attribution_grid(maps)
    assert g.shape == (2, 16, 16) and g.dtype == np.float32
    np.testing.assert_allclose(g.reshape(2, -1).sum(axis=1), 1.0, rtol=1e-6)
    assert g[0, 0, 0] == pytest.approx(1.0)
    assert g[1, -1, -1] == pytest.approx(32 / 34) and g[1, 0, 0] == pytest.approx(2 / 34)
    assert np.isnan(attribution_grid(np.zeros((1, 64, 64)))).all()  # no mass, no share
    # sides not divisible by the grid, and volumes (summed over depth)
    assert attribution_grid(np.ones((1, 50, 70))).sum() == pytest.approx(1.0)
    vol = np.zeros((1, 4, 32, 32))
    vol[0, 3, :2, :2] = 1.0
    assert attribution_grid(vol)[0, 0, 0] == pytest.approx(1.0)
    assert patches_to_box(np.eye(16, dtype=bool)[:2].repeat(8, 0)[:16], (64, 64)) == [0, 0, 8, 64]


@pytest.mark.parametrize("kind", sorted(SPOTS))
def test_discovery_finds_a_token_anywhere(kind):
    spot, words = SPOTS[kind]
    maps, attrs, pred = _maps(seed=1, spot=spot)
    res = discover_regions(attribution_grid(maps), attrs, pred, (SIZE, SIZE))
    cand = res.candidates
    assert list(zip(cand["attribute"], cand["group"])) == [("site", "C")], res.table.to_string()
    box = cand.loc[0, ["x0", "y0", "x1", "y1"]].to_numpy(float)
    # The region's box covers the token and is not much larger than it.
    assert box[0] <= spot[0] and box[1] <= spot[1] and box[2] >= spot[2] and box[3] >= spot[3]
    assert (box[2] - box[0]) * (box[3] - box[1]) <= 4 * (spot[2] - spot[0]) * (spot[3] - spot[1])
    assert cand.loc[0, "where"] == words
    assert cand.loc[0, "ratio"] > 4 and cand.loc[0, "effect"] > 0.05
    assert "16x16 patches" in res.searched and "Holm over" in res.searched


def test_diffuse_group_differences_are_not_flagged():
    # Site C: blurrier maps plus extra mass everywhere (acquisition / faint-lesion-like).
    for seed in range(3):
        maps, attrs, pred = _maps(seed=seed, spread=0.05)
        res = discover_regions(attribution_grid(maps), attrs, pred, (SIZE, SIZE))
        assert res.candidates.empty, res.table.to_string()
        row = res.table[(res.table["group"] == "C")].iloc[0]
        assert row["n_patches"] > 0  # the difference is significant, only not focal / large


def test_null_maps_flag_nothing_over_20_seeds():
    false_flags = 0
    for seed in range(20):
        maps, attrs, pred = _maps(seed=100 + seed, n=240)
        res = discover_regions(attribution_grid(maps), attrs, pred, (SIZE, SIZE))
        false_flags += len(res.candidates)
    assert false_flags == 0


def test_small_groups_are_listed_as_not_searched():
    maps, attrs, pred = _maps(seed=3, n=60)
    attrs["rare"] = np.where(np.arange(60) < 5, "yes", "no")
    res = discover_regions(attribution_grid(maps), attrs, pred, (SIZE, SIZE))
    assert any(s.startswith("rare=yes") for s in res.not_searched)


def test_describe_box_words():
    assert describe_box([0, 0, 10, 10], (128, 128)) == "top-left corner"
    assert describe_box([40, 2, 90, 12], (128, 128)) == "top edge, centre"
    assert describe_box([118, 50, 128, 70], (128, 128)) == "right edge, centre"
    assert describe_box([56, 56, 72, 72], (128, 128)) == "centre of the image"


# ------------------------------------------------------------------------------ causal
TOKEN = (slice(8, 16), slice(40, 56))  # rows, cols the "reader" model looks at


class PatchReader(torch.nn.Module):
    """Analytic model: the logit of 'positive' is 20 x (mean of one fixed patch - 0.5)."""

    def __init__(self, rows: slice, cols: slice) -> None:
        super().__init__()
        self.rows, self.cols = rows, cols

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 20.0 * (x[:, 0, self.rows, self.cols].mean(dim=(1, 2)) - 0.5)
        return torch.stack([-z, z], dim=1)


def _score(net: torch.nn.Module):
    def score(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(net(torch.from_numpy(np.asarray(x, np.float32))), 1)[:, 1].numpy()

    return score


def _images(n: int, token: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 0.2 + 0.05 * rng.standard_normal((n, 1, SIZE, SIZE))
    if token:
        x[:, 0, TOKEN[0], TOKEN[1]] = 1.0
    return x.astype(np.float32)


def _token_mask() -> np.ndarray:
    m = np.zeros((SIZE, SIZE), bool)
    m[TOKEN] = True
    return m


def test_editing_a_region_the_model_reads_is_confirmed():
    res = confirm_region(
        _score(PatchReader(*TOKEN)),
        _images(32, True, 0),
        _token_mask(),
        _images(32, False, 1),
        0.5,
        peer_images=_images(32, False, 2),
    )
    t = res.table.set_index(["operation", "location"])
    assert res.confirmed and set(res.confirmed_by) == {"erase", "paste"}
    # Known answers: the token gives ~1.0, its absence ~0.0; the controls move nothing.
    assert t.loc[("erase", "region"), "mean_change"] == pytest.approx(-1.0, abs=1e-3)
    assert t.loc[("paste", "region"), "mean_change"] == pytest.approx(1.0, abs=1e-3)
    assert t.loc[("paste", "region"), "flip_share"] == 1.0
    assert abs(t.loc[("paste", "elsewhere"), "mean_change"]) < 1e-3
    assert abs(t.loc[("paste", "other groups"), "mean_change"]) < 1e-3
    assert res.excess["paste_vs_other_groups"]["ci_low"] > 0.9


def test_editing_a_region_the_model_ignores_is_not_confirmed():
    # The model reads another patch; the group's images are positive for another reason.
    other = (slice(40, 48), slice(8, 24))
    xg = _images(32, True, 0)
    xg[:, 0, other[0], other[1]] = 1.0
    res = confirm_region(_score(PatchReader(*other)), xg, _token_mask(), _images(32, False, 1), 0.5)
    assert not res.confirmed
    region = res.table[res.table["location"] == "region"]
    assert abs(region["mean_change"]).max() < 1e-3 and (region["flip_share"] == 0).all()


def test_analyse_shortcuts_flags_only_a_confirmed_region():
    # Site C's positives carry the token and their maps point at it.
    x0, y0, x1, y1 = 40, 8, 56, 16
    maps, attrs, pred = _maps(seed=4, n=240, spot=(x0, y0, x1, y1), share_with_spot=1.0)
    site_c = (attrs["site"] == "C").to_numpy() & (pred == 1)
    images = _images(len(pred), False, 5)
    images[site_c, 0, y0:y1, x0:x1] = 1.0
    common = dict(
        region="auto",
        attributes=attrs,
        predicted=pred,
        image_shape=(SIZE, SIZE),
        grids=attribution_grid(maps),
        load_images=lambda rows: images[rows],
        threshold=0.5,
        sample_size=24,
        n_boot=200,
    )
    reads = analyse_shortcuts(score=_score(PatchReader(slice(y0, y1), slice(x0, x1))), **common)
    ignores = analyse_shortcuts(score=_score(PatchReader(slice(40, 48), slice(8, 24))), **common)
    for out, confirmed in ((reads, True), (ignores, False)):
        (cand,) = out["candidates"]
        assert (cand["attribute"], cand["group"], cand["confirmed"]) == ("site", "C", confirmed)
        assert len(out["flags"]) == int(confirmed) and len(out["notes"]) == int(not confirmed)
        box = cand["box"]
        assert box[0] <= x0 and box[1] <= y0 and box[2] >= x1 and box[3] >= y1
        assert cand["exemplars"].shape[0] == 4
    findings = shortcut_findings({"gradcam": reads}, "the whole image")
    (f,) = findings
    assert (f["severity"], f["kind"]) == ("high", "shortcut")
    ev = f["evidence"]
    assert ev["attribute"] == "site" and ev["group"] == "C" and ev["confirmed"] is True
    assert ev["box"] == reads["candidates"][0]["box"]
    assert ev["paste"]["mean_change"] > 0.9 and ev["paste"]["flip_share"] == 1.0
    assert "interior, top-right (box x 40-56, y 8-16 px)" in f["message"]
    assert "flips 100%" in f["message"]
    (note,) = shortcut_findings({"gradcam": ignores}, "the whole image")
    assert note["severity"] == "info" and note["kind"] == "shortcut_note"
    assert "does not change decisions" in note["title"]


class MeanReader(torch.nn.Module):
    """Analytic model: the logit of 'positive' is 40 x (mean brightness - 0.3): no token."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 40.0 * (x.mean(dim=(1, 2, 3)) - 0.3)
        return torch.stack([-z, z], dim=1)


def test_a_brighter_group_is_not_a_shortcut_anywhere():
    # The group's positives are brighter all over (acquisition), the model reads brightness:
    # pasting a region from them raises scores more than pasting it from peers, but just as
    # much at any other place. Only the difference in differences sees that.
    xg = _images(48, False, 0) + 0.25
    res = confirm_region(
        _score(MeanReader()),
        xg,
        _token_mask(),
        _images(48, False, 1),
        0.5,
        peer_images=_images(48, False, 2),
        random_state=3,
    )
    paste = res.excess["paste_vs_other_groups"]
    did = res.excess["paste_difference_in_differences"]
    assert paste["ci_low"] > 0  # the naive control alone would confirm
    assert abs(did["mean"]) < 0.01  # the same excess at any place: nothing token-specific
    assert not res.confirmed


def test_a_mark_on_every_image_of_a_site_is_not_a_label_shortcut():
    # Site C's images, positive and negative alike, carry a bright mark the model reads (a
    # site's texture or stamp): pasting it raises scores, from the site's negatives as much
    # as from its positives, so it does not come with the label. The label difference in
    # differences is ~0 and nothing is confirmed; the "elsewhere" one is large (it would
    # have confirmed). The same mark on site C's positives only is confirmed.
    x0, y0, x1, y1 = 40, 8, 56, 16
    maps, attrs, pred = _maps(seed=4, n=240, spot=(x0, y0, x1, y1), share_with_spot=1.0)
    site_c = (attrs["site"] == "C").to_numpy()
    common = dict(
        region="auto",
        attributes=attrs,
        predicted=pred,
        image_shape=(SIZE, SIZE),
        grids=attribution_grid(maps),
        score=_score(PatchReader(slice(y0, y1), slice(x0, x1))),
        threshold=0.5,
        sample_size=24,
        n_boot=200,
    )
    outcomes = {}
    for marked in ("every image", "positives only"):
        images = _images(len(pred), False, 5)
        rows = site_c if marked == "every image" else site_c & (pred == 1)
        images[rows, 0, y0:y1, x0:x1] = 1.0
        out = analyse_shortcuts(load_images=lambda r, im=images: im[r], **common)
        (cand,) = out["candidates"]
        outcomes[marked] = cand
    every, positives = outcomes["every image"], outcomes["positives only"]
    assert not every["confirmed"] and positives["confirmed"]
    ex = every["causal"]["excess"]
    assert abs(ex["paste_label_difference_in_differences"]["mean"]) < 0.05
    assert ex["paste_difference_in_differences"]["ci_low"] > 0.5
    assert positives["causal"]["excess"]["paste_label_difference_in_differences"]["ci_low"] > 0.5


def test_a_cam_beside_the_token_is_confirmed_by_a_grown_edit():
    # CAM evidence lands two patches (8 px) below the token, as a coarse layer's does: the
    # discovered region misses the token's pixels, the region grown by 2 patches covers them.
    tx0, ty0, tx1, ty1 = 40, 8, 56, 12
    maps, attrs, pred = _maps(seed=4, n=240, spot=(tx0, ty0 + 8, tx1, ty1 + 8), share_with_spot=1)
    site_c = (attrs["site"] == "C").to_numpy() & (pred == 1)
    images = _images(len(pred), False, 5)
    images[site_c, 0, ty0:ty1, tx0:tx1] = 1.0
    out = analyse_shortcuts(
        region="auto",
        attributes=attrs,
        predicted=pred,
        image_shape=(SIZE, SIZE),
        grids=attribution_grid(maps),
        score=_score(PatchReader(slice(ty0, ty1), slice(tx0, tx1))),
        load_images=lambda rows: images[rows],
        threshold=0.5,
        sample_size=24,
        n_boot=200,
    )
    (cand,) = out["candidates"]
    assert cand["confirmed"] and cand["dilation"] == 2
    assert [t["dilation"] for t in cand["tried"]] == [0, 1, 2]
    assert not any(t["confirmed"] for t in cand["tried"][:2])
    ex0, ey0, ex1, ey1 = cand["edit_box"]
    assert ex0 <= tx0 and ey0 <= ty0 and ex1 >= tx1 and ey1 >= ty1
    assert cand["box"][1] > ty0  # the attribution itself sits below the token
    assert "grown by 2 patches" in cand["message"]


# ------------------------------------------------------------------------------ settings
def test_check_region_messages():
    assert check_region("auto") == [] and check_region("border_corners") == []
    assert check_region(0.1) == [] and check_region([0, 0, 10, 5]) == []
    assert "'top' is unknown" in check_region("top")[0]
    assert "border width" in check_region(0.7)[0]
    assert "4 numbers" in check_region([1, 2, 3])[0]
    assert "x0 < x1" in check_region([5, 0, 2, 4])[0]
    assert "outside" in check_region([70, 0, 80, 4], image_shape=(64, 64))[0]
    assert "empty" in check_region(np.zeros((8, 8), bool))[0]
    assert "does not match" in check_region(np.ones((8, 8), bool) * 0 + np.eye(8, dtype=bool),
                                            image_shape=(64, 64))[0]  # fmt: skip
    assert (
        "one mask per image"
        in check_region(
            np.eye(64, dtype=bool)[None].repeat(3, 0), image_shape=(64, 64), n_images=5
        )[0]
    )
    assert "shortcut_border" in check_region("border", border=0.0)[0]
    assert "not found" in check_region("nowhere.npy")[0]
    m = region_mask([0, 0, 4, 2], (8, 8))
    assert m.sum() == 8 and m[:2, :4].all()
    assert region_mask(0.25, (8, 8)).sum() == 64 - 16


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from test_audit_helpers import small_dataset

    return small_dataset(tmp_path_factory.mktemp("data") / "demo", n=32, size=32)


@pytest.mark.parametrize(
    ("region", "message"),
    [
        ("top", "'top' is unknown"),
        (0.9, "border width"),
        ([0, 0, 40, 40, 1], "4 numbers"),
        (np.ones((16, 16), bool) & np.eye(16, dtype=bool), "does not match the images"),
        (np.zeros((32, 32), bool), "empty"),
    ],
)
def test_bad_regions_fail_at_audit_construction(data, region, message):
    from test_audit_helpers import tiny_model

    from xai_audit.audit import Audit, ConfigError
    from xai_audit.data import load_manifest

    with pytest.raises(ConfigError, match=message):
        Audit(
            tiny_model(),
            load_manifest(data),
            sensitive=["site"],
            quality={"shortcut_region": region},
        )


def test_bad_regions_fail_in_the_config_file(data, tmp_path):
    import yaml

    from xai_audit.audit import ConfigError, load_config

    base = {
        "data": {"manifest": str(data)},
        "attributes": ["site"],
        "model": {"loader": "test_audit_helpers:tiny_model"},
    }
    for quality, message in (
        ({"shortcut_region": "top"}, "'top' is unknown"),
        ({"shortcut_region": "border", "shortcut_border": 0.6}, "shortcut_border"),
        ({"shortcut_region": [10, 10, 5, 20]}, "x0 < x1"),
        ({"shortcut_region": "mask.npy"}, "mask file not found"),
        ({"shortcut_min_score_change": 2}, "shortcut_min_score_change"),
    ):
        path = tmp_path / "audit.yaml"
        path.write_text(yaml.safe_dump({**base, "quality": quality}))
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    np.save(tmp_path / "mask.npy", np.eye(32, dtype=bool))
    path.write_text(yaml.safe_dump({**base, "quality": {"shortcut_region": "mask.npy"}}))
    cfg = load_config(path)
    assert cfg.quality.shortcut_region == str(tmp_path / "mask.npy")
    path.write_text(yaml.safe_dump({**base, "quality": {"shortcut_region": [0, 0, 8, 4]}}))
    assert load_config(path).quality.shortcut_region == [0, 0, 8, 4]


def test_a_mask_region_runs_and_is_hashed_by_its_bytes(data, tmp_path):
    from test_audit_helpers import tiny_model

    from xai_audit.audit import Audit
    from xai_audit.data import load_manifest

    mask = np.zeros((32, 32), bool)
    mask[:4] = True
    settings = dict(
        sensitive=["site"],
        methods=["gradcam"],
        n_boot=20,
        min_group_size=4,
        batch_size=16,
        quality={
            "shortcut_region": mask,
            "faithfulness": False,
            "sanity": False,
            "shortcut_sample_size": 8,
        },
        exemplars_per_cell=1,
    )
    audit = Audit(tiny_model(), load_manifest(data), output_dir=tmp_path / "a", **settings)
    key = audit.task.to_dict()["shortcut_region"]
    assert key.startswith("mask[32, 32]:")
    other = mask.copy()
    other[0, 0] = False
    settings["quality"] = {**settings["quality"], "shortcut_region": other}
    assert (
        Audit(tiny_model(), load_manifest(data), **settings).task.to_dict()["shortcut_region"]
        != key
    )
    result = audit.run()
    sc = result.quality["shortcuts"]["gradcam"]
    assert sc["mode"] == "region" and "user-given region" in sc["searched"]
    assert result.quality["per_image"]["shortcut__gradcam"].notna().all()
    assert result.quality["region"]["area_share"] == pytest.approx(4 / 32)


def test_searched_summary_says_what_was_and_was_not_searched():
    from xai_audit.quality.shortcut_analysis import searched_summary

    maps, attrs, pred = _maps(seed=6, n=80)
    attrs["rare"] = np.where(np.arange(80) < 6, "yes", "no")
    out = analyse_shortcuts(
        region="auto",
        attributes=attrs,
        predicted=pred,
        image_shape=(SIZE, SIZE),
        grids=attribution_grid(maps),
    )
    assert out["candidates"] == [] and out["flags"] == []
    text = searched_summary({"gradcam": out, "ig": {"searched": "", "not_searched": ["x"]}})
    assert text.startswith("gradcam: searched the whole image in 16x16 patches")
    assert "Not searched (too few positive predictions): " in text
    assert "rare=yes (3 positive predictions)" in text
    assert "rare=no (40 positive predictions; 3 in the rest)" in text
    assert "ig: shortcut analysis skipped (x)." in text


# ------------------------------------------------------------------ weak attribution evidence
def _faint_token_maps(seed: int, amp: float):
    """Site C's positive maps get a faint token (the lesion blob dominates them)."""
    maps, attrs, pred = _maps(seed=seed)
    x0, y0, x1, y1 = SPOTS["interior"][0]
    rng = np.random.default_rng(seed)
    hit = (attrs["site"].to_numpy() == "C") & (pred == 1) & (rng.random(len(pred)) < 0.8)
    maps[hit, y0:y1, x0:x1] += amp
    return maps, attrs, pred


def _only_candidate(maps, attrs, pred, images, score) -> dict:
    """analyse_shortcuts in auto mode on these maps and images; its one candidate."""
    (cand,) = analyse_shortcuts(
        region="auto",
        attributes=attrs,
        predicted=pred,
        image_shape=(SIZE, SIZE),
        grids=attribution_grid(maps),
        load_images=lambda rows: images[rows],
        score=score,
        threshold=0.5,
        sample_size=32,
        n_boot=300,
    )["candidates"]
    return cand


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_token_the_lesion_dominates_is_a_weak_candidate(seed):
    spot = SPOTS["interior"][0]
    maps, attrs, pred = _faint_token_maps(seed, amp=0.5)
    grids = attribution_grid(maps)
    res = discover_regions(grids, attrs, pred, (SIZE, SIZE))
    (row,) = res.candidates.to_dict("records")
    assert (row["group"], row["evidence"]) == ("C", "weak")
    assert 2 <= row["ratio"] < 4 and [row[k] for k in ("x0", "y0", "x1", "y1")] == list(spot)
    one_tier = discover_regions(grids, attrs, pred, (SIZE, SIZE), weak_ratio=None)
    assert one_tier.candidates.empty  # below the 4x floor: not a candidate at all
    strong = discover_regions(attribution_grid(_faint_token_maps(seed, 1.2)[0]), attrs, pred,
                              (SIZE, SIZE))  # fmt: skip
    assert strong.candidates["evidence"].tolist() == ["strong"]


def test_a_weak_candidate_needs_a_strong_paste_to_be_confirmed():
    # The model reads the token's place; site C's positives carry the token at an intensity
    # that moves the score by about +0.1 when pasted (softmax of [-z, z] is sigmoid(2z):
    # 0.5 + logit(0.1) / 40 = 0.445) or by +1.0.
    x0, y0, x1, y1 = SPOTS["interior"][0]
    reader = _score(PatchReader(slice(y0, y1), slice(x0, x1)))
    out = {}
    for amp, level in ((0.5, 0.445), (1.2, 0.445), (0.5, 1.0)):
        maps, attrs, pred = _faint_token_maps(1, amp)
        site_c = (attrs["site"] == "C").to_numpy() & (pred == 1)
        images = _images(len(pred), False, 5)
        images[site_c, 0, y0:y1, x0:x1] = level
        out[amp, level] = _only_candidate(maps, attrs, pred, images, reader)
    weak_small, strong_small, weak_large = out[0.5, 0.445], out[1.2, 0.445], out[0.5, 1.0]
    assert weak_small["evidence"] == "weak" and strong_small["evidence"] == "strong"
    paste = weak_small["causal"]["paste_region"]["mean_change"]
    assert 0.06 < paste < 0.14  # enough for strong attribution evidence, not for weak
    assert strong_small["confirmed"] and not weak_small["confirmed"]
    assert weak_small["causal"]["confirmed_by"] == [] and "weak attribution" in weak_small[
        "causal"]["rule"]  # fmt: skip
    assert weak_large["confirmed"] and weak_large["causal"]["confirmed_by"] == ["paste"]
    assert "weak attribution evidence" in weak_large["message"]


def test_a_weak_candidate_whose_content_is_everywhere_is_not_confirmed():
    # The model reads mean brightness; site C's positive images are bright all over (their
    # maps still show the faint token). Pasting the candidate region from them raises scores,
    # and more than from their negatives or other groups' positives (the label difference in
    # differences), but a random other place of the same images does just as much: with
    # strong attribution evidence the paste tests confirm it, with weak evidence the region
    # must carry more than the rest of its images.
    out = {}
    for amp in (0.5, 1.2):
        maps, attrs, pred = _faint_token_maps(1, amp)
        site_c = (attrs["site"] == "C").to_numpy() & (pred == 1)
        images = _images(len(pred), False, 5) + 0.1
        images[site_c] = 1.0
        out[amp] = _only_candidate(maps, attrs, pred, images, _score(MeanReader()))
    weak, strong = out[0.5], out[1.2]
    assert weak["evidence"] == "weak" and strong["evidence"] == "strong"
    excess = weak["causal"]["excess"]
    assert excess["paste_label_difference_in_differences"]["ci_low"] > 0.1  # a real effect ...
    assert excess["paste_vs_elsewhere"]["ci_low"] <= 0  # ... of content found everywhere
    assert strong["confirmed"] and not weak["confirmed"]


def test_a_weak_candidate_carried_by_a_minority_of_images_is_not_confirmed():
    # Like lesions that happen to cluster in the region in one group's sample: a third of
    # site C's positive images carry content the model reads there. The mean paste effect is
    # large, the typical (median) donor carries none: not a token in nearly every image.
    x0, y0, x1, y1 = SPOTS["interior"][0]
    reader = _score(PatchReader(slice(y0, y1), slice(x0, x1)))
    out = {}
    for amp in (0.5, 1.2):
        maps, attrs, pred = _faint_token_maps(1, amp)
        site_c = np.flatnonzero((attrs["site"] == "C").to_numpy() & (pred == 1))
        images = _images(len(pred), False, 5)
        images[site_c[::3], 0, y0:y1, x0:x1] = 1.0
        out[amp] = _only_candidate(maps, attrs, pred, images, reader)
    weak, strong = out[0.5], out[1.2]
    excess = weak["causal"]["excess"]
    assert excess["paste_vs_other_groups"]["mean"] > 0.2
    assert excess["paste_median_vs_other_groups"]["mean"] < 0.05
    assert strong["confirmed"] and not weak["confirmed"]


def _clustered_lesion_maps(seed: int, share: float):
    """No token: in ``share`` of site C's positive predictions the lesion blob (their map's
    peak) moves into the interior spot, as findings that cluster there in one group's sample."""
    maps, attrs, pred = _maps(seed=seed)
    x0, y0, x1, y1 = SPOTS["interior"][0]
    rng = np.random.default_rng(seed)
    site_c = np.flatnonzero((attrs["site"].to_numpy() == "C") & (pred == 1))
    moved = site_c[rng.random(len(site_c)) < share]
    cy = (y0 + y1) / 2 + rng.uniform(-3, 3, len(moved))[:, None, None]
    cx = (x0 + x1) / 2 + rng.uniform(-3, 3, len(moved))[:, None, None]
    yy, xx = np.mgrid[:SIZE, :SIZE]
    maps[moved] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 6.0**2))
    maps[moved] += 0.02 * rng.random((len(moved), SIZE, SIZE))
    return maps, attrs, pred


@pytest.mark.parametrize("seed,evidence", [(1, "weak"), (4, "weak"), (3, "strong")])
def test_findings_clustered_in_one_place_are_not_a_candidate(seed, evidence):
    # Half of site C's positive maps peak in the spot: the group's mean share there reaches
    # 2.5-4x the rest's, but images whose peak lies elsewhere hold no excess there.
    maps, attrs, pred = _clustered_lesion_maps(seed, 0.5)
    res = discover_regions(attribution_grid(maps), attrs, pred, (SIZE, SIZE))
    assert res.candidates.empty, res.table.to_string()
    row = res.table[res.table["group"] == "C"].iloc[0]
    assert row["evidence"] == evidence and row["ratio"] >= 2
    assert row["off_peak_n"] >= 10 and row["off_peak_ratio"] < 1.5
    assert "does not persist off the images' peaks" in row["reason"]
    # The same group with a faint token on 80 % of its positive maps instead: it persists.
    token = discover_regions(attribution_grid(_faint_token_maps(seed, 0.5)[0]), attrs, pred,
                             (SIZE, SIZE)).candidates  # fmt: skip
    assert token["group"].tolist() == ["C"]
    assert token["off_peak_ratio"].iloc[0] > 3 and token["off_peak_p"].iloc[0] < 1e-6


def test_off_peak_excess_by_hand():
    # A 6 x 6 grid; the region is the top-left patch, grown by two patches for the peak test
    # (rows and columns 0-2).
    flat = np.zeros((8, 36))
    patches = np.zeros((6, 6), bool)
    patches[0, 0] = True
    flat[:, 35] = 0.6  # every image peaks at the far corner, outside the grown region
    flat[:4, 0] = [0.3, 0.35, 0.4, 0.25]  # the group
    flat[4:, 0] = [0.1, 0.05, 0.1, 0.15]  # the rest
    flat[:, 14] = 1 - flat[:, 0] - flat[:, 35]  # patch (2, 2): inside the grown region
    inside = np.arange(8) < 4
    n_in, n_rest, ratio, p = off_peak_excess(flat, inside, ~inside, patches)
    assert (n_in, n_rest) == (4, 4)
    assert ratio == pytest.approx(1.3 / 0.4)
    assert p == pytest.approx(stats.mannwhitneyu(flat[:4, 0], flat[4:, 0],
                                                 alternative="greater").pvalue)  # fmt: skip
    flat[0, 14] = 0.9  # image 0 now peaks in the grown region: left out
    assert off_peak_excess(flat, inside, ~inside, patches)[:2] == (3, 4)
