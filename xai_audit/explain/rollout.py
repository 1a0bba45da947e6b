"""Attention rollout (Abnar & Zuidema 2020) for vision transformers, 2D and 3D.

Neither captum nor MONAI computes it, so it is written here: the attention probabilities of
every block are captured during one forward pass, their heads fused, the residual added
(``0.5 A + 0.5 I``, rows renormalised) and the matrices multiplied from the first block to the
last. The class token's row over the patch tokens, reshaped to the patch grid (inferred like the
CAM reshape, :func:`xai_audit.model.layers.infer_token_grid`) and upsampled, is the map; a model
without a class token uses the mean row.

Where the attention probabilities come from (restored afterwards):

* ``nn.MultiheadAttention`` (torchvision ViT): called with ``need_weights=True,
  average_attn_weights=False`` through a forward pre-hook;
* MONAI ``SABlock`` and timm ``Attention``: the input of their attention dropout
  (``drop_weights`` / ``attn_drop``), with the fused kernels switched off
  (``use_flash_attention`` / ``fused_attn``) for the pass.

The map is class-agnostic: the same for every target (rollout does not read the output).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from ..model import ModelAdapter, TargetLayerError
from ..model.layers import infer_token_grid, output_layout, probe_layers
from .base import Explainer, predicted_targets, register_method
from .cam import upsample

#: Dropout modules that receive attention probabilities (MONAI SABlock, timm Attention).
_ATTN_DROPOUT_NAMES = ("drop_weights", "attn_drop")
#: Flags that select a fused kernel without accessible weights (MONAI, timm).
_FUSED_FLAGS = ("use_flash_attention", "fused_attn")


@contextmanager
def _capture_attention(model: nn.Module):
    """Yield the list that collects each block's attention ``N x heads x T x T``."""
    found: list[torch.Tensor] = []
    handles = []
    flags: list[tuple[nn.Module, str, Any]] = []

    def mha_pre(_m, args, kwargs):
        kwargs = dict(kwargs)
        kwargs["need_weights"] = True
        kwargs["average_attn_weights"] = False
        return args, kwargs

    def mha_post(_m, _args, output):
        if isinstance(output, tuple) and len(output) > 1 and output[1] is not None:
            found.append(output[1].detach())

    def dropout_pre(_m, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].ndim == 4:
            found.append(args[0].detach())

    try:
        for name, module in model.named_modules():
            if isinstance(module, nn.MultiheadAttention):
                handles.append(module.register_forward_pre_hook(mha_pre, with_kwargs=True))
                handles.append(module.register_forward_hook(mha_post))
            elif name.rsplit(".", 1)[-1] in _ATTN_DROPOUT_NAMES:
                handles.append(module.register_forward_pre_hook(dropout_pre))
            for flag in _FUSED_FLAGS:
                if isinstance(getattr(module, flag, None), bool):
                    flags.append((module, flag, getattr(module, flag)))
                    setattr(module, flag, False)
        yield found
    finally:
        for h in handles:
            h.remove()
        for module, flag, value in flags:
            setattr(module, flag, value)


def rollout(attentions: list[torch.Tensor], head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout ``N x T x T`` from per-block attentions ``N x heads x T x T``."""
    result = None
    for att in attentions:
        if head_fusion == "mean":
            a = att.mean(dim=1)
        elif head_fusion == "max":
            a = att.amax(dim=1)
        else:
            a = att.amin(dim=1)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    assert result is not None
    return result


@register_method
class AttentionRollout(Explainer):
    """Attention rollout for ViTs: how much each patch flows into the class token.

    Parameters
    ----------
    head_fusion : {"mean", "max", "min"}, default "mean"
        How the heads of one block are combined.
    """

    removes_own_hooks = True  # captum's and ours go in finally clauses

    name = "attention_rollout"
    aliases = ("rollout",)
    description = "Attention rollout (Abnar & Zuidema 2020), class-agnostic, for ViTs."
    defaults: ClassVar[dict[str, Any]] = {"head_fusion": "mean", "interpolate_mode": "auto"}

    def setup(self, adapter: ModelAdapter, example: torch.Tensor) -> None:
        if self.params["head_fusion"] not in ("mean", "max", "min"):
            raise ValueError(
                f"head_fusion must be 'mean', 'max' or 'min', got {self.params['head_fusion']!r}."
            )
        size = tuple(int(s) for s in example.shape[2:])
        x = example[:1]
        with torch.no_grad(), _capture_attention(adapter.module) as found:
            infos = probe_layers(adapter.module, x)
        if not found:
            raise TargetLayerError(
                "attention_rollout found no attention weights: it reads nn.MultiheadAttention, "
                "MONAI SABlock and timm Attention blocks (a vision transformer). For other "
                "models use gradcam, integrated_gradients or occlusion."
            )
        shapes = {tuple(a.shape[i] for i in (0, 2, 3)) for a in found}
        if shapes != {(x.shape[0], found[-1].shape[-1], found[-1].shape[-1])}:
            raise TargetLayerError(
                "attention_rollout needs global attention over one token sequence per image; "
                f"this model's attention maps have shapes {sorted(shapes)[:4]} (batch, tokens, "
                "tokens): windowed attention (Swin) or token merging is not supported. Use "
                "gradcam (its default layer handles Swin) or integrated_gradients."
            )
        modules = dict(adapter.module.named_modules())
        grids = [
            tuple(i.output_shape[2:])
            for i in sorted(infos, key=lambda i: -i.finish_order)
            if i.calls == 1
            and i.output_shape
            and output_layout(i.output_shape, size, modules[i.name]) == "feature_map"
        ]
        n_tokens = int(found[-1].shape[-1])
        grid = infer_token_grid(n_tokens, size, grids)
        if grid is None:
            raise TargetLayerError(
                f"attention_rollout: {n_tokens} tokens form no patch grid for an input of size "
                f"{'x'.join(map(str, size))} (windowed attention, e.g. Swin, is not supported)."
            )
        self.grid, self.n_prefix = grid
        self.n_blocks = len(found)

    def explain_batch(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad(), _capture_attention(adapter.module) as found:
            logits = adapter.forward(x)
        if len(found) != self.n_blocks:
            raise TargetLayerError(
                f"attention_rollout saw {len(found)} attention blocks, {self.n_blocks} on the "
                "first batch; the model must run the same blocks for every batch."
            )
        joint = rollout([a.float() for a in found], self.params["head_fusion"])
        p = self.n_prefix
        # The class token's row over the patches; without a class token the mean row.
        rows = joint[:, 0, p:] if p > 0 else joint.mean(dim=1)
        maps = rows.reshape(rows.shape[0], 1, *self.grid)
        maps = upsample(maps, tuple(x.shape[2:]), self.params["interpolate_mode"])[:, 0]
        if targets is None:
            targets = predicted_targets(logits)
        return maps, targets, logits
