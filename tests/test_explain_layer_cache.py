"""explain(bare_module, x) reuses the CAM target layer it found before, and only while valid."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from test_audit_helpers import TinyCNN

from xai_audit.explain import _layer_cache, explain
from xai_audit.model import ModelAdapter


@pytest.fixture(autouse=True)
def _empty_cache():
    _layer_cache.clear()
    yield
    _layer_cache.clear()


def _net(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN().eval()


def _count_forwards(net: torch.nn.Module) -> list[int]:
    calls = [0]

    def hook(*_args) -> None:
        calls[0] += 1

    net.register_forward_pre_hook(hook)
    return calls


def test_second_call_skips_the_search_and_gives_the_same_maps() -> None:
    net, x = _net(), torch.rand(3, 1, 32, 32)
    calls = _count_forwards(net)
    first = explain(net, x, "gradcam")
    n_first = calls[0]
    second = explain(net, x, "gradcam")
    n_second = calls[0] - n_first
    # as many forward passes as through an adapter that already knows its layer
    adapter = ModelAdapter(net, device="cpu")
    adapter.target_layer(x)
    explain(adapter, x, "gradcam")  # first call of this adapter learns the output width
    before = calls[0]
    explain(adapter, x, "gradcam")
    assert n_second == calls[0] - before < n_first
    np.testing.assert_array_equal(second.maps, first.maps)
    np.testing.assert_array_equal(second.scores, first.scores)
    assert second.target_layer == first.target_layer == adapter.target_layer_name


def test_cached_layer_is_the_layer_a_fresh_search_finds() -> None:
    net, x = _net(), torch.rand(2, 1, 32, 32)
    explain(net, x, "gradcam")
    name, module = _layer_cache._CACHE[net][1]["target_layer"]
    found = ModelAdapter(net, device="cpu").target_layer(x)
    assert (name, module) == found
    assert module is dict(net.named_modules())[name]


def test_changed_structure_invalidates_the_entry() -> None:
    net, x = _net(), torch.rand(2, 1, 32, 32)
    explain(net, x, "gradcam")
    calls = _count_forwards(net)
    explain(net, x, "gradcam")
    cached_calls = calls[0]
    # replace the last feature layer: the old cached module is no longer in the model
    net.features[3] = torch.nn.Conv2d(4, 8, 3, padding=1)
    got = explain(net, x, "gradcam")
    assert calls[0] - cached_calls > cached_calls  # the search ran again
    fresh = explain(ModelAdapter(net, device="cpu"), x, "gradcam")
    np.testing.assert_array_equal(got.maps, fresh.maps)
    assert got.target_layer == fresh.target_layer
    cached = _layer_cache._CACHE[net][1]["target_layer"][1]
    assert any(cached is m for m in net.modules())


def test_resized_head_is_noticed() -> None:
    net, x = _net(), torch.rand(2, 1, 32, 32)
    explain(net, x, "gradcam")
    net.head = torch.nn.Linear(8, 3)
    att = explain(net, x, "gradcam", target=2)
    assert att.class_names == ["class_0", "class_1", "class_2"]


def test_entry_is_dropped_with_the_module() -> None:
    net, x = _net(), torch.rand(2, 1, 32, 32)
    explain(net, x, "gradcam")
    assert len(_layer_cache._CACHE) == 1
    del net
    gc.collect()
    assert len(_layer_cache._CACHE) == 0


def test_adapters_are_not_cached() -> None:
    net, x = _net(), torch.rand(2, 1, 32, 32)
    explain(ModelAdapter(net, device="cpu"), x, "gradcam")
    assert len(_layer_cache._CACHE) == 0


def test_renamed_layer_is_noticed() -> None:
    """The same module under a new attribute name: the cached name must not be reported."""
    from collections import OrderedDict

    torch.manual_seed(0)
    layers = OrderedDict(
        conv1=torch.nn.Conv2d(1, 4, 3, padding=1),
        relu1=torch.nn.ReLU(),
        conv2=torch.nn.Conv2d(4, 8, 3, padding=1),
        relu2=torch.nn.ReLU(),
        pool=torch.nn.AdaptiveAvgPool2d(1),
        flat=torch.nn.Flatten(),
        head=torch.nn.Linear(8, 2),
    )
    net, x = torch.nn.Sequential(layers).eval(), torch.rand(2, 1, 16, 16)
    before = explain(net, x, "gradcam")
    old = before.target_layer
    assert old in ("conv2", "relu2")
    # Rename in place, same order and same module objects: only the name changes.
    net._modules = OrderedDict(("last" if k == old else k, m) for k, m in net._modules.items())
    after = explain(net, x, "gradcam")
    assert after.target_layer == "last"
    np.testing.assert_array_equal(after.maps, before.maps)
