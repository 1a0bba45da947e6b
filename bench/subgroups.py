"""Benchmark: grouped bootstrap CIs, fairlearn MetricFrame per resample vs xai_audit's vectorised one.

Both run in one process on the same data, with the SAME groups and the SAME metrics: N rows,
two attributes ``a`` and ``b`` whose intersection has G cells, and the groups an audit reports:
overall, every group of ``a``, every group of ``b`` and every ``a x b`` cell (G = 12 gives
1 + 3 + 4 + 12 = 20 groups), each with all 14 metrics of :data:`xai_audit.fairness.METRICS`.

* fairlearn: one ``MetricFrame(..., n_boot=k, ci_quantiles=...)`` per attribute set (``a``,
  ``b``, ``a x b``; this is how fairlearn reports marginals and intersections), its own
  bootstrap, with 14 scalar metric functions (fairlearn's bootstrap takes scalar metrics
  only): scikit-learn for AUROC, average precision and Brier, xai_audit's ECE, and plain numpy
  confusion counts for the ten threshold metrics (cheaper than scikit-learn's scorers, so the
  comparison favours fairlearn). Its per-resample time (bootstrapped frames minus plain
  frames, divided by k) is scaled to ``--boot`` resamples.
* xai_audit: :func:`xai_audit.fairness.bootstrap_replicates` over the same 20 groups with
  ``--boot`` resamples (the bootstrap part), and the whole ``evaluate_subgroups`` call
  (point estimates through fairlearn, bootstrap, intervals, tables and flags) against the
  whole fairlearn work (plain frames + bootstrap).

Our timings are the median of three runs, one before and two after fairlearn's (so that a
change of machine load hits both). Point estimates of both are compared value by value.
Peak traced memory (tracemalloc) of the bootstrap is measured at 200 and at ``--boot``
resamples, net of the stored replicate array. The machine load (``os.getloadavg``) is
recorded at start and end.

Usage::

    python bench/subgroups.py [--rows 100000 --groups 12 --boot 1000 --fairlearn-boot 3]
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
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score  # noqa: E402

from xai_audit.fairness import METRICS, bootstrap_replicates, evaluate_subgroups, make_plan  # noqa: E402
from xai_audit.fairness.bootstrap import identity_metrics  # noqa: E402
from xai_audit.fairness.calibration import expected_calibration_error  # noqa: E402

THRESHOLD = 0.5
ATTRIBUTE_SETS = (("a",), ("b",), ("a", "b"))


def _counts(y: np.ndarray, s: np.ndarray) -> tuple[float, float, float, float]:
    pred = np.asarray(s) >= THRESHOLD
    y = np.asarray(y).astype(bool)
    tp = float(np.count_nonzero(pred & y))
    fp = float(np.count_nonzero(pred & ~y))
    fn = float(np.count_nonzero(~pred & y))
    return tp, fp, fn, float(y.size) - tp - fp - fn


def _ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def _confusion_metric(name: str):
    def metric(y: np.ndarray, s: np.ndarray) -> float:
        tp, fp, fn, tn = _counts(y, s)
        sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
        return {
            "prevalence": _ratio(tp + fn, tp + fp + fn + tn),
            "sensitivity": sens,
            "specificity": spec,
            "ppv": _ratio(tp, tp + fp),
            "npv": _ratio(tn, tn + fn),
            "fpr": _ratio(fp, fp + tn),
            "fnr": _ratio(fn, fn + tp),
            "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
            "balanced_accuracy": 0.5 * (sens + spec),
            "selection_rate": _ratio(tp + fp, tp + fp + fn + tn),
        }[name]

    metric.__name__ = name
    return metric


def _two_classes(fn):
    def metric(y: np.ndarray, s: np.ndarray) -> float:
        return float(fn(y, s)) if np.unique(y).size == 2 else float("nan")

    return metric


#: The 14 metrics of xai_audit.fairness.METRICS as scalar functions (fairlearn's bootstrap
#: needs scalar metrics; one vector-valued metric fails in its quantile step).
FAIRLEARN_METRICS = {
    name: (
        _two_classes(roc_auc_score)
        if name == "auroc"
        else _two_classes(average_precision_score)
        if name == "auprc"
        else (lambda y, s: float(brier_score_loss(y, s, labels=[0, 1])))
        if name == "brier"
        else (lambda y, s: float(expected_calibration_error(y, s, 10)))
        if name == "ece"
        else _confusion_metric(name)
    )
    for name in METRICS
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
    """Plain and bootstrapped MetricFrames for a, b and a x b (14 metrics each)."""
    t_plain = t_boot = 0.0
    frames = {}
    for cols in ATTRIBUTE_SETS:
        sf = attrs[list(cols)] if len(cols) > 1 else attrs[cols[0]]
        t0 = time.perf_counter()
        frames[cols] = MetricFrame(
            metrics=FAIRLEARN_METRICS, y_true=y, y_pred=s, sensitive_features=sf
        )
        t_plain += time.perf_counter() - t0
        t0 = time.perf_counter()
        MetricFrame(
            metrics=FAIRLEARN_METRICS,
            y_true=y,
            y_pred=s,
            sensitive_features=sf,
            n_boot=n_boot,
            ci_quantiles=[0.025, 0.975],
            random_state=0,
        )
        t_boot += time.perf_counter() - t0
    per = max(t_boot - t_plain, 1e-9) / n_boot
    return {
        "plain_s": t_plain,
        "boot_s": t_boot,
        "n_boot": n_boot,
        "per_resample_s": per,
        "frames": frames,
    }


def plans_for(y: np.ndarray, s: np.ndarray, attrs: pd.DataFrame) -> tuple[list, list[tuple]]:
    """Overall, every group of a, of b, and every a x b cell (the groups an audit reports)."""
    units = np.arange(y.size)
    plans = [make_plan(y, s, units, THRESHOLD)]
    names: list[tuple] = [("overall",)]
    for cols in ATTRIBUTE_SETS:
        keys = attrs[cols[0]].astype(str)
        for col in cols[1:]:
            keys = keys + " | " + attrs[col].astype(str)
        keys = keys.to_numpy()
        for name in sorted(set(keys)):
            rows = np.flatnonzero(keys == name)
            plans.append(make_plan(y[rows], s[rows], units[rows], THRESHOLD))
            names.append((cols, tuple(name.split(" | "))))
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


def run_full(
    y: np.ndarray, s: np.ndarray, attrs: pd.DataFrame, n_boot: int
) -> tuple[float, object]:
    """The whole evaluate_subgroups call (a, b, a x b; tables and flags)."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = evaluate_subgroups(y, s, attrs, threshold=THRESHOLD, n_boot=n_boot, random_state=0)
    return time.perf_counter() - t0, full


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


