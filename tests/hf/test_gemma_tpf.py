"""DiffusionGemma reports tokens per forward like every decoder (new tokens over its decoder
calls per row) and refuses early commit (it has no mask state)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import redraft  # noqa: E402
from redraft.errors import RedraftError  # noqa: E402
from redraft.hf.testing import tiny_gemma  # noqa: E402


def test_gemma_tokens_per_forward(tmp_path):
    model = redraft.load(f"hf:{tiny_gemma(tmp_path / 'g', sharpen=10.0)}")
    gen = model.sample([model.encode("ab")] * 2, length=2 + 12, seeds=[1, 2], steps=4)
    t = gen.tpf
    assert t.tokens == 2 * 12 and t.forwards == gen.row_nfe >= 2
    assert t.value == t.tokens / t.forwards
    with pytest.raises(RedraftError, match="early_commit"):
        model.generate("ab", max_new_tokens=4, early_commit=2.0)
    with pytest.raises(RedraftError, match="oracle"):
        model.generate("ab", max_new_tokens=4, oracle=True)
