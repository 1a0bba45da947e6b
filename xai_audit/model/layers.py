"""Finding and resolving the layer that class-activation-map (CAM) methods explain."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

ReshapeTransform = Callable[[torch.Tensor], torch.Tensor]


class TargetLayerError(ValueError):
    """No suitable CAM target layer could be found or the given one is invalid."""


@dataclass(frozen=True)
class LayerInfo:
    """A module seen during a probing forward pass."""

    name: str
    output_shape: tuple[int, ...]
    calls: int
    finish_order: int


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(qualified_name, module)`` for a layer given by name or by object.

    Raises
    ------
    TargetLayerError
        If the name does not exist or the module is not part of ``model``.
    """
    named = dict(model.named_modules())
    if isinstance(layer, str):
        if layer not in named:
            close = [n for n in named if n and (layer in n or n.endswith(layer.split(".")[-1]))]
            hint = f" Similar names: {close[:8]}." if close else ""
            raise TargetLayerError(
                f"The model has no layer named {layer!r}.{hint} "
                "List them with `[n for n, _ in model.named_modules()]`."
            )
        return layer, named[layer]
    for name, module in named.items():
        if module is layer:
            return name, module
    raise TargetLayerError(
        f"The given target layer ({type(layer).__name__}) is not a submodule of the model."
    )


def probe_layers(model: nn.Module, example: torch.Tensor) -> list[LayerInfo]:
    """Run one forward pass and record each submodule's output shape and call count.

    Hooks are removed before returning, also when the forward pass raises.
    """
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    order: dict[str, int] = {}
    counter = [0]
    handles = []

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            calls[name] = calls.get(name, 0) + 1
            counter[0] += 1
            order[name] = counter[0]
            if isinstance(output, torch.Tensor):
                shapes[name] = tuple(output.shape)

        return hook

    try:
        for name, module in model.named_modules():
            if name:  # the root module's output is the logits
                handles.append(module.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return [
        LayerInfo(name, shapes.get(name, ()), calls[name], order[name])
        for name in sorted(order, key=order.get)
    ]


def find_target_layer(model: nn.Module, example: torch.Tensor) -> tuple[str, nn.Module]:
    """Find the last layer whose output is a spatial feature map (2D or 3D).

    "Last" is the layer whose forward call finishes last among those that return an
    ``N x C x H x W`` (or ``N x C x D x H x W``) tensor with more than one spatial position and
    that run exactly once per forward pass. Modules called several times (a ReLU module reused
    inside a ResNet block) are skipped because a hook on them would see several tensors.

    Parameters
    ----------
    model : torch.nn.Module
        The network (already on the example's device).
    example : torch.Tensor
        One small input batch in the model's input layout.

    Returns
    -------
    tuple of (str, torch.nn.Module)
        The layer's qualified name and the module.

    Raises
    ------
    TargetLayerError
        When no layer has a spatial output (e.g. a vision transformer, whose tokens are
        ``N x T x D``), with advice on what to pass instead.
    """
    want_ndim = example.ndim
    infos = probe_layers(model, example)
    candidates = [
        i
        for i in infos
        if i.calls == 1
        and len(i.output_shape) == want_ndim
        and int(torch.tensor(i.output_shape[2:]).prod()) > 1
    ]
    if not candidates:
        token_layers = [i.name for i in infos if len(i.output_shape) == 3][-3:]
        hint = (
            f" Token-shaped (N x T x D) outputs were seen at {token_layers}: for a vision "
            "transformer pass e.g. target_layer='blocks.-1.norm1' (the last block's norm) and "
            "reshape_transform=xai_audit.model.vit_reshape_transform(grid_h, grid_w)."
            if token_layers
            else ""
        )
        raise TargetLayerError(
            "Could not find a layer with a spatial feature-map output "
            f"({'N x C x H x W' if want_ndim == 4 else 'N x C x D x H x W'}) for CAM methods."
            f"{hint} Pass target_layer=<name from model.named_modules()> to ModelAdapter or to "
            "explain(), or use a method that needs no layer (integrated_gradients, saliency, "
            "occlusion)."
        )
    best = max(candidates, key=lambda i: i.finish_order)
    return resolve_layer(model, best.name)


def vit_reshape_transform(
    grid_height: int, grid_width: int, *, n_prefix_tokens: int = 1
) -> ReshapeTransform:
    """Make a transform from ViT tokens ``N x T x D`` to a feature map ``N x D x h x w``.

    Parameters
    ----------
    grid_height, grid_width : int
        The patch grid (image size divided by patch size).
    n_prefix_tokens : int, default 1
        Leading non-patch tokens (class token, register tokens) to drop.
    """

    def transform(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, n_prefix_tokens:, :]
        expected = grid_height * grid_width
        if patches.shape[1] != expected:
            raise TargetLayerError(
                f"reshape_transform expected {expected} patch tokens "
                f"({grid_height}x{grid_width}) after dropping {n_prefix_tokens} prefix "
                f"token(s), got {patches.shape[1]}."
            )
        n, _, d = patches.shape
        return patches.reshape(n, grid_height, grid_width, d).permute(0, 3, 1, 2)

    return transform
