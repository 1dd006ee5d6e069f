"""Hugging Face models run tiny matmuls: one thread (two threads on a loaded 2-core machine
made them 60x slower here)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(_fast_torch):
    torch.set_num_threads(1)
    yield
