"""One transformer backbone for every objective: bidirectional, causal or block-causal.

It maps tokens (B, L) (and optionally diffusion time t) to logits (B, L, V) and nothing
else: parameterisations, losses and samplers live elsewhere. Pre-norm blocks with RMSNorm,
rotary position embeddings, PyTorch's scaled_dot_product_attention, a GELU MLP, optional tied
embeddings. The attention pattern is the only difference between the three kinds, so the
weights of one load into the others:

    bidirectional   every position sees every position            (masked diffusion)
    causal          position i sees positions <= i                 (the AR twin)
    block-causal b  position i sees positions j with j // b <= i // b: bidirectional inside
                    a block of b positions, causal across blocks   (block diffusion)

Block size 1 is the causal pattern and block size L the bidirectional one. Causal and
block-causal models take a KVCache: finished positions are computed once, and a call may run
only the newest positions (a token, or a block) against the cached keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from redraft.config import ModelConfig
from redraft.errors import RedraftError


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


@dataclass
class Plan:
    """What every layer of one forward call shares: rotary tables at the query positions, the
    attention mask, and where the new keys/values go in the cache (if any)."""

    cos: torch.Tensor  # (L, D/2) or (B, 1, L, D/2)
    sin: torch.Tensor
    mask: torch.Tensor | None = None  # bool, True = attend; broadcast to (B, H, L, keys)
    is_causal: bool = False
    cache: KVCache | None = None
    start: int = 0  # contiguous write: new keys go to cache slots start..start+L-1
    slots: torch.Tensor | None = None  # (B, L) per-row slots of a ragged write
    rows: torch.Tensor | None = None  # (B,) cache rows of the call's rows (None: all, in order)
    end: int = 0  # keys read from the cache: slots 0..end-1
    transient: int = 0  # the call's last `transient` tokens (a hybrid's drafts): keys and
    # values appended to the keys read, never written to the cache


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x, plan: Plan, layer: int = 0):
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, plan.cos, plan.sin), apply_rope(k, plan.cos, plan.sin)  # (B, H, L, D)
        cache = plan.cache
        if plan.transient:
            k, kt = k[:, :, :L - plan.transient], k[:, :, L - plan.transient:]
            v, vt = v[:, :, :L - plan.transient], v[:, :, L - plan.transient:]
        if cache is not None:
            ck, cv = cache.k[layer], cache.v[layer]
            if plan.slots is not None:
                # Ragged: row b's tokens go to its own slots (and its own cache row).
                rows = plan.rows if plan.rows is not None else torch.arange(B, device=x.device)
                ck[rows[:, None], :, plan.slots] = k.transpose(1, 2)
                cv[rows[:, None], :, plan.slots] = v.transpose(1, 2)
            else:
                ck[:, :, plan.start:plan.start + L] = k
                cv[:, :, plan.start:plan.start + L] = v
            if plan.rows is not None:  # index_select: about 3x faster than ck[rows, :, :end]
                k = ck.narrow(2, 0, plan.end).index_select(0, plan.rows)
                v = cv.narrow(2, 0, plan.end).index_select(0, plan.rows)
            else:
                k, v = ck[:, :, :plan.end], cv[:, :, :plan.end]
        if plan.transient:
            k, v = torch.cat((k, kt), dim=2), torch.cat((v, vt), dim=2)
        if q.dtype == torch.bfloat16 and q.device.type == "cpu":
            # PyTorch's CPU attention kernels are slower in bf16 than in fp32 (measured: about
            # 1.4x on AVX512-BF16), so bf16 autocast runs attention itself in fp32 there.
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), attn_mask=plan.mask,
                    is_causal=plan.is_causal, dropout_p=self.dropout if self.training else 0.0,
                ).to(x.dtype if x.dtype == torch.bfloat16 else q.dtype)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=plan.mask, is_causal=plan.is_causal,
                dropout_p=self.dropout if self.training else 0.0,
            )
        return self.proj(y.transpose(1, 2).reshape(B, L, C))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model, bias=False)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.d_model, bias=False)
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, plan: Plan, layer: int = 0):
        x = x + self.drop(self.attn(self.norm1(x), plan, layer))
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
        """t (...) -> (..., d_model): one embedding per time (per row, or per position)."""
        angles = 1000.0 * t.float()[..., None] * self.freqs
        return self.mlp(torch.cat((angles.cos(), angles.sin()), dim=-1))


@lru_cache(maxsize=64)
def pair_mask(length: int, clean: int, block_size: int, device: torch.device) -> torch.Tensor:
    """The attention mask (length + clean, length + clean) of block diffusion's training pass
    over [xt ; x0[:clean]] (BD3-LM), True = attend. Block of position i: i // block_size.

        noisy i -> noisy j   same block            (bidirectional inside the noised block)
        noisy i -> clean j   block(j) < block(i)   (the clean blocks before it)
        clean i -> clean j   block(j) <= block(i)  (block-causal: what the KV cache holds)
        clean i -> noisy j   never

    so each noisy block sees exactly what it sees at sampling time: itself over the cache of
    the finished blocks before it. Built once per shape (it is the same for every batch).
    """
    bn = torch.arange(length, device=device) // block_size
    bc = torch.arange(clean, device=device) // block_size
    top = torch.cat((bn[:, None] == bn[None, :], bc[None, :] < bn[:, None]), dim=1)
    bottom = torch.cat((torch.zeros(clean, length, dtype=torch.bool, device=device),
                        bc[None, :] <= bc[:, None]), dim=1)
    return torch.cat((top, bottom), dim=0)


@lru_cache(maxsize=64)
def block_causal_mask(start: int, length: int, block_size: int,
                      device: torch.device) -> torch.Tensor:
    """(length, start + length) bool: queries at positions start.. see keys 0.. of blocks up to
    their own, and only keys that exist (below start + length)."""
    q = torch.arange(start, start + length, device=device)
    k = torch.arange(start + length, device=device)
    return (k[None, :] // block_size) <= (q[:, None] // block_size)


class Transformer(nn.Module):
    """(tokens (B, L), t (B,), (B, L) or None) -> logits (B, L, vocab_size).

    causal=True: the AR twin. block_size=b (causal False): block-causal attention over blocks
    of b positions, for block diffusion. Neither: bidirectional.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, causal: bool,
                 block_size: int | None = None, draft_block: int | None = None):
        super().__init__()
        if block_size is not None and (causal or not 1 <= block_size <= cfg.seq_len):
            raise RedraftError(f"block_size={block_size!r}: expected 1..{cfg.seq_len} (seq_len) "
                               "on a non-causal model")
        if draft_block is not None and (not causal or not 2 <= draft_block <= cfg.seq_len):
            raise RedraftError(f"draft_block={draft_block!r}: expected 2..{cfg.seq_len} "
                               "(seq_len) on a causal model (a hybrid)")
        self.cfg, self.vocab_size, self.causal = cfg, vocab_size, causal
        self.block_size = block_size
        # A hybrid (objective "hybrid"): a causal model whose calls may carry draft blocks
        # of this size beside the clean tokens (see `forward`'s drafts).
        self.draft_block = draft_block
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.time = TimeEmbedding(cfg.d_model) if cfg.time_conditioning and not causal else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.LayerNorm(cfg.d_model, bias=False)
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_weights:
            self.head.weight = self.embed.weight
        # A hybrid's drafts and padded verify tokens may sit up to two blocks past the
        # context (they are never committed there): its tables and caches have that slack.
        self.slack = 2 * draft_block if draft_block else 0
        cos, sin = rope_tables(cfg.seq_len + self.slack, cfg.d_model // cfg.n_head,
                               cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # Recompute each block's activations in the backward pass instead of storing them
        # (less memory, about a third more compute); set by training, results are unchanged.
        self.checkpoint_blocks = False
        self.apply(self._init)
        for block in self.blocks:  # GPT-2 style: residual writes scaled by depth
            for w in (block.attn.proj.weight, block.out.weight):
                nn.init.normal_(w, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @property
    def attention(self) -> str:
        """"causal", "bidirectional" or "block" (block-causal, blocks of block_size)."""
        return "causal" if self.causal else "bidirectional" if self.block_size is None else "block"

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

    def _limit(self, q: torch.Tensor) -> torch.Tensor:
        """The last key position a query at position q may see (causal or block-causal)."""
        if self.block_size is None:
            return q
        return (q // self.block_size + 1) * self.block_size - 1

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                cache: KVCache | None = None,
                positions: torch.Tensor | None = None, *,
                x0: torch.Tensor | None = None,
                cache_rows: torch.Tensor | None = None,
                clean_logits: bool = False,
                drafts: torch.Tensor | None = None,
                draft_pos: torch.Tensor | None = None,
                draft_start: torch.Tensor | None = None):
        """Logits (B, L, V) of x (B, L); t (B,) per row or (B, L) per position.

        cache (causal or block models): without positions, x continues the cache at
        cache.length (which advances by L). With positions (B,) long: ragged, row b's L tokens
        sit at positions[b].. and are written there, each seeing the cached keys its pattern
        allows up to its own row's last new position (the caller tracks lengths; cache.length
        is left alone); cache_rows (B,) then names the cache row of each row of x (default:
        row b is cache row b), so a call may run any subset of the cache's rows.

        x0 (B, L) (block models, no cache): block diffusion's training pass. x is the noised
        sequence; each of its blocks sees itself and the clean blocks of x0 before it, as it
        would over a KV cache of the finished blocks (pair_mask): one pass over
        [x ; x0 without its last block] for all blocks at once; logits of x only. t then
        belongs to x; the clean positions get t = 0. clean_logits: the pass runs all of x0
        (its last block too) and returns (logits of x, logits of x0) (B, L, V) each; the
        clean pass's output at a block's last position sees every other token of its block
        and no more (block_reveal_last reads it there).

        drafts (B, K) (hybrids): draft tokens beside the clean ones, at positions draft_pos
        (B, K) or (K,); the tokens with one draft_start (B, K) or (K,) form a draft block,
        bidirectional inside, seeing the clean keys at positions <= its start (position p
        holds clean token p - 1: so, every token before the block's first). Clean tokens
        never see drafts; drafts are never written to the cache. Returns (clean logits
        (B, L, V), draft logits (B, K, V)). With a cache, positions (B,) are required.
        """
        if drafts is not None:
            return self._with_drafts(x, drafts, draft_pos, draft_start, cache, positions,
                                     cache_rows)
        B, L = x.shape
        start = cache.length if cache is not None and positions is None else 0
        if start + L > self.cfg.seq_len:
            raise ValueError(f"sequence of {start + L} tokens exceeds seq_len={self.cfg.seq_len}")
        if cache is not None and self.attention == "bidirectional":
            raise ValueError("a KV cache needs a causal or block-causal model")
        if positions is not None:
            if cache is None or positions.shape != (B,):
                raise ValueError("positions need a cache and one position per row")
            if int(positions.max()) + L > self.cfg.seq_len:
                raise ValueError(f"position {int(positions.max()) + L - 1} exceeds seq_len="
                                 f"{self.cfg.seq_len}")
        if x0 is not None and (self.block_size is None or cache is not None
                               or x0.shape != x.shape):
            raise ValueError("x0 (the clean sequence, shaped like x) needs a block model and no "
                             "cache")
        if cache_rows is not None and positions is None:
            raise ValueError("cache_rows needs positions (a ragged call)")
        if clean_logits and x0 is None:
            raise ValueError("clean_logits needs x0 (block diffusion's training pass)")

        clean = 0
        if x0 is not None:
            # No noised block sees the last clean one: it runs only for clean_logits.
            clean = L if clean_logits else (L - 1) // self.block_size * self.block_size
            if clean:
                x = torch.cat((x, x0[:, :clean]), dim=1)
        h = self.embed(x)  # (B, L + clean, C)
        if self.time is not None:
            if t is None:
                raise ValueError("this model is time-conditioned: pass t")
            t = t.float()
            if clean:
                t = t[:, None].expand(B, L) if t.dim() == 1 else t
                t = torch.cat((t, t.new_zeros(B, clean)), dim=1)
            h = h + (self.time(t)[:, None, :] if t.dim() == 1 else self.time(t))
        plan = self._plan(B, L, start, cache, positions, cache_rows, clean, x.device)
        h = self._blocks(h, plan)
        if cache is not None and positions is None:
            cache.length += L
        if clean_logits:
            out = self.head(self.norm(h))
            return out[:, :L], out[:, L:]
        return self.head(self.norm(h[:, :L]))  # (B, L, V)

    def _blocks(self, h: torch.Tensor, plan: Plan) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            if self.checkpoint_blocks and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, plan, i, use_reentrant=False)
            else:
                h = block(h, plan, i)
        return h

    def _with_drafts(self, x, drafts, draft_pos, draft_start, cache, positions, cache_rows):
        """A hybrid's call: clean tokens x (causal, cached) and draft blocks (transient)."""
        if self.draft_block is None:
            raise ValueError("drafts need a hybrid (a causal model with a draft_block)")
        if draft_pos is None or draft_start is None:
            raise ValueError("drafts need draft_pos and draft_start")
        if cache is not None and positions is None:
            raise ValueError("drafts over a cache need positions (one per row)")
        B, L = x.shape
        K = drafts.shape[1]
        device = x.device
        draft_pos = draft_pos.expand(B, K)
        draft_start = draft_start.expand(B, K)
        start = positions[:, None] if cache is not None else torch.zeros(
            (B, 1), dtype=torch.long, device=device)
        qpos = start + torch.arange(L, device=device)  # (B, L) the clean tokens' positions
        limit = self.cfg.seq_len + self.slack
        if int(qpos.max()) >= limit or (K and int(draft_pos.max()) >= limit):
            raise ValueError(f"a position past seq_len={self.cfg.seq_len} + {self.slack}")
        end = int(qpos.max()) + 1
        keys = torch.arange(end, device=device)
        mask = torch.cat((
            torch.cat((keys[None, None, :] <= qpos[..., None],  # causal
                       torch.zeros(B, L, K, dtype=torch.bool, device=device)), dim=2),
            torch.cat((keys[None, None, :] <= draft_start[..., None],  # the clean prefix
                       draft_start[:, :, None] == draft_start[:, None, :]), dim=2),  # own block
        ), dim=1)  # (B, L + K, end + K)
        allpos = torch.cat((qpos, draft_pos), dim=1)
        plan = Plan(self.rope_cos[allpos][:, None], self.rope_sin[allpos][:, None],
                    mask[:, None], cache=cache, slots=qpos if cache is not None else None,
                    rows=cache_rows, end=end, transient=K)
        h = self.embed(torch.cat((x, drafts), dim=1))
        h = self._blocks(h, plan)
        out = self.head(self.norm(h))
        return out[:, :L], out[:, L:]

    def _plan(self, B, L, start, cache, positions, cache_rows, clean, device) -> Plan:
        """Rotary tables, mask and cache slots of one call (shared by every layer)."""
        if positions is not None and self.causal and L == 1 and cache_rows is None \
                and cache.k[0].shape[0] == B and bool((positions == positions[0]).all()):
            # Every row at one position (one request decoding, or a batch in step): the
            # contiguous cache path, the same keys and queries without the scatter and the mask.
            p = int(positions[0])
            return Plan(self.rope_cos[p:p + 1], self.rope_sin[p:p + 1], cache=cache, start=p,
                        end=p + 1)
        if positions is not None:
            qpos = positions[:, None] + torch.arange(L, device=device)  # (B, L)
            end = int(qpos.max()) + 1
            last = (positions + L - 1)[:, None]  # each row sees no key past its own new ones
            limit = torch.minimum(self._limit(qpos), last)  # (B, L)
            mask = torch.arange(end, device=device)[None, None, :] <= limit[..., None]
            return Plan(self.rope_cos[qpos][:, None], self.rope_sin[qpos][:, None],
                        mask[:, None], cache=cache, slots=qpos, rows=cache_rows, end=end)
        if clean:
            pos = torch.cat((torch.arange(L, device=device), torch.arange(clean, device=device)))
            return Plan(self.rope_cos[pos], self.rope_sin[pos],
                        pair_mask(L, clean, self.block_size, device))
        cos, sin = self.rope_cos[start:start + L], self.rope_sin[start:start + L]
        plan = Plan(cos, sin, cache=cache, start=start, end=start + L)
        if self.attention == "bidirectional" or (self.block_size is not None
                                                 and self.block_size >= start + L):
            return plan  # one block holds everything: no mask at all
        if self.causal and start == 0:
            plan.is_causal = True
        elif self.causal:
            if L > 1:  # new queries at start.. see every key up to their own
                q = torch.arange(start, start + L, device=device)[:, None]
                plan.mask = torch.arange(start + L, device=device)[None, :] <= q
        else:
            plan.mask = block_causal_mask(start, L, self.block_size, device)
        return plan

    def new_cache(self, batch: int) -> KVCache:
        c = self.cfg
        p = self.embed.weight
        return KVCache(c.n_layer, batch, c.n_head, c.seq_len + self.slack,
                       c.d_model // c.n_head, device=p.device, dtype=p.dtype)
