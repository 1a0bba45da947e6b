"""Overlay helpers return matplotlib Figures built without pyplot."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from xai_audit.explain import compare_methods, overlay, slice_grid

RNG = np.random.default_rng(0)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_overlay_and_compare() -> None:
    image = torch.rand(1, 16, 16)
    heat = RNG.random((16, 16)).astype(np.float32)
    fig = overlay(image, heat, cmap="magma", alpha=0.4, title="gradcam", colorbar=True)
    assert isinstance(fig, Figure) and _png(fig).startswith(b"\x89PNG")
    fig = compare_methods(image, {"gradcam": heat, "ig": -heat}, normalize="abs", title="case 1")
    assert len(fig.axes) == 3 and _png(fig)
    with pytest.raises(ValueError, match="does not match"):
        overlay(image, np.zeros((8, 8)))


def test_overlay_into_existing_axes() -> None:
    fig = Figure()
    ax = fig.add_subplot(1, 2, 2)
    assert overlay(RNG.random((3, 8, 8)), RNG.random((8, 8)), ax=ax) is fig


def test_slice_grid() -> None:
    volume, heat = RNG.random((1, 10, 12, 12)), RNG.random((10, 12, 12))
    fig = slice_grid(volume, heat, n_slices=6, axis=0, n_cols=3)
    assert sum(1 for ax in fig.axes if ax.images) == 6 and _png(fig)
    assert slice_grid(volume[0], None, n_slices=4, axis=2).axes
