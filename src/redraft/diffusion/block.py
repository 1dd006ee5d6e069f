"""Block diffusion (BD3-LM, Arriola et al. 2025): masked diffusion inside blocks, AR across them.

The sequence x (B, L) is cut into blocks of b positions, k = 0 .. L/b - 1. Its likelihood
factorises over blocks, and each block's conditional gets its own masked-diffusion ELBO:

    -log p(x) = sum_k -log p(x_k | x_<k)
             <= sum_k E_{t_k} E_{xt_k ~ q(. | x_k, t_k)} [ sum_{l in block k} 1[xt_l = mask]
                       (-alpha'(t_k) / (1 - alpha(t_k))) (-log p_theta(x_l | xt_k, x_<k)) ]

with p_theta the SUBS denoiser of a block-causal backbone that sees the noised block and the
clean blocks before it. One training pass scores every block at once: the backbone runs over
[xt ; x0] with the mask that reproduces the sampler's KV cache (models.transformer.pair_mask),
and every block gets its own time t_k (stratified over all blocks of the batch). Summing the
per-token values over a window and dividing by L estimates the bound in nats/token, exactly
like the masked ELBO (b = L is that ELBO; b = 1 is the exact NLL of a left-to-right model,
since a one-token block's ELBO integrates to its cross-entropy).

The "count" estimator draws the number of masks k of each block uniformly in 1..b instead of
t (weight b/k: t integrated out, as masked_elbo_by_count does for a whole sequence).

In-block order ("reveal width" w). The forward process may give in-block position j its own
schedule alpha_j(t) = alpha(tau_j(t)), tau_j(t) = clip((t - c_j) / w, 0, 1) with
c_j = (1 - w)(b - 1 - j)/(b - 1): position j is masked during [c_j, c_j + w] only, so later
positions are masked first and revealed last. The positions of a block stay independent given
t, so the ELBO keeps its form with per-position weights -alpha_j'(t) / (1 - alpha_j(t)) =
w_alpha(tau_j) / w inside the window and 0 outside (alpha_j is flat there). w = 1 is the
uniform (exchangeable) order above; as w -> 0 the reveal order becomes left to right and,
for a denoiser that ignores t, the bound tends to the in-order NLL (in_order_nll), an exact
likelihood; between the two, several positions are still revealed per step.

Last revealed last (block_reveal_last, "next" alignment only, see below). Under "next" no
position of block k reads x's last token of the block (it is y's first token of block k+1), so
a denoiser of block k never sees it, revealed or not. Giving that position the schedule
"masked until t = 0" (the others keep theirs) makes it the block's last reveal and changes
only its term of the bound: the integral of its weight is 1 at t -> 0, where every other
position is clean, so the term is -log p(x_last | the block's others, x_<k), an AR-style
prediction. Its input, y's block k with every token clean, is exactly the clean pass's
block k (the second half of the training pass, which sees y0 blocks <= k): the term costs no
extra network call (Transformer's clean_logits). With b = 1 every position is a last one and
the bound is the AR twin's exact NLL. The count estimator draws its k among the b - 1 others.

Alignment ("shift"). The model reads a sequence y and its output at position j predicts x_j.

    same  (BD3-LM)      y = xt: a position predicts its own (masked) token.
    next  (AR-aligned)  y = [bos, x_0 .. x_{L-2}]: position j holds x_{j-1}, as the AR twin's
                        input does; inside block k the first position holds the last token
                        of block k-1 (bos for k = 0), which is always clean, and the others
                        the noised tokens of block k but its last.

With "next" and b = 1 every input is clean and the pass is exactly the AR twin's (same
weights, same logits, the same exact NLL), which is why weights adapted from the AR twin start
close to where they should (Dream, Fast-dLLM v2 keep this alignment). With "same" and b = L
it is exactly the masked (MDLM) model. Both are the same backbone and the same bound.
"""

from __future__ import annotations

import torch

from redraft.diffusion.objectives import masked_nll
from redraft.diffusion.schedules import Schedule


