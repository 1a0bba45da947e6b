"""Seeded simulation: coverage of per-group, difference-to-overall and best-vs-worst intervals.

Groups with known sensitivities (some equal, some different) are simulated; every data set goes
through the real code path (plans, vectorised bootstrap, :func:`gap_tables`), and we count how
often each 95% interval holds the true value:

* per group: the group's sensitivity;
* difference to overall: sensitivity(group) - sensitivity(all), the latter being the
  positives-weighted mean of the groups (equal shares here, so the plain mean);
* best minus worst: ``max - min`` of the true sensitivities.

Acceptance band 93-97%. The binomial SE of a coverage estimate near 0.95 from ``N`` trials is
``sqrt(0.95 * 0.05 / N)``: 0.39% for the 3,200 pooled per-group and per-difference trials of
the full run (slow), 0.77% for its 800 gap trials, so 93-97% is at least 2.6 SE from 95% on
either side (a correct method fails it with probability < 1%). The quick run (always on) has
800 pooled trials (SE 0.77%) and 200 gap trials (SE 1.5%); its bands are about 3 SE around 95%.

The gap interval is exact at the two extremes (all groups equal: the simultaneous interval of
all pairs; one clearly best and one clearly worst: that pair's studentised interval); those are
pooled for the 93-97% check. Between them (two groups tied at the top, one lower) it is valid
but conservative by construction, and only ">= 93%" is asserted; the measured values are in
the report.

Run ``python tests/test_fairness_coverage.py`` to print the coverages of the full run.
"""

from __future__ import annotations

import numpy as np
import pytest

from xai_audit.fairness._common import METRIC_INDEX
from xai_audit.fairness.bootstrap import (
    bootstrap_replicates,
    identity_metrics,
    make_plan,
    percentile_interval,
)
from xai_audit.fairness.disparity import gap_tables
from xai_audit.fairness.inputs import Group

SENS = METRIC_INDEX["sensitivity"]
EQUAL = (0.75, 0.75, 0.75)  # true gap 0: the range is most biased here
SEPARATED = (0.85, 0.65)  # one best, one worst
TIED_TOP = (0.8, 0.8, 0.65)  # some equal, some different


def simulate(
    sens: tuple[float, ...], n_rows: int, n_sims: int, n_boot: int, seed: int
) -> dict[str, np.ndarray]:
    """Hit (1) or miss (0) of each interval in ``n_sims`` simulated data sets.

    Rows fall in the groups with equal probability; prevalence 0.5; a positive is detected
    with its group's sensitivity, a negative cleared with probability 0.8; threshold 0.5.
    """
    truth = np.asarray(sens, dtype=float)
    k = truth.size
    rng = np.random.default_rng(seed)
    hits: dict[str, list[np.ndarray]] = {"group": [], "diff": [], "gap": []}
    status = np.full((1, k + 1), "ok", dtype=object)
    for r in range(n_sims):
        g = rng.integers(0, k, n_rows)
        y = rng.random(n_rows) < 0.5
        right = rng.random(n_rows) < np.where(y, truth[g], 0.8)
        pred = np.where(y, right, ~right)
        s = np.where(pred, 0.5 + 0.5 * rng.random(n_rows), 0.5 * rng.random(n_rows))
        rows = np.arange(n_rows)
        groups = [Group(-1, "overall", "all", rows)] + [
            Group(0, "g", str(i), np.flatnonzero(g == i)) for i in range(k)
        ]
        plans = [[make_plan(y[x.rows], s[x.rows], x.rows, 0.5) for x in groups]]
        point = identity_metrics(plans, n_rows)
        reps = bootstrap_replicates(plans, n_rows, n_boot, random_state=seed * 100_003 + r)
        lo, hi = percentile_interval(reps, 0.95)
        to_overall, best_worst = gap_tables(point, reps, groups, status, ["y"], 0.95)
        hits["group"].append((lo[0, 1:, SENS] <= truth) & (truth <= hi[0, 1:, SENS]))
        d = to_overall[to_overall["metric"] == "sensitivity"]
        diff = truth - truth.mean()
        hits["diff"].append(
            (d["diff_ci_low"].to_numpy() <= diff) & (diff <= d["diff_ci_high"].to_numpy())
        )
        b = best_worst[best_worst["metric"] == "sensitivity"].iloc[0]
        gap = truth.max() - truth.min()
        hits["gap"].append(np.array([b["max_gap_ci_low"] <= gap <= b["max_gap_ci_high"]]))
    return {key: np.concatenate(v).astype(float) for key, v in hits.items()}


def coverages(n_rows: int, n_sims: int, n_boot: int) -> dict[str, float]:
    runs = {
        name: simulate(sens, n_rows, n_sims, n_boot, seed)
        for seed, (name, sens) in enumerate(
            (("equal", EQUAL), ("separated", SEPARATED), ("tied_top", TIED_TOP))
        )
    }
    out = {
        "group": float(np.mean(np.concatenate([r["group"] for r in runs.values()]))),
        "diff": float(np.mean(np.concatenate([r["diff"] for r in runs.values()]))),
        "gap_exact_cases": float(
            np.mean(np.concatenate([runs["equal"]["gap"], runs["separated"]["gap"]]))
        ),
    }
    out.update({f"gap_{name}": float(r["gap"].mean()) for name, r in runs.items()})
    out.update({f"group_{name}": float(r["group"].mean()) for name, r in runs.items()})
    out.update({f"diff_{name}": float(r["diff"].mean()) for name, r in runs.items()})
    return out


def _check(cov: dict[str, float], band: tuple[float, float], gap_band: tuple[float, float]) -> None:
    for key in ("group", "diff"):
        assert band[0] <= cov[key] <= band[1], (key, cov)
    assert gap_band[0] <= cov["gap_exact_cases"] <= gap_band[1], cov
    # Between the extremes the gap interval is conservative by construction, never liberal.
    assert cov["gap_tied_top"] >= gap_band[0], cov


@pytest.mark.slow
def test_interval_coverage_full() -> None:
    """400 data sets per configuration, 2,000 rows, 400 resamples."""
    _check(coverages(n_rows=2000, n_sims=400, n_boot=400), (0.93, 0.97), (0.93, 0.97))


def test_interval_coverage_quick() -> None:
    """A smaller run of the same simulation (100 data sets per configuration)."""
    cov = coverages(n_rows=2000, n_sims=100, n_boot=300)
    # About 3 binomial SE around 0.95: 800 pooled per-group / per-difference trials, 200 gap.
    _check(cov, (0.927, 0.973), (0.905, 0.995))


if __name__ == "__main__":
    import json
    import sys
    import time

    n_sims = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    t0 = time.perf_counter()
    result = coverages(n_rows=2000, n_sims=n_sims, n_boot=400)
    print(json.dumps(result, indent=1), f"{time.perf_counter() - t0:.0f} s")
