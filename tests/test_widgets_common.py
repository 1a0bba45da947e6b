"""Shared, cheap helpers for the widget tests (no tests here): a small data set, a fake explainer.

The fake explainer is deterministic numpy (no autograd) so that widget logic is tested
independently of the explainers' speed and correctness; one test uses the real one.
"""

from __future__ import annotations

import numpy as np
import torch

from xai_audit.datasets import make_synthetic_cxr
from xai_audit.model import DemoCNN, ModelAdapter


class FakeExplain:
    """``explain``-like: "bright" = the image, "dark" = its negative; scaled by target+1."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, model, images, method="bright", target=None):
        x = np.asarray(images, dtype=np.float32)[:, 0]
        self.calls.append((method, int(target), len(x)))
        base = x if method == "bright" else 1.0 - x
        if target == 0:
            base = base[..., ::-1].copy()  # a different map for the other class
        return base * (int(target) + 1)


def small_model() -> ModelAdapter:
    torch.manual_seed(0)
    return ModelAdapter(DemoCNN(), class_names=["normal", "lesion"], device="cpu")


def small_data(n: int = 120, size: int = 32, **kwargs):
    return make_synthetic_cxr(n, image_size=size, seed=3, **kwargs)


def median_threshold(source) -> float:
    """A threshold splitting the (untrained model's, near-constant) scores in half."""
    return float(np.median(source.table["score"]))


def two_method_source(model, data):
    """A CaseSource with methods "bright" and "dark", thresholded at the median score."""
    from xai_audit.widgets import CaseSource

    probe = CaseSource.from_model(
        model, data.images, data.metadata, methods=["bright"], explain_fn=FakeExplain()
    )
    return CaseSource.from_model(
        model,
        data.images,
        data.metadata,
        masks=data.masks,
        methods=["bright", "dark"],
        threshold=median_threshold(probe),
        explain_fn=FakeExplain(),
    )
