"""Benchmark: grouped bootstrap CIs, fairlearn MetricFrame per resample vs xai_audit's vectorised one.

Both run in this process on the same data: N rows, one intersectional attribute with G groups
(``a × b``), 4 metrics (AUROC, sensitivity, specificity, PPV at threshold 0.5).

* fairlearn: ``MetricFrame(..., n_boot=k, ci_quantiles=...)``, its own bootstrap (resample the
  rows, rebuild the frame, per resample), with a few resamples; the per-resample time (total
  minus one plain MetricFrame, divided by k) is scaled to ``--boot`` resamples.
* xai_audit: :func:`xai_audit.fairness.bootstrap_replicates` with ``--boot`` resamples over the
  same groups plus overall (it computes all 14 metrics, not just the 4).

Point estimates of both are compared; peak traced memory (tracemalloc) of the bootstrap is
measured at 200 and at ``--boot`` resamples, net of the stored replicate array. The complete
``evaluate_subgroups`` call (marginals + intersection, tables, flags) is timed too.

Usage::

    python bench/subgroups.py [--rows 100000 --groups 12 --boot 1000 --fairlearn-boot 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairlearn.metrics import MetricFrame  # noqa: E402
from sklearn.metrics import precision_score, recall_score, roc_auc_score  # noqa: E402

from xai_audit.fairness import METRICS, bootstrap_replicates, evaluate_subgroups, make_plan  # noqa: E402
from xai_audit.fairness.bootstrap import identity_metrics  # noqa: E402

THRESHOLD = 0.5
BENCH_METRICS = ("auroc", "sensitivity", "specificity", "ppv")


def sensitivity(y_true: np.ndarray, y_score: np.ndarray) -> float:
    return recall_score(y_true, y_score >= THRESHOLD)


def specificity(y_true: np.ndarray, y_score: np.ndarray) -> float:
    return recall_score(y_true, y_score >= THRESHOLD, pos_label=0)


def ppv(y_true: np.ndarray, y_score: np.ndarray) -> float:
    return precision_score(y_true, y_score >= THRESHOLD)


FAIRLEARN_METRICS = {
    "auroc": roc_auc_score,
    "sensitivity": sensitivity,
    "specificity": specificity,
    "ppv": ppv,
}


def make_data(rows: int, groups: int, seed: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Binary labels, probability scores, two attributes whose intersection has ``groups`` groups."""
    rng = np.random.default_rng(seed)
    n_a = 3 if groups % 3 == 0 else (2 if groups % 2 == 0 else 1)
    n_b = groups // n_a
    a = rng.integers(0, n_a, rows)
    b = rng.integers(0, n_b, rows)
    y = (rng.random(rows) < 0.3).astype(np.int64)
    logit = -1.0 + 2.0 * y * (1 - 0.1 * b) + rng.normal(0, 1, rows)
    s = np.round(1 / (1 + np.exp(-logit)), 4)  # rounding gives ties, as real scores often have
    attrs = pd.DataFrame({"a": [f"a{i}" for i in a], "b": [f"b{i}" for i in b]})
    return y, s, attrs


def run_fairlearn(
    y: np.ndarray, s: np.ndarray, attrs: pd.DataFrame, n_boot: int
) -> dict[str, object]:
    t0 = time.perf_counter()
    plain = MetricFrame(metrics=FAIRLEARN_METRICS, y_true=y, y_pred=s, sensitive_features=attrs)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    MetricFrame(
        metrics=FAIRLEARN_METRICS,
        y_true=y,
        y_pred=s,
        sensitive_features=attrs,
        n_boot=n_boot,
        ci_quantiles=[0.025, 0.975],
        random_state=0,
    )
    t_boot = time.perf_counter() - t0
    per = max(t_boot - t_plain, 1e-9) / n_boot
    return {
        "plain_s": t_plain,
        "boot_s": t_boot,
        "n_boot": n_boot,
        "per_resample_s": per,
        "frame": plain,
    }


def plans_for(y: np.ndarray, s: np.ndarray, attrs: pd.DataFrame) -> tuple[list, list[str]]:
    keys = (attrs["a"] + " | " + attrs["b"]).to_numpy()
    names = sorted(set(keys))
    units = np.arange(y.size)
    plans = [make_plan(y, s, units, THRESHOLD)]
    for name in names:
        rows = np.flatnonzero(keys == name)
        plans.append(make_plan(y[rows], s[rows], units[rows], THRESHOLD))
    return [plans], names


def run_ours(y: np.ndarray, s: np.ndarray, attrs: pd.DataFrame, n_boot: int) -> dict[str, object]:
    t0 = time.perf_counter()
    plans, names = plans_for(y, s, attrs)
    t_prep = time.perf_counter() - t0
    point = identity_metrics(plans, y.size)
    t0 = time.perf_counter()
    reps = bootstrap_replicates(plans, y.size, n_boot=n_boot, random_state=0)
    t_boot = time.perf_counter() - t0
    return {
        "prep_s": t_prep,
        "boot_s": t_boot,
        "total_s": t_prep + t_boot,
        "point": point,
        "names": names,
        "reps_shape": list(reps.shape),
    }


