"""Occlusion (Zeiler & Fergus 2014) via captum: the score drop when a patch is hidden."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from captum.attr import Occlusion

from ..model import ModelAdapter
from .base import Explainer, reduce_channels, register_method
from .baselines import make_baseline


def _per_axis(value: int | Sequence[int], n_spatial: int, name: str) -> tuple[int, ...]:
    """An int or per-axis sequence as ``n_spatial`` ints (captum's leading channel entry dropped)."""
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return (int(value),) * n_spatial
    values = tuple(int(v) for v in value)
    if len(values) == n_spatial + 1:  # captum style (C, h, w): the channel entry is ours
        values = values[1:]
    if len(values) != n_spatial or min(values) < 1:
        raise ValueError(
            f"{name} must be a positive int or {n_spatial} positive ints (one per spatial axis), "
            f"got {value!r}."
        )
    return values


@register_method
class OcclusionMethod(Explainer):
    """Occlusion with square (2D) or cubic (3D) patches covering all channels.

    Parameters
    ----------
    patch_size : int or tuple, optional
        Patch extent per spatial axis (alias ``sliding_window_shapes``). Default: one eighth of
        each axis (at least 1).
    stride : int or tuple, optional
        Step between patches (alias ``strides``). Default: half the patch (at least 1).
    baseline : {"zeros", "blur", "mean"}, float or array, default "zeros"
        What a hidden patch shows.
    blur_sigma : float, default 5.0
    perturbations_per_eval : int, optional
        Occluded copies of the batch per forward pass (default: adapter batch size // N).
    channel_reduction : {"sum", "abs_sum", "mean"}, default "sum"
        Every channel of a pixel gets the same value, so "mean" gives the plain score drop.
    """

    removes_own_hooks = True  # captum's and ours go in finally clauses

    name = "occlusion"
    aliases = ("occlusion_sensitivity",)
    description = "Occlusion: score drop under a sliding patch (captum)."
    defaults: ClassVar[dict[str, Any]] = {
        "patch_size": None,
        "stride": None,
        "baseline": "zeros",
        "blur_sigma": 5.0,
        "perturbations_per_eval": None,
        "channel_reduction": "mean",
    }
    param_aliases: ClassVar[dict[str, str]] = {
        "sliding_window_shapes": "patch_size",
        "strides": "stride",
        "baselines": "baseline",
    }

    def attribute(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        p = self.params
        spatial = tuple(x.shape[2:])
        if p["patch_size"] is None:
            patch = tuple(max(1, s // 8) for s in spatial)
        else:
            patch = _per_axis(p["patch_size"], len(spatial), "patch_size")
        if any(k > s for k, s in zip(patch, spatial)):
            raise ValueError(f"patch_size {patch} is larger than the image {spatial}.")
        if p["stride"] is None:
            stride = tuple(max(1, k // 2) for k in patch)
        else:
            stride = _per_axis(p["stride"], len(spatial), "stride")
        baseline = make_baseline(
            p["baseline"], x, self.batch_indices(x), blur_sigma=p["blur_sigma"]
        )
        per_eval = p["perturbations_per_eval"] or max(1, adapter.batch_size // x.shape[0])
        with torch.no_grad():
            attr = Occlusion(adapter.module).attribute(
                x,
                sliding_window_shapes=(x.shape[1], *patch),
                strides=(x.shape[1], *stride),
                baselines=baseline,
                target=targets,
                perturbations_per_eval=int(per_eval),
            )
        return reduce_channels(attr, p["channel_reduction"])