def block_ids(length: int, block_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(length,) long: the block of each position."""
    return torch.arange(length, device=device) // block_size


def sample_block_times(batch: int, n_blocks: int, generator: torch.Generator | None = None,
                       t_min: float = 0.0, t_max: float = 1.0,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """Low-discrepancy times (B, n_blocks) in (t_min, t_max]: the B * n_blocks times are one
    stratified draw (one offset u, t_i = 1 - ((u + i / N) mod 1) rescaled), dealt out in a
    fixed shuffled order so that strata do not line up with block positions.

    t_max < 1 (or t_min > 0) is BD3-LM's clipped schedule: the weights are left as they are,
    so the loss is no longer a bound (a training knob; evaluation uses (0, 1]).
    """
    n = batch * n_blocks
    u = torch.rand((), generator=generator, device=device)
    t = 1.0 - torch.remainder(u + torch.arange(n, device=device) / n, 1.0)
    order = torch.randperm(n, generator=generator, device=device)
    return (t_min + (t_max - t_min) * t[order]).view(batch, n_blocks)


def sample_block_counts(batch: int, sizes: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Low-discrepancy mask counts (B, n_blocks), block j's marginally uniform on
    {1..sizes[j]} (sizes (n_blocks,) long: the block lengths), stratified like the times."""
    n = batch * len(sizes)
    u = torch.rand((), generator=generator, device=sizes.device)
    frac = torch.remainder(u + torch.arange(n, device=sizes.device) / n, 1.0)
    order = torch.randperm(n, generator=generator, device=sizes.device)
    frac = frac[order].view(batch, len(sizes))
    return (1 + torch.floor(frac * sizes[None, :])).long().clamp(min=1).minimum(sizes[None, :])


def per_position(v: torch.Tensor, length: int, block_size: int) -> torch.Tensor:
    """(B, n_blocks) per-block values -> (B, length): each position gets its block's."""
    return v[:, block_ids(length, block_size, v.device)]


def block_sizes(length: int, block_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(length,) long: the size of each position's block (the last block may be short)."""
    blocks = block_ids(length, block_size, device)
    return torch.bincount(blocks)[blocks]


def reveal_times(t: torch.Tensor, block_size: int, width: float) -> torch.Tensor:
    """(B, L) per-position times tau_j(t) = clip((t - c_j) / w, 0, 1) of the in-block order
    of reveal width w (see the module docstring); t (B, L) is each position's block time.
    w = 1 returns t itself."""
    if width >= 1:
        return t
    length = t.shape[1]
    rank = torch.arange(length, device=t.device) - block_ids(length, block_size, t.device) \
        * block_size
    c = (1.0 - width) * (block_size - 1 - rank) / max(block_size - 1, 1)
    return ((t - c[None, :].to(t.dtype)) / width).clamp(0.0, 1.0)


def block_mask_pattern(t: torch.Tensor, schedule: Schedule,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, L) bool: position l masked w.p. 1 - alpha(t[b, l]) (t per position), independently."""
    keep = schedule.alpha(t.double())
    u = torch.rand(t.shape, generator=generator, device=t.device, dtype=torch.float64)
    return u >= keep


def last_in_block(length: int, block_size: int,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """(length,) bool: the last position of each block."""
    pos = torch.arange(length, device=device)
    return (pos % block_size == block_size - 1) | (pos == length - 1)


def block_mask_pattern_count(k: torch.Tensor, block_size: int,
                             generator: torch.Generator | None = None,
                             exclude: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L) bool: exactly k[b, l] positions masked in the block of position l (k per
    position, constant on a block, at most the block's size), chosen uniformly; with
    exclude (L,) bool, among the block's other positions only (k at most their number)."""
    B, length = k.shape
    blocks = block_ids(length, block_size, k.device)
    u = torch.rand((B, length), generator=generator, device=k.device, dtype=torch.float64)
    if exclude is not None:  # ranked after every other position of their block
        u = torch.where(exclude[None, :], 1.99, u)
    # Rank inside each block: sort by (block, u); the i-th sorted position is in block
    # blocks[i] (blocks ascend), so its rank in the block is i - blocks[i] * block_size.
    order = (blocks[None, :] + 0.5 * u).argsort(dim=1)
    rank_sorted = torch.arange(length, device=k.device) - blocks * block_size
    rank = torch.empty_like(order).scatter_(1, order, rank_sorted.expand(B, -1).contiguous())
    return rank < k


def block_weights(schedule: Schedule, t: torch.Tensor, k: torch.Tensor | None,
                  block_size: int, width: float = 1.0,
                  reveal_last: bool = False) -> torch.Tensor:
    """(B, L) float32 ELBO weight of each position, from its block's time t (B, L):
    -alpha'(t) / (1 - alpha(t)); or, with counts k (B, L) (count estimator), b_l / k with b_l
    the size of its block (t integrated out: given k masks among b_l positions the weight
    integrates to 1/k, and b_l scales the per-block mean back to a sum, as in
    masked_elbo_by_count). With a reveal width w < 1, t are the per-position times tau_j
    (reveal_times) and the weight is w_alpha(tau_j) / w inside the window, 0 outside it.
    reveal_last: the last positions weigh 0 here (their term is the clean pass's) and the
    count estimator's k is among the b_l - 1 others."""
    if k is None and width < 1:
        inside = (t > 0) & (t < 1)
        w = schedule.elbo_weight(torch.where(inside, t, torch.ones_like(t))) / width
        w = torch.where(inside, w, torch.zeros_like(w)).to(torch.float32)
    elif k is None:
        w = schedule.elbo_weight(t).to(torch.float32)
    else:
        sizes = block_sizes(k.shape[1], block_size, k.device) - int(reveal_last)
        w = sizes[None, :].to(torch.float32) / k.clamp_min(1).to(torch.float32)
    if reveal_last:
        w = torch.where(last_in_block(t.shape[1], block_size, t.device)[None, :], 0.0, w)
    return w


def block_inputs(xt: torch.Tensor, x0: torch.Tensor, block_size: int, shift: bool,
                 bos_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y_t, y_0), the backbone's inputs (B, L) for the noised and the clean sequence.

    shift False: (xt, x0). shift True: y_0 = [bos, x0[:-1]], and y_t is y_0 with the noised
    tokens of xt at the positions whose predecessor lies in the same block (position j holds
    x_{j-1}; a block's first position holds the clean last token of the block before).
    """
    if not shift:
        return xt, x0
    bos = torch.full_like(x0[:, :1], bos_id)
    y0 = torch.cat((bos, x0[:, :-1]), dim=1)
    yt = torch.cat((bos, xt[:, :-1]), dim=1)
    first = block_ids(x0.shape[1], block_size, x0.device) * block_size == torch.arange(
        x0.shape[1], device=x0.device)
    return torch.where(first[None, :], y0, yt), y0


def block_elbo(logits: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, weight: torch.Tensor,
               mask_id: int) -> torch.Tensor:
    """Per-token block-diffusion ELBO (B, L) in nats: SUBS cross-entropy at the masked
    positions of xt times each position's block weight (block_weights); 0 elsewhere.
    logits (B, L, V) are the backbone's for the targets x0 (B, L)."""
    return masked_nll(logits, x0, xt, mask_id) * weight


def in_order_nll(model: torch.nn.Module, x0: torch.Tensor, shift: bool, mask_id: int,
                 bos_id: int | None) -> torch.Tensor:
    """(B, L) nats: -log p(x_l | clean blocks before, the block's positions before l), with
    the block's positions from l on masked: the exact NLL of decoding each block left to
    right, one token per network call (b calls of a block model, all blocks at once).

    A diagnostic beside the block ELBO, which averages the same denoiser over uniformly
    random in-block orders (what parallel decoding needs): the gap between the two is what
    the random orders cost. Block size 1 gives the AR twin's NLL, like the ELBO."""
    b = model.block_size
    length = x0.shape[1]
    rank = torch.arange(length, device=x0.device) - block_ids(length, b, x0.device) * b
    out = torch.zeros(x0.shape, dtype=torch.float32, device=x0.device)
    for i in range(min(b, length)):
        xt = torch.where((rank >= i)[None, :], torch.full_like(x0, mask_id), x0)
        yt, y0 = block_inputs(xt, x0, b, shift, bos_id)
        t = (rank >= i).float()[None, :].expand(x0.shape)  # masked positions: t = 1
        nll = masked_nll(model(yt, t, x0=y0), x0, xt, mask_id)
        out[:, rank == i] = nll[:, rank == i].float()
    return out
