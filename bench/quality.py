"""Cost of the explanation-quality metrics, as multiples of one forward pass.

Run: ``python bench/quality.py [--n 64] [--repeats 3]``. Uses the demo CNN (trained weights
when present; cost does not depend on the weights) on synthetic 1 x 128 x 128 images, and
writes ``bench/results/quality.json``. Every figure is the median wall time of ``repeats``
runs divided by the time of one batched forward pass over the same images, timed (median of
three) just before and just after that metric and averaged, since shared machines drift.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xai_audit.model import DemoCNN, ModelAdapter, load_demo_model
from xai_audit.quality import (
    deletion_insertion,
    detect_shortcuts,
    localisation,
    sanity_check,
    shortcut_mass,
)

RESULTS = Path(__file__).parent / "results" / "quality.json"


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def _data(n: int) -> tuple[torch.Tensor, np.ndarray, Any]:
    try:
        from xai_audit.datasets import make_synthetic_cxr

        d = make_synthetic_cxr(n, seed=0)
        return torch.from_numpy(np.ascontiguousarray(d.images)), d.masks, d.metadata
    except ImportError:  # datasets not available: random images, a central square "lesion"
        import pandas as pd

        rng = np.random.default_rng(0)
        masks = np.zeros((n, 128, 128), dtype=bool)
        masks[:, 56:72, 56:72] = True
        meta = pd.DataFrame({"site": rng.choice(list("ABC"), n), "sex": rng.choice(list("FM"), n)})
        return torch.rand(n, 1, 128, 128), masks, meta


def _model() -> tuple[ModelAdapter, str]:
    try:
        return load_demo_model(device="cpu"), "trained demo CNN"
    except FileNotFoundError:
        torch.manual_seed(0)
        net = DemoCNN().eval()
        return ModelAdapter(
            net, class_names=["normal", "lesion"], device="cpu"
        ), "untrained DemoCNN"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--sanity",
        action="store_true",
        help="measure the sanity-check similarity curves and verdicts instead of costs",
    )
    args = parser.parse_args(argv)
    if args.sanity:
        return sanity_curves(n=min(args.n, 16), threads=args.threads)
    torch.set_num_threads(args.threads)
    adapter, model_desc = _model()
    x, masks, meta = _data(args.n)
    adapter.predict_proba(x[:2])  # warm-up (lazy init, allocator)

    from xai_audit.explain import explain  # the benchmark measures the real pipeline

    fwd, proba = _median_time(lambda: adapter.predict_proba(x), 5)
    predicted = proba.argmax(axis=1)
    rows: list[dict[str, Any]] = [
        {
            "metric": "forward pass (predict_proba)",
            "seconds": fwd,
            "x_forward": 1.0,
            "forward_images": args.n,
        },
    ]

    def add(
        name: str, fn: Callable[[], Any], forward_images: Callable[[Any], int] | None = None
    ) -> None:
        # Time a forward pass right before and after each metric: shared machines drift.
        before, _ = _median_time(lambda: adapter.predict_proba(x), 3)
        sec, out = _median_time(fn, args.repeats)
        after, _ = _median_time(lambda: adapter.predict_proba(x), 3)
        row = {"metric": name, "seconds": sec, "forward_seconds": (before + after) / 2}
        if forward_images is not None:
            row["forward_images"] = forward_images(out)
            row["forward_passes_equiv"] = forward_images(out) / args.n
        rows.append(row)
        return out

    attr = add(
        "grad-cam maps (for reference)",
        lambda: explain(adapter, x, "gradcam", target=adapter.positive_index),
    )
    maps = attr.maps

    fi = lambda r: r.params["forward_images"]  # noqa: E731
    add(
        "deletion+insertion, MoRF+LeRF, 20 steps, blur (+random ref)",
        lambda: deletion_insertion(adapter, x, maps, replacement="blur"),
        fi,
    )
    add(
        "deletion MoRF only, 20 steps, blur (+random ref)",
        lambda: deletion_insertion(
            adapter, x, maps, modes=("deletion",), orders=("morf",), replacement="blur"
        ),
        fi,
    )
    # The audit's default: ROAD noisy linear imputation per perturbed copy (deletion only).
    road = add(
        "deletion MoRF only, 20 steps, road imputation (audit default)",
        lambda: deletion_insertion(adapter, x, maps, modes=("deletion",), orders=("morf",)),
        fi,
    )
    rows[-1]["verdict"] = road.headline["verdict"]
    rows[-1]["reference_score"] = road.headline["reference_score"]
    add(
        "deletion MoRF only, blur, batch_size=32",
        lambda: deletion_insertion(
            adapter,
            x,
            maps,
            modes=("deletion",),
            orders=("morf",),
            batch_size=32,
            replacement="blur",
        ),
        fi,
    )
    add(
        "deletion MoRF only, blur, batch_size=512",
        lambda: deletion_insertion(
            adapter,
            x,
            maps,
            modes=("deletion",),
            orders=("morf",),
            batch_size=512,
            replacement="blur",
        ),
        fi,
    )
    add("localisation (4 metrics + CIs)", lambda: localisation(maps, masks))
    from xai_audit.quality.sanity import randomisable_layers

    n_layers = len(randomisable_layers(adapter.model))
    add(
        f"sanity check, grad-cam, cascade ({n_layers} layers) + random label",
        lambda: sanity_check(adapter, x, "gradcam"),
    )
    add(
        "sanity check, saliency, cascade + random label",
        lambda: sanity_check(adapter, x, "saliency"),
    )
    attributes = meta[["sex", "age_group", "site"]] if "age_group" in meta else meta
    add("shortcut mass", lambda: shortcut_mass(maps))
    shares = shortcut_mass(maps)
    add(
        "detect_shortcuts (+intersections)",
        lambda: detect_shortcuts(shares, attributes, predicted, intersections=True),
    )

    for r in rows:
        r["x_forward"] = r["seconds"] / r.get("forward_seconds", fwd)
    result = {
        "benchmark": "quality",
        "model": model_desc,
        "n_images": args.n,
        "image_shape": list(x.shape[1:]),
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}",
        "note": "x_forward = seconds / seconds of one batched forward pass over the same images",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    width = max(len(r["metric"]) for r in rows)
    print(f"{'metric':<{width}}  {'seconds':>8}  {'x forward':>9}  {'fwd imgs/img':>12}")
    for r in rows:
        eq = r.get("forward_passes_equiv")
        print(
            f"{r['metric']:<{width}}  {r['seconds']:8.3f}  {r['x_forward']:9.1f}  "
            f"{'' if eq is None else f'{eq:12.0f}'}"
        )
    print(f"wrote {args.out}")
    return result


SANITY_RESULTS = Path(__file__).parent / "results" / "sanity.json"


def sanity_curves(n: int = 16, threads: int = 2, out: Path = SANITY_RESULTS) -> dict[str, Any]:
    """Cascading-randomisation curves of every gradient/CAM method and an edge detector.

    The trained demo CNN on ``n`` synthetic 128 px images (half with a lesion), explaining
    the predicted class: per method, the median similarity after each cascade step (signed
    Spearman decides; |map| Spearman and SSIM too), the verdict's numbers and the
    random-label check. ``python bench/quality.py --sanity``.
    """
    from xai_audit.datasets import make_synthetic_cxr
    from xai_audit.quality import edge_detector
    from xai_audit.quality.sanity import RULE

    torch.set_num_threads(threads)
    adapter, model_desc = _model()
    data = make_synthetic_cxr(200, seed=0)
    y = data.metadata["label"].to_numpy()
    rows = np.r_[np.flatnonzero(y == 1)[: n // 2], np.flatnonzero(y == 0)[: n - n // 2]]
    x = data.images[rows]
    from xai_audit.explain import explain

    def named(method: str, **params: Any) -> Callable[..., Any]:
        def run(a: Any, images: torch.Tensor, targets: np.ndarray) -> Any:
            return explain(a, images, method=method, target=targets, **params)

        return run

    methods: dict[str, Any] = {
        "gradcam": named("gradcam"),
        "saliency": named("saliency"),
        "integrated_gradients": named("integrated_gradients", n_steps=16),
        "guided_backprop": named("guided_backprop"),
        "guided_gradcam": named("guided_gradcam"),
        "smoothgrad": named("smoothgrad", nt_samples=16),
        "edge_detector": edge_detector,
    }
    t0 = time.perf_counter()
    sr = sanity_check(adapter, x, methods, keep_maps=1)
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {
        "benchmark": "sanity_curves",
        "model": model_desc,
        "n_images": int(len(x)),
        "accuracy": float((adapter.predict_proba(x).argmax(1) == y[rows]).mean()),
        "rule": RULE.format(threshold=sr.params["threshold"]),
        "seconds": seconds,
        **sr.to_dict(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    steps = sr.steps[sr.steps["step"] > 0]
    layers = list(steps[steps["method"] == "gradcam"]["layer"])
    print(f"{model_desc}, {len(x)} images; cascade: {' > '.join(layers)}")
    for metric in ("spearman", "spearman_abs", "ssim"):
        print(f"\nmedian {metric} per step (output layer first)")
        for name in methods:
            v = steps[steps["method"] == name][f"{metric}_median"].to_numpy()
            print(f"  {name:22s}" + " ".join(f"{a:6.2f}" for a in v))
    print("\nverdicts")
    for name in methods:
        vd = sr.verdicts[name]
        lab = vd.get("label") or {}
        print(
            f"  {name:22s} {'PASS' if sr.passed[name] else 'FAIL'}  top-half min "
            f"{vd['top']:.2f}  mean {vd['auc']:.2f}  final {vd['final']:.2f}  label "
            f"{lab.get('status')} ({lab.get('similarity', float('nan')):.2f})"
        )
    print(f"wrote {out} ({seconds:.0f} s)")
    return result


if __name__ == "__main__":
    main()
