"""Every explanation method: shapes (2D/3D), batching, targets, in-place ReLU, hooks, state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xai_audit.explain import Attribution, available_methods, explain, get_method
from xai_audit.explain.hooks import hook_counts
from xai_audit.model import ModelAdapter, NonFiniteError, TargetLayerError

# Small settings so that every method runs in well under a second on 16 x 16 images.
FAST: dict[str, dict] = {
    "integrated_gradients": {"n_steps": 8},
    "smoothgrad": {"nt_samples": 4},
    "expected_gradients": {"nsamples": 8},
    "partition_shap": {"max_evals": 40},
    "occlusion": {"patch_size": 4, "stride": 4},
}
# attention_rollout needs a vision transformer (tests/test_models_zoo.py); these nets are CNNs.
METHODS = [m for m in available_methods() if m not in ("partition_shap", "attention_rollout")]
VOLUME_METHODS = [m for m in METHODS if get_method(m).supports_3d]
ALL = [
    *METHODS,
    pytest.param("partition_shap", marks=pytest.mark.slow),  # shap's numba compile: ~15 s
]


def small_net(dims: int = 2, inplace: bool = False, n_out: int = 3) -> nn.Module:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d
    return nn.Sequential(
        conv(1, 4, 3, padding=1),
        nn.ReLU(inplace=inplace),
        conv(4, 6, 3, padding=1, stride=2),
        nn.ReLU(inplace=inplace),
        pool(1),
        nn.Flatten(),
        nn.Linear(6, n_out),
    )


def images(n: int = 3, dims: int = 2, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand((n, 1) + (size if dims == 2 else 8,) * dims, generator=g)


@pytest.mark.parametrize("method", ALL)
def test_2d_shapes_batching_and_targets(method: str) -> None:
    net = small_net()
    x = images(3)
    params = FAST.get(method, {})
    att = explain(net, x, method, batch_size=3, **params)
    assert isinstance(att, Attribution)
    assert att.maps.shape == (3, 16, 16) and att.maps.dtype == np.float32
    assert att.targets.shape == (3,) and att.targets.dtype == np.int64
    assert np.isfinite(att.maps).all() and np.abs(att.maps).sum() > 0
    expected = net(x).argmax(1).numpy()
    np.testing.assert_array_equal(att.targets, expected)  # default: predicted class
    assert att.method == method and att.scores is not None and att.scores.shape == (3,)
    import json

    json.dumps(att.to_dict())  # params and metadata are JSON-serialisable

    # The batch result equals per-image results (also for seeded stochastic methods).
    single = explain(net, x, method, batch_size=1, **params)
    np.testing.assert_allclose(att.maps, single.maps, rtol=1e-4, atol=1e-6)

    # Per-item targets: item i explained for class t[i], equal to a fixed-target run.
    per_item = explain(net, x, method, target=[2, 0, 2], **params)
    np.testing.assert_array_equal(per_item.targets, [2, 0, 2])
    fixed = explain(net, x, method, target=2, **params)
    np.testing.assert_allclose(per_item.maps[[0, 2]], fixed.maps[[0, 2]], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", VOLUME_METHODS)
def test_3d_shapes_and_batching(method: str) -> None:
    net = small_net(dims=3)
    x = images(2, dims=3)
    att = explain(net, x, method, **FAST.get(method, {}))
    assert att.maps.shape == (2, 8, 8, 8)
    assert np.isfinite(att.maps).all()
    single = explain(net, x, method, batch_size=1, **FAST.get(method, {}))
    np.testing.assert_allclose(att.maps, single.maps, rtol=1e-4, atol=1e-6)


def test_3d_unsupported_method_gives_clear_error() -> None:
    with pytest.raises(ValueError, match="does not support 3D.*integrated_gradients"):
        explain(small_net(dims=3), images(1, dims=3), "partition_shap")


@pytest.mark.parametrize("method", METHODS)
def test_multilabel_all_targets(method: str) -> None:
    net = small_net(n_out=3)
    model = ModelAdapter(net, class_names=["a", "b", "c"], multi_label=True, device="cpu")
    x = images(2)
    att = explain(model, x, method, target="all", **FAST.get(method, {}))
    assert att.maps.shape == (2, 3, 16, 16)
    np.testing.assert_array_equal(att.targets, [[0, 1, 2], [0, 1, 2]])
    assert att.scores.shape == (2, 3)
    np.testing.assert_allclose(att.scores, torch.sigmoid(net(x)).detach().numpy(), rtol=1e-5)
    by_name = explain(model, x, method, target="b", **FAST.get(method, {}))
    np.testing.assert_allclose(att.maps[:, 1], by_name.maps, rtol=1e-4, atol=1e-6)
    assert att.normalized().maps.max() <= 1.0


@pytest.mark.parametrize("method", METHODS)
def test_inplace_relu_models(method: str) -> None:
    net = small_net(inplace=True)
    x = images(2)
    att = explain(net, x, method, **FAST.get(method, {}))
    assert att.maps.shape == (2, 16, 16) and np.isfinite(att.maps).all()
    # Same weights without in-place ReLUs give the same maps.
    plain = small_net(inplace=False)
    plain.load_state_dict(net.state_dict())
    np.testing.assert_allclose(
        att.maps, explain(plain, x, method, **FAST.get(method, {})).maps, rtol=1e-4, atol=1e-6
    )


class FailingNet(nn.Module):
    """Raises inside forward on a chosen call (or whenever a submodule carries hooks)."""

    def __init__(self, fail_on_call: int | None = 2, fail_when_hooked: bool = False) -> None:
        super().__init__()
        self.body = small_net()
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.fail_when_hooked = fail_when_hooked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_on_call or (
            self.fail_when_hooked and hook_counts(self.body) > 0
        ):
            raise RuntimeError("boom")
        return self.body(x)


def _state(net: nn.Module) -> tuple:
    return (
        [m.training for m in net.modules()],
        [p.requires_grad for p in net.parameters()],
        [None if p.grad is None else p.grad.clone() for p in net.parameters()],
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["second_call", "while_hooked"])
def test_no_hook_or_state_change_after_error(method: str, mode: str) -> None:
    net = FailingNet(
        fail_on_call=2 if mode == "second_call" else None,
        fail_when_hooked=mode == "while_hooked",
    )
    net.train()
    net.body[0].weight.grad = torch.ones_like(net.body[0].weight)  # must survive untouched
    net.body[2].weight.requires_grad_(False)
    before = _state(net)
    model = ModelAdapter(net, class_names=["a", "b", "c"], target_layer="body.3", device="cpu")
    x = images(2)
    if mode == "while_hooked" and method not in (
        "gradcam",
        "gradcam++",
        "hirescam",
        "layercam",
        "guided_backprop",
        "guided_gradcam",
    ):
        pytest.skip("this method registers no hooks")
    with pytest.raises(RuntimeError, match="boom"):
        explain(model, x, method, batch_size=1, **FAST.get(method, {}))
    assert hook_counts(net) == 0
    after = _state(net)
    assert after[0] == before[0] and after[1] == before[1]
    assert all(torch.equal(a, b) for a, b in zip(after[2], before[2]) if a is not None)
    assert [g is None for g in after[2]] == [g is None for g in before[2]]


@pytest.mark.parametrize("method", METHODS)
def test_state_grads_and_hooks_untouched_after_success(method: str) -> None:
    net = small_net()
    net.train()
    net[0].weight.grad = torch.full_like(net[0].weight, 3.0)
    before = _state(net)
    x = images(2)
    x.requires_grad_(False)
    explain(net, x, method, **FAST.get(method, {}))
    after = _state(net)
    assert hook_counts(net) == 0
    assert after[0] == before[0] and after[1] == before[1]
    assert torch.equal(after[2][0], before[2][0])
    assert all(g is None for g in after[2][1:])
    assert x.grad is None and torch.is_grad_enabled()


def test_ig_memory_bounded_for_many_steps() -> None:
    """n_steps=1000 on a batch never runs a forward pass larger than internal_batch_size."""
    sizes: list[int] = []
    net = small_net()
    handle = net[0].register_forward_pre_hook(lambda _m, inp: sizes.append(inp[0].shape[0]))
    try:
        att = explain(
            net,
            images(4),
            "ig",
            target=0,
            n_steps=1000,
            internal_batch_size=64,
            approximation="riemann_trapezoid",
        )  # (Gauss-Legendre nodes for 1000 are slow)
    finally:
        handle.remove()
    assert max(sizes) <= 64 and sum(sizes) >= 4000
    assert att.params["n_steps"] == 1000 and att.params["internal_batch_size"] == 64


# ------------------------------------------------------------------------------ bad input
def test_unknown_method_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="Unknown explanation method 'gradcamm'.*gradcam.*ig"):
        explain(small_net(), images(1), "gradcamm")


def test_unknown_parameter_lists_accepted_ones() -> None:
    with pytest.raises(TypeError, match="n_step.*accepts.*n_steps"):
        explain(small_net(), images(1), "ig", n_step=5)


@pytest.mark.parametrize("target", [3, -1, [0, 5]])
def test_target_out_of_range(target) -> None:
    with pytest.raises(ValueError, match="out of range"):
        explain(small_net(), images(2), "saliency", target=target)


def test_target_unknown_name_and_wrong_length() -> None:
    model = ModelAdapter(small_net(), class_names=["a", "b", "c"], device="cpu")
    with pytest.raises(ValueError, match="Unknown class 'z'"):
        explain(model, images(2), "gradcam", target="z")
    with pytest.raises(ValueError, match="3 entries but 2 images"):
        explain(model, images(2), "gradcam", target=[0, 1, 2])


def test_nan_input() -> None:
    x = images(3)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(NonFiniteError, match=r"positions \[1\]"):
        explain(small_net(), x, "ig")


class NoSpatial(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16 * 16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_cam_without_spatial_layer_says_what_to_pass() -> None:
    with pytest.raises(TargetLayerError, match="target_layer=.*integrated_gradients"):
        explain(NoSpatial(), images(1), "gradcam")
    with pytest.raises(TargetLayerError, match="not a feature map"):
        explain(NoSpatial(), images(1), "gradcam++", target_layer="fc")
    # Pixel methods still work on such a model.
    assert explain(NoSpatial(), images(1), "saliency").maps.shape == (1, 16, 16)


def test_attribution_container() -> None:
    att = explain(small_net(), images(4), "gradcam", target=1)
    assert len(att) == 4 and len(att[1]) == 1 and len(att[1:3]) == 2
    np.testing.assert_array_equal(att[2].maps[0], att.maps[2])
    norm = att.normalized("minmax")
    assert norm.maps.min() >= 0 and norm.maps.max() <= 1 and norm.normalization == "minmax"
    assert att.normalized("abs").maps.max() <= 1
    assert att.to_dict()["target_layer"] == att.target_layer == "3"


def test_save_and_load_roundtrip(tmp_path) -> None:
    att = explain(small_net(), images(2), "ig", n_steps=4, baseline=0.5)
    path = att.save(tmp_path / "att.npz")
    back = Attribution.load(path)
    np.testing.assert_array_equal(back.maps, att.maps)
    assert back.params == att.params and back.method == "integrated_gradients"


def test_given_logits_spare_the_extra_forward_pass_and_change_nothing():
    """explain(logits=...) reuses the caller's outputs: same result, one forward fewer per batch."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    adapter = ModelAdapter(net, device="cpu", batch_size=4)
    x = torch.rand(10, 1, 8, 8)
    logits = adapter.predict_logits(x)  # (also teaches the adapter its output width)
    calls = []
    handle = net.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        plain = explain(adapter, x, "integrated_gradients", n_steps=4)
        n_plain = len(calls)
        calls.clear()
        given = explain(adapter, x, "integrated_gradients", n_steps=4, logits=logits)
        n_given = len(calls)
    finally:
        handle.remove()
    np.testing.assert_array_equal(given.maps, plain.maps)
    np.testing.assert_array_equal(given.targets, plain.targets)
    np.testing.assert_allclose(given.scores, plain.scores, rtol=1e-6)
    assert n_plain - n_given == 3  # one forward pass saved in each of the 3 batches
    with pytest.raises(ValueError, match="9 rows for 10 images"):
        explain(adapter, x, "integrated_gradients", logits=logits[:9])


def test_too_few_logits_for_a_stream_of_unknown_length_is_an_error():
    """With a stream (no length up front), missing logit rows raise instead of being guessed."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    adapter = ModelAdapter(net, device="cpu", batch_size=4)
    x = torch.rand(8, 1, 8, 8)
    logits = adapter.predict_logits(x)[:5]

    class Stream(torch.utils.data.IterableDataset):  # no len(): N is unknown up front
        def __iter__(self):
            return iter(x)

    batches = torch.utils.data.DataLoader(Stream(), batch_size=4)
    with pytest.raises(ValueError, match="logits has 5 rows"):
        explain(adapter, batches, "integrated_gradients", n_steps=2, logits=logits)
