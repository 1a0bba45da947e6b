"""Bring your own model: MONAI CNNs and transformers (random weights) through explain() and Audit.

Each model gets the CAM layer the README's "Models tested" table lists, Grad-CAM and
integrated gradients run through :func:`explain`, and a tiny :class:`Audit` finishes. The
transformer tests also check the inferred reshape against a hand-computed Grad-CAM.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from xai_audit.audit import Audit
from xai_audit.data import manifest_from_arrays
from xai_audit.explain import explain
from xai_audit.model import (
    ModelAdapter,
    TargetLayerError,
    choose_target_layer,
    load_demo_network,
    vit_reshape_transform,
)

nets = pytest.importorskip("monai.networks.nets")
pytest.importorskip("einops")  # MONAI's ViT needs it
from monai.networks.nets.swin_unetr import SwinTransformer  # noqa: E402

SIZE_2D = (1, 64, 64)
SIZE_3D = (1, 32, 32, 32)


class SwinClassifier(nn.Module):
    """MONAI's Swin backbone (as in SwinUNETR) with a mean-pooled linear head."""

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        self.swin = SwinTransformer(
            in_chans=1,
            embed_dim=12,
            window_size=(4,) * spatial_dims,
            patch_size=(2,) * spatial_dims,
            depths=(1, 1, 1, 1),
            num_heads=(1, 1, 1, 1),
            spatial_dims=spatial_dims,
        )
        self.head = nn.Linear(192, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.swin(x)[-1].flatten(2).mean(-1))


def _vit(spatial_dims: int) -> nn.Module:
    img = SIZE_2D[1:] if spatial_dims == 2 else SIZE_3D[1:]
    return nets.ViT(
        in_channels=1,
        img_size=img,
        patch_size=(16,) * 2 if spatial_dims == 2 else (8,) * 3,
        spatial_dims=spatial_dims,
        classification=True,
        num_classes=2,
        hidden_size=48,
        mlp_dim=96,
        num_layers=2,
        num_heads=4,
    )


# name -> (builder, input size, expected CAM layer); the README table lists the same.
ZOO = {
    "demo_cnn": (load_demo_network, SIZE_2D, "features"),
    "densenet121_2d": (
        lambda: nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=2),
        SIZE_2D,
        "class_layers.relu",
    ),
    "resnet18_2d": (
        lambda: nets.resnet18(spatial_dims=2, n_input_channels=1, num_classes=2),
        SIZE_2D,
        "layer4",
    ),
    "efficientnet_b0_2d": (
        lambda: nets.EfficientNetBN(
            "efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=1, num_classes=2
        ),
        SIZE_2D,
        "_bn1",
    ),
    "vit_2d": (lambda: _vit(2), SIZE_2D, "blocks.1.norm1"),
    "swin_2d": (lambda: SwinClassifier(2), SIZE_2D, "swin.layers4.0"),
    "resnet18_3d": (
        lambda: nets.resnet18(spatial_dims=3, n_input_channels=1, num_classes=2),
        SIZE_3D,
        "layer4",
    ),
    "vit_3d": (lambda: _vit(3), SIZE_3D, "blocks.1.norm1"),
    "swin_3d": (lambda: SwinClassifier(3), SIZE_3D, "swin.layers4.0.blocks.0.norm1"),
}
SLOW = {"densenet121_2d", "efficientnet_b0_2d", "resnet18_3d", "vit_3d", "swin_3d"}


def _build(name: str) -> tuple[nn.Module, tuple[int, ...], str]:
    builder, size, layer = ZOO[name]
    torch.manual_seed(0)
    return builder().eval(), size, layer


def _params(name: str) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in ZOO]


@pytest.mark.parametrize("name", _params("explain"))
def test_zoo_layer_and_explain(name: str) -> None:
    net, size, layer = _build(name)
    if name == "demo_cnn":  # the demo network takes 64 px greyscale images too
        size = SIZE_2D
    x = torch.rand(2, *size, generator=torch.Generator().manual_seed(1))
    adapter = ModelAdapter(net, device="cpu")
    assert adapter.target_layer(x)[0] == layer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cam = explain(adapter, x, "gradcam")
        ig = explain(adapter, x, "integrated_gradients", n_steps=4)
    for att in (cam, ig):
        assert att.maps.shape == (2, *size[1:])
        assert np.isfinite(att.maps).all()
    assert cam.target_layer == layer
    assert (cam.maps >= 0).all()  # ReLU'd CAM
    # Integrated gradients are complete: the maps sum to f(x) - f(baseline) (approximately).
    assert np.abs(ig.maps).sum() > 0


