"""xai_audit: explainability and bias audits for medical imaging models."""

from ._version import __version__
from .model import ModelAdapter, load_demo_model

__all__ = ["ModelAdapter", "__version__", "load_demo_model"]
