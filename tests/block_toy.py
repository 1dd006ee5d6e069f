"""An enumerable toy law for block diffusion and the exact block denoiser for it.

All 81 sequences of length L = 4 over 3 symbols (ids 0..2), mask id 3, correlated inside and
across blocks of 2. ExactBlockModel is what a perfect block-causal network outputs: for a
query in block k, the posterior marginal of its token given what that query's attention can
see (clean blocks before k and block k as it is), by enumeration. It takes the same calls as
models.Transformer: plain block-causal, the [xt ; x0] training pair (x0=), and a ragged KV
cache (new_cache, positions, cache_rows), so the real loss and sampling loops drive it.
"""

from __future__ import annotations

import itertools

import torch

from redraft.config import ModelConfig
from tests.diffusion.test_masked import MASK, exact_denoiser_logits

L4, V = 4, 3
VOCAB = V + 1
BOS = 0  # the shifted alignment's first input; the exact model never reads it


def toy_law():
    seqs = torch.tensor(list(itertools.product(range(V), repeat=L4)))  # (81, 4)
    score = (1.5 * (seqs[:, 0] == seqs[:, 1]) + 1.0 * (seqs[:, 2] == (seqs[:, 1] + 1) % V)
             + 0.8 * (seqs[:, 3] == seqs[:, 0]) + 0.4 * seqs[:, 0] - 0.3 * (seqs[:, 3] == 2))
    return seqs, torch.softmax(score.double(), 0)


class _Cache:
    def __init__(self, batch):
        self.tokens = torch.full((batch, L4), -1, dtype=torch.long)


class ExactBlockModel(torch.nn.Module):
    def __init__(self, block_size: int, shift: bool):
        super().__init__()
        self.cfg, self.vocab_size, self.time = ModelConfig(seq_len=L4), VOCAB, None
        self.block_size, self.shift, self.causal = block_size, shift, False
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.seqs, self.p = toy_law()

    def new_cache(self, batch):
        return _Cache(batch)

    def _logits(self, src: torch.Tensor, qpos: torch.Tensor) -> torch.Tensor:
        """src (N, L) y-tokens each query sees (-1: unseen), qpos (N,) -> logits (N, VOCAB)."""
        seen = torch.where(src >= 0, src, MASK)
        if self.shift:  # y_i holds x_{i-1}; y_0 (bos) carries nothing
            canvas = torch.cat((seen[:, 1:], torch.full_like(seen[:, :1], MASK)), dim=1)
        else:
            canvas = seen
        lg = exact_denoiser_logits(canvas, self.seqs, self.p)  # (N, L, VOCAB)
        return lg[torch.arange(len(qpos)), qpos].float()

    def forward(self, y, t=None, cache=None, positions=None, cache_rows=None, x0=None,
                clean_logits=False):
        if clean_logits:  # the clean pass: block-causal over x0 itself
            return self.forward(y, t, x0=x0), self.forward(x0, t)
        B, n = y.shape
        cols = torch.arange(L4)
        blk = cols // self.block_size
        if cache is not None:
            rows = cache_rows if cache_rows is not None else torch.arange(B)
            qpos = positions[:, None] + torch.arange(n)  # (B, n)
            cache.tokens[rows[:, None], qpos] = y
            full = cache.tokens[rows][:, None, :].expand(B, n, L4)
            end = (positions + n)[:, None, None]
            seen = (blk[None, None, :] <= (qpos // self.block_size)[..., None]) & (cols < end)
            src = torch.where(seen, full, -1)
        else:
            qpos = torch.arange(n).expand(B, n)
            k = (qpos // self.block_size)[..., None]  # (B, n, 1)
            yy = y[:, None, :].expand(B, n, L4)
            if x0 is not None:
                clean = x0[:, None, :].expand(B, n, L4)
                src = torch.where(blk < k, clean, torch.where(blk == k, yy, -1))
            else:
                src = torch.where(blk <= k, yy, -1)
        return self._logits(src.reshape(B * n, L4), qpos.reshape(-1)).view(B, n, VOCAB)
