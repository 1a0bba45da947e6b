"""Shared helpers for the audit and report tests (a tiny model and a small data set)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from xai_audit.model import ModelAdapter

#: Fast settings for test audits (small samples, few resamples).
FAST = dict(
    methods={"gradcam": {}, "integrated_gradients": {"n_steps": 4}},
    n_boot=50,
    min_group_size=8,
    quality={"sample_size": 8, "sanity_sample_size": 4, "n_steps": 4},
    exemplars_per_cell=1,
    batch_size=16,
)


class TinyCNN(nn.Module):
    """A few thousand parameters: quick to explain, still has a spatial layer for Grad-CAM."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def tiny_model(seed: int = 0) -> ModelAdapter:
    """A seeded TinyCNN wrapped for a binary audit (classes normal / lesion)."""
    torch.manual_seed(seed)
    net = TinyCNN()
    with torch.no_grad():  # make the lesion score depend on brightness so both classes occur
        net.head.bias.zero_()
    return ModelAdapter(
        net,
        class_names=["normal", "lesion"],
        positive_class="lesion",
        device="cpu",
        batch_size=16,
        name="tiny",
        version="0",
    )


def small_dataset(root: Path, n: int = 64, size: int = 32, seed: int = 0) -> Path:
    """A small synthetic data set on disk (the demo generator); returns the manifest path."""
    from xai_audit.datasets import generate_demo_dataset

    return generate_demo_dataset(root, n_samples=n, image_size=size, seed=seed)


def arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Exact equality, NaN == NaN."""
    return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
