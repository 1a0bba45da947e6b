"""``explain()``: one entry point for every attribution method."""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..model import ModelAdapter, NonFiniteError, eval_mode, iter_image_batches
from ..model.adapter import nonfinite_rows
from ..model.batching import n_items
from . import _layer_cache
from .base import Attribution, Explainer, available_methods, get_method
from .hooks import hook_guard
from .targets import TargetLike, TargetSpec


def as_adapter(model: ModelAdapter | nn.Module) -> ModelAdapter:
    """A :class:`ModelAdapter` for ``model``; a bare module stays on its current device."""
    if isinstance(model, ModelAdapter):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a ModelAdapter or a torch.nn.Module, got {type(model).__name__}."
        )
    first = next(model.parameters(), None)
    return ModelAdapter(model, device=first.device if first is not None else "cpu")


def _check_finite(x: torch.Tensor, offset: int, what: str) -> None:
    rows = nonfinite_rows(x, offset)
    if not rows:
        return
    if what == "input":
        raise NonFiniteError(
            f"{len(rows)} image(s) contain NaN or infinite pixels (positions {rows[:5]}); "
            "fix or drop them before explaining."
        )
    raise NonFiniteError(
        f"The model produced NaN or infinite outputs for image(s) {rows[:5]}; check its "
        "weights and preprocessing."
    )