def compare_points(frames: dict, ours: np.ndarray, names: list[tuple]) -> dict[str, object]:
    """Our point estimates (all 14 metrics, 20 groups) vs fairlearn's plain frames."""
    diffs = []
    for gi, name in enumerate(names):
        for mi, metric in enumerate(METRICS):
            if name == ("overall",):
                theirs = frames[ATTRIBUTE_SETS[0]].overall[metric]
            else:
                cols, key = name
                by = frames[cols].by_group
                theirs = by.loc[key if len(cols) > 1 else key[0], metric]
            a, b = float(theirs), float(ours[0, gi, mi])
            diffs.append(0.0 if (np.isnan(a) and np.isnan(b)) else abs(a - b))
    worst = float(np.max(diffs))
    return {"max_abs_diff": worst, "identical_1e-12": bool(worst <= 1e-12), "n_values": len(diffs)}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=12)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--fairlearn-boot", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "results" / "subgroups.json")
    )
    args = parser.parse_args(argv)
    load_start = os.getloadavg()

    y, s, attrs = make_data(args.rows, args.groups, args.seed)
    _, names = plans_for(y, s, attrs)
    print(
        f"data: {args.rows} rows; {len(names)} groups (overall, a, b, a x b) x {len(METRICS)} "
        f"metrics, both sides; {args.boot} resamples; load average {load_start}"
    )
    runs = [run_ours(y, s, attrs, args.boot)]
    fulls = [run_full(y, s, attrs, args.boot)[0]]
    fl = run_fairlearn(y, s, attrs, args.fairlearn_boot)
    for _ in range(2):
        runs.append(run_ours(y, s, attrs, args.boot))
        fulls.append(run_full(y, s, attrs, args.boot)[0])
    ours = runs[0]
    boot_s = float(np.median([r["boot_s"] for r in runs]))
    prep_s = float(np.median([r["prep_s"] for r in runs]))
    full_s = float(np.median(fulls))
    fl_scaled = fl["per_resample_s"] * args.boot
    print(
        f"fairlearn MetricFrame x3: plain {fl['plain_s']:.2f} s; {args.fairlearn_boot} resamples "
        f"{fl['boot_s']:.2f} s -> {fl['per_resample_s']:.3f} s/resample -> {fl_scaled:.0f} s "
        f"for {args.boot}"
    )
    print(
        f"xai_audit: prepare {prep_s:.3f} s + bootstrap {boot_s:.3f} s for {args.boot} "
        f"(runs: {[round(r['boot_s'], 3) for r in runs]})"
    )
    ratio_boot = fl_scaled / boot_s
    ratio_boot_prep = fl_scaled / (boot_s + prep_s)
    ratio_full = (fl["plain_s"] + fl_scaled) / full_s
    points = compare_points(fl["frames"], ours["point"], ours["names"])
    print(
        f"speed-up, bootstrap part: {ratio_boot:.0f}x ({ratio_boot_prep:.0f}x with the "
        f"preparation); whole call: evaluate_subgroups {full_s:.2f} s vs fairlearn "
        f"{fl['plain_s'] + fl_scaled:.0f} s -> {ratio_full:.0f}x"
    )
    print(
        f"point estimates: max |diff| {points['max_abs_diff']:.2e} over {points['n_values']} "
        f"values (identical to 1e-12: {points['identical_1e-12']})"
    )

    mem = [peak_memory(y, s, attrs, n) for n in sorted({200, args.boot})]
    for m in mem:
        print(
            f"peak traced memory at n_boot={m['n_boot']}: {m['peak_mib']:.1f} MiB "
            f"(results {m['results_mib']:.2f} MiB, rest {m['non_result_peak_mib']:.1f} MiB)"
        )
    load_end = os.getloadavg()
    print(f"load average at end {load_end}")

    result = {
        "config": {
            "rows": args.rows,
            "groups": len(names),
            "metrics": list(METRICS),
            "boot": args.boot,
            "fairlearn_boot": args.fairlearn_boot,
            "seed": args.seed,
        },
        "fairlearn": {k: v for k, v in fl.items() if k != "frames"} | {"scaled_s": fl_scaled},
        "xai_audit": {
            "prep_s": prep_s,
            "boot_s": boot_s,
            "boot_runs_s": [r["boot_s"] for r in runs],
            "evaluate_subgroups_s": full_s,
            "evaluate_subgroups_runs_s": fulls,
            "reps_shape": ours["reps_shape"],
        },
        "speedup_bootstrap": ratio_boot,
        "speedup_bootstrap_with_prep": ratio_boot_prep,
        "speedup_whole_call": ratio_full,
        "target_speedup": 300,
        "point_estimates": points,
        "memory": mem,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "numpy": np.__version__,
            "load_average_start": load_start,
            "load_average_end": load_end,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}")
    return result


if __name__ == "__main__":
    main()
