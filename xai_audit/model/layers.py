"""Finding and resolving the layer that class-activation-map (CAM) methods explain."""

from __future__ import annotations

import math
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
    """Find the layer that CAM methods explain by default.

    For convolutional networks this is the last layer whose output is a spatial feature map:
    the layer whose forward call finishes last among those that return an ``N x C x H x W``
    (or ``N x C x D x H x W``) tensor with more than one spatial position and that run exactly
    once per forward pass. Modules called several times (a ReLU module reused inside a ResNet
    block) are skipped because a hook on them would see several tensors.

    For transformers (ViT, DeiT, Swin; see :func:`choose_target_layer`) it is the first norm
    of the last transformer block; that layer also needs a reshape transform, which
    :func:`choose_target_layer` returns and :class:`ModelAdapter` applies automatically.

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
        When no usable layer is found (e.g. token outputs without recognisable transformer
        blocks), with the real layer names and the reshape to pass instead.
    """
    choice = choose_target_layer(model, example)
    return choice.name, choice.module


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


# ------------------------------------------------------------------ transformers
# Hand-written: pytorch-grad-cam leaves the layer and reshape to the user and captum has no
# layer discovery, so the token-layout rules below are ours.

#: Most leading non-patch tokens (class, distillation, register tokens) looked for.
MAX_PREFIX_TOKENS = 16


@dataclass(frozen=True)
class TargetLayerChoice:
    """A CAM target layer with the transform that turns its output into a feature map.

    Attributes
    ----------
    name : str
        Qualified module name.
    module : torch.nn.Module
        The layer.
    reshape_transform : callable or None
        None for a channels-first feature map; otherwise token -> map or channels-last ->
        channels-first.
    layout : {"feature_map", "tokens", "channels_last"}
        The layer's output layout.
    output_shape : tuple of int
        The layer's output shape on the probe batch.
    note : str
        How the reshape was inferred (empty for feature maps).
    """

    name: str
    module: nn.Module
    reshape_transform: ReshapeTransform | None
    layout: str
    output_shape: tuple[int, ...]
    note: str = ""


