"""ModelAdapter: prediction, activations, layouts, target-layer discovery, state handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet121
from torch import nn

from xai_audit.model import (
    DemoCNN,
    ModelAdapter,
    NonFiniteError,
    TargetLayerError,
    find_target_layer,
    vit_reshape_transform,
)


def tiny_cnn(n_out: int = 3, inplace: bool = False) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, n_out),
    )


class ResidualInplace(nn.Module):
    """A ResNet-style block whose single in-place ReLU module is called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.relu(self.stem(x))
        out = self.conv2(self.relu(self.conv1(x))) + x
        out = torch.relu_(out)
        return self.head(out.mean(dim=(2, 3)))


def test_sequential_softmax_matches_manual():
    net = tiny_cnn()
    adapter = ModelAdapter(net, device="cpu")
    x = torch.rand(5, 1, 12, 12)
    probs = adapter.predict_proba(x)
    with torch.no_grad():
        expected = torch.softmax(net(x), dim=1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-6, atol=1e-7)
    assert probs.shape == (5, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert adapter.class_names == ["class_0", "class_1", "class_2"]
    assert adapter.predict(x).tolist() == expected.argmax(axis=1).tolist()


def test_activation_choices_and_single_logit_binary():
    net = tiny_cnn(n_out=1)
    x = torch.rand(4, 1, 8, 8)
    adapter = ModelAdapter(net, device="cpu")
    with torch.no_grad():
        logit = net(x)
    np.testing.assert_allclose(adapter.predict_proba(x), torch.sigmoid(logit).numpy(), rtol=1e-6)
    assert adapter.activation == "sigmoid"
    assert adapter.positive_index == 0
    ident = ModelAdapter(net, activation="identity", device="cpu")
    np.testing.assert_allclose(ident.predict_proba(x), logit.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="activation must be one of"):
        ModelAdapter(net, activation="relu")


def test_multilabel_uses_sigmoid_and_thresholds():
    net = tiny_cnn(n_out=4)
    adapter = ModelAdapter(net, multi_label=True, class_names=list("abcd"), device="cpu")
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        expected = torch.sigmoid(net(x)).numpy()
    np.testing.assert_allclose(adapter.predict_proba(x), expected, rtol=1e-6)
    assert adapter.predict(x, threshold=0.5).tolist() == (expected >= 0.5).astype(int).tolist()
    assert adapter.class_index("c") == 2
    with pytest.raises(ValueError, match="out of range"):
        adapter.class_index(7)
    with pytest.raises(ValueError, match="Unknown class"):
        adapter.class_index("zzz")


def test_batch_results_equal_single_image_results():
    net = DemoCNN()
    net.eval()
    adapter = ModelAdapter(net, device="cpu", batch_size=3)
    x = torch.rand(7, 1, 32, 32)
    batched = adapter.predict_proba(x)
    single = np.concatenate([adapter.predict_proba(x[i : i + 1]) for i in range(7)])
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)


def test_accepts_numpy_datasets_and_loaders():
    net = tiny_cnn()
    adapter = ModelAdapter(net, device="cpu", batch_size=4)
    x = torch.rand(9, 1, 8, 8)
    ref = adapter.predict_proba(x)
    np.testing.assert_allclose(adapter.predict_proba(x.numpy()), ref, rtol=1e-6)
    ds = torch.utils.data.TensorDataset(x, torch.zeros(9))
    np.testing.assert_allclose(adapter.predict_proba(ds), ref, rtol=1e-6)
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    np.testing.assert_allclose(adapter.predict_proba(loader), ref, rtol=1e-6)


def test_missing_channel_axis_and_bad_shapes():
    adapter = ModelAdapter(tiny_cnn(), device="cpu")
    with pytest.raises(ValueError, match="no channel axis"):
        adapter.predict_proba(torch.rand(2, 8, 8))
    adapter.predict_proba(torch.rand(2, 1, 8, 8))
    # Once the adapter knows the model is 2D, a channel axis is added for N x H x W.
    assert adapter.predict_proba(torch.rand(2, 8, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="N x C x H x W"):
        adapter.predict_proba(torch.rand(8, 8))
    with pytest.raises(ValueError, match="class names were given"):
        ModelAdapter(tiny_cnn(), class_names=["a", "b"], device="cpu").predict_proba(
            torch.rand(1, 1, 8, 8)
        )


def test_nan_input_and_nan_output_are_reported():
    adapter = ModelAdapter(tiny_cnn(), device="cpu", batch_size=2)
    x = torch.rand(5, 1, 8, 8)
    x[3, 0, 2, 2] = float("nan")
    with pytest.raises(NonFiniteError, match=r"positions \[3\]"):
        adapter.predict_proba(x)
    broken = tiny_cnn()
    with torch.no_grad():
        broken[-1].bias.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="NaN or infinite outputs"):
        ModelAdapter(broken, device="cpu").predict_proba(torch.rand(2, 1, 8, 8))


def test_train_state_and_requires_grad_restored():
    net = tiny_cnn()
    net.train()
    net[0].eval()  # a mixed state must come back exactly
    net[2].weight.requires_grad_(False)
    adapter = ModelAdapter(net, device="cpu")
    before = [m.training for m in net.modules()]
    grads = [p.requires_grad for p in net.parameters()]
    adapter.predict_proba(torch.rand(3, 1, 8, 8))
    adapter.target_layer(torch.rand(1, 1, 8, 8))
    adapter.embed(torch.rand(2, 1, 8, 8))
    assert [m.training for m in net.modules()] == before
    assert [p.requires_grad for p in net.parameters()] == grads
    assert all(p.grad is None for p in net.parameters())


