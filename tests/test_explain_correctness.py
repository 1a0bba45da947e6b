"""Known answers: IG on linear models and completeness, saliency = autograd, CAM formulas by
hand, agreement with MONAI's GradCAM, and lesion localisation with the demo model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xai_audit.explain import explain
from xai_audit.explain.baselines import gaussian_blur
from xai_audit.model import ModelAdapter


def linear_model(channels: int = 2, size: int = 4, n_out: int = 3) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, n_out))


class TinyCNN(nn.Module):
    """conv -> ReLU -> conv (the CAM layer `features`) -> ReLU -> GAP -> linear."""

    def __init__(self, dims: int = 2, channels: int = 1, n_out: int = 3) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.stem = conv(channels, 4, 3, padding=1)
        self.features = conv(4, 5, 3, padding=1, stride=2)
        self.act = nn.Softplus()
        self.head = nn.Linear(5, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.features(torch.relu(self.stem(x))))
        return self.head(h.flatten(2).mean(2))


def test_ig_on_linear_model_equals_input_minus_baseline_times_weight() -> None:
    torch.manual_seed(0)
    net = linear_model()
    x = torch.rand(3, 2, 4, 4)
    w = net[1].weight.detach().reshape(3, 2, 4, 4)
    user_baseline = torch.rand(2, 4, 4)
    for baseline, b in [
        ("zeros", torch.zeros_like(x)),
        (0.3, torch.full_like(x, 0.3)),
        (user_baseline, user_baseline.expand_as(x)),
        ("blur", gaussian_blur(x, 5.0)),
    ]:
        att = explain(net, x, "ig", target=[0, 2, 1], baseline=baseline, n_steps=4)
        expected = ((x - b) * w[[0, 2, 1]]).sum(dim=1)  # channels summed (the default)
        np.testing.assert_allclose(att.maps, expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("baseline", ["zeros", "blur", "uniform"])
def test_ig_completeness_on_small_cnn(baseline: str) -> None:
    """sum(attributions) = f(x) - f(baseline) within 1% at n_steps=256 (Gauss-Legendre).

    The gradient of a ReLU network jumps along the path, so quadrature converges slowly:
    errors are a few percent at 50-64 steps and below 1% at 256 for this network.
    """
    torch.manual_seed(3)
    net = TinyCNN()
    with torch.no_grad():  # steeper weights, so that f(x) - f(baseline) is sizeable
        net.stem.weight.mul_(3)
        net.features.weight.mul_(3)
        net.head.weight.mul_(10)
    x = torch.rand(4, 1, 16, 16) * 2
    att = explain(net, x, "ig", target=1, baseline=baseline, n_steps=256, internal_batch_size=256)
    from xai_audit.explain import make_baseline

    b = make_baseline(baseline, x, torch.arange(4), seed=0, blur_sigma=5.0)
    with torch.no_grad():
        delta = (net(x) - net(b))[:, 1].numpy()
    assert np.abs(delta).min() > 0.05  # a meaningful difference to explain
    total = att.maps.reshape(4, -1).sum(1)
    np.testing.assert_allclose(total, delta, rtol=0.01)


def test_saliency_equals_autograd_gradients() -> None:
    torch.manual_seed(1)
    net = TinyCNN(channels=2)
    x = torch.rand(3, 2, 12, 12)
    xg = x.clone().requires_grad_()
    targets = torch.tensor([0, 2, 1])
    (grad,) = torch.autograd.grad(net(xg).gather(1, targets[:, None]).sum(), xg)
    signed = explain(net, x, "saliency", target=targets.tolist(), abs=False)
    np.testing.assert_allclose(signed.maps, grad.sum(1).numpy(), rtol=1e-5, atol=1e-7)
    magnitude = explain(net, x, "saliency", target=targets.tolist())
    np.testing.assert_allclose(magnitude.maps, grad.abs().sum(1).numpy(), rtol=1e-5, atol=1e-7)


def _hand_cam(net: TinyCNN, x: torch.Tensor, target: int, kind: str) -> torch.Tensor:
    """CAMs from the paper formulas, with activations and gradients from plain autograd."""
    stash = {}
    handle = net.features.register_forward_hook(lambda _m, _i, out: stash.update(a=out))
    try:
        logits = net(x)
    finally:
        handle.remove()
    acts = stash["a"]
    (grads,) = torch.autograd.grad(logits[:, target].sum(), acts)
    acts = acts.detach()
    axes = tuple(range(2, acts.ndim))
    if kind == "gradcam":
        cam = (grads.mean(axes, keepdim=True) * acts).sum(1, keepdim=True)
    elif kind == "hirescam":
        cam = (grads * acts).sum(1, keepdim=True)
    elif kind == "layercam":
        cam = (grads.clamp(min=0) * acts).sum(1, keepdim=True)
    else:  # gradcam++
        g2, g3 = grads**2, grads**3
        alpha = g2 / (2 * g2 + acts.sum(axes, keepdim=True) * g3 + 1e-6)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        w = (alpha * grads.clamp(min=0)).sum(axes, keepdim=True)
        cam = (w * acts).sum(1, keepdim=True)
    mode = "bilinear" if x.ndim == 4 else "trilinear"
    cam = F.interpolate(cam.clamp(min=0), size=x.shape[2:], mode=mode, align_corners=False)
    return cam[:, 0]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", ["gradcam", "gradcam++", "hirescam", "layercam"])
def test_cams_equal_hand_computation(kind: str, dims: int) -> None:
    torch.manual_seed(2)
    net = TinyCNN(dims=dims)
    x = torch.rand((2, 1) + ((16, 16) if dims == 2 else (8, 8, 8)))
    expected = _hand_cam(net, x, 1, kind).numpy()
    att = explain(net, x, kind, target=1, target_layer="features")
    assert att.target_layer == "features"
    assert expected.max() > 0
    np.testing.assert_allclose(att.maps, expected, rtol=1e-4, atol=1e-6)


def test_gradcam_hooked_path_and_multiple_layers() -> None:
    torch.manual_seed(2)
    net = TinyCNN()
    x = torch.rand(2, 1, 16, 16)
    via_captum = explain(net, x, "gradcam", target=0, target_layer="features").maps
    # A reshape transform routes Grad-CAM through the hook implementation: same answer.
    hooked = ModelAdapter(net, reshape_transform=lambda t: t, device="cpu")
    np.testing.assert_allclose(
        explain(hooked, x, "gradcam", target=0, target_layer="features").maps,
        via_captum,
        rtol=1e-4,
        atol=1e-6,
    )
    stem = explain(net, x, "gradcam", target=0, target_layer="stem").maps
    both = explain(net, x, "gradcam", target=0, target_layer=["stem", "features"])
    assert both.target_layer == "stem+features"
    np.testing.assert_allclose(both.maps, (stem + via_captum) / 2, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_gradcam_agrees_with_monai_on_densenet121() -> None:
    monai = pytest.importorskip("monai")
    from monai.networks.nets import DenseNet121
    from monai.visualize import GradCAM as MonaiGradCAM

    torch.manual_seed(0)
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).eval()
    x = torch.rand(2, 1, 64, 64)
    model = ModelAdapter(net, device="cpu")
    att = explain(model, x, "gradcam", target=1)
    # The automatically found layer is the in-place ReLU MONAI's docs use.
    assert att.target_layer == "class_layers.relu"
    # MONAI's default post-processing maps (min, max) to (1, 0), i.e. flips the map; compare
    # the raw maps (identity post-processing) and the flipped, normalised ones.
    raw = MonaiGradCAM(
        nn_module=net, target_layers="class_layers.relu", postprocessing=lambda cam: cam
    )(x, class_idx=1)
    assert raw.max() > 0
    np.testing.assert_allclose(att.maps, raw[:, 0].detach().numpy(), rtol=1e-4, atol=1e-6)
    flipped = MonaiGradCAM(nn_module=net, target_layers="class_layers.relu")(x, class_idx=1)
    np.testing.assert_allclose(1 - att.normalized("minmax").maps, flipped[:, 0].numpy(), atol=1e-4)
    del monai


@pytest.mark.slow
def test_densenet121_3d_volume_shapes() -> None:
    from monai.networks.nets import DenseNet121

    net = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).eval()
    x = torch.rand(1, 1, 32, 32, 32)
    for method, params in [("gradcam++", {}), ("ig", {"n_steps": 4})]:
        att = explain(net, x, method, **params)
        assert att.maps.shape == (1, 32, 32, 32) and np.isfinite(att.maps).all()


# ------------------------------------------------------------------ ground-truth localisation
_DEMO_WEIGHTS = Path(__file__).resolve().parents[1] / "xai_audit/model/weights/demo_cnn.pt"


@pytest.mark.slow
@pytest.mark.skipif(
    not _DEMO_WEIGHTS.exists(),
    reason="demo weights (xai_audit/model/weights/demo_cnn.pt) not trained yet",
)
def test_attribution_mass_inside_lesion_beats_random_for_true_positives() -> None:
    from xai_audit.datasets import make_synthetic_cxr
    from xai_audit.model import load_demo_model

    model = load_demo_model(device="cpu")
    data = make_synthetic_cxr(96, image_size=128, seed=123)
    labels = data.metadata["label"].to_numpy().astype(int)
    lesion = model.class_index("lesion")
    predicted = model.predict(data.images)
    tp = np.flatnonzero(
        (labels == 1) & (predicted == lesion) & (data.masks.reshape(96, -1).sum(1) > 0)
    )
    assert len(tp) >= 5, "too few true positives to test"
    x, masks = data.images[tp], data.masks[tp].astype(bool)

    def inside_fraction(maps: np.ndarray) -> np.ndarray:
        m = np.clip(maps, 0, None).reshape(len(maps), -1)
        return (m * masks.reshape(len(maps), -1)).sum(1) / np.maximum(m.sum(1), 1e-12)

    rng = np.random.default_rng(0)
    random_frac = inside_fraction(rng.random(masks.shape, dtype=np.float32)).mean()
    for method, params, transform in [
        ("gradcam", {}, None),
        ("gradcam++", {}, None),
        ("integrated_gradients", {"n_steps": 32, "baseline": "blur"}, np.abs),
    ]:
        maps = explain(model, x, method, target="lesion", **params).maps
        frac = inside_fraction(transform(maps) if transform else maps).mean()
        assert frac > 2 * random_frac, f"{method}: {frac:.3f} inside vs random {random_frac:.3f}"
