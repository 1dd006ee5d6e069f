"""One transformer backbone for both objectives: bidirectional for diffusion, causal for AR.

It maps tokens (B, L) (and optionally diffusion time t (B,)) to logits (B, L, V) and
nothing else: parameterisations, losses and samplers live elsewhere. Pre-norm blocks with
RMSNorm, rotary position embeddings, PyTorch's scaled_dot_product_attention, a GELU MLP,
optional tied embeddings. The causal variant takes a KVCache for incremental decoding.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from redraft.config import ModelConfig


def rope_tables(seq_len: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables (seq_len, head_dim/2) of the rotary embedding."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of x (B, H, L, D) by position angles (L, D/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class KVCache:
    """Preallocated keys/values per layer, (B, H, max_len, D), filled left to right."""

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        shape = (batch, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.length = 0  # positions filled so far
        self.max_len = max_len


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, causal: bool):
        super().__init__()
        self.n_head, self.causal = cfg.n_head, causal
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x, cos, sin, cache: KVCache | None = None, layer: int = 0,
                positions: torch.Tensor | None = None):
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, H, L, D)
        mask, is_causal = None, self.causal
        if positions is not None:
            # Ragged decode: row b's one new token sits at positions[b]; it is written there
            # and sees the keys up to it (a row's slots past its own position are masked).
            rows = torch.arange(B, device=x.device)
            cache.k[layer][rows, :, positions] = k[:, :, 0]
            cache.v[layer][rows, :, positions] = v[:, :, 0]
            end = int(positions.max()) + 1
            k, v = cache.k[layer][:, :, :end], cache.v[layer][:, :, :end]
            mask = (torch.arange(end, device=x.device)[None, :] <= positions[:, None])
            mask, is_causal = mask[:, None, None, :], False  # (B, 1, 1, end)
        elif cache is not None:
            start = cache.length
            cache.k[layer][:, :, start:start + L] = k
            cache.v[layer][:, :, start:start + L] = v
            k, v = cache.k[layer][:, :, :start + L], cache.v[layer][:, :, :start + L]
            if start > 0:
                # New queries sit at positions start..start+L-1 and see every key up to their own.
                is_causal = False
                if L > 1:
                    pos_q = torch.arange(start, start + L, device=x.device)[:, None]
                    mask = torch.arange(start + L, device=x.device)[None, :] <= pos_q
        if q.dtype == torch.bfloat16 and q.device.type == "cpu":
            # PyTorch's CPU attention kernels are slower in bf16 than in fp32 (measured: about
            # 1.4x on AVX512-BF16), so bf16 autocast runs attention itself in fp32 there.
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), attn_mask=mask, is_causal=is_causal,
                    dropout_p=self.dropout if self.training else 0.0,
                ).to(x.dtype if x.dtype == torch.bfloat16 else q.dtype)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal,
                dropout_p=self.dropout if self.training else 0.0,
            )
        return self.proj(y.transpose(1, 2).reshape(B, L, C))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, causal: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model, bias=False)
        self.attn = Attention(cfg, causal)
        self.norm2 = nn.LayerNorm(cfg.d_model, bias=False)
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, cache=None, layer=0, positions=None):
        x = x + self.drop(self.attn(self.norm1(x), cos, sin, cache, layer, positions))
        return x + self.drop(self.out(F.gelu(self.fc(self.norm2(x)))))


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t (B,) -> (B, d_model) through a small MLP."""

    def __init__(self, d_model: int, n_freq: int = 64):
        super().__init__()
        self.register_buffer("freqs", torch.exp(-math.log(1e4) * torch.arange(n_freq) / n_freq),
                             persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq, d_model), nn.SiLU(),
                                 nn.Linear(d_model, d_model))

    def forward(self, t):
        angles = 1000.0 * t.float()[:, None] * self.freqs[None, :]
        return self.mlp(torch.cat((angles.cos(), angles.sin()), dim=-1))


class Transformer(nn.Module):
    """(tokens (B, L), t (B,) or None) -> logits (B, L, vocab_size)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, causal: bool):
        super().__init__()
        self.cfg, self.vocab_size, self.causal = cfg, vocab_size, causal
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.time = TimeEmbedding(cfg.d_model) if cfg.time_conditioning and not causal else None
        self.blocks = nn.ModuleList(Block(cfg, causal) for _ in range(cfg.n_layer))
        self.norm = nn.LayerNorm(cfg.d_model, bias=False)
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_weights:
            self.head.weight = self.embed.weight
        cos, sin = rope_tables(cfg.seq_len, cfg.d_model // cfg.n_head, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # Recompute each block's activations in the backward pass instead of storing them
        # (less memory, about a third more compute); set by training, results are unchanged.
        self.checkpoint_blocks = False
        self.apply(self._init)
        for block in self.blocks:  # GPT-2 style: residual writes scaled by depth
            for w in (block.attn.proj.weight, block.out.weight):
                nn.init.normal_(w, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def seq_len(self) -> int:
        return self.cfg.seq_len

    @property
    def time_conditioned(self) -> bool:
        return self.time is not None

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                cache: KVCache | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """positions (B,) long, with a cache and x (B, 1): ragged decoding, row b's token at
        its own position positions[b] (rows of one cache at different lengths; the caller
        tracks them, cache.length is left alone)."""
        B, L = x.shape
        start = cache.length if cache is not None else 0
        if start + L > self.cfg.seq_len:
            raise ValueError(f"sequence of {start + L} tokens exceeds seq_len={self.cfg.seq_len}")
        if cache is not None and not self.causal:
            raise ValueError("a KV cache needs a causal model")
        if positions is not None:
            if cache is None or L != 1 or positions.shape != (B,):
                raise ValueError("positions need a cache, one token per row and one position "
                                 "per row")
            if int(positions.max()) >= self.cfg.seq_len:
                raise ValueError(f"position {int(positions.max())} exceeds seq_len="
                                 f"{self.cfg.seq_len}")
        h = self.embed(x)  # (B, L, C)
        if self.time is not None:
            if t is None:
                raise ValueError("this model is time-conditioned: pass t")
            h = h + self.time(t)[:, None, :]
        if positions is not None:
            cos = self.rope_cos[positions][:, None, None, :]  # (B, 1, 1, D/2)
            sin = self.rope_sin[positions][:, None, None, :]
        else:
            cos, sin = self.rope_cos[start:start + L], self.rope_sin[start:start + L]
        for i, block in enumerate(self.blocks):
            if self.checkpoint_blocks and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, cos, sin, cache, i, use_reentrant=False)
            else:
                h = block(h, cos, sin, cache, i, positions)
        if cache is not None and positions is None:
            cache.length += L
        return self.head(self.norm(h))  # (B, L, V)

    def new_cache(self, batch: int) -> KVCache:
        c = self.cfg
        p = self.embed.weight
        return KVCache(c.n_layer, batch, c.n_head, c.seq_len, c.d_model // c.n_head,
                       device=p.device, dtype=p.dtype)
