"""Constraint tests run tiny models: one thread (on a loaded 2-core machine two threads made
tiny matmuls many times slower, see tests/hf/conftest.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(_fast_torch):
    torch.set_num_threads(1)
    yield
