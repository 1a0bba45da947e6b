"""Latency of every widget interaction on a computed demo audit (target: < 300 ms).

Times what a user waits for after touching a control, through the widgets' own observers
(state update + re-render + new image/table values), on the audit result of the demo data:

- explorer: filter change, case change, method toggle, colormap change;
- dashboard: threshold slider move, group selection (opens the explorer on the group);
- case review: opening a case (prediction, explanations, quality, similar cases), and the
  per-case deletion test run on request.

Every timed step shows a state not seen before (no render-cache hits), except where noted.
Writes ``bench/results/widgets.json`` with median and p95 per interaction.

Usage: ``python bench/widgets.py [--n-images 300] [--repeats 20]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
TARGET_MS = 300.0


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def _summary(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples)
    return {
        "n": int(a.size),
        "median_ms": round(float(np.median(a)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "max_ms": round(float(a.max()), 2),
        "under_target": bool(np.percentile(a, 95) < TARGET_MS),
    }


def computed_audit(n_images: int, workdir: Path):
    """The demo data, model and audit result (the audit resumes from its shards if rerun)."""
    from xai_audit import load_demo_model
    from xai_audit.audit import Audit
    from xai_audit.data import load_manifest
    from xai_audit.datasets import generate_demo_dataset

    manifest = load_manifest(generate_demo_dataset(workdir / "demo_data", n_samples=n_images))
    model = load_demo_model(device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = Audit(
            model,
            manifest,
            sensitive=["sex", "age_group", "site"],
            methods=["gradcam", "saliency"],
            n_boot=200,
            min_group_size=20,
            quality={"sample_size": 32, "sanity_sample_size": 8, "n_steps": 10},
            output_dir=workdir / "audit",
        ).run()
    return model, manifest, result


def bench_explorer(result, model, manifest, repeats: int) -> dict[str, dict[str, float]]:
    from xai_audit.widgets import ExplanationExplorer

    ex = ExplanationExplorer.from_result(result, model=model, data=manifest, show=["gradcam"])
    out: dict[str, list[float]] = {
        "filter_change": [],
        "case_change": [],
        "method_toggle": [],
        "colormap_change": [],
    }
    values = [(a, v) for a in ex.state.source.attributes for v in [*ex.state.levels(a), None]]
    for a, v in itertools.islice(itertools.cycle(values), repeats):
        out["filter_change"].append(
            _timed(lambda a=a, v=v: setattr(ex.attribute_filters[a], "value", v))
        )
    for _ in range(repeats):
        out["case_change"].append(_timed(ex.next_button.click))
    box = ex.method_boxes["saliency"]
    for _ in range(repeats):
        ex.next_button.click()  # a fresh case each time: the toggle renders something new
        out["method_toggle"].append(_timed(lambda: setattr(box, "value", not box.value)))
    cmaps = list(ex.cmap.options)
    for i in range(repeats):
        out["colormap_change"].append(
            _timed(lambda i=i: setattr(ex.cmap, "value", cmaps[(i + 1) % len(cmaps)]))
        )
        if i % len(cmaps) == len(cmaps) - 1:
            ex.next_button.click()
    return {k: _summary(v) for k, v in out.items()}


def bench_dashboard(result, model, manifest, repeats: int) -> dict[str, dict[str, float]]:
    from xai_audit.widgets import SubgroupDashboard

    d = SubgroupDashboard.from_result(
        result, model=model, data=manifest, attributes=["age_group", "sex"], min_group_size=20
    )
    base = float(d.threshold.value)
    moves = [
        round(min(0.99, max(0.01, base + 0.01 * k * (-1) ** k)), 2) for k in range(1, repeats + 1)
    ]
    slider = [_timed(lambda t=t: setattr(d.threshold, "value", t)) for t in moves]
    d.threshold.value = base
    groups = [o for o in d.group.options if o[1] is not None]  # not the "pick a group" entry
    select = []
    for _label, value in itertools.islice(itertools.cycle(groups), repeats):
        d.group.value = None
        # picking a group opens its cases at once (no button press since issue 15)
        select.append(_timed(lambda v=value: setattr(d.group, "value", v)))
    ci = [_timed(d.ci_button.click)]  # on request only: the bootstrap at the current threshold
    return {
        "threshold_slider_move": _summary(slider),
        "group_select_open_cases": _summary(select),
        "compute_cis_button": _summary(ci),
    }


def bench_case_review(result, model, manifest, repeats: int) -> dict[str, dict[str, float]]:
    from xai_audit.widgets import CaseReview

    t0 = time.perf_counter()
    review = CaseReview.from_result(
        result, model=model, data=manifest, show=["gradcam", "saliency"]
    )
    first_open_ms = (time.perf_counter() - t0) * 1000.0  # includes embedding all cases once
    ids = list(result.predictions["case_id"])[1 : repeats + 1]
    opens = [_timed(lambda c=c: review.select_case(c)) for c in ids]
    deletion = []  # on request (button), not part of opening a case
    for c in ids[:5]:
        review.select_case(c)
        deletion.append(_timed(review.deletion_button.click))
    return {
        "case_review_open": _summary(opens),
        "case_review_deletion_test_button": _summary(deletion),
        "case_review_first_build": {"ms": round(first_open_ms, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, manifest, result = computed_audit(args.n_images, OUT / "widgets_work")
    audit_s = time.perf_counter() - t0
    results = {
        **bench_explorer(result, model, manifest, args.repeats),
        **bench_dashboard(result, model, manifest, args.repeats),
        **bench_case_review(result, model, manifest, args.repeats),
    }
    report = {
        "target_ms": TARGET_MS,
        "n_images": args.n_images,
        "repeats": args.repeats,
        "audit_seconds": round(audit_s, 1),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        },
        "interactions": results,
    }
    (OUT / "widgets.json").write_text(json.dumps(report, indent=2))
    width = max(len(k) for k in results)
    for k, v in results.items():
        line = f"{k:<{width}}  " + (
            f"median {v['median_ms']:7.1f} ms  p95 {v['p95_ms']:7.1f} ms"
            if "median_ms" in v
            else f"{v['ms']:7.1f} ms"
        )
        print(line)
    print(f"wrote {OUT / 'widgets.json'}")


if __name__ == "__main__":
    main()
