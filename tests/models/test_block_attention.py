"""The block-causal attention mode: block size 1 is the causal twin, block size L the
bidirectional model (same weights), and the KV cache (contiguous or ragged, any subset of
rows) reproduces the uncached block-causal pass."""

import pytest
import torch

from redraft.config import ModelConfig
from redraft.errors import RedraftError
from redraft.models import Transformer
from redraft.models.transformer import pair_mask

CFG = ModelConfig(n_layer=2, n_head=2, d_model=32, seq_len=16)
V = 11


def twins(block_size):
    torch.manual_seed(0)
    ar = Transformer(CFG, V, causal=True).eval()
    bidir = Transformer(CFG, V, causal=False).eval()
    bidir.load_state_dict(ar.state_dict())
    block = Transformer(CFG, V, causal=False, block_size=block_size).eval()
    block.load_state_dict(ar.state_dict())  # one weights layout for all three
    return ar, bidir, block


def test_block_size_one_is_causal_and_seq_len_is_bidirectional():
    x = torch.randint(0, V, (3, 16))
    ar, bidir, one = twins(1)
    assert torch.allclose(one(x), ar(x), atol=1e-5)
    _, _, whole = twins(16)
    assert torch.equal(whole(x), bidir(x))  # no mask at all: the same computation


def test_block_causal_sees_its_block_and_earlier_ones_only():
    _, _, m = twins(4)
    x = torch.randint(0, V, (1, 16))
    y = x.clone()
    y[0, 9] = (y[0, 9] + 1) % V  # a token of block 2 (positions 8..11)
    a, b = m(x), m(y)
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6)  # earlier blocks do not see it
    assert not torch.allclose(a[:, 8:9], b[:, 8:9], atol=1e-4)  # its own block does, before it


def test_pair_mask_reproduces_the_cache():
    m = pair_mask(8, 4, 4, torch.device("cpu"))
    # noisy block 1 (rows 4..7) sees itself and clean block 0 (columns 8..11), nothing else
    assert m[4:8, 4:8].all() and m[4:8, 8:12].all() and not m[4:8, :4].any()
    assert not m[:4, 4:].any() and m[:4, :4].all()  # noisy block 0 sees only itself
    assert not m[8:, :8].any() and m[8:, 8:].all()  # clean block 0 sees only itself


@pytest.mark.parametrize("block_size", [1, 4, 16])
def test_pair_pass_equals_running_each_block_over_its_clean_context(block_size):
    """The one-pass [xt ; x0] training forward equals, block by block, the plain block-causal
    pass over [x0 of the earlier blocks, xt of this block] (what the sampler computes)."""
    _, _, m = twins(block_size)
    x0 = torch.randint(0, V - 1, (2, 16))
    xt = torch.where(torch.rand(2, 16) < 0.5, V - 1, x0)
    pair = m(xt, x0=x0)
    for k in range(16 // block_size):
        end = (k + 1) * block_size
        seq = torch.cat((x0[:, :k * block_size], xt[:, k * block_size:end]), dim=1)
        assert torch.allclose(pair[:, k * block_size:end], m(seq)[:, k * block_size:], atol=1e-5)


def test_cache_prefill_and_ragged_windows_equal_the_uncached_pass():
    _, _, m = twins(4)
    x = torch.randint(0, V, (3, 16))
    full = m(x)
    cache = m.new_cache(3)
    assert torch.allclose(m(x[:, :8], cache=cache), full[:, :8], atol=1e-5)  # prefill 2 blocks
    assert torch.allclose(m(x[:, 8:12], cache=cache), full[:, 8:12], atol=1e-5)
    # Ragged: rows at different blocks, a subset of the cache's rows, windows of one block.
    starts = torch.tensor([12, 4])
    rows = torch.tensor([2, 0])
    win = torch.stack([x[2, 12:16], x[0, 4:8]])
    out = m(win, cache=cache, positions=starts, cache_rows=rows)
    assert torch.allclose(out[0], full[2, 12:16], atol=1e-5)
    assert torch.allclose(out[1], full[0, 4:8], atol=1e-5)
    # A window written into the cache is overwritten by the next one: a changed block gives
    # the same logits as the uncached pass over the changed sequence.
    y = x.clone()
    y[1, 8:12] = 0
    again = m(y[1:2, 8:12], cache=cache, positions=torch.tensor([8]), cache_rows=torch.tensor([1]))
    assert torch.allclose(again[0], m(y[1:2])[0, 8:12], atol=1e-5)


def test_block_size_is_checked():
    with pytest.raises(RedraftError, match="block_size=0"):
        Transformer(CFG, V, causal=False, block_size=0)
    with pytest.raises(RedraftError, match="block_size=4"):
        Transformer(CFG, V, causal=True, block_size=4)
