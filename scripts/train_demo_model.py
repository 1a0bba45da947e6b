"""Train the bundled demo CNN on the synthetic ground-truth data (seeded, reproducible).

Usage::

    python scripts/train_demo_model.py            # writes xai_audit/model/weights/demo_cnn.{pt,json}

The model must learn the lesion *and*, at the marker site, the corner-marker shortcut, so
that audits have something real to find. The script measures both on held-out data and
records them in ``demo_cnn.json``: test AUROC, sensitivity per age group (the injected
disparity) and the score change when the marker is removed from / pasted onto images (the
shortcut).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from xai_audit.datasets import make_synthetic_cxr
from xai_audit.model.demo import CARD_FILE, WEIGHTS_FILE, DemoCNN

VERSION = "1.0.0"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "xai_audit" / "model" / "weights"


def predict(net: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Positive-class probabilities, batched."""
    net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size])
            out.append(torch.softmax(net(x), dim=1)[:, 1].numpy())
    return np.concatenate(out)


def marker_box(data) -> tuple[slice, slice]:
    """Bounding box (rows, cols) of the marker region."""
    region = data.marker_region()
    rows, cols = np.nonzero(region)
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


def shortcut_evidence(net: nn.Module, data) -> dict[str, float]:
    """Score changes when the corner marker is removed from marked images or pasted on others.

    Removal fills the marker's box with the same-sized box from the top-right corner (also
    background, outside the body); pasting copies a marked image's box onto unmarked
    negatives from sites without markers.
    """
    rows, cols = marker_box(data)
    meta = data.metadata
    marked = np.flatnonzero(meta["marker"].to_numpy() == 1)
    w = data.images.shape[-1]
    mirror = slice(w - cols.stop, w - cols.start)
    removed = data.images[marked].copy()
    removed[:, :, rows, cols] = data.images[marked][:, :, rows, mirror]
    drop = predict(net, data.images[marked]) - predict(net, removed)
    clean_neg = np.flatnonzero(
        (meta["marker"].to_numpy() == 0)
        & (meta["label"].to_numpy() == 0)
        & (meta["site"].to_numpy() != "C")
    )
    pasted = data.images[clean_neg].copy()
    pasted[:, :, rows, cols] = data.images[marked[0]][:, rows, cols][None]
    rise = predict(net, pasted) - predict(net, data.images[clean_neg])
    return {
        "n_marked": int(len(marked)),
        "mean_score_drop_when_marker_removed": float(drop.mean()),
        "n_clean_negatives": int(len(clean_neg)),
        "mean_score_rise_when_marker_pasted_on_negatives": float(rise.mean()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--n-val", type=int, default=800)
    parser.add_argument("--n-test", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)  # fixed: float summation order must not depend on the host
    rng = np.random.default_rng(args.seed)
    data_seeds = {"train": args.seed + 1, "val": args.seed + 2, "test": args.seed + 3}
    t0 = time.perf_counter()
    train = make_synthetic_cxr(args.n_train, seed=data_seeds["train"])
    val = make_synthetic_cxr(args.n_val, seed=data_seeds["val"])
    test = make_synthetic_cxr(args.n_test, seed=data_seeds["test"])
    print(f"data generated in {time.perf_counter() - t0:.1f}s")

    net = DemoCNN()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = int(np.ceil(args.n_train / 64))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=args.epochs * steps_per_epoch
    )
    x_all = torch.from_numpy(train.images)
    y_all = torch.from_numpy(train.metadata["label"].to_numpy()).long()
    loss_fn = nn.CrossEntropyLoss()
    t_train = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        order = torch.from_numpy(rng.permutation(args.n_train))
        total = 0.0
        for start in range(0, args.n_train, 64):
            idx = order[start : start + 64]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x_all[idx]), y_all[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        val_auc = roc_auc_score(val.metadata["label"], predict(net, val.images))
        print(
            f"epoch {epoch + 1}/{args.epochs} loss {total / args.n_train:.4f} "
            f"val AUROC {val_auc:.4f} ({time.perf_counter() - t_train:.0f}s)"
        )
    train_seconds = time.perf_counter() - t_train

    # Operating threshold: Youden's J on the validation set.
    val_scores = predict(net, val.images)
    fpr, tpr, thr = roc_curve(val.metadata["label"], val_scores)
    threshold = float(thr[np.argmax(tpr - fpr)])

    meta = test.metadata
    scores = predict(net, test.images)
    y = meta["label"].to_numpy()
    pred = scores >= threshold
    sens_by_age = {
        g: float(pred[(y == 1) & (meta["age_group"] == g).to_numpy()].mean())
        for g in sorted(meta["age_group"].unique())
    }
    auroc_by_site = {
        s: float(
            roc_auc_score(y[(meta["site"] == s).to_numpy()], scores[(meta["site"] == s).to_numpy()])
        )
        for s in sorted(meta["site"].unique())
    }
    evidence = shortcut_evidence(net, test)
    args.out.mkdir(parents=True, exist_ok=True)
    weights_path = args.out / WEIGHTS_FILE
    torch.save(net.state_dict(), weights_path)
    card = {
        "name": "xai_audit demo CNN",
        "version": VERSION,
        "architecture": "DemoCNN (4 conv blocks, GAP, linear; 2 logits: normal, lesion)",
        "n_parameters": int(sum(p.numel() for p in net.parameters())),
        "class_names": ["normal", "lesion"],
        "training": {
            "script": "scripts/train_demo_model.py",
            "seed": args.seed,
            "data_seeds": data_seeds,
            "n_train": args.n_train,
            "n_val": args.n_val,
            "n_test": args.n_test,
            "epochs": args.epochs,
            "optimizer": "AdamW lr 3e-3 one-cycle, wd 1e-4, batch 64",
            "augmentation": "none (flips would move the corner marker)",
            "seconds": round(train_seconds, 1),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "test_metrics": {
            "auroc": float(roc_auc_score(y, scores)),
            "threshold_youden_on_val": threshold,
            "sensitivity": float(pred[y == 1].mean()),
            "specificity": float(1 - pred[y == 0].mean()),
            "sensitivity_by_age_group": sens_by_age,
            "auroc_by_site": auroc_by_site,
        },
        "shortcut_evidence": evidence,
        "intended_use": "Demonstration and testing of xai_audit only. Not a medical device.",
        "weights_sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
    }
    (args.out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["test_metrics"], indent=2))
    print(json.dumps(evidence, indent=2))


if __name__ == "__main__":
    main()
