"""Explanations: "why did the model predict this?" for any wrapped model, 2D and 3D.

>>> from xai_audit.explain import explain, available_methods
>>> att = explain(model, images, method="gradcam")          # predicted class
>>> att = explain(model, images, "ig", target="lesion", n_steps=64, baseline="blur")

Methods (aliases in brackets):

- CAM family (a target layer, found automatically): ``gradcam`` (captum LayerGradCam),
  ``gradcam++`` [gradcam_plus_plus], ``hirescam``, ``layercam``.
- Gradients (captum): ``integrated_gradients`` [ig], ``saliency``, ``smoothgrad``,
  ``guided_backprop``, ``guided_gradcam``.
- Perturbation (captum): ``occlusion``.
- SHAP: ``expected_gradients`` [gradient_shap] (shap GradientExplainer) and the
  gradient-free ``partition_shap`` (shap Partition explainer + Image masker, 2D only).
- Transformers: ``attention_rollout`` [rollout] (class-agnostic, ViTs).

Register new methods with :func:`register_method` (subclass :class:`Explainer`).
"""

from __future__ import annotations

from . import cam, gradients, perturbation, rollout, shap_methods  # noqa: F401  (register)
from .api import as_adapter, explain
from .base import (
    Attribution,
    Explainer,
    available_methods,
    get_method,
    reduce_channels,
    register_method,
)
from .baselines import gaussian_blur, make_baseline
from .plotting import compare_methods, overlay, slice_grid

__all__ = [
    "Attribution",
    "Explainer",
    "as_adapter",
    "available_methods",
    "compare_methods",
    "explain",
    "gaussian_blur",
    "get_method",
    "make_baseline",
    "overlay",
    "reduce_channels",
    "register_method",
    "slice_grid",
]
