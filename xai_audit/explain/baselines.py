"""Reference inputs ("baselines") and reproducible per-image noise for attribution methods.

Random draws are seeded per image (``seed + global image index``), so an image gets the same
baseline or noise whether it is explained alone or inside any batch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

BASELINE_NAMES = ("zeros", "blur", "uniform", "mean")


def item_generators(indices: torch.Tensor, seed: int) -> list[torch.Generator]:
    """One CPU generator per image, seeded by its position in the whole input."""
    gens = []
    for i in indices.tolist():  # one generator per image: that is what makes draws batch-free
        g = torch.Generator()
        g.manual_seed(int(seed) * 1_000_003 + int(i))
        gens.append(g)
    return gens


def per_item_randn(
    shape: tuple[int, ...], indices: torch.Tensor, seed: int, device: torch.device
) -> torch.Tensor:
    """Standard normal noise ``N x *shape`` with each image's draw fixed by its index."""
    gens = item_generators(indices, seed)
    return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)


def per_item_rand(
    shape: tuple[int, ...], indices: torch.Tensor, seed: int, device: torch.device
) -> torch.Tensor:
    """Uniform ``[0, 1)`` noise ``N x *shape`` with each image's draw fixed by its index."""
    gens = item_generators(indices, seed)
    return torch.stack([torch.rand(shape, generator=g) for g in gens]).to(device)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``N x C x *spatial`` (2D or 3D), reflect-padded."""
    if sigma <= 0:
        return x.clone()
    radius = max(1, int(math.ceil(3 * sigma)))
    coords = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (coords / sigma) ** 2)
    kernel = kernel / kernel.sum()
    n_spatial = x.ndim - 2
    channels = x.shape[1]
    conv = F.conv2d if n_spatial == 2 else F.conv3d
    out = x
    for axis in range(n_spatial):
        size = out.shape[2 + axis]
        r = min(radius, size - 1)  # reflect padding needs pad < size
        k = kernel[radius - r : radius + r + 1]
        shape = [1, 1] + [1] * n_spatial
        shape[2 + axis] = k.numel()
        weight = k.reshape(shape).expand(channels, *shape[1:]).contiguous()
        pad = [0, 0] * n_spatial
        pad[2 * (n_spatial - 1 - axis)] = r
        pad[2 * (n_spatial - 1 - axis) + 1] = r
        mode = "reflect" if r > 0 else "constant"
        out = conv(F.pad(out, pad, mode=mode), weight, groups=channels)
    return out


def make_baseline(
    spec: Any,
    x: torch.Tensor,
    indices: torch.Tensor,
    *,
    seed: int = 0,
    blur_sigma: float = 5.0,
) -> torch.Tensor:
    """A baseline with the shape of ``x``.

    Parameters
    ----------
    spec : str, float, tensor or array
        ``"zeros"`` (black image), ``"blur"`` (the image under a Gaussian blur of
        ``blur_sigma`` pixels), ``"uniform"`` (uniform noise between each image's minimum and
        maximum, seeded per image), ``"mean"`` (each image's mean intensity), a number (a
        constant image), or an array: one image ``C x *s`` / ``1 x C x *s`` for all, or one per
        input image ``N_total x C x *s`` (sliced by image index).
    x : torch.Tensor
        The prepared batch.
    indices : torch.Tensor
        Global positions of the batch's images.
    """
    if isinstance(spec, str):
        if spec in ("zeros", "zero", "black"):
            return torch.zeros_like(x)
        if spec == "blur":
            return gaussian_blur(x, float(blur_sigma))
        if spec == "uniform":
            flat = x.reshape(x.shape[0], -1)
            lo = flat.min(dim=1).values.reshape(-1, *[1] * (x.ndim - 1))
            hi = flat.max(dim=1).values.reshape(-1, *[1] * (x.ndim - 1))
            return lo + (hi - lo) * per_item_rand(tuple(x.shape[1:]), indices, seed, x.device)
        if spec == "mean":
            return x.mean(dim=tuple(range(1, x.ndim)), keepdim=True).expand_as(x).clone()
        raise ValueError(
            f"Unknown baseline {spec!r}; use one of {BASELINE_NAMES}, a number, or an array."
        )
    if isinstance(spec, (int, float, np.integer, np.floating)) and not isinstance(spec, bool):
        return torch.full_like(x, float(spec))
    if isinstance(spec, np.ndarray):
        spec = torch.from_numpy(np.ascontiguousarray(spec))
    if isinstance(spec, torch.Tensor):
        b = spec.to(device=x.device, dtype=x.dtype)
        if b.ndim == x.ndim - 1:
            b = b.unsqueeze(0)
        if b.ndim == x.ndim and b.shape[1:] == x.shape[1:]:
            if b.shape[0] == 1:
                return b.expand_as(x).clone()
            if int(indices.max()) < b.shape[0]:
                return b[indices.to(b.device)]
        raise ValueError(
            f"A baseline array must have shape {tuple(x.shape[1:])} (one for all images) or "
            f"(n_images, {', '.join(map(str, x.shape[1:]))}); got {tuple(spec.shape)}."
        )
    raise TypeError(f"Cannot use a {type(spec).__name__} as a baseline.")
