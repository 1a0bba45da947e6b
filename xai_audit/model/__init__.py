"""Model wrapping: :class:`ModelAdapter`, target-layer discovery and the demo model."""

from .adapter import ModelAdapter, ModelOutputError, NonFiniteError
from .batching import iter_image_batches
from .demo import DemoCNN, demo_model_card, load_demo_model, load_demo_network
from .layers import (
    TargetLayerChoice,
    TargetLayerError,
    channels_last_transform,
    choose_target_layer,
    find_target_layer,
    resolve_layer,
    token_reshape_transform,
    vit_reshape_transform,
)
from .state import eval_mode, preserved_state

__all__ = [
    "DemoCNN",
    "ModelAdapter",
    "ModelOutputError",
    "NonFiniteError",
    "TargetLayerChoice",
    "TargetLayerError",
    "channels_last_transform",
    "choose_target_layer",
    "demo_model_card",
    "eval_mode",
    "find_target_layer",
    "iter_image_batches",
    "load_demo_model",
    "load_demo_network",
    "preserved_state",
    "resolve_layer",
    "token_reshape_transform",
    "vit_reshape_transform",
]