def peak_memory(y: np.ndarray, s: np.ndarray, attrs: pd.DataFrame, n_boot: int) -> dict[str, float]:
    plans, _ = plans_for(y, s, attrs)
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    reps = bootstrap_replicates(plans, y.size, n_boot=n_boot, random_state=0)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return {
        "n_boot": n_boot,
        "peak_mib": peak / 2**20,
        "results_mib": reps.nbytes / 2**20,
        "non_result_peak_mib": (peak - reps.nbytes) / 2**20,
    }


def compare_points(fl_frame: MetricFrame, ours: np.ndarray, names: list[str]) -> dict[str, object]:
    diffs = []
    for metric in BENCH_METRICS:
        mi = METRICS.index(metric)
        diffs.append(abs(float(fl_frame.overall[metric]) - ours[0, 0, mi]))
        for gi, name in enumerate(names, start=1):
            key = tuple(name.split(" | "))
            diffs.append(abs(float(fl_frame.by_group.loc[key, metric]) - ours[0, gi, mi]))
    worst = float(np.max(diffs))
    return {"max_abs_diff": worst, "identical": bool(worst <= 1e-12), "n_values": len(diffs)}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=12)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--fairlearn-boot", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "results" / "subgroups.json")
    )
    args = parser.parse_args(argv)

    y, s, attrs = make_data(args.rows, args.groups, args.seed)
    n_groups = attrs.groupby(["a", "b"]).ngroups
    print(
        f"data: {args.rows} rows, {n_groups} intersectional groups, 4 metrics, {args.boot} resamples"
    )

    fl = run_fairlearn(y, s, attrs, args.fairlearn_boot)
    fl_scaled = fl["per_resample_s"] * args.boot
    print(
        f"fairlearn MetricFrame: plain {fl['plain_s']:.2f} s; {args.fairlearn_boot} resamples "
        f"{fl['boot_s']:.2f} s -> {fl['per_resample_s']:.3f} s/resample -> {fl_scaled:.0f} s for {args.boot}"
    )
    ours = run_ours(y, s, attrs, args.boot)
    print(
        f"xai_audit vectorised: prepare {ours['prep_s']:.2f} s + bootstrap {ours['boot_s']:.2f} s "
        f"= {ours['total_s']:.2f} s for {args.boot} (all {len(METRICS)} metrics)"
    )
    ratio = fl_scaled / ours["total_s"]
    points = compare_points(fl["frame"], ours["point"], ours["names"])
    print(
        f"speed-up: {ratio:.0f}x (target >= 200x); point estimates identical: {points['identical']} "
        f"(max |diff| {points['max_abs_diff']:.2e} over {points['n_values']} values)"
    )

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = evaluate_subgroups(
            y, s, attrs, threshold=THRESHOLD, n_boot=args.boot, random_state=0
        )
    t_full = time.perf_counter() - t0
    inter = full.by_group[full.by_group["attribute"] == "a × b"]
    full_diffs = [
        abs(float(fl["frame"].by_group.loc[tuple(r.group.split(" | ")), r.metric]) - r.value)
        for r in inter[inter["metric"].isin(BENCH_METRICS)].itertuples()
    ]
    print(
        f"evaluate_subgroups (a, b, a × b; {len(METRICS)} metrics; tables and flags): {t_full:.2f} s; "
        f"max |diff| to fairlearn {max(full_diffs):.2e}"
    )

    mem = [peak_memory(y, s, attrs, n) for n in sorted({200, args.boot})]
    for m in mem:
        print(
            f"peak traced memory at n_boot={m['n_boot']}: {m['peak_mib']:.1f} MiB "
            f"(results {m['results_mib']:.2f} MiB, rest {m['non_result_peak_mib']:.1f} MiB)"
        )

    result = {
        "config": {
            "rows": args.rows,
            "groups": n_groups,
            "metrics": list(BENCH_METRICS),
            "boot": args.boot,
            "fairlearn_boot": args.fairlearn_boot,
            "seed": args.seed,
        },
        "fairlearn": {k: v for k, v in fl.items() if k != "frame"} | {"scaled_s": fl_scaled},
        "xai_audit": {k: v for k, v in ours.items() if k not in ("point", "names")},
        "speedup": ratio,
        "target_speedup": 200,
        "point_estimates": points,
        "evaluate_subgroups_s": t_full,
        "evaluate_subgroups_max_abs_diff": max(full_diffs),
        "memory": mem,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "numpy": np.__version__,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}")
    return result


if __name__ == "__main__":
    main()
