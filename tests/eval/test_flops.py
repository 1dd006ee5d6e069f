"""The backbone's FLOP count against PyTorch's own FLOP counter, and the roofline byte model."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from redraft.config import ModelConfig
from redraft.eval.flops import (
    ar_cost,
    batched_diffusion_cost,
    diffusion_cost,
    forward_cost,
    param_count,
    weight_bytes_read,
)
from redraft.models import Transformer


def counted(model, *args, **kw) -> int:
    # The math SDPA backend decomposes attention into matmuls the counter sees (PyTorch's
    # CPU flash kernel is not registered with the counter and would count as zero).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        model(*args, **kw)
    return fc.get_total_flops()


CASES = [dict(tie_weights=True, time_conditioning=False),
         dict(tie_weights=False, time_conditioning=True),
         dict(tie_weights=True, time_conditioning=False, mlp_ratio=2)]


@pytest.mark.parametrize("extra", CASES)
def test_flops_match_torch_counter(extra):
    cfg = ModelConfig(n_layer=2, n_head=4, d_model=64, seq_len=64, **extra)
    tc = extra["time_conditioning"]
    bidir = Transformer(cfg, 97, causal=False).eval()
    assert bidir.num_params() == param_count(cfg, 97, tc)
    x = torch.randint(0, 97, (3, 40))
    t = torch.rand(3) if tc else None
    ours = forward_cost(cfg, 97, batch=3, q_len=40, time_conditioning=tc).flops
    assert ours == pytest.approx(counted(bidir, x, t), rel=0.05)

    causal = Transformer(cfg, 97, causal=True).eval()
    assert ours == pytest.approx(counted(causal, x), rel=0.05)  # prefill counts q x q too
    cache = causal.new_cache(3)
    causal(x, cache=cache)
    step = forward_cost(cfg, 97, batch=3, q_len=1, kv_len=41).flops
    assert step == pytest.approx(counted(causal, x[:, :1], cache=cache), rel=0.05)


def test_generation_costs_add_up():
    cfg = ModelConfig(n_layer=2, n_head=4, d_model=64, seq_len=64)
    one = forward_cost(cfg, 50, batch=4, q_len=32)
    # Rows of one call share the weight reads: 3 calls of 4 rows = 12 single-row calls minus
    # the 9 weight reads the batching saves.
    a = diffusion_cost(cfg, 50, calls=3, row_calls=12, length=32)
    b = batched_diffusion_cost(cfg, 50, calls=3, batch=4, length=32)
    assert a.flops == b.flops == 3 * one.flops
    assert a.bytes == pytest.approx(b.bytes)
    # AR: prefill of bos, then one single-token call per further token against the cache.
    ar = ar_cost(cfg, 50, batch=2, prompt=1, new=5)
    steps = [forward_cost(cfg, 50, batch=2, q_len=1, kv_len=k, cache=True) for k in (1, 2, 3, 4, 5)]
    assert ar.flops == pytest.approx(sum(s.flops for s in steps))
    # A decode step is memory-bound (few FLOPs per weight byte), a full diffusion pass is not.
    assert steps[-1].intensity < 2 < one.intensity
    assert weight_bytes_read(cfg, 50, 2) == weight_bytes_read(cfg, 50, 4) / 2
    with pytest.raises(ValueError):
        forward_cost(cfg, 50, batch=0, q_len=4)