def test_state_restored_after_exception():
    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            raise RuntimeError("boom")

    net = Exploding().train()
    adapter = ModelAdapter(net, device="cpu")
    with pytest.raises(RuntimeError, match="boom"):
        adapter.predict_proba(torch.rand(1, 1, 8, 8))
    assert net.training and net.conv.training
    assert all(p.requires_grad for p in net.parameters())


def test_eval_mode_used_for_prediction():
    net = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(64, 2)).train()
    adapter = ModelAdapter(net, device="cpu")
    x = torch.rand(4, 1, 8, 8)
    np.testing.assert_array_equal(adapter.predict_proba(x), adapter.predict_proba(x))
    assert net.training


def test_target_layer_discovery_tiny_and_demo():
    name, module = find_target_layer(tiny_cnn(), torch.rand(1, 1, 8, 8))
    assert name == "3" and isinstance(module, nn.ReLU)  # the last spatial output: 2nd ReLU
    adapter = ModelAdapter(DemoCNN(), device="cpu")
    name, module = adapter.target_layer(torch.rand(1, 1, 128, 128))
    assert name == "features"
    assert adapter.target_layer_name == "features"


def test_target_layer_skips_reused_inplace_modules():
    # self.relu runs twice per forward: hooking it would see two tensors, so it is skipped
    # and the last single-call spatial layer (conv2) is chosen.
    name, _ = find_target_layer(ResidualInplace(), torch.rand(1, 1, 8, 8))
    assert name == "conv2"
    adapter = ModelAdapter(ResidualInplace(), device="cpu")
    assert adapter.predict_proba(torch.rand(3, 1, 8, 8)).shape == (3, 2)


@pytest.mark.parametrize(
    "spatial_dims,shape,expected",
    [
        (2, (2, 1, 64, 64), "class_layers.relu"),
        (3, (2, 1, 32, 32, 32), "features.transition3.conv"),
    ],
)
def test_monai_densenet121_2d_and_3d(spatial_dims, shape, expected):
    net = DenseNet121(spatial_dims=spatial_dims, in_channels=1, out_channels=3).eval()
    adapter = ModelAdapter(net, device="cpu", batch_size=1)
    x = torch.rand(*shape)
    probs = adapter.predict_proba(x)
    with torch.no_grad():
        expected_probs = torch.softmax(net(x), dim=1).numpy()
    np.testing.assert_allclose(probs, expected_probs, rtol=1e-4, atol=1e-6)
    name, _ = adapter.target_layer(x)
    # In 3D at 32^3 the last dense block is 1x1x1, so the last layer with > 1 position wins.
    assert name == expected


def test_no_spatial_layer_error_explains_what_to_pass():
    class TinyViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Linear(16, 8)
            self.norm = nn.LayerNorm(8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            n = x.shape[0]
            tokens = x.reshape(n, 1, 4, 4, 4, 4).permute(0, 2, 4, 1, 3, 5).reshape(n, 16, 16)
            return self.head(self.norm(self.patch(tokens)).mean(dim=1))

    adapter = ModelAdapter(TinyViT(), device="cpu")
    with pytest.raises(TargetLayerError, match="reshape_transform"):
        adapter.target_layer(torch.rand(1, 1, 16, 16))
    transform = vit_reshape_transform(4, 4, n_prefix_tokens=0)
    assert transform(torch.rand(2, 16, 8)).shape == (2, 8, 4, 4)
    with pytest.raises(TargetLayerError, match="no layer named"):
        ModelAdapter(TinyViT(), target_layer="blocks.0", device="cpu")


def test_inplace_relu_model_predicts_and_finds_layer():
    net = tiny_cnn(inplace=True)
    adapter = ModelAdapter(net, device="cpu")
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        expected = torch.softmax(net(x.clone()), dim=1).numpy()
    np.testing.assert_allclose(adapter.predict_proba(x), expected, rtol=1e-6)
    assert adapter.target_layer(x)[0] == "3"


def test_preprocess_is_applied_inside_forward():
    net = tiny_cnn()
    adapter = ModelAdapter(net, preprocess=lambda t: (t - 0.5) / 0.2, device="cpu")
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        expected = torch.softmax(net((x - 0.5) / 0.2), dim=1).numpy()
    np.testing.assert_allclose(adapter.predict_proba(x), expected, rtol=1e-6)


def test_embed_returns_penultimate_features():
    net = tiny_cnn()
    adapter = ModelAdapter(net, device="cpu", batch_size=2)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        expected = net[:-1](x).numpy()
    np.testing.assert_allclose(adapter.embed(x), expected, rtol=1e-6)


def test_model_hash_and_describe():
    a = ModelAdapter(tiny_cnn(), device="cpu")
    b = ModelAdapter(tiny_cnn(), device="cpu")
    assert a.model_hash() != b.model_hash()  # different random init
    b.model.load_state_dict(a.model.state_dict())
    assert a.model_hash() == b.model_hash()
    info = a.describe()
    assert info["n_parameters"] == sum(p.numel() for p in a.model.parameters())
    assert info["architecture"] == "Sequential"
