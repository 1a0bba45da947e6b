"""Context managers that leave a model exactly as they found it.

Explainers and predictors switch a model to eval mode and toggle ``requires_grad``; users'
models must come back with the same per-module ``training`` flags and per-parameter
``requires_grad`` flags, also when an exception is raised half-way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def preserved_state(module: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's ``training`` flag and every parameter's ``requires_grad``.

    Parameters
    ----------
    module : torch.nn.Module
        The model whose state is recorded on entry and restored on exit.

    Yields
    ------
    torch.nn.Module
        The same module, to be changed freely inside the block.
    """
    with _recorded(module):
        yield module


@contextmanager
def eval_mode(module: nn.Module, *, freeze_parameters: bool = True) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode (and by default stop parameter gradients) for the block.

    Freezing parameters means backward passes for attributions compute only what they need
    (gradients to activations or inputs), never the weight gradients.
    """
    with _recorded(module) as (modules, params):
        # module.eval() honours a model's own train() override; it is skipped when nothing
        # is in training mode (the usual case for a model under audit): it would be a no-op.
        if any(m.training for m in modules):
            module.eval()
        if freeze_parameters:
            for p in params:
                if p.requires_grad:
                    p.requires_grad = False
        yield module


@contextmanager
def _recorded(module: nn.Module) -> Iterator[tuple[list[nn.Module], list[torch.Tensor]]]:
    """Record the flags on entry, write back the changed ones on exit.

    This runs on every explain() call: the module tree is walked once (a DenseNet has
    hundreds of submodules, and ``modules()``/``parameters()`` are Python generators), and
    only changed flags are written back (``Module.__setattr__`` is slow Python).
    """
    modules = submodules(module)
    params = [p for m in modules for p in m._parameters.values() if p is not None]
    training = [m.training for m in modules]
    requires_grad = [p.requires_grad for p in params]
    try:
        yield modules, params
    finally:
        for m, flag in zip(modules, training, strict=True):
            if m.training != flag:
                m.training = flag
        for p, flag in zip(params, requires_grad, strict=True):
            if p.requires_grad != flag:
                p.requires_grad = flag


def parameters_grad_snapshot(module: nn.Module) -> list[torch.Tensor | None]:
    """The ``.grad`` of every parameter (used by tests to check nothing was accumulated)."""
    return [None if p.grad is None else p.grad.detach().clone() for p in module.parameters()]


def submodules(module: nn.Module) -> list[nn.Module]:
    """``module`` and every module below it, each once (breadth-first).

    ``Module.modules()`` does the same through ``named_modules``, which builds every
    submodule's dotted name on the way: 2.4x slower on a DenseNet-121 (240 vs 100 us), paid
    twice per explain() call. The flags recorded here do not need names or order.
    """
    out = [module]
    seen = {id(module)}
    i = 0
    while i < len(out):
        for child in out[i]._modules.values():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                out.append(child)
        i += 1
    return out
