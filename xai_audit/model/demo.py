"""The bundled demo model: a small CNN trained on the synthetic ground-truth data.

It is trained by ``scripts/train_demo_model.py`` (seeded) and its weights ship with the
package (``weights/demo_cnn.pt``, with metrics in ``weights/demo_cnn.json``). It learns the
lesion and, at the marker site, the corner-marker shortcut, so that audits have something
real to find.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapter import ModelAdapter

WEIGHTS_FILE = "demo_cnn.pt"
CARD_FILE = "demo_cnn.json"
CLASS_NAMES = ("normal", "lesion")


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = [
        ("conv", nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)),
        ("norm", nn.BatchNorm2d(c_out)),
        ("relu", nn.ReLU()),
    ]
    if pool:
        layers.append(("pool", nn.MaxPool2d(2)))
    return nn.Sequential(OrderedDict(layers))


class DemoCNN(nn.Module):
    """Four conv blocks, global average pooling and a linear head (about 60k parameters).

    Takes ``N x 1 x H x W`` images in [0, 1] (normalisation is built in) and returns two
    logits (normal, lesion). The last block keeps a 16 x 16 feature map at 128 x 128 input,
    the layer Grad-CAM explains.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 2, width: int = 16) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(0.5))
        self.register_buffer("std", torch.tensor(0.25))
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("block1", _block(in_channels, width, pool=True)),
                    ("block2", _block(width, 2 * width, pool=True)),
                    ("block3", _block(2 * width, 4 * width, pool=True)),
                    ("block4", _block(4 * width, 4 * width, pool=False)),
                ]
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        x = self.features(x)
        return self.head(torch.flatten(self.pool(x), 1))


def _weights_dir() -> Path:
    return Path(str(resources.files("xai_audit.model") / "weights"))


def demo_model_card() -> dict[str, Any]:
    """Training configuration and test metrics of the bundled demo model."""
    return json.loads((_weights_dir() / CARD_FILE).read_text())


def load_demo_network(weights: str | Path | None = None) -> DemoCNN:
    """The demo network with its trained weights, in eval mode."""
    path = Path(weights) if weights is not None else _weights_dir() / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"Demo weights not found at {path}; train them with "
            "`python scripts/train_demo_model.py`."
        )
    net = DemoCNN()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


def load_demo_model(
    weights: str | Path | None = None, *, device: str | None = None
) -> ModelAdapter:
    """The bundled demo model wrapped in a :class:`ModelAdapter` (classes: normal, lesion)."""
    card = demo_model_card() if weights is None else {}
    return ModelAdapter(
        load_demo_network(weights),
        class_names=list(CLASS_NAMES),
        activation="softmax",
        positive_class="lesion",
        device=device,
        name="xai_audit demo CNN",
        version=card.get("version", "unversioned"),
    )
