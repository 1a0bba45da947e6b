"""Multi-scale slice embeddings (stage_embedding) and equal block weights (feature_blocks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xai_audit.model import ModelAdapter
from xai_audit.slices import SliceInputError, discover_slices, stage_embedding
from xai_audit.slices.embedding import MAX_STAGE_DIMS


def cnn(first: int = 4, second: int = 6, head: bool = True) -> nn.Module:
    torch.manual_seed(0)
    layers = [
        nn.Conv2d(1, first, 3, stride=2, padding=1),  # 16 -> 8 px
        nn.ReLU(),
        nn.Conv2d(first, second, 3, stride=2, padding=1),  # 8 -> 4 px
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ]
    if head:
        layers.append(nn.Linear(second, 2))
    return nn.Sequential(*layers)


def test_blocks_are_penultimate_then_each_stage_max_and_mean() -> None:
    net = cnn().eval()
    x = torch.rand(5, 1, 16, 16)
    feats, blocks = stage_embedding(ModelAdapter(net, device="cpu"), x)
    # penultimate (6), stage 8 px: max (4) + mean (4), stage 4 px: max (6); the last stage's
    # mean is the penultimate vector itself (global average pooling head), not repeated.
    assert blocks.tolist() == [6, 4, 4, 6]
    with torch.no_grad():
        s1 = net[1](net[0](x))
        s2 = net[3](net[2](s1))
    expected = torch.cat(
        [s2.mean((2, 3)), s1.amax((2, 3)), s1.mean((2, 3)), s2.amax((2, 3))], dim=1
    ).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-6, atol=1e-7)
    assert feats.dtype == np.float32


def test_a_small_object_moves_the_stage_maxima_far_more_than_the_penultimate() -> None:
    # The reason for the maxima: a 2 x 2 bright spot in a 16 x 16 image is a large change
    # of "does a detector fire anywhere", a small one of the average.
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    nn.init.ones_(net[0].weight)
    net = nn.Sequential(net, nn.Linear(2, 2)).eval()
    x = torch.zeros(2, 1, 16, 16)
    x[1, 0, 5:7, 9:11] = 1.0
    feats, blocks = stage_embedding(ModelAdapter(net, device="cpu"), x)
    assert blocks.tolist() == [2, 2]  # penultimate, stage max
    diff = feats[1] - feats[0]
    np.testing.assert_allclose(diff, [4 / 256, 4 / 256, 1.0, 1.0], rtol=1e-6)


def test_wide_stages_are_projected_the_same_way_in_every_batch() -> None:
    net = cnn(first=MAX_STAGE_DIMS + 72, second=3).eval()
    adapter = ModelAdapter(net, device="cpu")
    x = torch.rand(6, 1, 16, 16)
    feats, blocks = stage_embedding(adapter, x)
    assert blocks.tolist() == [3, MAX_STAGE_DIMS, MAX_STAGE_DIMS, 3]
    part, _ = stage_embedding(adapter, x[3:])  # another batch: same projection
    np.testing.assert_allclose(part, feats[3:], rtol=1e-5, atol=1e-6)


def test_model_without_linear_head_and_state_left_alone() -> None:
    net = cnn(second=2, head=False).train()  # a convolutional head: 2 channels, pooled
    before = [m.training for m in net.modules()]
    feats, blocks = stage_embedding(ModelAdapter(net, device="cpu"), torch.rand(3, 1, 16, 16))
    assert blocks.tolist() == [4, 4, 2, 2]  # no penultimate block: every stage's max and mean
    assert feats.shape == (3, 12)
    assert [m.training for m in net.modules()] == before
    assert all(not m._forward_hooks for m in net.modules())


def blocks_data(seed: int, n: int = 3000):
    """A narrow block (2 columns) that carries a failing cluster, beside a wide noisy block
    (60 columns, 10x the scale) that carries nothing."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(int)
    bad = rng.random(n) < 0.2
    narrow = rng.normal(size=(n, 2)) + 6.0 * bad[:, None]
    wide = 10.0 * rng.normal(size=(n, 60))
    logit = np.where(y == 1, 2.0, -2.0) + rng.normal(0, 1.0, n)
    logit = np.where(bad & (y == 1), -0.5 + rng.normal(0, 1.0, n), logit)
    score = 1 / (1 + np.exp(-logit))
    return np.hstack([narrow, wide]).astype(np.float32), y, score, bad


@pytest.mark.parametrize("seed", [0, 1])
def test_equal_block_weights_find_what_a_wide_block_drowns(seed: int) -> None:
    x, y, s, bad = blocks_data(seed)
    plain = discover_slices(x, y, s, n_boot=200, seed=seed)
    weighted = discover_slices(x, y, s, n_boot=200, seed=seed, feature_blocks=[2, 60])
    assert not plain.table["significant"].any()  # PCA keeps the wide block's noise
    best = weighted.significant.iloc[0]
    assert best["label"] == "1" and best["metric"] == "sensitivity" and best["gap"] < -0.3
    members = np.isin([f"row_{i}" for i in range(len(y))], weighted.cases(int(best["slice"])))
    truth = bad & (y == 1)
    assert (members & truth).sum() / members.sum() >= 0.9
    # recall below 1: the score residualisation takes the part of the cluster's direction
    # that the failure itself correlates with the score
    assert (members & truth).sum() / truth.sum() >= 0.8
    assert weighted.settings["feature_blocks"] == [2, 60]


def test_feature_blocks_must_cover_the_columns() -> None:
    x, y, s, _ = blocks_data(0, n=400)
    with pytest.raises(SliceInputError, match="adding up to the 62 embedding columns"):
        discover_slices(x, y, s, feature_blocks=[2, 50])
    with pytest.raises(SliceInputError, match="positive widths"):
        discover_slices(x, y, s, feature_blocks=[0, 62])