@pytest.mark.parametrize(
    "name", ["demo_cnn", "vit_2d", pytest.param("swin_2d", marks=pytest.mark.slow)]
)
def test_zoo_tiny_audit(name: str, tmp_path) -> None:
    net, size, layer = _build(name)
    rng = np.random.default_rng(0)
    n = 16
    images = rng.random((n, *size), dtype=np.float32)
    data = manifest_from_arrays(
        images,
        labels=np.arange(n) % 2,
        attributes={"sex": np.where(np.arange(n) % 4 < 2, "F", "M")},
    )
    result = Audit(
        ModelAdapter(net, device="cpu", class_names=["normal", "lesion"]),
        data,
        sensitive=["sex"],
        methods={"gradcam": {}, "integrated_gradients": {"n_steps": 4}},
        n_boot=20,
        min_group_size=4,
        quality={"faithfulness": False, "sanity": False, "localisation": False, "shortcuts": False},
        exemplars_per_cell=1,
        batch_size=8,
        output_dir=tmp_path / "audit",
    ).run(progress=False)
    assert result.model_info["target_layer"] == layer
    assert len(result.predictions) == n
    assert set(result.predictions["sex"]) == {"F", "M"}


# ------------------------------------------------------------------ transformer rules
def _manual_gradcam(net: nn.Module, layer: nn.Module, x: torch.Tensor, grid, prefix: int):
    """Grad-CAM by hand: tokens -> grid, weights = mean gradient, ReLU, upsample."""
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        out.retain_grad()
        store["a"] = out

    h = layer.register_forward_hook(hook)
    try:
        logits = net(x)[0]
    finally:
        h.remove()
    target = logits.argmax(1)
    logits.gather(1, target[:, None]).sum().backward()
    acts, grads = store["a"][:, prefix:], store["a"].grad[:, prefix:]
    n, _t, d = acts.shape
    acts = acts.reshape(n, *grid, d).movedim(-1, 1)
    grads = grads.reshape(n, *grid, d).movedim(-1, 1)
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True))
    up = torch.nn.functional.interpolate(cam, size=x.shape[2:], mode="bilinear")
    return up[:, 0].detach().numpy()


def test_vit_default_layer_matches_hand_computed_gradcam() -> None:
    net, size, _ = _build("vit_2d")
    x = torch.rand(3, *size, generator=torch.Generator().manual_seed(2))
    auto = explain(net, x, "gradcam")
    assert auto.target_layer == "blocks.1.norm1"  # not the patch-embedding convolution
    given = explain(
        net,
        x,
        "gradcam",
        target_layer="blocks.1.norm1",
        reshape_transform=vit_reshape_transform(4, 4, n_prefix_tokens=1),
    )
    expected = _manual_gradcam(net, net.blocks[1].norm1, x.clone(), (4, 4), 1)
    np.testing.assert_allclose(auto.maps, expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(given.maps, expected, rtol=1e-4, atol=1e-7)
    assert expected.std() > 0  # a real map, not a constant


class RegisterViT(nn.Module):
    """timm-like naming: ``patch_embed.proj``, ``blocks.<i>.norm1/norm2``, 1 cls + 4 registers."""

    def __init__(self, dim: int = 16, patch: int = 8, n_reg: int = 4) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, dim, patch, stride=patch)
        self.prefix = nn.Parameter(torch.randn(1, 1 + n_reg, dim))
        self.blocks = nn.ModuleList()
        for _ in range(2):
            block = nn.Module()
            block.norm1, block.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            block.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
            block.mlp = nn.Linear(dim, dim)
            self.blocks.append(block)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.prefix.expand(len(t), -1, -1), t], 1)
        for b in self.blocks:
            h = b.norm1(t)
            t = t + b.attn(h, h, h, need_weights=False)[0]
            t = t + b.mlp(b.norm2(t))
        return self.head(self.norm(t)[:, 0])