def explain(
    model: ModelAdapter | nn.Module,
    images: Any,
    method: str = "gradcam",
    target: TargetLike = None,
    *,
    batch_size: int | None = None,
    progress: bool | None = None,
    logits: Any = None,
    **params: Any,
) -> Attribution:
    """Explain a model's outputs for a set of images with one attribution method.

    Parameters
    ----------
    model : ModelAdapter or torch.nn.Module
        The classifier; a bare module is wrapped in a :class:`ModelAdapter` on its device.
    images : tensor, array, Manifest, Dataset or DataLoader
        ``N x C x H x W`` images or ``N x C x D x H x W`` volumes (anything the adapter reads).
    method : str, default "gradcam"
        A name from :func:`available_methods` (aliases accepted, e.g. ``"ig"``).
    target : None, int, str, sequence or "all"
        ``None``: each image's predicted class (highest score); an index or class name: that
        class for every image; a sequence: one target per image; ``"all"``: every output
        (e.g. each label of a multi-label model), giving ``N x L x *spatial`` maps.
    batch_size : int, optional
        Images per batch (default: the adapter's). Methods that evaluate many perturbed
        copies batch those internally (``internal_batch_size``, ``perturbations_per_eval``).
    progress : bool, optional
        Progress bar; by default shown for more than 10 batches.
    logits : array of shape (N, K), optional
        The model's raw outputs for these same images (e.g. from
        :meth:`ModelAdapter.predict_logits`). Methods that do not read them from their own
        forward pass (integrated gradients, SmoothGrad, guided backprop, occlusion, SHAP; not
        the CAM family or saliency) otherwise run one extra forward pass per batch to learn
        the predicted class and the score; with ``logits`` they reuse them.
    **params
        The method's parameters, e.g. ``target_layer=``, ``n_steps=``, ``baseline=``.
        Unknown ones raise a ``TypeError`` that lists the accepted ones.

    Returns
    -------
    Attribution
        float32 maps at input resolution with targets, scores, method and parameters.

    Notes
    -----
    The model runs in eval mode with parameter gradients switched off; its train/eval flags,
    ``requires_grad`` flags and ``.grad`` tensors are left as they were, and every hook is
    removed, also when an exception is raised.

    Examples
    --------
    >>> att = explain(model, images, "integrated_gradients", target="lesion", n_steps=64)
    >>> att.maps.shape
    (8, 128, 128)
    """
    adapter = as_adapter(model)
    # A bare module gets a fresh adapter per call: reuse what earlier calls found (the CAM
    # layer search is a forward pass), see _layer_cache.
    bare = None if isinstance(model, ModelAdapter) else model
    stamp = _layer_cache.restore(bare, adapter) if bare is not None else None
    explainer: Explainer = get_method(method)(**params)
    spec = TargetSpec.parse(target)
    batch_size = int(batch_size or adapter.batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    total = n_items(images)
    n_batches = math.ceil(total / batch_size) if total else None
    show = progress if progress is not None else bool(n_batches and n_batches > 10)
    given_logits = _as_logits(logits, total)

    maps: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []  # logits per batch; scores are computed once at the end
    seen = 0
    guard = nullcontext() if explainer.removes_own_hooks else hook_guard(adapter.module)
    with eval_mode(adapter.module), guard:
        # Built only when shown: a disabled tqdm still costs tens of microseconds a call.
        bar = tqdm(total=total, desc=explainer.name, unit="img", leave=False) if show else None
        try:
            for raw in iter_image_batches(images, batch_size):
                x = adapter.prepare(raw)
                _check_finite(x, seen, "input")
                if seen == 0:
                    _first_batch(adapter, explainer, spec, x, total)
                n = x.shape[0]
                explainer.set_batch_range(seen, seen + n)
                if given_logits is not None:
                    if len(given_logits) < seen + n:  # only possible when N was unknown
                        raise ValueError(f"logits has {len(given_logits)} rows for more images.")
                    explainer.batch_logits = given_logits[seen : seen + n].to(adapter.device)
                batch_maps, batch_targets = [], []
                for t in spec.for_batch(seen, seen + n, adapter.device):
                    m, tt, logits = explainer.explain_batch(adapter, x, t)
                    if not batch_maps:  # the same batch's logits for every target
                        _check_finite(logits.detach(), seen, "output")
                        outputs.append(logits.detach().float().cpu())
                    batch_maps.append(m.detach().float().cpu())
                    batch_targets.append(tt.detach().cpu())
                stack = spec.kind == "all"
                maps.append(torch.stack(batch_maps, 1) if stack else batch_maps[0])
                targets.append(torch.stack(batch_targets, 1) if stack else batch_targets[0])
                seen += n
                if bar is not None:
                    bar.update(n)
        finally:
            if bar is not None:
                bar.close()
            explainer.indices = None
            explainer.batch_logits = None
    if bare is not None:
        _layer_cache.remember(bare, adapter, stamp)
    if seen == 0:
        raise ValueError("No images were given.")
    spec.check_count(seen)
    if given_logits is not None and len(given_logits) != seen:
        raise ValueError(f"logits has {len(given_logits)} rows for {seen} images.")
    all_targets = _joined(targets)
    probs = adapter.apply_activation(_joined(outputs))
    scores = probs.gather(1, all_targets if all_targets.ndim == 2 else all_targets[:, None])
    return Attribution(
        maps=_joined(maps).numpy().astype(np.float32, copy=False),
        targets=all_targets.numpy().astype(np.int64),
        scores=(scores if all_targets.ndim == 2 else scores[:, 0]).numpy().astype(np.float32),
        method=explainer.name,
        params=explainer.json_params(),
        target_layer=explainer.target_layer_name,
        class_names=adapter.class_names,
    )


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """The batches' results as one tensor (a single batch is not copied)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _as_logits(logits: Any, total: int | None) -> torch.Tensor | None:
    """``logits`` as a float tensor of shape ``N x K``, checked against the image count."""
    if logits is None:
        return None
    out = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    if out.ndim != 2:
        raise ValueError(f"logits must be N x K (one row per image), got shape {tuple(out.shape)}.")
    if total is not None and out.shape[0] != total:
        raise ValueError(f"logits has {out.shape[0]} rows for {total} images.")
    return out


def _first_batch(
    adapter: ModelAdapter,
    explainer: Explainer,
    spec: TargetSpec,
    x: torch.Tensor,
    total: int | None,
) -> None:
    """Checks and set-up that need one batch: dimensionality, output count, targets, layers."""
    if x.ndim == 5 and not explainer.supports_3d:
        volumetric = [
            n
            for n in available_methods()
            if get_method(n).supports_3d  # type: ignore[arg-type]
        ]
        raise ValueError(
            f"Method {explainer.name!r} does not support 3D volumes; methods that do: {volumetric}."
        )
    if adapter.n_outputs is None:  # learn the output width, to check targets up front
        with torch.no_grad():
            adapter.forward(x[:1])
    spec.resolve(adapter, total)
    explainer.setup(adapter, x)
