"""Categorical sampling in float64, with temperature, top-k and top-p, and per-row randomness.

Why float64: Gumbel-max or multinomial sampling in float32/bf16 truncates the tails of the
distribution, which silently lowers the effective temperature and flatters generative
perplexity (Zheng et al. 2024). Here probabilities are computed in float64 and a token is
drawn by inverting the cumulative distribution with a float64 uniform.

Why per-row streams: a sequence's result must not depend on what else is in the batch, so
each row draws from its own counter-based stream (RowRandom), keyed by its own seed, and
consumes the same random numbers whether it runs alone or with others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from redraft.errors import RedraftError


def _to_int64(c: int) -> int:
    """A 64-bit constant as the signed int64 torch stores (two's complement)."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN = _to_int64(0x9E3779B97F4A7C15)
_MIX1 = _to_int64(0xBF58476D1CE4E5B9)
_MIX2 = _to_int64(0x94D049BB133111EB)


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 finaliser on int64 tensors (wrapping arithmetic): a strong 64-bit hash."""
    z = x + _GOLDEN
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


class RowRandom:
    """Counter-based float64 uniforms, one independent stream per batch row.

    Draw number n of the row with seed s is hash(hash(s) + n): every row's numbers depend
    only on its own seed and how many it has drawn, never on the other rows, and a whole
    batch is drawn in one vectorised op (no per-row Python loop).
    """

    def __init__(self, seeds: list[int], device: torch.device | str = "cpu"):
        self.keys = splitmix64(torch.tensor([int(s) for s in seeds], dtype=torch.int64,
                                            device=device))
        self.counters = torch.zeros(len(seeds), dtype=torch.int64, device=device)

    def __len__(self) -> int:
        return len(self.keys)

    def uniform(self, *shape: int) -> torch.Tensor:
        """Uniforms in [0, 1), float64, shape (rows, *shape), each row from its own stream."""
        n = math.prod(shape)
        index = self.counters[:, None] + torch.arange(n, device=self.keys.device)  # (R, n)
        bits = splitmix64(self.keys[:, None] + index * _GOLDEN)
        self.counters += n
        # Top 53 bits -> a float64 in [0, 1) with every representable step equally likely.
        return (_shr(bits, 11).double() * 2.0**-53).view(len(self.keys), *shape)


def check_knobs(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not temperature >= 0:
        raise RedraftError(f"temperature={temperature!r}: expected >= 0 (0 means greedy)")
    if top_k is not None and top_k < 1:
        raise RedraftError(f"top_k={top_k!r}: expected an integer >= 1 or none")
    if top_p is not None and not 0 < top_p <= 1:
        raise RedraftError(f"top_p={top_p!r}: expected 0 < top_p <= 1 or none")


def probabilities(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """float64 probabilities (N, V) of softmax(logits / temperature) restricted to top-k / top-p.

    temperature 0 puts all mass on the argmax. top-k keeps the k most likely tokens; top-p
    keeps the smallest set of most likely tokens whose mass reaches p (always at least one).
    """
    logits = logits.to(torch.float64)
    if temperature == 0:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_k is not None and top_k < probs.shape[-1]:
        kth = probs.topk(top_k, dim=-1).values[..., -1:]
        probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
    if top_p is not None and top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass strictly before each token
        keep_sorted = before < top_p * sorted_p.sum(-1, keepdim=True)
        keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
        probs = torch.where(keep, probs, torch.zeros_like(probs))
    return probs / probs.sum(-1, keepdim=True)


def sample(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Draw one index per row of float64 probs (N, V) by inverse CDF with uniforms u (N,)."""
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, (u * cdf[..., -1]).unsqueeze(-1), right=True).squeeze(-1)
    # u * total < total, so idx <= V - 1 except for rounding at the very top; clamp, then step
    # back over zero-probability tail tokens that rounding could land on.
    idx = idx.clamp(max=probs.shape[-1] - 1)
    bad = probs.gather(-1, idx[:, None]).squeeze(-1) == 0
    if bad.any():
        idx[bad] = probs[bad].argmax(-1)
    return idx


def gumbel_max(logits: torch.Tensor, dtype: torch.dtype = torch.float64,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """argmax(logits + Gumbel noise) with the noise drawn in `dtype`: logits (..., V) -> (...).

    redraft's loops sample by inverse CDF (above); this is the Gumbel-max trick most diffusion
    LM code uses, kept so the effect of its precision can be measured (tests, benchmarks). A
    float32 uniform has 24 bits, so the noise -log(-log u) cannot exceed about 16.6: a token
    whose logit trails the leader's by more than ~19.4 can never win, and one trailing by
    ~10-19 wins less often than it should. The tail is cut, entropy drops, and gen-ppl
    improves for the wrong reason. In float64 the bound moves out to about 37.
    """
    noise = torch.rand(logits.shape, dtype=dtype, generator=generator, device=logits.device)
    noise.log_().neg_().log_().neg_()  # in place: this runs over (rows, V) at large V
    return (noise.add_(logits.to(dtype))).argmax(dim=-1)


def next_tokens(logits: torch.Tensor, rng: RowRandom, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None,
                banned: Sequence[int] = ()) -> torch.Tensor:
    """One AR draw per row: logits (G, V) of the next position -> token ids (G,); `banned` ids
    (mask, pad) get probability 0; each row consumes one uniform of its own stream."""
    return draw_tokens(logits, rng.uniform(1)[:, 0], temperature, top_k, top_p, banned)


def draw_tokens(logits: torch.Tensor, u: torch.Tensor, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None,
                banned: Sequence[int] = ()) -> torch.Tensor:
    """next_tokens with the uniforms u (G,) float64 given (the server draws them per request
    and keeps only its rows still running)."""
    if banned:
        logits = logits.clone()
        logits[:, list(banned)] = -torch.inf
    probs = probabilities(logits, temperature, top_k, top_p)
    return sample(probs, u.to(logits.device))
