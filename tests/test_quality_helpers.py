"""Shared helpers for the quality tests: known-answer models and hand-written explainers.

Kept independent of ``xai_audit.explain`` so that the quality tests check the metrics, not
the explainers; one integration test elsewhere uses the real ``explain``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from xai_audit.model import ModelAdapter


class RegionModel(nn.Module):
    """Two logits (0, k * (mean of a fixed square - 0.5)): only that square matters."""

    def __init__(self, box: tuple[int, int, int, int] = (8, 16, 8, 16), gain: float = 20.0):
        super().__init__()
        self.box = box
        self.gain = gain
        self.dummy = nn.Parameter(torch.zeros(1))  # so hashing/copying has something to see

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r0, r1, c0, c1 = self.box
        z = self.gain * (x[:, 0, r0:r1, c0:c1].mean(dim=(1, 2)) - 0.5) + 0 * self.dummy
        return torch.stack([torch.zeros_like(z), z], dim=1)


def region_data(n: int = 16, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Images with a bright known square on a darker random background, and its mask."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g) * 0.5
    x[:, :, 8:16, 8:16] = 1.0
    mask = np.zeros((n, size, size), dtype=bool)
    mask[:, 8:16, 8:16] = True
    return x, mask


class SmallCNN(nn.Module):
    """A small CNN for sanity checks (conv layers, then a linear head)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.conv3(x))
        return self.head(torch.flatten(self.gap(x), 1))


def blob_images(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random blobs with edges (so an edge detector has structure to find)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        for _ in range(3):
            cy, cx = rng.uniform(4, size - 4, 2)
            r = rng.uniform(3, 7)
            out[i, 0] += ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) * rng.uniform(0.3, 0.7)
        out[i, 0] += rng.normal(0, 0.02, (size, size))
    return torch.from_numpy(out)


def _targets(targets: np.ndarray, n: int) -> torch.Tensor:
    return torch.as_tensor(np.broadcast_to(np.asarray(targets), (n,)).copy(), dtype=torch.long)


def gradient_explainer(
    adapter: ModelAdapter, images: torch.Tensor, targets: np.ndarray
) -> np.ndarray:
    """|d logit_target / d input|, summed over channels."""
    x = adapter.prepare(images).clone().requires_grad_(True)
    logits = adapter.forward(x)
    sel = logits.gather(1, _targets(targets, len(x))[:, None].to(logits.device)).sum()
    (grad,) = torch.autograd.grad(sel, x)
    return grad.abs().sum(dim=1).cpu().numpy()


def gradcam_explainer(
    adapter: ModelAdapter, images: torch.Tensor, targets: np.ndarray
) -> np.ndarray:
    """Grad-CAM by hand on the adapter's target layer, upsampled to the input size."""
    x = adapter.prepare(images)
    _, layer = adapter.target_layer(x[:1])
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        out.retain_grad()
        store["a"] = out

    handle = layer.register_forward_hook(hook)
    try:
        logits = adapter.forward(x)
        sel = logits.gather(1, _targets(targets, len(x))[:, None].to(logits.device)).sum()
        (grad,) = torch.autograd.grad(sel, store["a"])
    finally:
        handle.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * store["a"]).sum(dim=1, keepdim=True))
    cam = nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return cam[:, 0].detach().cpu().numpy()


def test_helpers_known_answers():
    x, mask = region_data(4)
    adapter = ModelAdapter(RegionModel(), class_names=["a", "b"], device="cpu")
    proba = adapter.predict_proba(x)
    assert (proba[:, 1] > 0.99).all()
    grad = gradient_explainer(adapter, x, np.ones(4, dtype=int))
    assert grad.shape == (4, 32, 32)
    assert (grad[~mask] == 0).all() and (grad[mask] > 0).all()
    cam = gradcam_explainer(
        ModelAdapter(SmallCNN(), device="cpu"), blob_images(2), np.zeros(2, dtype=int)
    )
    assert cam.shape == (2, 32, 32) and (cam >= 0).all()
