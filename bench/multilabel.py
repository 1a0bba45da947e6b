"""Multi-label audit benchmark: a small CNN trained on the generator's multi-label mode.

For each seed: generate a training set and a separate audit set with
:func:`xai_audit.datasets.make_multilabel_cxr` (lesion; effusion fainter for sex=F; nodule),
train :class:`~xai_audit.model.demo.DemoCNN` with three sigmoid outputs for a fixed number of
epochs, audit the audit set on sex and site (Grad-CAM, every label explained) and record which
labels get a disparity finding. The same with ``control=True`` (nothing injected) must flag
nothing. Results go to ``bench/results/multilabel.json``; the numbers in README's
"Multi-label models" section come from it (seed 0: the effect flagged on effusion only,
the control flags nothing; about 18 min per run on two heavily loaded CPU cores, most of it
training).

Run: ``python bench/multilabel.py [--seeds 0 1 2] [--n-train 1200] [--n-audit 800]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xai_audit import Audit, ModelAdapter
from xai_audit.data import manifest_from_arrays
from xai_audit.datasets import make_multilabel_cxr
from xai_audit.model.demo import DemoCNN

ROOT = Path(__file__).resolve().parent


def train(data, epochs: int, seed: int) -> nn.Module:
    """DemoCNN with one logit per label, BCE, Adam; seeded."""
    torch.manual_seed(seed)
    net = DemoCNN(n_classes=len(data.label_names))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x = torch.from_numpy(data.images)
    y = torch.from_numpy(data.labels.astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return net.eval()


def one_run(seed: int, control: bool, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    tr = make_multilabel_cxr(args.n_train, 64, seed=1000 + seed, control=control)
    net = train(tr, args.epochs, seed)
    t_train = time.perf_counter() - t0
    te = make_multilabel_cxr(args.n_audit, 64, seed=2000 + seed, control=control)
    meta = te.metadata
    man = manifest_from_arrays(
        te.images,
        te.labels,
        meta[["sex", "age_group", "site"]],
        patient_ids=meta["patient_id"],
        label_names=te.label_names,
    )
    model = ModelAdapter(net, class_names=te.label_names, multi_label=True, device="cpu")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = Audit(
            model,
            man,
            ["sex", "site"],
            ["gradcam"],
            n_boot=500,
            quality={"sanity": False, "faithfulness": False},
            output_dir=Path(tmp) / "audit",
        ).run(progress=False)
    flagged = [
        {"label": f["label"], "where": f["where"], "title": f["title"]}
        for f in res.findings
        if f["kind"] == "disparity"
    ]
    sens = {}
    bg = res.subgroups["by_group"]
    for lab in te.label_names:
        rows = bg[
            (bg["label"] == lab) & (bg["attribute"] == "sex") & (bg["metric"] == "sensitivity")
        ]
        sens[lab] = {str(r.group): round(float(r.value), 3) for r in rows.itertuples()}
    auroc = {e["name"]: round(e["auroc"], 3) for e in res.data_summary["labels"]}
    return {
        "seed": seed,
        "control": control,
        "flagged": flagged,
        "sensitivity_by_sex": sens,
        "auroc": auroc,
        "seconds_train": round(t_train, 1),
        "seconds_total": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-train", type=int, default=1200)
    p.add_argument("--n-audit", type=int, default=800)
    p.add_argument("--epochs", type=int, default=6)
    args = p.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    runs = []
    for seed in args.seeds:
        for control in (False, True):
            r = one_run(seed, control, args)
            print(json.dumps(r), flush=True)
            runs.append(r)
    out = ROOT / "results" / "multilabel.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"commit": commit, "args": vars(args), "runs": runs}, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
