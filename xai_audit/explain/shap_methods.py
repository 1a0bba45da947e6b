"""SHAP explanations: expected gradients (shap's GradientExplainer) and a gradient-free
Partition explainer with an image masker for black-box models.

Both run one image at a time: shap's explainers loop over images internally anyway, and
a per-image call lets each image have its own target and its own seed (so results do not
depend on batching). shap's internal batching (``batch_size``) bounds the memory.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..model import ModelAdapter
from .base import Explainer, reduce_channels, register_method
from .baselines import gaussian_blur, make_baseline


@contextmanager
def _numpy_rng_preserved():
    """shap seeds numpy's global generator; give the user's state back afterwards."""
    state = np.random.get_state()  # noqa: NPY002  (shap uses the legacy global generator)
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


class _TargetColumn(nn.Module):
    """``N x 1`` logit of one class, hiding the user's model from shap.

    shap's GradientExplainer calls ``model.eval()`` and ``model.zero_grad()``; keeping the
    real module out of this wrapper's registered children means neither touches the user's
    model (its ``.grad`` and train/eval flags stay as they were).
    """

    def __init__(self, module: nn.Module, target: int) -> None:
        super().__init__()
        object.__setattr__(self, "wrapped", module)  # deliberately not a child module
        self.target = int(target)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wrapped(x)[:, self.target : self.target + 1]


@register_method
class ExpectedGradients(Explainer):
    """Expected gradients (Erion et al. 2021) with shap's ``GradientExplainer``.

    ``phi = E_{b ~ background, a ~ U(0,1)}[(x - b) * df/dx(b + a (x - b))]``: integrated
    gradients averaged over a background distribution, estimated with ``nsamples`` draws.

    Parameters
    ----------
    background : array, tensor or {"zeros", "blur", "uniform", "mean"}, default "zeros"
        Reference images ``M x C x *s`` (e.g. 20-100 training images, recommended); a string
        makes a one-image background per explained image.
    nsamples : int, default 200
        Gradient evaluations per image.
    batch_size : int, default 50
        Samples per forward pass (shap's internal batching; alias ``internal_batch_size``).
    local_smoothing : float, default 0.0
        Std of Gaussian noise added to the input (SmoothGrad-style), as in shap.
    blur_sigma : float, default 5.0
    seed : int, default 0
        Image ``i`` is explained with seed ``seed + i``.
    channel_reduction : {"sum", "abs_sum", "mean"}, default "sum"
    """

    name = "expected_gradients"
    aliases = ("gradient_shap", "gradientshap", "shap_gradient")
    description = "Expected gradients (shap GradientExplainer)."
    defaults: ClassVar[dict[str, Any]] = {
        "background": "zeros",
        "nsamples": 200,
        "batch_size": 50,
        "local_smoothing": 0.0,
        "blur_sigma": 5.0,
        "seed": 0,
        "channel_reduction": "sum",
    }
    param_aliases: ClassVar[dict[str, str]] = {
        "internal_batch_size": "batch_size",
        "n_samples": "nsamples",
        "baselines": "background",
        "baseline": "background",
    }

    def attribute(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        import shap

        p = self.params
        indices = self.batch_indices(x)
        fixed = None
        if not isinstance(p["background"], str):
            bg = p["background"]
            bg = torch.from_numpy(np.asarray(bg)) if not isinstance(bg, torch.Tensor) else bg
            fixed = bg.to(adapter.device, torch.float32)
            if fixed.ndim == x.ndim - 1:
                fixed = fixed[None]
            if tuple(fixed.shape[1:]) != tuple(x.shape[1:]):
                raise ValueError(
                    f"background must be M x {' x '.join(map(str, x.shape[1:]))}; got "
                    f"{tuple(fixed.shape)}."
                )
        out = []
        with torch.enable_grad(), _numpy_rng_preserved(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for j in range(x.shape[0]):  # shap explains image by image; see module docstring
                xi = x[j : j + 1]
                background = (
                    fixed
                    if fixed is not None
                    else make_baseline(
                        p["background"],
                        xi,
                        indices[j : j + 1],
                        seed=p["seed"],
                        blur_sigma=p["blur_sigma"],
                    )
                )
                model = _TargetColumn(adapter.module, int(targets[j]))
                explainer = shap.GradientExplainer(
                    model,
                    background,
                    batch_size=int(p["batch_size"]),
                    local_smoothing=float(p["local_smoothing"]),
                )
                values = explainer.shap_values(
                    xi, nsamples=int(p["nsamples"]), rseed=int(p["seed"]) + int(indices[j])
                )
                values = np.asarray(values[0] if isinstance(values, list) else values)
                out.append(torch.from_numpy(values.reshape(xi.shape).astype(np.float32)))
        attr = torch.cat(out).to(x.device)
        return reduce_channels(attr, p["channel_reduction"])


@register_method
class PartitionShap(Explainer):
    """Model-agnostic SHAP values with shap's Partition explainer and an Image masker.

    Needs only forward passes (no gradients, no access to layers): works for black-box
    models. Pixels are grouped hierarchically by shap's image partition tree; hidden pixels
    take the ``mask_value`` image. 2D only.

    Parameters
    ----------
    max_evals : int, default 500
        Model evaluations per image (more: finer maps).
    mask_value : {"blur", "zeros", "mean"}, float or array, default "blur"
        What hidden pixels show (the blur is computed here: shap's needs OpenCV).
    blur_sigma : float, default 5.0
    batch_size : int, default 64
        Masked images per forward pass.
    channel_reduction : {"sum", "abs_sum", "mean"}, default "sum"
    """

    name = "partition_shap"
    aliases = ("shap_partition", "partition", "blackbox_shap")
    description = "shap Partition explainer with an Image masker (no gradients)."
    supports_3d = False
    defaults: ClassVar[dict[str, Any]] = {
        "max_evals": 500,
        "mask_value": "blur",
        "blur_sigma": 5.0,
        "batch_size": 64,
        "channel_reduction": "sum",
    }
    param_aliases: ClassVar[dict[str, str]] = {"baseline": "mask_value"}

    def attribute(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        import shap

        p = self.params
        c, shape_hw = x.shape[1], tuple(x.shape[2:])
        fill = (
            gaussian_blur(x, float(p["blur_sigma"]))
            if p["mask_value"] == "blur"
            else make_baseline(p["mask_value"], x, self.batch_indices(x))
        )
        # shap's image masker works channels-last (H x W x C).
        x_np = x.permute(0, 2, 3, 1).cpu().numpy()
        fill_np = fill.permute(0, 2, 3, 1).cpu().numpy()
        masker = shap.maskers.Image(fill_np[0], shape=None)
        out = []
        for j in range(x.shape[0]):  # per image: its own target and masking image
            target = int(targets[j])
            masker.mask_value = fill_np[j].ravel()

            def predict(batch: np.ndarray, target: int = target) -> np.ndarray:
                t = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
                t = t.reshape(-1, *shape_hw, c).permute(0, 3, 1, 2).to(adapter.device)
                with torch.no_grad():
                    return adapter.module(t)[:, target].float().cpu().numpy()

            explainer = shap.Explainer(predict, masker)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expl = explainer(
                    x_np[j : j + 1],
                    max_evals=int(p["max_evals"]),
                    batch_size=int(p["batch_size"]),
                    silent=True,
                )
            values = np.asarray(expl.values, dtype=np.float32).reshape(1, *shape_hw, c)
            out.append(torch.from_numpy(values).permute(0, 3, 1, 2))
        attr = torch.cat(out).to(x.device)
        return reduce_channels(attr, p["channel_reduction"])
