"""Hooks that never outlive an explanation, and capture of layer activations for CAMs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..model import TargetLayerError
from ..model.layers import ReshapeTransform

# Every per-module hook table torch keeps (the *_with_kwargs / always_called tables are
# keyed by the same handle ids as the hook tables they annotate).
_HOOK_TABLES = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def hook_counts(module: nn.Module) -> int:
    """Number of module hooks registered anywhere in ``module`` (0 for a clean model)."""
    return sum(
        len(getattr(m, table, {}))
        for m in module.modules()
        for table in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
        )
    )


@contextmanager
def hook_guard(module: nn.Module) -> Iterator[nn.Module]:
    """Remove, on exit, every module hook registered inside the block.

    Our own hooks and captum's are removed in ``finally`` clauses already; this is the safety
    net for third-party code (shap) that may not, so a failed explanation never leaves a hook
    on the user's model.
    """
    # Only non-empty tables are recorded: a large model has hundreds of modules, almost all
    # without hooks, and this runs on every explain() call.
    before: dict[tuple[int, str], set] = {}
    for m in module.modules():
        attrs = m.__dict__
        for table in _HOOK_TABLES:
            hooks = attrs.get(table)
            if hooks:
                before[(id(m), table)] = set(hooks)
    try:
        yield module
    finally:
        for m in module.modules():
            attrs = m.__dict__
            for table in _HOOK_TABLES:
                hooks = attrs.get(table)
                if hooks:
                    keep = before.get((id(m), table), set())
                    for key in [k for k in hooks if k not in keep]:
                        del hooks[key]


class LayerCapture:
    """Record layers' outputs during one forward pass so that gradients can reach them.

    Each captured output is made a graph node that requires grad (a leaf when nothing before
    it does, so backward stops there: no gradient to the input or to earlier layers), and the
    rest of the network receives a clone of it, so that an in-place operation downstream
    (``ReLU(inplace=True)``) cannot overwrite the captured values.

    Use as a context manager; the hooks are removed on exit, also after an exception.
    """

    def __init__(
        self,
        layers: Sequence[tuple[str, nn.Module]],
        reshape_transform: ReshapeTransform | None = None,
    ) -> None:
        self.layers = list(layers)
        self.reshape_transform = reshape_transform
        self.outputs: list[torch.Tensor | None] = [None] * len(self.layers)
        self._calls = [0] * len(self.layers)
        self._handles: list[Any] = []

    def _hook(self, index: int):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> torch.Tensor:
            name = self.layers[index][0]
            if not isinstance(output, torch.Tensor):
                raise TargetLayerError(
                    f"Layer {name!r} returns a {type(output).__name__}, not a tensor; choose a "
                    "layer with a single tensor output as target_layer."
                )
            self._calls[index] += 1
            if self._calls[index] > 1:
                raise TargetLayerError(
                    f"Layer {name!r} runs more than once per forward pass (a shared module); "
                    "choose a layer that is called once as target_layer."
                )
            captured = output if output.requires_grad else output.detach().requires_grad_()
            self.outputs[index] = captured
            return captured.clone()

        return hook

    def __enter__(self) -> LayerCapture:
        try:
            for i, (_name, module) in enumerate(self.layers):
                self._handles.append(module.register_forward_hook(self._hook(i)))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove the hooks (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def feature_maps(self, tensors: Sequence[torch.Tensor], ndim: int) -> list[torch.Tensor]:
        """Apply the reshape transform and check that each tensor is an ``N x C x *s`` map."""
        out = []
        for (name, _m), t in zip(self.layers, tensors):
            raw = tuple(t.shape)  # the layer's own output shape, reported in errors
            if self.reshape_transform is not None:
                t = self.reshape_transform(t)
            if t.ndim != ndim:
                after = (
                    f" ({tuple(t.shape)} after reshape_transform)"
                    if self.reshape_transform is not None
                    else ""
                )
                raise TargetLayerError(
                    f"Layer {name!r} outputs shape {raw}{after}, not a feature map with "
                    f"{ndim - 2} spatial axes. Pass target_layer=<a convolutional layer> or, for "
                    "transformers, reshape_transform= to explain() or ModelAdapter."
                )
            out.append(t)
        return out
