"""Multi-scale embeddings for slice discovery: what the model uses, and what it merely sees.

The penultimate layer of a classifier encodes what the model uses for its decision, averaged
over the image. A hidden factor that hurts the model is often a small object the model was
never meant to use (a tube, a marker, a ruler, a text overlay): global average pooling dilutes
it to a small shift, and its presence is a matter of "somewhere in the image", not "on
average". So the slice embedding adds, for each resolution stage of the network (the last
module output at each spatial size, like the levels of a feature pyramid), each channel's
spatial **maximum** (does a detector fire anywhere?) and **mean**.

On the slice benchmark (``bench/slices.py``) the tube-like device was separable from the
penultimate features alone only as a weak shift (best slice precision 0.36-0.84), and as a
cluster of its own once the first stage's channel maxima were added (precision 0.89-1.0).

Blocks (penultimate, then max and mean per stage) are returned with their widths, so that
:func:`~xai_audit.slices.discover_slices` can give each block equal weight
(``feature_blocks``); a wide stage would otherwise dominate the PCA. Stages wider than
:data:`MAX_STAGE_DIMS` channels are reduced by a fixed, seeded random projection
(Johnson-Lindenstrauss), so that a DenseNet's 1,024-channel stages do not fill the shards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..model.state import eval_mode

#: Widest pooled vector kept per stage; wider ones are randomly projected to this width.
MAX_STAGE_DIMS = 128


def _projection(channels: int, stage: int) -> torch.Tensor:
    """A fixed ``channels x MAX_STAGE_DIMS`` Gaussian projection (same for every batch)."""
    gen = torch.Generator().manual_seed(1_000_003 * stage + channels)
    return torch.randn(channels, MAX_STAGE_DIMS, generator=gen) / MAX_STAGE_DIMS**0.5


def _reduce(v: torch.Tensor, stage: int) -> torch.Tensor:
    return v if v.shape[1] <= MAX_STAGE_DIMS else v @ _projection(v.shape[1], stage)


def stage_embedding(model: Any, images: Any) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features plus per-stage channel maxima and means for one batch.

    Parameters
    ----------
    model : ModelAdapter
    images : array or tensor
        One batch, ``N x C x H x W`` or ``N x C x D x H x W`` (as the adapter reads it).

    Returns
    -------
    features : ndarray of shape (N, F), float32
    blocks : ndarray of shape (B,), int64
        Widths of the consecutive feature blocks: the penultimate features (the input of
        the last ``nn.Linear``; absent when the model has none), then per stage, finest
        first, the channel maxima and the channel means (the last stage's means are left
        out when they have the penultimate's width: a global-average-pooling head's input).
        A model without spatial feature maps (a vision transformer's tokens) gets its
        :meth:`~ModelAdapter.embed` features as a single block.
    """
    x = model.prepare(images)
    n = x.shape[0]
    net: nn.Module = model.model
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    # (spatial shape, channel maxima, channel means) of every feature map, pooled at once so
    # that no activation outlives its layer.
    outputs: list[tuple[tuple[int, ...], torch.Tensor, torch.Tensor]] = []
    penultimate: list[torch.Tensor] = []

    def record(_m: nn.Module, _inputs: Any, out: Any) -> None:
        if (
            isinstance(out, torch.Tensor)
            and out.ndim == x.ndim
            and out.shape[0] == n
            and out.shape != x.shape  # a pixel-space transform, not a feature map
            and int(np.prod(out.shape[2:])) > 1  # a global pool's output, not a map
        ):
            flat = out.detach().float().flatten(2)
            outputs.append((tuple(out.shape[2:]), flat.amax(dim=2), flat.mean(dim=2)))

    def record_linear(_m: nn.Module, inputs: Any, _out: Any) -> None:
        penultimate.append(inputs[0].detach().flatten(1).float())

    handles = [m.register_forward_hook(record) for m in net.modules() if m is not net]
    if linears:
        handles.append(linears[-1].register_forward_hook(record_linear))
    try:
        with eval_mode(net), torch.inference_mode():
            model.forward(x)
    finally:
        for h in handles:
            h.remove()
    # The last output at each spatial size is that stage's result (hooks fire as modules
    # finish, so a container's output comes after its children's).
    last: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
    for shape, vmax, vmean in outputs:
        last[shape] = (vmax, vmean)
    stages = sorted(last.items(), key=lambda kv: -int(np.prod(kv[0])))
    blocks: list[torch.Tensor] = []
    if penultimate:
        blocks.append(penultimate[-1])
    for i, (_shape, (vmax, vmean)) in enumerate(stages):
        blocks.append(_reduce(vmax, 2 * i))
        # The last stage's mean is the penultimate vector itself for the usual global
        # average pooling + linear head (same width): not counted twice.
        if not (penultimate and i == len(stages) - 1 and vmean.shape[1] == blocks[0].shape[1]):
            blocks.append(_reduce(vmean, 2 * i + 1))
    if not stages:
        blocks = [torch.as_tensor(np.asarray(model.embed(images), dtype=np.float32))]
    feats = torch.cat([b.cpu() for b in blocks], dim=1).numpy().astype(np.float32, copy=False)
    widths = np.array([b.shape[1] for b in blocks], dtype=np.int64)
    return feats, widths
