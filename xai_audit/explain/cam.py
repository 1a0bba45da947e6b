"""Class-activation-map family: Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM (2D and 3D).

Grad-CAM runs on captum's ``LayerGradCam``. captum has no Grad-CAM++, HiResCAM or LayerCAM,
so those (and Grad-CAM with several layers or a ``reshape_transform``) are computed here from
the layer activations and gradients captured with hooks (:class:`LayerCapture`); the formulas
follow pytorch-grad-cam, the reference implementation of these methods.

Every method backpropagates from the target score to the target layer(s) only: the layer's
output is a leaf of the graph, parameters are frozen and the input never requires grad.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from torch import nn

from ..model import ModelAdapter, TargetLayerError
from ..model.layers import resolve_layer
from .base import Explainer, TargetedForward, register_method
from .hooks import LayerCapture

_LINEAR_MODES = {"linear", "bilinear", "bicubic", "trilinear"}


def upsample(maps: torch.Tensor, size: tuple[int, ...], mode: str = "auto") -> torch.Tensor:
    """Resize ``N x 1 x *s`` maps to the input's spatial ``size``.

    ``mode="auto"`` is bilinear for 2D and trilinear for 3D (what MONAI and pytorch-grad-cam
    use), with ``align_corners=False``.
    """
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    if mode == "auto":
        mode = "bilinear" if len(size) == 2 else "trilinear"
    kwargs: dict[str, Any] = {"align_corners": False} if mode in _LINEAR_MODES else {}
    return F.interpolate(maps, size=size, mode=mode, **kwargs)


def _spatial_axes(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, t.ndim))


def _layer_output_shape(adapter: ModelAdapter, layer: nn.Module, x: torch.Tensor) -> tuple:
    """The layer's own output shape (for error messages; the CAM's shape would mislead)."""
    seen: list[tuple[int, ...]] = []
    handle = layer.register_forward_hook(
        lambda _m, _i, out: seen.append(tuple(out.shape)) if hasattr(out, "shape") else None
    )
    try:
        with torch.no_grad():
            adapter.forward(x)
    finally:
        handle.remove()
    return seen[0] if seen else ()


class _CamExplainer(Explainer):
    """Shared machinery: layer resolution, one forward + backward to the layer, upsampling.

    ``target_layer`` may be a name, a module or a list of them; with several layers the
    result is the mean of the per-layer maps after upsampling to the input size.
    ``reshape_transform`` turns the layer output into ``N x C x *s`` (transformers); by
    default the adapter's, else inferred for token and channels-last layers.
    """

    removes_own_hooks = True  # captum's and ours go in finally clauses

    defaults: ClassVar[dict[str, Any]] = {
        "target_layer": None,
        "interpolate_mode": "auto",
        "relu": True,
        "reshape_transform": None,
    }
    param_aliases: ClassVar[dict[str, str]] = {"target_layers": "target_layer"}
    single_pass = True

    def setup(self, adapter: ModelAdapter, example: torch.Tensor) -> None:
        spec = self.params["target_layer"]
        if spec is None:
            self.layers = [adapter.target_layer(example)]
        else:
            specs = spec if isinstance(spec, (list, tuple)) else [spec]
            if not specs:
                raise TargetLayerError("target_layer is an empty list; give at least one layer.")
            self.layers = [resolve_layer(adapter.model, s) for s in specs]
        self.target_layer_name = "+".join(name for name, _ in self.layers)
        given = self.params["reshape_transform"]
        if given is not None and not callable(given):
            raise TypeError(
                f"reshape_transform must be a callable (tokens -> N x C x *spatial), got "
                f"{type(given).__name__}."
            )
        self.reshape = given or adapter.layer_reshape_transform(self.layers, example)

    def json_params(self) -> dict[str, Any]:
        out = super().json_params()
        if out.get("reshape_transform") is None:  # recorded only when one was given
            out.pop("reshape_transform", None)
        return out

    def weighted_map(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """The class activation map ``N x 1 x *s`` (before ReLU) from one layer."""
        raise NotImplementedError

    def _finish(self, cams: list[torch.Tensor], size: tuple[int, ...]) -> torch.Tensor:
        out = []
        for cam in cams:
            if self.params["relu"]:
                cam = F.relu(cam)
            out.append(upsample(cam, size, self.params["interpolate_mode"]))
        return torch.stack(out).mean(dim=0)[:, 0]

    def _hooked_pass(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        forward = TargetedForward(adapter, targets)
        with torch.enable_grad(), LayerCapture(self.layers, self.reshape) as cap:
            score = forward(x)
            missing = [n for (n, _m), o in zip(self.layers, cap.outputs) if o is None]
            if missing:
                raise TargetLayerError(
                    f"Target layer(s) {missing} did not run in the forward pass; choose layers "
                    "that the model calls."
                )
            acts = [o for o in cap.outputs if o is not None]
            grads = torch.autograd.grad(score.sum(), acts, allow_unused=True)
        if any(g is None for g in grads):
            raise TargetLayerError(
                f"The score does not depend on target layer(s) {self.target_layer_name!r}."
            )
        acts_maps = cap.feature_maps([a.detach() for a in acts], x.ndim)
        grad_maps = cap.feature_maps(list(grads), x.ndim)
        cams = [self.weighted_map(a, g) for a, g in zip(acts_maps, grad_maps)]
        maps = self._finish(cams, tuple(x.shape[2:]))
        assert forward.targets is not None and forward.logits is not None
        return maps, forward.targets, forward.logits

    def explain_batch(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._hooked_pass(adapter, x, targets)

    def attribute(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        return self.explain_batch(adapter, x, targets)[0]


@register_method
class GradCAM(_CamExplainer):
    """Grad-CAM (Selvaraju et al. 2017): channel weights are the spatially averaged gradients.

    ``map = upsample(ReLU(sum_c mean_s(dy/dA_c) * A_c))``. One layer and no reshape transform
    runs on captum's ``LayerGradCam``; otherwise the same formula on hooked activations.
    """

    name = "gradcam"
    aliases = ("grad_cam",)
    description = "Grad-CAM on captum's LayerGradCam, upsampled to the input."

    def weighted_map(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        weights = grads.mean(dim=_spatial_axes(grads), keepdim=True)
        return (weights * acts).sum(dim=1, keepdim=True)

    def explain_batch(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if len(self.layers) > 1 or self.reshape is not None:
            return self._hooked_pass(adapter, x, targets)
        forward = TargetedForward(adapter, targets)
        layer: nn.Module = self.layers[0][1]
        # ReLU after upsampling equals ReLU before it for linear modes, but captum's ReLU
        # comes first, as in the paper; relu=False keeps negative evidence.
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            cam = LayerGradCam(forward, layer).attribute(
                x,
                target=None,
                attribute_to_layer_input=False,
                relu_attributions=bool(self.params["relu"]),
            )
        if cam.ndim != x.ndim:
            shape = _layer_output_shape(adapter, layer, x[:1])
            raise TargetLayerError(
                f"Layer {self.target_layer_name!r} outputs shape {shape} (for one image), not "
                f"a feature map N x C x {' x '.join('HW' if x.ndim == 4 else 'DHW')}; pass "
                "target_layer=<a convolutional layer>, or for a transformer reshape_transform= "
                "(e.g. xai_audit.model.vit_reshape_transform(grid_h, grid_w)) to explain() or "
                "ModelAdapter."
            )
        maps = upsample(cam.detach(), tuple(x.shape[2:]), self.params["interpolate_mode"])[:, 0]
        assert forward.targets is not None and forward.logits is not None
        return maps, forward.targets, forward.logits


@register_method
class GradCAMPlusPlus(_CamExplainer):
    """Grad-CAM++ (Chattopadhyay et al. 2018): pixel-weighted positive gradients.

    ``alpha = g^2 / (2 g^2 + sum_s(A) g^3)``, ``w_c = sum_s(alpha * ReLU(g))``, as in
    pytorch-grad-cam (the exponential-score closed form).
    """

    name = "gradcam++"
    aliases = ("gradcam_plus_plus", "gradcampp", "grad_cam_plus_plus")
    description = "Grad-CAM++ from hooked activations and gradients."

    def weighted_map(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        axes = _spatial_axes(grads)
        g2 = grads.pow(2)
        g3 = g2 * grads
        sum_acts = acts.sum(dim=axes, keepdim=True)
        alpha = g2 / (2 * g2 + sum_acts * g3 + 1e-6)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        weights = (alpha * F.relu(grads)).sum(dim=axes, keepdim=True)
        return (weights * acts).sum(dim=1, keepdim=True)


@register_method
class HiResCAM(_CamExplainer):
    """HiResCAM (Draelos & Carin 2020): element-wise gradient x activation, summed over channels.

    Faithful to the model's computation for architectures ending in global average pooling.
    """

    name = "hirescam"
    aliases = ("hires_cam",)
    description = "HiResCAM from hooked activations and gradients."

    def weighted_map(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (grads * acts).sum(dim=1, keepdim=True)


@register_method
class LayerCAM(_CamExplainer):
    """LayerCAM (Jiang et al. 2021): ``sum_c ReLU(g) * A``; suited to earlier layers too."""

    name = "layercam"
    aliases = ("layer_cam",)
    description = "LayerCAM from hooked activations and gradients."

    def weighted_map(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (F.relu(grads) * acts).sum(dim=1, keepdim=True)
