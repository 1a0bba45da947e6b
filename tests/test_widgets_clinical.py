"""Clinician-facing views: plain words, colour bars, labelled similar cases, a similarity that
separates cases."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_widgets_common import small_data, small_model, two_method_source

from xai_audit.widgets import CaseReview, CaseReviewState, ExplanationExplorer, ExplorerState
from xai_audit.widgets._clinical import (
    PLAIN_NAMES,
    closer_text,
    closer_than,
    colorbar_panel,
    plain_quality_table,
    relative_distance,
    standardised_distance,
    tile_caption,
)
from xai_audit.widgets._render import _lut

JARGON = ("pointing_game", "mass_in_mask", "shortcut_share", "deletion_advantage")


@pytest.fixture(scope="module")
def source():
    return two_method_source(small_model(), small_data(n=80))


def _rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _has_colour(rgb: np.ndarray, colour: np.ndarray, tol: int = 2) -> bool:
    return bool((np.abs(rgb.astype(int) - colour.astype(int)).max(axis=-1) <= tol).any())


# ---------------------------------------------------------------------- plain words
def test_quality_table_in_plain_words() -> None:
    q = pd.DataFrame(
        {
            "method": ["gradcam", "saliency"],
            "pointing_game": [1.0, 0.0],
            "mass_in_mask": [0.42, np.nan],
            "shortcut_share": [0.12, 0.30],
            "shortcut_chance": [0.05, 0.05],
            "deletion_advantage": [0.153, np.nan],
        }
    )
    plain = plain_quality_table(q)
    assert list(plain.columns) == [
        "explanation",
        "strongest evidence inside the lesion outline",
        "share of the evidence inside the lesion outline",
        "share of evidence in the suspected shortcut region",
        "score drop when the highlighted area is removed vs random areas",
    ]
    row = plain.iloc[0]
    assert row["strongest evidence inside the lesion outline"] == "yes"
    assert row["share of the evidence inside the lesion outline"] == "42%"
    assert row["share of evidence in the suspected shortcut region"] == "12% (even spread: 5%)"
    assert row["score drop when the highlighted area is removed vs random areas"] == "+0.15"
    assert plain.iloc[1]["strongest evidence inside the lesion outline"] == "no"
    assert plain.iloc[1]["share of the evidence inside the lesion outline"] == "–"


def test_case_review_shows_no_jargon(source) -> None:
    positive = source.table.loc[source.table["label"] == 1, "case_id"].iloc[0]
    r = CaseReview(source=source, case_id=positive, show=["bright", "dark"], deletion=True)
    html = r.quality.value
    for word in JARGON:
        assert word not in html, word
    for text in PLAIN_NAMES.values():
        if text != PLAIN_NAMES["shortcut_chance"]:
            assert text in html, text
    state_q = r.state.quality()  # the state keeps its numeric columns for programs
    assert set(JARGON) <= set(state_q.columns)
    static = r._repr_mimebundle_()["text/html"]
    assert not any(word in static for word in JARGON)


def test_explorer_info_in_plain_words(source) -> None:
    ex = ExplanationExplorer(source=source)
    fn = source.table.index[source.table["outcome"] == "FN"]
    if len(fn):
        ex.state.select_case(source.table.at[fn[0], "case_id"])
        ex.refresh()
        assert "FN (missed lesion)" in ex.info.value
    assert "prediction" in ex.info.value and "truth" in ex.info.value and "score" in ex.info.value


# ---------------------------------------------------------------------- colour bars
def test_colorbar_runs_from_none_to_strongest() -> None:
    bar = colorbar_panel("jet", 200)
    lut = _lut("jet")
    assert bar.shape[0] == 200
    column = bar[:, 10]  # through the ramp
    rows = [y for y in range(200) if _has_colour(column[y : y + 1][None], lut[255])]
    low = [y for y in range(200) if _has_colour(column[y : y + 1][None], lut[0])]
    assert rows and low and max(rows) < min(low)  # strongest colour on top


@pytest.mark.parametrize("cmap", ["jet", "viridis"])
def test_heat_maps_carry_a_colour_bar(source, cmap) -> None:
    case = source.case_ids[0]
    r = CaseReviewState(source, case, methods=["bright"], cmap=cmap)
    with_maps = _rgb(r.explanations_png())
    r.methods = []
    image_only = _rgb(r.explanations_png())
    assert with_maps.shape[1] > image_only.shape[1] + 70  # image + map + colour bar
    right = with_maps[:, -70:]  # the colour bar: both ends of the colormap
    lut = _lut(cmap)
    assert _has_colour(right, lut[255]) and _has_colour(right, lut[0])
    e = ExplorerState(source, methods=["bright"], cmap=cmap)
    strip = _rgb(e.render().png)
    assert _has_colour(strip[:, -70:], lut[255]) and _has_colour(strip[:, -70:], lut[0])


# ---------------------------------------------------------------------- similar cases
def test_tile_caption_says_truth_prediction_score_and_rank() -> None:
    assert tile_caption("lesion", "no lesion", 0.594, 0.971) == [
        "truth: lesion",
        "prediction: no lesion",
        "score 0.59",
        "closer than 97%",
    ]
    assert tile_caption("normal", "normal", 0.1, 0.9983)[-1] == "closer than 99.8%"
    assert tile_caption("normal", "normal", 0.1, 1.0)[-1] == "closest of all"
    assert closer_text(0.971) == "closer than 97% of cases"


def test_similar_cases_table_names_truth_and_prediction(source) -> None:
    r = CaseReview(source=source, show=["bright"], deletion=False)
    table = r.similar_cases_table()
    assert {"truth", "prediction", "score", "closeness (rank among all cases)"} <= set(
        table.columns
    )
    sim = r.state.similar()
    names = source.class_names
    for row, s in zip(table.itertuples(index=False), sim.itertuples(index=False)):
        truth = names[1] if int(s.label) == 1 else names[0]
        predicted = names[1] if s.score >= source.threshold else names[0]
        assert row.truth == truth and row.prediction.startswith(predicted)
    assert "truth" in r.similar_table.value and "closer than" in r.similar_table.value


def test_closer_than_by_hand() -> None:
    sims = np.array([1.0, 0.2, 0.5, 0.9, 0.5, -0.3])
    candidates = np.array([False, True, True, True, True, True])  # case 0 is the query
    rank = closer_than(sims, candidates)
    # case 3 (0.9) beats the 4 other candidates; case 2 (0.5) beats 0.2 and -0.3, ties 0.5
    assert rank[3] == pytest.approx(4 / 4)
    assert rank[2] == pytest.approx((2 + 0.5) / 4)
    assert rank[5] == pytest.approx(0.0)


def test_standardised_distance_separates_cases_where_cosine_does_not() -> None:
    """ReLU-like features with a large shared component and one dominant direction: the plain
    cosine is 0.99+ for every pair; the standardised distance ranks the true neighbours first
    and puts them far below a typical distance."""
    rng = np.random.default_rng(0)
    n, f = 300, 64
    common = 5.0 + rng.random(f)
    cluster = rng.integers(0, 6, n)
    centres = rng.normal(0, 0.4, (6, f))
    emb = np.maximum(common + centres[cluster] + rng.normal(0, 0.15, (n, f)), 0)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    plain = unit @ unit[0]
    assert np.quantile(plain[1:], 0.05) > 0.98  # the complaint: everything looks alike
    others = np.arange(n) > 0
    d = standardised_distance(emb, 0)
    z = (emb - emb.mean(axis=0)) / emb.std(axis=0)  # by hand
    assert d[7] == pytest.approx(np.linalg.norm(z[7] - z[0]))
    rel = relative_distance(d, others)
    assert np.median(rel[others]) == pytest.approx(1.0)
    same = (cluster == cluster[0]) & others
    assert rel[same].max() < 0.6  # the true neighbours are far closer than a typical case
    rank = closer_than(-d, others)
    assert rank[same].min() > 0.75  # "closer than" most other cases
    assert d[same].max() < d[~same & others].min()


def test_similar_tiles_are_labelled_images(source) -> None:
    r = CaseReviewState(source, source.case_ids[1], methods=["bright"], k_similar=3)
    tiles = _rgb(r.similar_png(size=96))
    assert tiles.shape[0] > 96 + 3 * 12  # room for the caption lines under the thumbnails