def test_register_tokens_and_non_square_input_are_inferred() -> None:
    torch.manual_seed(0)
    net = RegisterViT().eval()
    x = torch.rand(2, 1, 32, 48)  # 4 x 6 patches, 5 prefix tokens
    choice = choose_target_layer(net, x)
    assert choice.name == "blocks.1.norm1"
    assert choice.layout == "tokens" and choice.output_shape == (2, 29, 16)
    assert "5 prefix token(s) dropped, 4x6 patch grid" in choice.note
    mapped = choice.reshape_transform(torch.arange(2 * 29 * 16.0).reshape(2, 29, 16))
    assert mapped.shape == (2, 16, 4, 6)
    assert mapped[0, 0, 0, 0] == 5 * 16  # the first patch token, channel 0
    att = explain(net, x, "gradcam")
    assert att.maps.shape == (2, 32, 48) and att.target_layer == "blocks.1.norm1"


def test_token_model_without_blocks_names_its_own_layers() -> None:
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(16, 8)
            self.final_norm = nn.LayerNorm(8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            n = x.shape[0]
            tokens = x.reshape(n, 1, 4, 4, 4, 4).permute(0, 2, 4, 1, 3, 5).reshape(n, 16, 16)
            return self.head(self.final_norm(self.embed(tokens)).mean(1))

    with pytest.raises(TargetLayerError) as err:
        explain(Flat(), torch.rand(2, 1, 16, 16), "gradcam")
    msg = str(err.value)
    assert "target_layer='final_norm'" in msg
    assert "vit_reshape_transform(4, 4, n_prefix_tokens=0)" in msg
    assert "blocks.-1" not in msg and "(1, 16, 8)" in msg  # the layer's shape
    # The named fix works.
    att = explain(
        Flat(),
        torch.rand(2, 1, 16, 16),
        "gradcam",
        target_layer="final_norm",
        reshape_transform=vit_reshape_transform(4, 4, n_prefix_tokens=0),
    )
    assert att.maps.shape == (2, 16, 16)


def test_errors_report_the_layers_shape_not_the_cams() -> None:
    net, size, _ = _build("vit_2d")
    x = torch.rand(2, *size)
    with pytest.raises(TargetLayerError, match=r"outputs shape \(2, 17, 48\)"):
        explain(net, x, "gradcam", target_layer="blocks.1.norm1", reshape_transform=lambda t: t)
    with pytest.raises(TargetLayerError, match=r"outputs shape \(1, 2\)"):
        explain(net, x, "gradcam", target_layer="classification_head.0")
    with pytest.raises(TypeError, match="reshape_transform must be a callable"):
        explain(net, x, "gradcam", reshape_transform="vit")


def test_explicit_token_layer_gets_its_reshape_inferred() -> None:
    net, size, _ = _build("vit_2d")
    x = torch.rand(2, *size)
    att = explain(net, x, "gradcam++", target_layer="blocks.0.norm2")
    assert att.maps.shape == (2, 64, 64) and np.isfinite(att.maps).all()
    assert "reshape_transform" not in att.params  # recorded only when given


def test_channels_last_layer_is_moved_not_misread() -> None:
    # A Swin-style layer (N x h x w x C) would be read as C = h without the layout rule.
    net, size, _ = _build("swin_2d")
    x = torch.rand(2, *size)
    choice = choose_target_layer(net, x)
    assert choice.layout == "feature_map" and choice.output_shape == (2, 192, 2, 2)
    att = explain(
        net,
        x,
        "gradcam",
        target_layer="swin.layers4.0.blocks.0.norm1",
        relu=False,
        interpolate_mode="nearest",
    )
    assert att.maps.shape == (2, 64, 64)
    # Nearest upsampling of a 4 x 4 grid: constant 16 x 16 tiles, up to 16 distinct values.
    tiles = att.maps.reshape(2, 4, 16, 4, 16)
    assert np.allclose(tiles, tiles[:, :, :1, :, :1])
    assert all(1 < len(np.unique(m)) <= 16 for m in att.maps)


# ------------------------------------------------------------------ attention rollout
def _manual_rollout(attentions: list[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema 2020 by hand: heads averaged, 0.5 A + 0.5 I, rows renormalised."""
    joint = None
    for att in attentions:
        a = att.mean(1)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1])
        a = a / a.sum(-1, keepdim=True)
        joint = a if joint is None else a @ joint
    return joint


def test_attention_rollout_matches_hand_computation_monai_vit() -> None:
    from xai_audit.explain.hooks import hook_counts

    net, size, _ = _build("vit_2d")
    x = torch.rand(2, *size, generator=torch.Generator().manual_seed(3))
    att = explain(net, x, "attention_rollout", interpolate_mode="nearest")
    for block in net.blocks:  # MONAI's own record of the attention probabilities
        block.attn.save_attn = True
    with torch.no_grad():
        net(x)
    joint = _manual_rollout([b.attn.att_mat for b in net.blocks])
    expected = joint[:, 0, 1:].reshape(2, 4, 4).repeat_interleave(16, 1).repeat_interleave(16, 2)
    np.testing.assert_allclose(att.maps, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert hook_counts(net) == 0
    assert att.maps.std() > 0 and (att.maps > 0).all()


def test_attention_rollout_reads_multihead_attention_with_register_tokens() -> None:
    torch.manual_seed(0)
    net = RegisterViT().eval()
    x = torch.rand(2, 1, 32, 48)
    att = explain(net, x, "rollout", interpolate_mode="nearest")
    # By hand: the same forward, asking nn.MultiheadAttention for per-head weights.
    with torch.no_grad():
        t = net.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([net.prefix.expand(len(t), -1, -1), t], 1)
        weights = []
        for b in net.blocks:
            h = b.norm1(t)
            out, w = b.attn(h, h, h, need_weights=True, average_attn_weights=False)
            weights.append(w)
            t = t + out
            t = t + b.mlp(b.norm2(t))
    rows = _manual_rollout(weights)[:, 0, 5:].reshape(2, 4, 6)
    expected = rows.repeat_interleave(8, 1).repeat_interleave(8, 2)
    np.testing.assert_allclose(att.maps, expected.numpy(), rtol=1e-5, atol=1e-7)


def test_attention_rollout_3d_and_clear_error_for_cnns() -> None:
    net, size, _ = _build("vit_3d")
    att = explain(net, torch.rand(1, *size), "attention_rollout")
    assert att.maps.shape == (1, 32, 32, 32) and np.isfinite(att.maps).all()
    demo, _, _ = _build("demo_cnn")
    with pytest.raises(TargetLayerError, match="found no attention weights"):
        explain(demo, torch.rand(1, *SIZE_2D), "attention_rollout")
    swin, size, _ = _build("swin_2d")
    with pytest.raises(TargetLayerError, match="windowed attention"):
        explain(swin, torch.rand(2, *size), "attention_rollout")


class TorchvisionStyleViT(nn.Module):
    """torchvision's VisionTransformer layout and naming (conv_proj, encoder.layers.
    encoder_layer_<i>.ln_1/self_attention/ln_2/mlp, encoder.ln, heads.head), small."""

    def __init__(self, dim: int = 32, patch: int = 16, n_layers: int = 2) -> None:
        super().__init__()
        self.patch = patch
        self.conv_proj = nn.Conv2d(1, dim, patch, stride=patch)
        self.class_token = nn.Parameter(torch.randn(1, 1, dim))
        self.encoder = nn.Module()
        self.encoder.layers = nn.Sequential()
        for i in range(n_layers):
            block = nn.Module()
            block.ln_1 = nn.LayerNorm(dim)
            block.self_attention = nn.MultiheadAttention(dim, 2, batch_first=True)
            block.ln_2 = nn.LayerNorm(dim)
            block.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
            self.encoder.layers.add_module(f"encoder_layer_{i}", block)
        self.encoder.ln = nn.LayerNorm(dim)
        self.heads = nn.Sequential()
        self.heads.add_module("head", nn.Linear(dim, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.conv_proj(x).flatten(2).permute(0, 2, 1)
        t = torch.cat([self.class_token.expand(len(t), -1, -1), t], 1)
        for block in self.encoder.layers:
            h = block.ln_1(t)
            h, _ = block.self_attention(h, h, h, need_weights=False)
            t = t + h
            t = t + block.mlp(block.ln_2(t))
        return self.heads(self.encoder.ln(t)[:, 0])


def test_torchvision_style_vit_gets_the_last_blocks_ln_1() -> None:
    torch.manual_seed(0)
    net = TorchvisionStyleViT().eval()
    x = torch.rand(2, *SIZE_2D)
    choice = choose_target_layer(net, x)
    assert choice.name == "encoder.layers.encoder_layer_1.ln_1"  # not conv_proj
    assert "1 prefix token(s) dropped, 4x4 patch grid" in choice.note
    cam = explain(net, x, "gradcam")
    assert cam.target_layer == "encoder.layers.encoder_layer_1.ln_1"
    assert cam.maps.shape == (2, 64, 64) and cam.maps.std() > 0
    assert explain(net, x, "attention_rollout").maps.shape == (2, 64, 64)
