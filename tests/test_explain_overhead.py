"""The per-call fast paths of explain(): they skip work only when it would change nothing.

Each fast path (issue 17: per-call overhead against captum) has a test that it is taken when
safe, and one that the slow, protective path still runs when it is not.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from xai_audit.explain import base as explain_base
from xai_audit.explain import explain
from xai_audit.explain.base import Explainer, register_method
from xai_audit.explain.hooks import hook_counts
from xai_audit.model import ModelAdapter, NonFiniteError, eval_mode
from xai_audit.model.adapter import nonfinite_rows
from xai_audit.model.state import submodules


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


class CountingTrain(nn.Module):
    """Counts calls of its train() (which Module.eval() goes through)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = small_net()
        self.train_calls = 0

    def train(self, mode: bool = True) -> CountingTrain:
        self.train_calls += 1
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_eval_mode_model_is_not_walked_but_train_mode_model_is_switched_and_restored() -> None:
    net = CountingTrain().eval()
    net.train_calls = 0
    x = torch.rand(2, 1, 8, 8)
    explain(net, x, "gradcam")
    explain(ModelAdapter(net, device="cpu"), x, "integrated_gradients", n_steps=4)
    assert net.train_calls == 0  # nothing to switch: module.eval() was skipped
    assert not any(m.training for m in net.modules())

    net.train()
    net.train_calls = 0
    seen = []
    net.body[1].register_forward_pre_hook(lambda m, i: seen.append(m.training))
    explain(net, x, "gradcam")
    assert net.train_calls == 1 and seen == [False]  # explained in eval mode ...
    assert all(m.training for m in net.modules())  # ... and handed back in training mode


def test_adapter_wrapper_starts_in_the_model_mode() -> None:
    net = small_net().eval()
    assert ModelAdapter(net, device="cpu").module.training is False
    assert ModelAdapter(small_net().train(), device="cpu").module.training is True


def test_eval_mode_restores_only_what_it_changed_with_shared_parameters() -> None:
    net = small_net()
    net.add_module("tied", net[0])  # the same conv twice: its parameters are listed twice
    net[3].weight.requires_grad_(False)
    net[1].eval()
    before_train = [m.training for m in net.modules()]
    before_grad = [p.requires_grad for p in net.parameters()]
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
        assert not any(p.requires_grad for p in net.parameters())
    assert [m.training for m in net.modules()] == before_train
    assert [p.requires_grad for p in net.parameters()] == before_grad


def test_adapter_does_not_move_a_model_already_on_its_device(monkeypatch) -> None:
    net = small_net()
    calls = []
    real_to = nn.Module.to
    monkeypatch.setattr(
        nn.Module, "to", lambda self, *a, **k: calls.append(a) or real_to(self, *a, **k)
    )
    ModelAdapter(net, device="cpu")
    assert calls == []
    meta = small_net().to("meta")  # a model on another device is moved
    try:
        ModelAdapter(meta, device="cpu")
    except NotImplementedError:  # meta tensors hold no data to copy: the move was tried
        pass
    assert calls[-1] == (torch.device("cpu"),)


class LeakyMethod(Explainer):
    """A user-registered method that leaves a forward hook on the model (as shap can)."""

    name = "leaky_test_method"
    defaults: ClassVar[dict] = {}

    def attribute(self, adapter, x, targets):
        adapter.module.register_forward_hook(lambda *a: None)
        return torch.zeros(x.shape[0], *x.shape[2:])


def test_methods_not_known_to_clean_up_keep_the_hook_safety_net() -> None:
    register_method(LeakyMethod, overwrite=True)
    try:
        assert LeakyMethod.removes_own_hooks is False
        net = small_net().eval()
        att = explain(net, torch.rand(2, 1, 8, 8), "leaky_test_method")
        assert att.maps.shape == (2, 8, 8)
        assert hook_counts(net) == 0  # hook_guard removed the leaked hook
    finally:
        explain_base._REGISTRY.pop("leaky_test_method", None)


def test_bare_module_results_equal_adapter_results_on_repeated_calls() -> None:
    net = small_net().eval()
    x = torch.rand(3, 1, 8, 8)
    adapter = ModelAdapter(net, device="cpu")
    ref = explain(adapter, x, "gradcam").maps
    for _ in range(3):  # first call searches the layer, later ones reuse the cache
        att = explain(net, x, "gradcam")
        assert att.target_layer == adapter.target_layer_name
        np.testing.assert_allclose(att.maps, ref, rtol=1e-6, atol=1e-7)


def test_nonfinite_rows_fast_path_agrees_with_the_exact_test() -> None:
    x = torch.rand(6, 1, 5, 5)
    assert nonfinite_rows(x) == []
    # Finite values whose sum overflows take the exact path, which finds nothing.
    big = torch.full((3, 4), 3e38)
    assert not torch.isfinite(big.sum()) and nonfinite_rows(big) == []
    # +inf and -inf cancel to NaN in the sum: both rows are still reported, with the offset.
    x[1, 0, 2, 2] = float("inf")
    x[4, 0, 0, 1] = float("-inf")
    assert nonfinite_rows(x, offset=10) == [11, 14]
    x[1, 0, 2, 2] = float("nan")
    assert nonfinite_rows(x) == [1, 4]
    half = torch.full((2, 3), 6e4, dtype=torch.float16)  # overflows float16 when summed
    assert nonfinite_rows(half) == []
    assert nonfinite_rows(torch.ones(2, 3, dtype=torch.long)) == []
    assert nonfinite_rows(torch.empty(0, 3)) == []


def test_explain_reports_the_nonfinite_image_and_output_positions() -> None:

    net = small_net().eval()
    x = torch.rand(5, 1, 8, 8)
    x[3, 0, 1, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"1 image\(s\) contain NaN.*positions \[4\]"):
        explain(net, torch.cat([x[:1], x]), "saliency", batch_size=2, target=0)
    net[-1].bias.data[0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"outputs for image\(s\) \[0, 1\]"):
        explain(net, torch.rand(2, 1, 8, 8), "saliency", target=1)


def test_submodules_lists_every_module_once_like_modules() -> None:
    net = small_net()
    shared = nn.ReLU()
    net.append(nn.Sequential(shared, shared))  # the same module registered twice
    walked = submodules(net)
    assert len(walked) == len({id(m) for m in walked})
    assert {id(m) for m in walked} == {id(m) for m in net.modules()}


@pytest.mark.parametrize("target", [None, 1, "all"])
def test_scores_assembled_once_equal_the_model_probabilities_across_batches(target) -> None:
    """Scores are computed from the collected logits after the last batch: same numbers."""
    net = small_net().eval()
    x = torch.rand(7, 1, 8, 8)
    with torch.no_grad():
        probs = torch.softmax(net(x), dim=1).numpy()
    att = explain(net, x, "saliency", target=target, batch_size=3)
    if target == "all":
        assert att.scores.shape == att.targets.shape == (7, 2)
        np.testing.assert_allclose(att.scores, probs, rtol=1e-6)
    else:
        expected = probs.argmax(1) if target is None else np.full(7, target)
        np.testing.assert_array_equal(att.targets, expected)
        np.testing.assert_allclose(att.scores, probs[np.arange(7), expected], rtol=1e-6)
