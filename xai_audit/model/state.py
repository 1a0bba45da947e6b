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
    training = [(m, m.training) for m in module.modules()]
    requires_grad = [(p, p.requires_grad) for p in module.parameters()]
    try:
        yield module
    finally:
        for m, flag in training:
            m.training = flag
        for p, flag in requires_grad:
            p.requires_grad_(flag)


@contextmanager
def eval_mode(module: nn.Module, *, freeze_parameters: bool = True) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode (and by default stop parameter gradients) for the block.

    Freezing parameters means backward passes for attributions compute only what they need
    (gradients to activations or inputs), never the weight gradients.
    """
    with preserved_state(module):
        module.eval()
        if freeze_parameters:
            for p in module.parameters():
                p.requires_grad_(False)
        yield module


def parameters_grad_snapshot(module: nn.Module) -> list[torch.Tensor | None]:
    """The ``.grad`` of every parameter (used by tests to check nothing was accumulated)."""
    return [None if p.grad is None else p.grad.detach().clone() for p in module.parameters()]
