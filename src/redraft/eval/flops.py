"""FLOPs and bytes moved by the backbone, counted from its shapes: the roofline's two axes.

FLOPs count the matrix products (2 per multiply-add), which is all but a fraction of a percent
of the work: per layer, with B rows, q new positions attending to kv keys, width d and MLP
ratio r,

    qkv 6 B q d^2  +  out-proj 2 B q d^2  +  MLP 4 r B q d^2  +  attention 4 B q kv d,

plus the head 2 B q d V and, for a time-conditioned model, its time MLP. Attention counts every
(query, key) pair the kernel is handed: a causal prefill of q tokens counts q x q, as PyTorch's
own FLOP counter does (tests/eval/test_flops.py checks the total against it).

Bytes moved is the traffic of a minimal implementation: every weight read once per network
call, each matrix product's input read and output written once, attention reads q, k, v and
writes its output, a KV cache is read in full and written for the new positions. Elementwise
ops (norms, GELU, residual adds) are left out, so the count is a lower bound on real traffic
and the arithmetic intensity (FLOPs / bytes) an upper bound. That is the figure the roofline
needs: below the ridge point (peak FLOP/s / bandwidth) a call cannot be compute-bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from redraft.config import ModelConfig


@dataclass(frozen=True)
class Cost:
    flops: float
    bytes: float

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.bytes + other.bytes)

    def __mul__(self, n: float) -> Cost:
        return Cost(self.flops * n, self.bytes * n)

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved."""
        return self.flops / self.bytes if self.bytes else 0.0


ZERO = Cost(0.0, 0.0)


def param_count(cfg: ModelConfig, vocab_size: int, time_conditioning: bool = False) -> int:
    """Parameters of redraft's Transformer (matches model.num_params(), tested)."""
    d, r = cfg.d_model, cfg.mlp_ratio
    per_layer = 3 * d * d + d * d + 2 * r * d * d + 2 * d  # qkv, proj, MLP, two norm gains
    embed = vocab_size * d * (1 if cfg.tie_weights else 2)
    time = (2 * 64 * d + d) + (d * d + d) if time_conditioning else 0
    return cfg.n_layer * per_layer + embed + d + time


def forward_cost(cfg: ModelConfig, vocab_size: int, *, batch: int, q_len: int,
                 kv_len: int | None = None, weight_bytes: int = 4, act_bytes: int = 4,
                 time_conditioning: bool = False, cache: bool = False) -> Cost:
    """Cost of one network call: `batch` rows of `q_len` new positions seeing `kv_len` keys.

    kv_len defaults to q_len (a full bidirectional or causal pass). cache=True adds the
    traffic of reading kv_len cached keys/values and writing the q_len new ones.
    """
    if batch < 1 or q_len < 1:
        raise ValueError(f"batch={batch}, q_len={q_len}: expected >= 1")
    kv = q_len if kv_len is None else kv_len
    d, r, V, n = cfg.d_model, cfg.mlp_ratio, vocab_size, cfg.n_layer
    rows = batch * q_len  # positions pushed through the dense layers
    flops_layer = (6 + 2 + 4 * r) * rows * d * d + 4 * batch * q_len * kv * d
    flops = n * flops_layer + 2 * rows * d * V
    moved = weight_bytes_read(cfg, V, weight_bytes, time_conditioning)
    act_layer = (
        rows * d + rows * 3 * d            # qkv in, out
        + batch * (2 * q_len + 2 * kv) * d  # attention: q and out, k and v
        + rows * d + rows * d              # out-proj in, out
        + rows * d + rows * r * d          # MLP up in, out
        + rows * r * d + rows * d          # MLP down in, out
    )
    if cache:
        act_layer += batch * 2 * q_len * d  # new keys/values written to the cache
    moved += n * act_layer * act_bytes
    moved += rows * d * weight_bytes + rows * d * act_bytes  # embedding rows gathered
    moved += (rows * d + rows * V) * act_bytes  # head in, logits out
    if time_conditioning:
        flops += 2 * batch * (2 * 64 * d + d * d)
    return Cost(float(flops), float(moved))


def weight_bytes_read(cfg: ModelConfig, vocab_size: int, weight_bytes: int = 4,
                      time_conditioning: bool = False) -> float:
    """Bytes of weights one network call reads (the embedding table only by gathered rows)."""
    matrices = param_count(cfg, vocab_size, time_conditioning)
    if not cfg.tie_weights:
        matrices -= vocab_size * cfg.d_model
    return float(matrices * weight_bytes)


def diffusion_cost(cfg: ModelConfig, vocab_size: int, *, calls: int, row_calls: int,
                   length: int, weight_bytes: int = 4, **kw) -> Cost:
    """A diffusion generation of `calls` network calls that ran `row_calls` rows in all, each
    a full pass over `length` positions. Rows of one call share its weight reads."""
    one_row = forward_cost(cfg, vocab_size, batch=1, q_len=length, weight_bytes=weight_bytes,
                           **kw)
    shared = weight_bytes_read(cfg, vocab_size, weight_bytes,
                               kw.get("time_conditioning", False))
    return one_row * row_calls + Cost(0.0, -shared * (row_calls - calls))


def batched_diffusion_cost(cfg: ModelConfig, vocab_size: int, *, calls: int, batch: int,
                           length: int, **kw) -> Cost:
    """`calls` network calls, each over `batch` rows of `length` positions."""
    return forward_cost(cfg, vocab_size, batch=batch, q_len=length, **kw) * calls


def ar_cost(cfg: ModelConfig, vocab_size: int, *, batch: int, prompt: int, new: int,
            **kw) -> Cost:
    """AR decoding with a KV cache: prefill of `prompt` positions (bos included), then one
    call per further token (the last sampled token needs no call), each reading the cache."""
    total = forward_cost(cfg, vocab_size, batch=batch, q_len=prompt, cache=True, **kw)
    for ctx in range(prompt + 1, prompt + new):
        total = total + forward_cost(cfg, vocab_size, batch=batch, q_len=1, kv_len=ctx,
                                     cache=True, **kw)
    return total
