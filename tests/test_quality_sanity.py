"""Sanity check (model-parameter randomisation): known answers, model untouched, bad input.

The verdict reads the whole cascade (Adebayo et al., 2018): Guided Backprop must fail on
trained CNNs, Grad-CAM and plain gradients pass, an edge detector fails.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
from test_quality_helpers import SmallCNN, blob_images, gradcam_explainer, gradient_explainer

from xai_audit.model import ModelAdapter
from xai_audit.quality import SanityResult, edge_detector, sanity_check
from xai_audit.quality.sanity import cascade_verdict, label_verdict, randomisable_layers


@contextlib.contextmanager
def _one_thread():
    """Tiny batches: extra threads only add sync cost on a busy CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _square_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Blob images; half get a bright 6 px square somewhere (label 1)."""
    x = blob_images(n, seed=seed) * 0.5
    rng = np.random.default_rng(seed)
    y = torch.zeros(n, dtype=torch.long)
    for i in range(0, n, 2):
        r, c = rng.integers(2, 24, 2)
        x[i, 0, r : r + 6, c : c + 6] = 1.0
        y[i] = 1
    return x, y


@pytest.fixture(scope="module")
def trained():
    """A SmallCNN trained briefly to find the square, so its maps mean something."""
    torch.manual_seed(0)
    net = SmallCNN()
    x, y = _square_task(48, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: extra threads only add sync cost on busy CI
    try:
        for _ in range(30):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    net.eval()
    xt, _ = _square_task(8, seed=2)
    return ModelAdapter(net, class_names=["none", "square"], device="cpu"), xt


def test_model_dependent_maps_pass_and_edge_detector_fails(trained):
    adapter, x = trained
    hash_before = adapter.model_hash()
    training = [m.training for m in adapter.model.modules()]
    grads = [p.requires_grad for p in adapter.model.parameters()]
    sr = sanity_check(adapter, x, [gradient_explainer, gradcam_explainer, edge_detector])
    assert isinstance(sr, SanityResult)
    # The original model is untouched.
    assert adapter.model_hash() == hash_before
    assert [m.training for m in adapter.model.modules()] == training
    assert [p.requires_grad for p in adapter.model.parameters()] == grads

    assert sr.passed == {
        "gradient_explainer": True,
        "gradcam_explainer": True,
        "edge_detector": False,
    }
    final = sr.steps[sr.steps["step"] == sr.steps["step"].max()].set_index("method")
    assert final.loc["gradient_explainer", "spearman_median"] < 0.5
    assert final.loc["gradcam_explainer", "spearman_median"] < 0.5
    assert final.loc["edge_detector", "spearman_median"] > 0.99
    assert final.loc["edge_detector", "ssim_median"] > 0.99
    assert "fails" in sr.reason["edge_detector"] and "passes" in sr.reason["gradcam_explainer"]
    # Step 0 is the unmodified copy: deterministic explainers reproduce their maps.
    first = sr.steps[sr.steps["step"] == 0]
    assert np.allclose(first["spearman_median"], 1.0)
    # Cascade from the output layer down.
    order = list(sr.steps[sr.steps["method"] == "edge_detector"]["layer"])[1:]
    assert order == ["head", "conv3", "conv2", "conv1"]
    assert sr.maps["gradcam_explainer"].shape == (5, 4, 32, 32)
    label = sr.label_check.set_index("method")
    # Magnitude maps of a two-class model: the mirror image looks the same, so no verdict.
    assert label.loc["edge_detector", "status"] == "inconclusive"
    assert not label.loc["edge_detector", "class_sensitive"]
    assert label.loc["gradcam_explainer", "status"] == "pass"
    assert sr.verdicts["gradcam_explainer"]["label"]["status"] == "pass"
    assert "fails the cascading" in sr.reason["edge_detector"]
    final = sr.final_per_image()
    assert len(final) == len(x) and "edge_detector_spearman" in final.columns
    json.dumps(sr.to_dict())


def test_independent_and_named_layers(trained):
    adapter, x = trained
    sr = sanity_check(
        adapter,
        x[:4],
        gradient_explainer,
        layers=["head", "conv3"],
        metrics=("ssim",),
        random_label=False,
    )
    assert list(sr.steps["layer"]) == ["none (copy)", "head", "conv3"]
    assert "spearman_median" not in sr.steps.columns and sr.label_check is None
    ind = sanity_check(adapter, x[:4], edge_detector, layers="independent", random_label=False)
    assert (ind.steps["n_randomised"] <= 1).all() and not ind.passed["edge_detector"]


def test_randomisable_layers_and_bad_input(trained):
    adapter, x = trained
    assert [n for n, _ in randomisable_layers(adapter.model)] == ["conv1", "conv2", "conv3", "head"]
    with pytest.raises(ValueError, match="no parameters of their own"):
        sanity_check(adapter, x, edge_detector, layers=["pool"])
    with pytest.raises(ValueError, match="metrics"):
        sanity_check(adapter, x, edge_detector, metrics=("pearson",))
    with pytest.raises(TypeError, match="explainer"):
        sanity_check(adapter, x, 42)
    with pytest.raises(ValueError, match="spatial shape"):
        sanity_check(adapter, x, lambda a, xx, t: np.ones((len(xx), 8, 8)))


def test_plot(trained):
    import matplotlib

    matplotlib.use("Agg")
    adapter, x = trained
    sr = sanity_check(adapter, x[:2], [gradient_explainer, edge_detector], random_label=False)
    fig = sr.plot(image=1)
    assert len(fig.axes) == 2 * 5
    matplotlib.pyplot.close(fig)


def test_with_real_explain(trained):
    """Integration with xai_audit.explain (skips until that sub-package has landed)."""
    explain_mod = pytest.importorskip("xai_audit.explain")
    if not hasattr(explain_mod, "explain"):
        pytest.skip("xai_audit.explain.explain is not available yet")
    adapter, x = trained
    hash_before = adapter.model_hash()
    sr = sanity_check(adapter, x[:4], ["gradcam", "saliency"], random_label=False)
    assert adapter.model_hash() == hash_before
    assert sr.passed["gradcam"] and sr.passed["saliency"]


# ---------------------------------------------------------------- the verdict rule itself
def test_cascade_verdict_known_curves():
    """Hand-made similarity curves (output layer first) with known answers."""
    flat = cascade_verdict([0.95] * 6, method="m")
    assert flat["passed"] is False and flat["top"] == pytest.approx(0.95)
    assert flat["top_steps"] == 3 and "0.95" in flat["reason"]
    drop = cascade_verdict([0.9, 0.2, 0.1, 0.1, 0.0, 0.1], list("abcdef"), method="m")
    assert drop["passed"] is True and drop["first_changed_step"] == 2
    assert drop["first_changed_layer"] == "b" and "step 2 (b randomised: 0.20)" in drop["reason"]
    assert drop["auc"] == pytest.approx(np.mean([0.9, 0.2, 0.1, 0.1, 0.0, 0.1]))
    # Guided Backprop's pattern: unchanged while the top is random, drops at the bottom only.
    # The old rule (last step only) passed it.
    late = cascade_verdict([0.9, 0.9, 0.9, 0.9, 0.9, 0.1], method="m")
    assert late["passed"] is False and late["final"] == pytest.approx(0.1)
    assert "lowest over the top 3 steps 0.90" in late["reason"]
    # One early dip, but similar on average and again once everything is random: fails.
    back = cascade_verdict([0.3, 0.9, 0.9, 0.9], method="m")
    assert back["passed"] is False and "again once every layer is random" in back["reason"]
    # Changed at the top and low on average: a fully random model that happens to give
    # input-like maps again (Grad-CAM of small CNNs, 0.3-0.45) does not fail it on its own.
    assert cascade_verdict([0.1, 0.0, 0.2, 0.7], method="m")["passed"] is True
    # Slow start, but low on average (tiny nets' plain gradients): passes on the mean.
    slow = cascade_verdict([0.99, 0.73, -0.11, 0.21], method="m")
    assert slow["passed"] is True and slow["top"] == pytest.approx(0.73)
    assert "on average" in slow["reason"]
    assert cascade_verdict([np.nan] * 3)["passed"] is None
    assert cascade_verdict([0.6, 0.6], threshold=0.7)["passed"] is True
    with pytest.raises(ValueError, match="at least one"):
        cascade_verdict([])
    with pytest.raises(ValueError, match="names"):
        cascade_verdict([0.1, 0.2], ["a"])


def test_label_verdict_two_class_and_multiclass():
    mirror = label_verdict(-0.95, n_outputs=2, magnitude_maps=False)
    assert mirror["status"] == "pass" and "mirror" in mirror["reason"]
    assert label_verdict(0.9, n_outputs=2, magnitude_maps=False)["status"] == "fail"
    # |grad| of a two-class softmax: the mirror image has the same magnitudes.
    assert label_verdict(0.99, n_outputs=2, magnitude_maps=True)["status"] == "inconclusive"
    assert label_verdict(0.99, n_outputs=5, magnitude_maps=True)["status"] == "fail"
    assert label_verdict(0.1, n_outputs=5, magnitude_maps=True)["status"] == "pass"
    assert label_verdict(np.nan, n_outputs=2, magnitude_maps=False)["status"] == "inconclusive"


def test_failed_label_check_fails_the_method(trained):
    """A map that ignores the class (signed, so not a mirror case) fails despite the cascade."""
    adapter, x = trained

    def class_blind(a, images, targets):
        # Model-dependent (gradient of the sum of logits) but the same for every class.
        xx = a.prepare(images).clone().requires_grad_(True)
        (g,) = torch.autograd.grad(a.forward(xx).sum(), xx)
        return g.sum(dim=1).detach().cpu().numpy()

    sr = sanity_check(adapter, x, class_blind)
    label = sr.label_check.set_index("method").loc["class_blind"]
    assert label["status"] == "fail" and label["spearman_median"] > 0.99
    assert not sr.passed["class_blind"]
    assert "random-label check" in sr.reason["class_blind"]


# ------------------------------------------------------------- the trained demo CNN (128 px)
@pytest.fixture(scope="module")
def demo_sanity():
    from xai_audit.datasets import make_synthetic_cxr
    from xai_audit.model.demo import WEIGHTS_FILE, _weights_dir

    if not (_weights_dir() / WEIGHTS_FILE).is_file():
        pytest.skip("the demo weights are not bundled")
    from xai_audit.model import load_demo_model

    adapter = load_demo_model(device="cpu")
    data = make_synthetic_cxr(24, seed=0)
    y = data.metadata["label"].to_numpy()
    rows = np.r_[np.flatnonzero(y == 1)[:2], np.flatnonzero(y == 0)[:2]]
    with _one_thread():
        return sanity_check(
            adapter,
            data.images[rows],
            ["gradcam", "saliency", "guided_backprop", edge_detector],
            keep_maps=1,
        )


def test_demo_cnn_guided_backprop_fails_gradcam_and_gradients_pass(demo_sanity):
    sr = demo_sanity
    assert sr.passed == {
        "gradcam": True,
        "saliency": True,
        "guided_backprop": False,
        "edge_detector": False,
    }
    gbp = sr.verdicts["guided_backprop"]
    # Adebayo et al.'s finding: similar while the top of the network is random.
    assert gbp["top_steps"] == 5 and gbp["top"] >= 0.5 and gbp["auc"] >= 0.5
    # ... and it only changes at the input layer, so the old last-step rule passed it
    # (bench/quality.py --sanity, 16 images: 0.47).
    assert gbp["first_changed_step"] == 9 and gbp["final"] < 0.5
    assert f"lowest over the top 5 steps {gbp['top']:.2f}" in sr.reason["guided_backprop"]
    assert "fails the cascading" in sr.reason["guided_backprop"]
    cam = sr.verdicts["gradcam"]
    assert cam["top"] < 0.5 and cam["first_changed_step"] <= 5
    step = cam["first_changed_step"]
    assert f"step {step} ({cam['first_changed_layer']} randomised" in sr.reason["gradcam"]
    assert sr.verdicts["edge_detector"]["top"] > 0.99
    label = sr.label_check.set_index("method")["status"]
    assert label["gradcam"] == "pass" and label["saliency"] == "inconclusive"
    json.dumps(sr.to_dict())
    assert "top half" in sr.to_dict()["rule"]


# ------------------------------------------- small CNNs trained for a second (not fragile)
class _TinyBNNet(torch.nn.Module):
    """Two conv + batch-norm blocks and a linear head (5 layers with parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1),
            torch.nn.BatchNorm2d(16),
            torch.nn.ReLU(),
        )
        self.head = torch.nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]
)
def test_small_trained_cnn_gradcam_passes_guided_backprop_fails(seed):
    """A 5-layer CNN trained for a second: Grad-CAM must not be flagged (no false alarm)."""
    torch.manual_seed(seed)
    net = _TinyBNNet()
    x, y = _square_task(96, seed=1 + 10 * seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    with _one_thread():
        for _ in range(30):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), 32):
                b = perm[i : i + 32]
                loss = torch.nn.functional.cross_entropy(net(x[b]), y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        xt, yt = _square_task(16, seed=2 + 10 * seed)
        assert (net(xt).argmax(1) == yt).float().mean() >= 0.9  # it learned the task
        adapter = ModelAdapter(net, class_names=["none", "square"], device="cpu")
        sr = sanity_check(adapter, xt, ["gradcam", "guided_backprop"], random_state=seed)
    assert sr.passed["gradcam"], sr.reason["gradcam"]
    assert not sr.passed["guided_backprop"], sr.reason["guided_backprop"]