def token_reshape_transform(grid: tuple[int, ...], n_prefix_tokens: int = 1) -> ReshapeTransform:
    """Make a transform from tokens ``N x T x D`` to a feature map ``N x D x *grid``.

    Parameters
    ----------
    grid : tuple of int
        The patch grid, ``(h, w)`` or ``(d, h, w)`` (input size divided by the patch size).
    n_prefix_tokens : int, default 1
        Leading non-patch tokens (class token, register tokens) to drop.
    """
    grid = tuple(int(g) for g in grid)

    def transform(tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3:
            raise TargetLayerError(
                f"reshape_transform expected tokens N x T x D, got shape {tuple(tokens.shape)}."
            )
        patches = tokens[:, n_prefix_tokens:, :]
        expected = math.prod(grid)
        if patches.shape[1] != expected:
            raise TargetLayerError(
                f"reshape_transform expected {expected} patch tokens "
                f"({'x'.join(map(str, grid))}) after dropping {n_prefix_tokens} prefix "
                f"token(s), got {patches.shape[1]} (layer output {tuple(tokens.shape)}); images "
                "of another size need another grid."
            )
        n, _, d = patches.shape
        order = (0, len(grid) + 1, *range(1, len(grid) + 1))
        return patches.reshape(n, *grid, d).permute(*order)

    transform.__name__ = f"tokens_to_map_{'x'.join(map(str, grid))}_drop{n_prefix_tokens}"
    return transform


def channels_last_transform(tokens: torch.Tensor) -> torch.Tensor:
    """``N x *spatial x C`` (Swin-style blocks) to ``N x C x *spatial``."""
    return tokens.movedim(-1, 1)


def _stride_consistent(grid: tuple[int, ...], size: tuple[int, ...], tol: float = 1.25) -> bool:
    """Whether ``grid`` is ``size`` divided by one common stride (rounding allowed)."""
    if len(grid) != len(size) or any(g < 1 or g > s for g, s in zip(grid, size)):
        return False
    ratios = [s / g for g, s in zip(grid, size)]
    return max(ratios) / min(ratios) <= tol


def _is_norm(module: nn.Module) -> bool:
    if isinstance(module, nn.LayerNorm):
        return True
    name = type(module).__name__
    return name.endswith(("LayerNorm", "RMSNorm")) and "2d" not in name.lower()


def output_layout(shape: tuple[int, ...], size: tuple[int, ...], module: nn.Module) -> str | None:
    """``"feature_map"``, ``"channels_last"``, ``"tokens"`` or None (not usable) for CAMs.

    ``size`` is the input's spatial size. A tensor with as many axes as the input is channels
    last when its middle axes, not its trailing ones, are the input size over one stride, or
    when a LayerNorm/Linear (which act on the last axis) produced it.
    """
    d = len(size)
    if len(shape) == d + 2:
        first = _stride_consistent(tuple(shape[2:]), size)
        last = _stride_consistent(tuple(shape[1:-1]), size)
        acts_on_last = isinstance(module, nn.Linear) or _is_norm(module)
        if last and (not first or acts_on_last):
            return "channels_last" if math.prod(shape[1:-1]) > 1 else None
        return "feature_map" if math.prod(shape[2:]) > 1 else None
    if len(shape) == 3 and shape[1] > 1:
        return "tokens"
    return None


def infer_token_grid(
    n_tokens: int, size: tuple[int, ...], grids: list[tuple[int, ...]] | None = None
) -> tuple[tuple[int, ...], int] | None:
    """``(grid, n_prefix_tokens)`` for ``n_tokens`` tokens of an input of spatial ``size``.

    A grid seen in the model (the patch-embedding convolution's output) is used first;
    otherwise the smallest number of prefix tokens whose remainder forms a grid with the
    input's aspect ratio (one stride on every axis). None when nothing fits.
    """
    for grid in grids or []:
        prefix = n_tokens - math.prod(grid)
        if 0 <= prefix <= MAX_PREFIX_TOKENS:
            return tuple(grid), prefix
    d = len(size)
    for prefix in range(0, min(MAX_PREFIX_TOKENS, n_tokens - 1) + 1):
        n = n_tokens - prefix
        stride = (math.prod(size) / n) ** (1 / d)
        grid = tuple(max(1, round(s / stride)) for s in size)
        if math.prod(grid) == n and _stride_consistent(grid, size, tol=1.01):
            return grid, prefix
    return None


def _parent(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _format_grid_hint(grid: tuple[int, ...] | None, prefix: int) -> str:
    if grid is None:
        return "xai_audit.model.vit_reshape_transform(grid_h, grid_w, n_prefix_tokens=1)"
    if len(grid) == 2:
        return (
            f"xai_audit.model.vit_reshape_transform({grid[0]}, {grid[1]}, n_prefix_tokens={prefix})"
        )
    return f"xai_audit.model.token_reshape_transform({grid}, n_prefix_tokens={prefix})"


def _reshape_for(
    info: LayerInfo, module: nn.Module, size: tuple[int, ...], grids: list[tuple[int, ...]]
) -> tuple[str | None, ReshapeTransform | None, str]:
    """``(layout, transform, note)`` for one probed layer; raises when tokens do not fit."""
    layout = output_layout(info.output_shape, size, module)
    if layout == "channels_last":
        return layout, channels_last_transform, "channels-last output moved to channels-first"
    if layout == "tokens":
        found = infer_token_grid(info.output_shape[1], size, grids)
        if found is None:
            raise TargetLayerError(
                f"Layer {info.name!r} outputs tokens of shape {info.output_shape} (N x T x D), "
                f"but {info.output_shape[1]} tokens form no patch grid for an input of size "
                f"{'x'.join(map(str, size))}. Pass reshape_transform="
                + _format_grid_hint(None, 1)
                + " with your model's patch grid, to ModelAdapter or explain()."
            )
        grid, prefix = found
        note = f"{prefix} prefix token(s) dropped, {'x'.join(map(str, grid))} patch grid"
        return layout, token_reshape_transform(grid, prefix), note
    return layout, None, ""


def choose_target_layer(
    model: nn.Module, example: torch.Tensor, *, name_prefix: str = ""
) -> TargetLayerChoice:
    """The default CAM layer and the reshape its output needs.

    Rules:

    * Convolutional networks: the last layer (by the end of its forward call) with a
      channels-first spatial output, run once per forward pass, more than one position.
    * Transformers: a *block* is a module with two or more norm layers (LayerNorm, RMSNorm)
      as direct children whose outputs are tokens (``N x T x D``) or channels-last maps
      (``N x h x w x C``, Swin). When the last block ends after the last feature map (so the
      patch-embedding convolution of a ViT is not chosen), the first norm of the last block
      is chosen (as pytorch-grad-cam recommends: the final norm only reaches the class token).
      Tokens are reshaped to ``N x D x *grid``: the grid is that of a convolution in the
      model with ``T - k`` positions (the patch embedding), else the input's aspect ratio, and
      the ``k`` leading class/register tokens are dropped. Channels-last maps are moved to
      channels-first.

    Parameters
    ----------
    model : torch.nn.Module
        The network (already on the example's device).
    example : torch.Tensor
        One small input batch in the model's input layout.
    name_prefix : str, optional
        Prefix of the user's model inside ``model`` (a wrapper), removed from the returned
        name and from messages.

    Raises
    ------
    TargetLayerError
        When no layer fits, naming the model's own token layers and the reshape to pass.
    """
    size = tuple(int(s) for s in example.shape[2:])
    infos = probe_layers(model, example)
    modules = dict(model.named_modules())
    layouts = {
        i.name: output_layout(i.output_shape, size, modules[i.name])
        for i in infos
        if i.calls == 1 and i.output_shape
    }
    maps = [i for i in infos if layouts.get(i.name) == "feature_map"]
    best_map = max(maps, key=lambda i: i.finish_order) if maps else None
    grids = [tuple(i.output_shape[2:]) for i in sorted(maps, key=lambda i: -i.finish_order)]

    def user_name(name: str) -> str:  # relative to the user's model, not a wrapper
        return name[len(name_prefix) :] if name_prefix and name.startswith(name_prefix) else name

    by_name = {i.name: i for i in infos}
    norm_children: dict[str, list[LayerInfo]] = {}
    for i in infos:
        if layouts.get(i.name) in ("tokens", "channels_last") and _is_norm(modules[i.name]):
            parent = _parent(i.name)
            if user_name(parent) not in ("", name_prefix.rstrip(".")):  # not the root
                norm_children.setdefault(parent, []).append(i)
    # A block's end: its own forward's, or its last norm's when the block is never called.
    block_end = {
        p: by_name[p].finish_order if p in by_name else max(k.finish_order for k in kids)
        for p, kids in norm_children.items()
        if len(kids) >= 2
    }
    last_block = max(block_end, key=block_end.get) if block_end else None

    if last_block is not None and (
        best_map is None or block_end[last_block] > best_map.finish_order
    ):
        first_norm = min(norm_children[last_block], key=lambda i: i.finish_order)
        layout, transform, note = _reshape_for(first_norm, modules[first_norm.name], size, grids)
        return TargetLayerChoice(
            user_name(first_norm.name),
            modules[first_norm.name],
            transform,
            str(layout),
            first_norm.output_shape,
            f"first norm of the last transformer block {user_name(last_block)!r}; {note}",
        )
    if best_map is not None:
        name, module = resolve_layer(model, best_map.name)
        return TargetLayerChoice(
            user_name(name), module, None, "feature_map", best_map.output_shape
        )

    token_layers = [i for i in infos if layouts.get(i.name) in ("tokens", "channels_last")]
    shown = ", ".join(f"{user_name(i.name)!r} {i.output_shape}" for i in token_layers[-3:])
    want = "N x C x H x W" if example.ndim == 4 else "N x C x D x H x W"
    if token_layers:
        norms = [i for i in token_layers if _is_norm(modules[i.name])]
        pick = (norms or token_layers)[-1]
        found = (
            infer_token_grid(pick.output_shape[1], size, grids)
            if layouts[pick.name] == "tokens"
            else None
        )
        reshape = (
            "xai_audit.model.channels_last_transform"
            if layouts[pick.name] == "channels_last"
            else _format_grid_hint(*(found or (None, 1)))
        )
        hint = (
            f" Token-shaped outputs (N x T x D) were seen at {shown}, but no transformer block "
            "(a module with two norm layers) to choose from. Pass e.g. "
            f"target_layer={user_name(pick.name)!r} and reshape_transform={reshape} to "
            "ModelAdapter or explain() (prefer a norm inside the last block: a final norm read "
            "only through the class token gives an empty map)."
        )
    else:
        hint = ""
    raise TargetLayerError(
        f"Could not find a layer with a spatial feature-map output ({want}) for CAM methods."
        f"{hint} Pass target_layer=<name from model.named_modules()> to ModelAdapter or to "
        "explain(), or use a method that needs no layer (integrated_gradients, saliency, "
        "occlusion)."
    )


def layer_reshape(
    model: nn.Module, layer: nn.Module, example: torch.Tensor
) -> tuple[ReshapeTransform | None, tuple[int, ...], str]:
    """The reshape a given layer's output needs: ``(transform or None, output shape, note)``.

    One probe forward pass on ``example``; tokens get the grid rule of
    :func:`choose_target_layer`, channels-last maps a move of the channel axis.
    """
    size = tuple(int(s) for s in example.shape[2:])
    infos = probe_layers(model, example)
    modules = dict(model.named_modules())
    names = [n for n, m in modules.items() if m is layer]
    info = next((i for i in infos if i.name in names), None)
    if info is None or not info.output_shape:
        return None, info.output_shape if info else (), ""
    maps = [
        i
        for i in infos
        if i.calls == 1
        and i.output_shape
        and output_layout(i.output_shape, size, modules[i.name]) == "feature_map"
    ]
    grids = [tuple(i.output_shape[2:]) for i in sorted(maps, key=lambda i: -i.finish_order)]
    _layout, transform, note = _reshape_for(info, modules[info.name], size, grids)
    return transform, info.output_shape, note
