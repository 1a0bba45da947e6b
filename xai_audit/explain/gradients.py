"""Gradient-based pixel attributions on captum: Integrated Gradients, Saliency, SmoothGrad,
Guided Backprop and Guided Grad-CAM (2D and 3D).

Pixel attributions ``N x C x *s`` become maps ``N x *s`` by ``channel_reduction``: the sum
over channels by default (so that completeness, sum of map = f(x) - f(baseline), still holds),
``"abs_sum"`` or ``"mean"`` on request. Scores are the model's logits (the output before its
activation), as is usual for gradient methods.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from captum.attr import GuidedBackprop, IntegratedGradients, Saliency

from ..model import ModelAdapter
from .base import Explainer, TargetedForward, reduce_channels, register_method
from .baselines import make_baseline, per_item_randn
from .cam import GradCAM


def _default_internal_batch(adapter: ModelAdapter, n: int, given: int | None) -> int:
    """Forward-pass size for methods that evaluate many perturbed copies of a batch."""
    return max(n, int(given) if given else adapter.batch_size)


@register_method
class IntegratedGradientsMethod(Explainer):
    """Integrated Gradients (Sundararajan et al. 2017) via captum.

    Parameters
    ----------
    baseline : {"zeros", "blur", "uniform", "mean"}, float or array, default "zeros"
        Reference input (see :func:`~xai_audit.explain.baselines.make_baseline`).
    n_steps : int, default 50
        Integration steps. The gradient of a ReLU network jumps along the path, so the
        completeness error (sum of attributions vs f(x) - f(baseline)) falls slowly: a few
        percent at 50-64 Gauss-Legendre steps, below 1% at 256 on the small ReLU CNN of the
        tests. Use 200-300 steps where completeness matters.
    approximation : str, default "gausslegendre"
        captum's integration rule (its ``method``: "riemann_trapezoid", "riemann_left", ...).
    internal_batch_size : int, optional
        Scaled images per forward pass (default: the adapter's batch size, at least the batch),
        so memory does not grow with ``n_steps``.
    blur_sigma : float, default 5.0
        Gaussian sigma in pixels for ``baseline="blur"``.
    seed : int, default 0
        Seed of the per-image noise for ``baseline="uniform"``.
    channel_reduction : {"sum", "abs_sum", "mean"}, default "sum"
    """

    removes_own_hooks = True  # captum's and ours go in finally clauses

    name = "integrated_gradients"
    aliases = ("ig", "integratedgradients")
    description = "Integrated Gradients (captum), internally batched."
    defaults: ClassVar[dict[str, Any]] = {
        "baseline": "zeros",
        "n_steps": 50,
        "approximation": "gausslegendre",
        "internal_batch_size": None,
        "blur_sigma": 5.0,
        "seed": 0,
        "channel_reduction": "sum",
    }
    # captum's `method` would clash with explain(method=...), hence `approximation`.
    param_aliases: ClassVar[dict[str, str]] = {
        "baselines": "baseline",
        "integration_method": "approximation",
    }

    def attribute(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        p = self.params
        baseline = make_baseline(
            p["baseline"], x, self.batch_indices(x), seed=p["seed"], blur_sigma=p["blur_sigma"]
        )
        ig = IntegratedGradients(adapter.module)
        with torch.enable_grad():
            attr = ig.attribute(
                x,
                baselines=baseline,
                target=targets,
                n_steps=int(p["n_steps"]),
                method=p["approximation"],
                internal_batch_size=_default_internal_batch(
                    adapter, x.shape[0], p["internal_batch_size"]
                ),
            )
        return reduce_channels(attr.detach(), p["channel_reduction"])


@register_method
class SaliencyMethod(Explainer):
    """Vanilla gradient saliency (Simonyan et al. 2014) via captum's ``Saliency``.

    Parameters
    ----------
    abs : bool, default True
        Magnitude of the gradient (captum's default); False keeps its sign, so that the map
        equals the input gradient summed over channels.
    channel_reduction : {"sum", "abs_sum", "mean"}, default "sum"
    """

    removes_own_hooks = True  # captum's and ours go in finally clauses

    name = "saliency"
    aliases = ("gradient", "vanilla_gradient")
    description = "Input gradient (captum Saliency)."
    defaults: ClassVar[dict[str, Any]] = {"abs": True, "channel_reduction": "sum"}
    single_pass = True

    def explain_batch(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        forward = TargetedForward(adapter, targets)
        with torch.enable_grad():
            grads = Saliency(forward).attribute(
                x.clone().requires_grad_(), target=None, abs=bool(self.params["abs"])
            )
        maps = reduce_channels(grads.detach(), self.params["channel_reduction"])
        assert forward.targets is not None and forward.logits is not None
        return maps, forward.targets, forward.logits

    def attribute(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        return self.explain_batch(adapter, x, targets)[0]


@register_method
class SmoothGrad(Explainer):
    """SmoothGrad (Smilkov et al. 2017): input gradients averaged over noisy copies.

    The same estimator as captum's ``NoiseTunnel(Saliency)``, with the noise drawn per image
    from a seeded generator so that results do not depend on batching and are reproducible.

    Parameters
    ----------
    nt_samples : int, default 25
        Noisy copies per image.
    noise_level : float, default 0.15
        Noise standard deviation as a fraction of each image's intensity range (max - min).
    stdevs : float, optional
        Absolute noise standard deviation (overrides ``noise_level``), as in captum.
    nt_type : {"smoothgrad", "smoothgrad_sq", "vargrad"}, default "smoothgrad"
    abs : bool, default True
        Use gradient magnitudes (captum Saliency's default) before averaging.
    internal_batch_size : int, optional
        Noisy images per forward pass (alias ``nt_samples_batch_size``).
    seed : int, default 0
    channel_reduction : {"sum", "abs_sum", "mean"}, default "sum"
    """

    removes_own_hooks = True  # captum's and ours go in finally clauses

    name = "smoothgrad"
    aliases = ("smooth_grad", "noise_tunnel")
    description = "SmoothGrad: noise-averaged input gradients, per-image seeded noise."
    defaults: ClassVar[dict[str, Any]] = {
        "nt_samples": 25,
        "noise_level": 0.15,
        "stdevs": None,
        "nt_type": "smoothgrad",
        "abs": True,
        "internal_batch_size": None,
        "seed": 0,
        "channel_reduction": "sum",
    }
    param_aliases: ClassVar[dict[str, str]] = {"nt_samples_batch_size": "internal_batch_size"}

    def attribute(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        p = self.params
        if p["nt_type"] not in ("smoothgrad", "smoothgrad_sq", "vargrad"):
            raise ValueError(
                f"nt_type must be 'smoothgrad', 'smoothgrad_sq' or 'vargrad', got {p['nt_type']!r}."
            )
        n, s = x.shape[0], int(p["nt_samples"])
        view = (n, 1) + (1,) * (x.ndim - 1)
        if p["stdevs"] is not None:
            sigma = torch.full(view, float(p["stdevs"]), device=x.device)
        else:
            flat = x.reshape(n, -1)
            sigma = (p["noise_level"] * (flat.max(1).values - flat.min(1).values)).reshape(view)
        noise = per_item_randn((s, *x.shape[1:]), self.batch_indices(x), p["seed"], x.device)
        chunk = max(1, _default_internal_batch(adapter, n, p["internal_batch_size"]) // n)
        total = torch.zeros_like(x)
        total_sq = torch.zeros_like(x)
        with torch.enable_grad():
            for start in range(0, s, chunk):  # loop over chunks of noise samples, not pixels
                k = min(chunk, s - start)
                noisy = (
                    (x[:, None] + sigma * noise[:, start : start + k])
                    .reshape(n * k, *x.shape[1:])
                    .requires_grad_()
                )
                logits = adapter.module(noisy)
                score = logits.gather(1, targets.repeat_interleave(k)[:, None]).sum()
                (grad,) = torch.autograd.grad(score, noisy)
                grad = grad.reshape(n, k, *x.shape[1:])
                if p["abs"]:
                    grad = grad.abs()
                total += grad.sum(dim=1)
                total_sq += grad.pow(2).sum(dim=1)
        mean, mean_sq = total / s, total_sq / s
        if p["nt_type"] == "smoothgrad":
            attr = mean
        elif p["nt_type"] == "smoothgrad_sq":
            attr = mean_sq
        else:
            attr = mean_sq - mean.pow(2)
        return reduce_channels(attr, p["channel_reduction"])


@register_method
class GuidedBackpropMethod(Explainer):
    """Guided Backpropagation (Springenberg et al. 2015) via captum's ``GuidedBackprop``.

    Only ``nn.ReLU`` modules are guided (captum hooks them; in-place ones are handled):
    ReLUs called as functions (``F.relu``) back-propagate ordinary gradients.

    Parameters
    ----------
    channel_reduction : {"sum", "abs_sum", "mean"}, default "sum"
    """

    removes_own_hooks = True  # captum's and ours go in finally clauses

    name = "guided_backprop"
    aliases = ("guided_backpropagation", "guidedbackprop")
    description = "Guided Backprop (captum)."
    defaults: ClassVar[dict[str, Any]] = {"channel_reduction": "sum"}

    def pixel_attribution(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """``N x C x *s`` guided gradients."""
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # captum's "setting backward hooks"
            return GuidedBackprop(adapter.module).attribute(x.clone(), target=targets).detach()

    def attribute(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        return reduce_channels(
            self.pixel_attribution(adapter, x, targets), self.params["channel_reduction"]
        )


@register_method
class GuidedGradCAM(Explainer):
    """Guided Grad-CAM: guided backprop times the upsampled Grad-CAM map, then channels reduced.

    Equivalent to captum's ``GuidedGradCam`` but upsampling bilinearly/trilinearly (captum:
    nearest) and working on volumes.

    Parameters
    ----------
    target_layer : str, module or list, optional
        As for Grad-CAM (default: the adapter's layer).
    interpolate_mode : str, default "auto"
    channel_reduction : {"sum", "abs_sum", "mean"}, default "sum"
    """

    removes_own_hooks = True  # captum's and ours go in finally clauses

    name = "guided_gradcam"
    aliases = ("guided_grad_cam",)
    description = "Guided Grad-CAM: Guided Backprop x Grad-CAM."
    defaults: ClassVar[dict[str, Any]] = {
        "target_layer": None,
        "interpolate_mode": "auto",
        "channel_reduction": "sum",
    }

    def setup(self, adapter: ModelAdapter, example: torch.Tensor) -> None:
        self._cam = GradCAM(
            target_layer=self.params["target_layer"],
            interpolate_mode=self.params["interpolate_mode"],
        )
        self._cam.setup(adapter, example)
        self._guided = GuidedBackpropMethod()
        self.target_layer_name = self._cam.target_layer_name

    def explain_batch(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cam, targets, logits = self._cam.explain_batch(adapter, x, targets)
        guided = self._guided.pixel_attribution(adapter, x, targets)
        maps = reduce_channels(guided * cam[:, None], self.params["channel_reduction"])
        return maps, targets, logits

    def attribute(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        return self.explain_batch(adapter, x, targets)[0]
