"""Shared test configuration.

Tests run on two CPU cores; keep torch from oversubscribing them and make every test
deterministic.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed_everything():
    """Seed numpy's and torch's global generators before every test."""
    np.random.seed(0)  # noqa: NPY002 - third-party code (shap) draws from the global state
    torch.manual_seed(0)
    yield
