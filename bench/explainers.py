"""Throughput of xai_audit's explainers, with ratios against direct library calls.

    python bench/explainers.py [--quick] [--size 128] [--device cpu|cuda]

Models: MONAI DenseNet121 (2D, 1 input channel, 2 outputs; the DenseNet-121-sized model) and
the demo CNN (the small model; random weights when the trained ones are absent: speed does
not depend on them). Images are 1 x S x S (S=128 by default to keep a CPU run short; pass
``--size 224`` for the usual ImageNet size).

For every method it reports images/s of ``explain()``. Two methods are compared with
baselines measured in the same run, interleaved (ours, baseline, ours, ...) so that load
on a shared machine affects both alike; the median of the repeats is used:

- Grad-CAM vs captum's ``LayerGradCam`` + bilinear upsampling called directly (target
  >= 0.95x), and vs a bare forward + backward pass stopped at the target layer;
- Integrated Gradients vs captum's ``IntegratedGradients`` with the same ``n_steps`` and
  ``internal_batch_size`` (target >= 1.0x).

Baselines get the same explicit targets (captum needs them); explain() is also timed with
``target=None`` (predicted class), which Grad-CAM reads from its own forward pass.
Results go to bench/results/explainers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captum.attr import IntegratedGradients, LayerGradCam  # noqa: E402

from xai_audit.explain import explain  # noqa: E402
from xai_audit.model import DemoCNN, ModelAdapter  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "explainers.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: bool = True
) -> dict[str, float]:
    """Median seconds per call of each function, run in alternation after one warm-up.

    The order rotates every round, so that each function runs equally often in each
    position: the call after a heavy one (e.g. integrated gradients freeing hundreds of MB)
    runs on cold caches and was measured up to 15 % slower for it (demo CNN at 64 px: the
    same Grad-CAM call 0.83x captum first after IG, 0.97x second).
    """
    for fn in fns.values() if warmup else ():
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def layer_forward_backward(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """The floor for any Grad-CAM: one forward, backward to the layer output only."""
    stash: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        leaf = out.detach().requires_grad_()
        stash["a"] = leaf
        return leaf.clone()

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x)
            (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), stash["a"])
    finally:
        handle.remove()
    return grad


def bench_model(
    label: str,
    net: nn.Module,
    layer_name: str,
    x: torch.Tensor,
    device: torch.device,
    repeats: int,
    ig_steps: int,
    ig_batch: int,
    other_methods: dict[str, dict],
) -> dict:
    net = net.to(device).eval()
    x = x.to(device)
    adapter = ModelAdapter(net, target_layer=layer_name, device=device)
    layer = dict(net.named_modules())[layer_name]
    with torch.no_grad():
        targets = net(x).argmax(1)
    n = x.shape[0]
    size = tuple(x.shape[2:])
    t_list = targets.tolist()

    def captum_gradcam():
        cam = LayerGradCam(net, layer).attribute(x, target=targets, relu_attributions=True)
        return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)

    def frozen_floor():
        # parameters frozen as explain() does: the cheapest possible pass
        for p in net.parameters():
            p.requires_grad_(False)
        try:
            return layer_forward_backward(net, layer, x, targets)
        finally:
            for p in net.parameters():
                p.requires_grad_(True)

    cam_times = interleaved(
        {
            "explain_gradcam": lambda: explain(adapter, x, "gradcam", target=t_list),
            "explain_gradcam_predicted": lambda: explain(adapter, x, "gradcam"),
            "captum_layergradcam_upsample": captum_gradcam,
            "forward_backward_to_layer": frozen_floor,
        },
        # CAM calls take tens of milliseconds on a CPU: many repeats, or the median is noise.
        repeats * 4,
        device,
    )

    ig_params = {"n_steps": ig_steps, "internal_batch_size": ig_batch}
    ig_times = interleaved(
        {
            "explain_ig": lambda: explain(adapter, x, "ig", target=t_list, **ig_params),
            "captum_ig": lambda: IntegratedGradients(net).attribute(
                x,
                baselines=torch.zeros_like(x),
                target=targets,
                n_steps=ig_steps,
                internal_batch_size=ig_batch,
            ),
        },
        max(3, repeats // 2),
        device,
    )

    per_method = {}
    for method, params in other_methods.items():
        per_method[method] = interleaved(
            {method: lambda m=method, p=params: explain(adapter, x, m, target=t_list, **p)},
            1,
            device,
            warmup=False,
        )[method]

    def ips(seconds: float) -> float:
        return round(n / seconds, 2)

    out = {
        "model": label,
        "image_shape": list(x.shape[1:]),
        "batch": n,
        "target_layer": layer_name,
        "ig": ig_params,
        "seconds_per_batch": {
            k: round(v, 4) for k, v in {**cam_times, **ig_times, **per_method}.items()
        },
        "images_per_s": {k: ips(v) for k, v in {**cam_times, **ig_times, **per_method}.items()},
        "ratios": {
            "gradcam_vs_captum_layergradcam": round(
                cam_times["captum_layergradcam_upsample"] / cam_times["explain_gradcam"], 3
            ),
            "gradcam_predicted_vs_captum_layergradcam": round(
                cam_times["captum_layergradcam_upsample"] / cam_times["explain_gradcam_predicted"],
                3,
            ),
            "gradcam_vs_forward_backward_to_layer": round(
                cam_times["forward_backward_to_layer"] / cam_times["explain_gradcam"], 3
            ),
            "ig_vs_captum_ig": round(ig_times["captum_ig"] / ig_times["explain_ig"], 3),
        },
    }
    return out


MATRIX_RESULTS = Path(__file__).resolve().parent / "results" / "explainers_matrix.json"


def matrix_nets() -> list[tuple[str, nn.Module, str]]:
    """The demo CNN, a ResNet-like and a DenseNet-like net (MONAI), 1 input channel."""
    from monai.networks.nets import DenseNet121, resnet18

    torch.manual_seed(0)
    return [
        ("DemoCNN", DemoCNN(), "features.block4"),
        (
            "ResNet-18 (MONAI)",
            resnet18(spatial_dims=2, n_input_channels=1, num_classes=2),
            "layer4",
        ),
        (
            "DenseNet-121 (MONAI)",
            DenseNet121(spatial_dims=2, in_channels=1, out_channels=2),
            "class_layers.relu",
        ),
    ]


def matrix_cell(
    label: str,
    net: nn.Module,
    layer_name: str,
    size: int,
    batch: int,
    ig_steps: int,
    repeats: int,
    device: torch.device,
) -> dict:
    """One net at one size: interleaved explain() / captum timings and their ratios."""
    # Eval mode, as a model under audit is: captum then explains the same function as
    # explain() (a train-mode BatchNorm would use batch statistics and update its buffers).
    net = net.eval()
    layer = dict(net.named_modules())[layer_name]
    adapter = ModelAdapter(net, target_layer=layer_name, device=device)
    torch.manual_seed(size)
    x = torch.rand(batch, 1, size, size, device=device)
    with torch.no_grad():
        logits = net(x)
    targets = logits.argmax(1)
    t_list = targets.tolist()
    np_logits = logits.cpu().numpy()

    def captum_gradcam():
        cam = LayerGradCam(net, layer).attribute(x, target=targets)
        return F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)

    cam = interleaved(
        {
            "explain_gradcam_adapter": lambda: explain(adapter, x, "gradcam", target=t_list),
            "explain_gradcam_bare": lambda: explain(
                net, x, "gradcam", target=t_list, target_layer=layer_name
            ),
            "explain_gradcam_bare_auto_layer": lambda: explain(net, x, "gradcam", target=t_list),
            "captum_layergradcam": captum_gradcam,
        },
        repeats * 2,
        device,
    )
    ig = interleaved(
        {
            "explain_ig": lambda: explain(adapter, x, "ig", target=t_list, n_steps=ig_steps),
            "explain_ig_with_logits": lambda: explain(
                adapter, x, "ig", target=t_list, n_steps=ig_steps, logits=np_logits
            ),
            "captum_ig": lambda: IntegratedGradients(net).attribute(
                x, baselines=torch.zeros_like(x), target=targets, n_steps=ig_steps
            ),
        },
        repeats,
        device,
    )
    # At IG's default 50 steps (small inputs only: a 224 px DenseNet call takes seconds), the
    # no-grad forward explain() runs for the scores when not given the logits is 1/150 of
    # the work instead of 1/12: the price of the scores at the usual setting.
    ig_default = {}
    if size <= 64:
        ig_default = interleaved(
            {
                "explain_ig_50_steps": lambda: explain(adapter, x, "ig", target=t_list, n_steps=50),
                # explain() passes 32 scaled images at a time (the adapter's batch size, so
                # that memory does not grow with the steps): captum gets the same chunks.
                "captum_ig_50_steps": lambda: IntegratedGradients(net).attribute(
                    x,
                    baselines=torch.zeros_like(x),
                    target=targets,
                    n_steps=50,
                    internal_batch_size=max(batch, adapter.batch_size),
                ),
            },
            max(3, repeats // 3),
            device,
        )
    ratios = {}
    if ig_default:
        ratios["ig_50_steps"] = ig_default["captum_ig_50_steps"] / ig_default["explain_ig_50_steps"]
    return {
        "model": label,
        "size": size,
        "batch": batch,
        "ig_steps": ig_steps,
        "seconds": {k: round(v, 5) for k, v in {**cam, **ig, **ig_default}.items()},
        "ratios_vs_captum": {
            "gradcam_adapter": cam["captum_layergradcam"] / cam["explain_gradcam_adapter"],
            "gradcam_bare": cam["captum_layergradcam"] / cam["explain_gradcam_bare"],
            "gradcam_bare_auto_layer": cam["captum_layergradcam"]
            / cam["explain_gradcam_bare_auto_layer"],
            "ig": ig["captum_ig"] / ig["explain_ig"],
            "ig_with_logits": ig["captum_ig"] / ig["explain_ig_with_logits"],
            **ratios,
        },
        "load_average": os.getloadavg(),
    }


def matrix(
    sizes: tuple[int, ...], batch: int, ig_steps: int, repeats: int, device: torch.device
) -> dict:
    """Per-call overhead against captum on small batches (the issue-17 targets).

    For each net and image size, interleaved in one loop: ``explain()`` through a
    ``ModelAdapter`` and on the bare module (target layer cached after the first call),
    captum ``LayerGradCam`` + upsampling; ``explain()`` IG without and with the logits, captum
    ``IntegratedGradients`` with the same steps (one internal batch, as both default to).
    """
    rows = []
    for label, net, layer_name in matrix_nets():
        net = net.to(device).eval()
        for size in sizes:
            row = matrix_cell(label, net, layer_name, size, batch, ig_steps, repeats, device)
            rows.append(row)
            r = row["ratios_vs_captum"]
            print(
                f"[matrix] {label:<22} {size:>4}px  Grad-CAM adapter {r['gradcam_adapter']:.2f}x"
                f"  bare {r['gradcam_bare']:.2f}x  bare+auto layer "
                f"{r['gradcam_bare_auto_layer']:.2f}x  IG {r['ig']:.2f}x  IG+logits "
                f"{r['ig_with_logits']:.2f}x"
                + (f"  IG 50 steps {r['ig_50_steps']:.2f}x" if "ig_50_steps" in r else "")
                + f"  (load {row['load_average'][0]:.1f})",
                flush=True,
            )
    return {"rows": rows, "targets": {"gradcam": 1.0, "ig": 1.0}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small images, few repeats")
    parser.add_argument("--size", type=int, default=None, help="image side (default 128)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--matrix",
        action="store_true",
        help="only the per-call overhead matrix: demo CNN, ResNet-18, DenseNet-121 at 64 and "
        "224 px, batch 2, IG 4 steps, adapter and bare module (bench/results/"
        "explainers_matrix.json)",
    )
    args = parser.parse_args(argv)
    if args.matrix:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if args.threads:
            torch.set_num_threads(args.threads)
        start = os.getloadavg()
        out = matrix((64, 224), 2, 4, args.repeats or 12, device)
        out["load_average_start"], out["load_average_end"] = start, os.getloadavg()
        out["torch"], out["cpu_threads"] = torch.__version__, torch.get_num_threads()
        MATRIX_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        MATRIX_RESULTS.write_text(json.dumps(out, indent=2))
        print(f"written to {MATRIX_RESULTS}")
        return out

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size or (64 if args.quick else 128)
    repeats = args.repeats or (3 if args.quick else 7)
    ig_steps = 16 if args.quick else 32
    torch.manual_seed(0)

    from monai.networks.nets import DenseNet121

    results = {
        "environment": {
            "torch": torch.__version__,
            "device": str(device),
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "cpu_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(),
            "quick": args.quick,
        },
        "models": [],
    }
    gpu = device.type == "cuda"
    configs = [
        (
            "MONAI DenseNet121 (2D)",
            DenseNet121(spatial_dims=2, in_channels=1, out_channels=2),
            "class_layers.relu",
            32 if gpu else 4,
            {"gradcam++": {}, "saliency": {}}
            if args.quick
            else {"gradcam++": {}, "layercam": {}, "saliency": {}, "smoothgrad": {"nt_samples": 4}},
        ),
        (
            "DemoCNN (small)",
            DemoCNN(),
            "features.block4",
            64 if gpu else 16,
            {"gradcam++": {}, "saliency": {}}
            if args.quick
            else {
                "gradcam++": {},
                "hirescam": {},
                "layercam": {},
                "saliency": {},
                "smoothgrad": {"nt_samples": 8},
                "guided_backprop": {},
                "guided_gradcam": {},
                "occlusion": {"patch_size": size // 4, "stride": size // 4},
                "expected_gradients": {"nsamples": 16},
            },
        ),
    ]
    for label, net, layer, batch, others in configs:
        x = torch.rand(batch, 1, size, size)
        print(f"[bench] {label}: batch {batch} x 1 x {size} x {size} on {device} ...", flush=True)
        results["models"].append(
            bench_model(
                label,
                net,
                layer,
                x,
                device,
                repeats,
                ig_steps,
                max(batch, 4 * batch if not gpu else 8 * batch),
                others,
            )
        )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nwritten to {RESULTS}")
    return results


def print_table(results: dict) -> None:
    env = results["environment"]
    print(
        f"\ntorch {env['torch']} on {env['device']} ({env['cpu_threads']} threads), "
        f"load average at start {env['load_average_at_start']}"
    )
    for m in results["models"]:
        print(f"\n{m['model']}  input {m['image_shape']}  batch {m['batch']}  IG {m['ig']}")
        print(f"  {'what':<34}{'images/s':>10}{'s/batch':>10}")
        for k, v in m["images_per_s"].items():
            print(f"  {k:<34}{v:>10}{m['seconds_per_batch'][k]:>10}")
        for k, v in m["ratios"].items():
            print(f"  ratio {k:<40}{v:>8}x")


if __name__ == "__main__":
    main()
