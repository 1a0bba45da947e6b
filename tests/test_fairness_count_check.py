"""The count-based second test of disparity flags on proportions (fairness/count_check.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from xai_audit.fairness import evaluate_subgroups
from xai_audit.fairness.count_check import newcombe_interval


@pytest.mark.parametrize(
    ("counts", "expected"),
    [((56, 70, 48, 80), (0.0524, 0.3339)), ((9, 10, 3, 10), (0.1705, 0.8090))],
)
def test_newcombe_interval_matches_the_published_examples(counts, expected) -> None:
    # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10.
    np.testing.assert_allclose(newcombe_interval(*counts), expected, atol=5e-5)


def _data(small_sens_hits: int, seed: int = 0):
    """900 images: sites A/B/C (300 each), sensitivity 0.80 everywhere, and a small site D
    of 40 images (20 positives) detecting ``small_sens_hits`` of its positives."""
    rng = np.random.default_rng(seed)
    site = np.repeat(["A", "B", "C", "D"], [300, 300, 300, 40])
    y = np.zeros(site.size, int)
    pred = np.zeros(site.size, bool)
    for s, n in (("A", 300), ("B", 300), ("C", 300), ("D", 40)):
        rows = np.flatnonzero(site == s)
        pos = rows[: n // 2]
        y[pos] = 1
        hits = small_sens_hits if s == "D" else int(0.8 * pos.size)
        pred[pos[rng.permutation(pos.size)[:hits]]] = True
        neg = rows[n // 2 :]
        pred[neg[rng.permutation(neg.size)[: int(0.1 * neg.size)]]] = True
    score = np.where(pred, 0.9, 0.1)
    return y, score, pd.DataFrame({"site": site})


def _flags(y, score, attrs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate_subgroups(y, score, attrs, threshold=0.5, n_boot=400, random_state=1)
    return res


def test_a_small_group_at_one_is_not_flagged_on_the_bootstrap_alone() -> None:
    # Site D detects all 20 of its positives, the sites 0.80: the bootstrap of D's
    # sensitivity is 1.00 in every resample, so the range's interval only sees the sites'
    # spread and excludes the tolerance. 20/20 against 120/150 is no evidence of a gap of
    # more than 0.05 (Newcombe: about -0.01 to 0.33 at the pairs' Bonferroni level).
    res = _flags(*_data(20))
    assert not [f for f in res.flags if f.metric == "sensitivity"]
    (held,) = [w for w in res.config["flags_withheld"] if w["metric"] == "sensitivity"]
    assert held["kind"] == "best_vs_worst" and held["count_ci_low"] < 0.05
    assert "bootstrap interval alone" in held["reason"]


def test_a_real_gap_of_a_small_group_stays_flagged() -> None:
    # Site D detects 4 of 20: 0.20 against 0.80 is a gap the counts confirm.
    res = _flags(*_data(4))
    flagged = {(f.group, f.kind) for f in res.flags if f.metric == "sensitivity"}
    assert ("D", "vs_overall") in flagged and ("D", "best_vs_worst") in flagged
    assert not [w for w in res.config["flags_withheld"] if w["metric"] == "sensitivity"]
