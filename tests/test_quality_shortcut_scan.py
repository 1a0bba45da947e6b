"""The map-free paste scan: known answers with analytic models, and the cases it must not flag.

No trained model: a model that reads one fixed patch makes every score change computable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from xai_audit.audit.findings import shortcut_findings
from xai_audit.quality import analyse_shortcuts, attribution_grid
from xai_audit.quality.shortcut_scan import paste_scan, scan_windows

SIZE = 64
TOKEN = (slice(36, 44), slice(20, 28))  # rows, cols: interior, off the window grid's edges


def _reader_score(rows: slice, cols: slice):
    """score = sigmoid(20 x (mean of one fixed patch - 0.5)), as the scan calls it."""

    def score(x: np.ndarray) -> np.ndarray:
        z = 20.0 * (
            torch.from_numpy(np.asarray(x, np.float32))[:, 0, rows, cols].mean((1, 2)) - 0.5
        )
        return torch.sigmoid(z).numpy()

    return score


def _data(seed: int, n: int = 360, token_share: float = 0.0, cluster: float = 0.0):
    """Images (background 0.2 + noise), sites and sexes, predictions.

    ``token_share``: that share of site B's positive predictions carries a bright token at
    ``TOKEN``. ``cluster``: that share of site C's positive predictions (and 5 % of the other
    positives) has a bright 'lesion' there instead: findings that cluster by chance.
    """
    rng = np.random.default_rng(seed)
    site = rng.choice(["A", "B", "C"], n)
    sex = rng.choice(["F", "M"], n)
    pred = rng.integers(0, 2, n)
    x = (0.2 + 0.05 * rng.standard_normal((n, 1, SIZE, SIZE))).astype(np.float32)
    if token_share:
        x[(site == "B") & (pred == 1) & (rng.random(n) < token_share), 0, TOKEN[0], TOKEN[1]] = 1.0
    if cluster:
        share = np.where(site == "C", cluster, 0.05)
        x[(pred == 1) & (rng.random(n) < share), 0, TOKEN[0], TOKEN[1]] = 1.0
    return x, pd.DataFrame({"site": site, "sex": sex}), pred


def _scan(x, attrs, pred, **kw):
    return paste_scan(_reader_score(*TOKEN), lambda rows: x[rows], attrs, pred, (SIZE, SIZE), **kw)


def _analyse(x, attrs, pred, scan=None, maps_seed=0):
    """analyse_shortcuts in auto mode with maps of uniform noise: the maps show nothing."""
    maps = np.random.default_rng(maps_seed).random((len(pred), SIZE, SIZE)).astype(np.float32)
    return analyse_shortcuts(
        region="auto",
        attributes=attrs,
        predicted=pred,
        image_shape=(SIZE, SIZE),
        grids=attribution_grid(maps),
        score=_reader_score(*TOKEN),
        load_images=lambda rows: x[rows],
        threshold=0.5,
        sample_size=32,
        n_boot=200,
        scan=scan,
    )


def _row(table: pd.DataFrame, attribute: str, group: str) -> pd.Series:
    return table[(table["attribute"] == attribute) & (table["group"] == group)].iloc[0]


def test_windows_by_hand():
    wins = scan_windows((64, 64))
    assert len(wins) == 49 and wins[0] == (0, 0, 16, 16) and wins[-1] == (48, 48, 64, 64)
    assert {w[0] for w in wins} == {0, 8, 16, 24, 32, 40, 48}
    # Non-square, and a side the stride does not divide: the last window touches the edge.
    wins = scan_windows((48, 70))  # H, W
    assert {(w[2] - w[0], w[3] - w[1]) for w in wins} == {(18, 12)}
    assert max(w[2] for w in wins) == 70 and max(w[3] for w in wins) == 48
    assert sorted({w[0] for w in wins}) == [0, 9, 18, 27, 36, 45, 52]


def test_a_token_on_every_positive_of_a_group_gives_the_analytic_answer():
    x, attrs, pred = _data(0, token_share=1.0)
    out = _scan(x, attrs, pred, sample_size=32)
    table = out["table"]
    b = _row(table, "site", "B")
    assert b["candidate"] and b["n_pairs"] == 32
    # Every pair: the recipient's patch becomes the token (mean 1.0, score sigmoid(10)) in one
    # copy and stays background (mean ~0.2, score ~sigmoid(-6)) in the other.
    assert b["n_exceed"] == 32 and b["p_value"] == pytest.approx(0.5**32)
    expected = 1 / (1 + np.exp(-10.0)) - 1 / (1 + np.exp(6.0))
    assert b["median_excess"] == pytest.approx(expected, abs=2e-3)
    # Its window holds the token: x 20-28, y 36-44.
    assert b["x0"] <= 20 and b["x1"] >= 28 and b["y0"] <= 36 and b["y1"] >= 44
    # One test per group: Bonferroni over 5 groups (sex F/M, site A/B/C).
    assert b["level"] == pytest.approx(0.05 / 5)
    assert table["candidate"].sum() == 1  # not site A or C, not a sex
    assert out["not_searched"] == [] and "49 windows" in out["searched"]


def test_a_token_on_most_positives_is_found_and_other_groups_are_not():
    x, attrs, pred = _data(1, token_share=0.85)
    table = _scan(x, attrs, pred)["table"]
    b = _row(table, "site", "B")
    assert b["candidate"] and 0.7 <= b["share_exceed"] <= 1.0
    assert table[table["candidate"]][["attribute", "group"]].values.tolist() == [["site", "B"]]


def test_findings_clustered_by_chance_are_not_a_candidate_though_the_mean_rises():
    # 30 % of site C's positives vs 5 % elsewhere have a finding exactly where the model looks:
    # pasting raises the mean score clearly, but not the typical pair's.
    x, attrs, pred = _data(2, cluster=0.3)
    table = _scan(x, attrs, pred)["table"]
    c = _row(table, "site", "C")
    assert c["mean_excess"] > 0.1
    assert not table["candidate"].any()
    assert "no window whose content raises most recipients' scores" in c["reason"]


def test_no_token_no_candidate_over_seeds():
    for seed in range(3):
        x, attrs, pred = _data(10 + seed)
        table = _scan(x, attrs, pred, sample_size=24)["table"]
        assert not table["candidate"].any(), seed


def test_small_groups_are_named_and_3d_is_refused():
    x, attrs, pred = _data(3, n=120, token_share=1.0)
    attrs["site"] = np.where(np.arange(len(attrs)) < 12, "D", attrs["site"])  # site D: 12 images
    out = _scan(x, attrs, pred, min_group_size=10)
    assert any(t.startswith("site=D (") for t in out["not_searched"])
    assert "site" in set(out["table"]["attribute"]) and "D" not in set(out["table"]["group"])
    # Too few pairs to reach the level: said, not silently "no candidate".
    few = _scan(x[:60], attrs.iloc[:60], pred[:60], sample_size=4, min_group_size=5)
    assert (few["table"]["n_pairs"] <= 4).all()
    assert not few["table"]["candidate"].any()
    assert few["table"]["reason"].str.contains("too few pairs").all()
    with pytest.raises(ValueError, match="2D images only"):
        paste_scan(lambda v: v, lambda r: x[r], attrs, pred, (8, SIZE, SIZE))


def test_a_token_the_maps_do_not_show_is_found_by_the_scan_and_confirmed():
    x, attrs, pred = _data(4, n=300, token_share=0.9)
    assert _analyse(x, attrs, pred)["candidates"] == []  # without the scan: missed
    scan = _scan(x, attrs, pred, sample_size=32)
    out = _analyse(x, attrs, pred, scan=scan)
    (cand,) = out["candidates"]
    assert (cand["attribute"], cand["group"], cand["evidence"]) == ("site", "B", "scan")
    assert cand["confirmed"] and len(out["flags"]) == 1
    assert "found by the paste scan" in cand["message"]
    assert "paste scan of 49 windows" in out["searched"]
    (f,) = shortcut_findings({"gradcam": out}, "the whole image")
    assert (f["severity"], f["kind"]) == ("high", "shortcut")
    assert f["evidence"]["box"] == cand["box"] and f["evidence"]["evidence"] == "scan"
    assert f["evidence"]["scan"]["n_exceed"] == cand["scan"]["n_exceed"]
    assert "found by the paste scan" in f["message"]
    # A model that ignores the place: the scan finds nothing to confirm.
    other = paste_scan(
        _reader_score(slice(0, 8), slice(0, 8)), lambda r: x[r], attrs, pred, (SIZE, SIZE)
    )
    assert not other["table"]["candidate"].any()


def test_a_mark_on_every_image_of_a_site_is_found_by_the_scan_but_not_confirmed():
    # Site B's stamp is on its negatives too: it says "site B", not "positive". The scan sees
    # that pasting it raises scores; the label control of the edits does not confirm it.
    x, attrs, pred = _data(5, n=300)
    x[(attrs["site"] == "B").to_numpy(), 0, TOKEN[0], TOKEN[1]] = 1.0
    scan = _scan(x, attrs, pred, sample_size=32)
    assert _row(scan["table"], "site", "B")["candidate"]
    out = _analyse(x, attrs, pred, scan=scan, maps_seed=1)
    (cand,) = out["candidates"]
    assert cand["evidence"] == "scan" and not cand["confirmed"] and out["flags"] == []
    (f,) = shortcut_findings({"gradcam": out}, "the whole image")
    assert f["severity"] == "info" and f["kind"] == "shortcut_note"
    assert f["title"].startswith("Pasted content from site=B raises scores")


def test_numeric_codes_and_missing_values_get_the_group_names_of_every_other_table():
    """Sites coded 1.0/2.0/3.0 with some missing: the scan's groups are '2' and 'missing'
    (as in the subgroup tables), so that its candidate is confirmed on the right rows."""
    x, attrs, pred = _data(4, n=300, token_share=0.9)
    codes = attrs["site"].map({"A": 1.0, "B": 2.0, "C": 3.0})
    codes[np.random.default_rng(0).random(len(codes)) < 0.1] = np.nan
    attrs = attrs.assign(site=codes)
    scan = _scan(x, attrs, pred, sample_size=32)
    groups = set(scan["table"].loc[scan["table"]["attribute"] == "site", "group"])
    assert groups == {"1", "2", "3", "missing"}
    assert _row(scan["table"], "site", "2")["candidate"]
    out = _analyse(x, attrs, pred, scan=scan)
    (cand,) = out["candidates"]
    assert (cand["group"], cand["status"]) == ("2", "confirmed")
