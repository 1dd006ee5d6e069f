"""Glue between a batch of clean tokens and an objective: noise it, run the backbone, score it.

`token_losses` is shared by training and evaluation so that the number a run optimises is
exactly the number it reports.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from redraft.config import DiffusionConfig
from redraft.diffusion import (
    Process,
    ar_cross_entropy,
    make_process,
    make_schedule,
    masked_elbo_by_count,
    masked_nll,
    objective,
    sample_mask_counts,
    sample_times,
)
from redraft.diffusion.block import (
    block_elbo,
    block_inputs,
    block_mask_pattern,
    block_mask_pattern_count,
    block_sizes,
    block_weights,
    last_in_block,
    per_position,
    reveal_times,
    sample_block_counts,
    sample_block_times,
)
from redraft.errors import RedraftError


def process_of(cfg: DiffusionConfig, mask_id: int, vocab_size: int | None = None) -> Process:
    """The noise process a diffusion config describes (make_process with its values).
    vocab_size (the model's) is needed by every process but the mask one. Built once per
    configuration: every loss call of a run shares it."""
    return _process(cfg.process, cfg.schedule, mask_id, vocab_size, cfg.schedule_eps,
                    cfg.mask_share)


@functools.cache
def _process(name: str, schedule: str, mask_id: int, vocab_size: int | None,
             eps: float | None, share: float) -> Process:
    # Processes and schedules hold plain numbers only (tensors are made per call, on the
    # caller's device), so one object serves every call and device.
    return make_process(name, schedule, mask_id=mask_id, vocab_size=vocab_size,
                        schedule_eps=eps, mask_share=share)


@functools.cache
def schedule_of(name: str, eps: float | None):
    """make_schedule, built once per (name, eps)."""
    return make_schedule(name, eps)


def ar_inputs(x0: torch.Tensor, bos_id: int) -> torch.Tensor:
    """[bos, x_0 .. x_{L-2}]: the causal model's input that predicts every token of x0 (B, L)."""
    bos = torch.full_like(x0[:, :1], bos_id)
    return torch.cat((bos, x0[:, :-1]), dim=1)


@dataclass
class Noise:
    """The corruption drawn for a whole batch (B, L), to be scored in pieces of rows.

    Training draws one Noise for the global batch of a step, and each rank and micro-batch
    scores its own rows of it, so the samples of a step are the same at any world size and
    any grad_accum. `token_scale` is B * L / (masked positions in the whole batch): the
    "token" weighting divides by the batch's mask count, not by a piece's.
    """

    masked: torch.Tensor  # (B, L) bool: positions replaced by noise
    values: torch.Tensor  # (B, L) long: what a replaced position holds (the mask id, or a
    # draw from the process's pi); the replacement never depends on the clean token
    t: torch.Tensor  # (B,) time (or, for the count estimator, mask rate) fed to the backbone
    k: torch.Tensor | None  # (B,) mask counts, for the count estimator
    token_scale: float
    scored: torch.Tensor | None = None  # (B, L) bool: positions the loss counts (None: all)
    drafted: torch.Tensor | None = None  # (K,) long: a hybrid's draft positions this step

    def rows(self, start: int, stop: int) -> Noise:
        k = self.k[start:stop] if self.k is not None else None
        scored = self.scored[start:stop] if self.scored is not None else None
        return Noise(self.masked[start:stop], self.values[start:stop], self.t[start:stop], k,
                     self.token_scale, scored, self.drafted)


def condition_noise(noise: Noise, cfg: DiffusionConfig, mask_id: int,
                    generator: torch.Generator | None = None) -> Noise:
    """Prompt conditioning with condition dropout (training only; see DiffusionConfig): each
    row gets a prefix of U{0..cond_prefix_max} tokens, kept clean, or with probability
    cond_dropout masked; either way the prefix is not scored."""
    B, L = noise.masked.shape
    device = noise.masked.device
    n = torch.randint(0, cfg.cond_prefix_max + 1, (B,), generator=generator, device=device)
    drop = torch.rand(B, generator=generator, device=device) < cfg.cond_dropout
    prefix = torch.arange(L, device=device)[None, :] < n[:, None]  # (B, L)
    masked = torch.where(prefix, drop[:, None], noise.masked)
    values = torch.where(prefix, mask_id, noise.values)
    scored = ~prefix
    counted = masked & scored
    k = counted.sum(dim=1).clamp_min(1) if noise.k is not None else None
    return Noise(masked, values, noise.t, k, B * L / max(int(counted.sum()), 1), scored)


def draw_noise(
    cfg: DiffusionConfig,
    batch: int,
    length: int,
    mask_id: int,
    generator: torch.Generator | None = None,
    t_min: float = 0.0,
    estimator: str = "time",
    device: torch.device | str = "cpu",
    vocab_size: int | None = None,
    t_max: float = 1.0,
) -> Noise | None:
    """The corruption of a (batch, length) batch; None for "ar", which has no noise.
    vocab_size is needed by every process but the mask one. t is drawn in (t_min, t_max]
    (training's variance knobs; the bound needs (0, 1])."""
    obj = objective(cfg.objective)
    if obj.hybrid:
        return draw_hybrid_noise(cfg, batch, length, mask_id, generator, t_min, t_max,
                                 estimator, device)
    if obj.autoregressive:
        return None
    if obj.blockwise:
        return draw_block_noise(cfg, batch, length, mask_id, generator, t_min, t_max,
                                estimator, device)
    process = process_of(cfg, mask_id, vocab_size)
    k = None
    if obj.count_estimator and estimator == "count":
        k = sample_mask_counts(batch, length, generator, device=device)
        masked = process.mask_pattern_count((batch, length), k, generator, device)
        values = torch.full((batch, length), mask_id, dtype=torch.long, device=device)
        t = k.float() / length  # the mask rate, for a time-conditioned backbone
    else:
        t = sample_times(batch, generator, t_min=t_min, device=device)
        t = t_min + (t - t_min) * (t_max - t_min) / (1.0 - t_min) if t_max < 1.0 else t
        masked, values = process.replacement((batch, length), t, generator, device)
    token_scale = batch * length / max(int(masked.sum()), 1)
    return Noise(masked, values, t, k, token_scale)


# --- block diffusion (objective "block"; the maths is in diffusion/block.py) ---------------


def draw_block_noise(cfg: DiffusionConfig, batch: int, length: int, mask_id: int,
                     generator: torch.Generator | None = None, t_min: float = 0.0,
                     t_max: float = 1.0, estimator: str = "time",
                     device: torch.device | str = "cpu") -> Noise:
    """Block diffusion's corruption: one time (or mask count) per block of every row,
    stratified over all blocks of the batch. t and k are per position (B, L): each
    position carries its block's; t is what a time-conditioned backbone sees."""
    b = cfg.block_size
    schedule = schedule_of(cfg.schedule, cfg.schedule_eps)
    n_blocks = -(-length // b)
    if estimator == "count":
        if cfg.block_reveal_width < 1:
            raise RedraftError(f"the count estimator assumes a uniform in-block order; "
                               f"block_reveal_width={cfg.block_reveal_width} needs 'time'")
        last = int(cfg.block_reveal_last)  # k among the block's other positions
        sizes = block_sizes(length, b, device)[::b] - last  # (n_blocks,)
        k = per_position(sample_block_counts(batch, sizes, generator), length, b)
        masked = block_mask_pattern_count(
            k, b, generator, last_in_block(length, b, device) if last else None)
        t = k.float() / (block_sizes(length, b, device)[None, :] - last).clamp_min(1)
    else:
        k = None
        t = per_position(sample_block_times(batch, n_blocks, generator, t_min, t_max, device),
                         length, b)
        t = reveal_times(t, b, cfg.block_reveal_width)
        masked = block_mask_pattern(t, schedule, generator)
    values = torch.full((batch, length), mask_id, dtype=torch.long, device=device)
    # With ordered reveals a position past its window (tau = 1) is masked but scores nothing
    # in the bound; the token weighting counts only the positions the bound scores.
    scored = masked & (t < 1) if cfg.block_reveal_width < 1 else masked
    if cfg.block_reveal_last:  # masked until t = 0; scored by the clean pass
        last = last_in_block(length, b, device)[None, :]
        masked, scored = masked | last, (scored & ~last) | last
    return Noise(masked, values, t, k, batch * length / max(int(scored.sum()), 1))


def block_token_losses(model: torch.nn.Module, x0: torch.Tensor, cfg: DiffusionConfig,
                       mask_id: int, bos_id: int, noise: Noise,
                       weighting: str = "elbo") -> torch.Tensor:
    """Per-token block-diffusion losses (B, L) in nats: one backbone pass over the noised
    and the clean sequence side by side (Transformer's x0 argument), the block ELBO of every
    block given the clean blocks before it; weighting "token" scores the masked tokens by the
    batch's mean cross-entropy instead (a training loss, as for mdlm)."""
    xt = torch.where(noise.masked, noise.values, x0)
    yt, y0 = block_inputs(xt, x0, cfg.block_size, cfg.block_shift, bos_id)
    last_nll = None
    if cfg.block_reveal_last:
        # The last positions' terms: -log p(x_last | the block's others) from the clean pass.
        logits, clean = model(yt, noise.t, x0=y0, clean_logits=True)
        last = last_in_block(x0.shape[1], cfg.block_size, x0.device)[None, :]
        last_nll = torch.where(last, masked_nll(clean, x0, torch.full_like(x0, mask_id),
                                                mask_id), 0.0)
    else:
        logits = model(yt, noise.t, x0=y0)  # (B, L, V): output l predicts x0_l
    if weighting == "token":
        nll = masked_nll(logits, x0, xt, mask_id)
        if cfg.block_reveal_width < 1:
            nll = nll * (noise.t < 1)
        if last_nll is not None:
            nll = torch.where(last, last_nll, nll)
        return nll * noise.token_scale
    weight = block_weights(schedule_of(cfg.schedule, cfg.schedule_eps), noise.t, noise.k,
                           cfg.block_size, cfg.block_reveal_width, cfg.block_reveal_last)
    out = block_elbo(logits, x0, xt, weight, mask_id)
    return out if last_nll is None else out + last_nll


# --- the hybrid (objective "hybrid": a causal clean stream and draft blocks beside it) ------


def draw_hybrid_noise(cfg: DiffusionConfig, batch: int, length: int, mask_id: int,
                      generator: torch.Generator | None = None, t_min: float = 0.0,
                      t_max: float = 1.0, estimator: str = "time",
                      device: torch.device | str = "cpu", share: float | None = None,
                      all_masked: bool | None = None) -> Noise:
    """The draft blocks' corruption: block diffusion's (a noise level per block) or, with
    all_masked (hybrid_draft_noise "all"), every draft token masked; and which blocks carry
    a draft this step (`drafted`: a share of the blocks, the same for every row). share and
    all_masked default to the config's (evaluation passes 1 and False: the bound)."""
    b = cfg.block_size
    share = cfg.hybrid_draft_share if share is None else share
    all_masked = cfg.hybrid_draft_noise == "all" if all_masked is None else all_masked
    n_blocks = -(-length // b)
    if share < 1:
        pick = max(1, round(share * n_blocks))
        order = torch.randperm(n_blocks, generator=generator, device="cpu")[:pick].sort().values
        drafted = (order[:, None] * b + torch.arange(b)).flatten()
        drafted = drafted[drafted < length].to(device)
    else:
        drafted = torch.arange(length, device=device)
    if all_masked:
        masked = torch.ones((batch, length), dtype=torch.bool, device=device)
        t = torch.ones((batch, length), device=device)
        k = per_position(torch.full((batch, n_blocks), b, device=device), length, b)
        noise = Noise(masked, torch.full((batch, length), mask_id, dtype=torch.long,
                                         device=device), t, k, 1.0)
    else:
        noise = draw_block_noise(cfg, batch, length, mask_id, generator, t_min, t_max,
                                 estimator, device)
    counted = int(noise.masked[:, drafted].sum())
    noise.token_scale = batch * length / max(counted, 1)
    noise.drafted = drafted
    return noise


def hybrid_token_losses(model: torch.nn.Module, x0: torch.Tensor, cfg: DiffusionConfig,
                        mask_id: int, bos_id: int, noise: Noise | None, weighting: str = "elbo",
                        part: str = "train") -> torch.Tensor:
    """Per-token losses (B, L) in nats of a hybrid, from one pass over the clean inputs
    [bos, x0[:-1]] (causal: its logits at position p predict x0_p, exactly the AR twin's) and
    the noised draft blocks of `noise.drafted` beside them (token p at position p; a block
    sees the clean tokens before it and itself, Transformer's drafts).

    part "ar": the clean stream's next-token NLL (the AR mode's exact NLL); "draft": the
    drafts' loss alone (weighting "elbo": the block ELBO given the clean prefix, a bound on
    the block mode's NLL when every block is drafted; "token": masked cross-entropy over the
    batch's masked draft tokens); "train": ar + diffusion.hybrid_draft_weight x draft.
    """
    if part not in ("ar", "draft", "train"):
        raise RedraftError(f"part={part!r}: expected 'ar', 'draft' or 'train'")
    b = cfg.block_size
    y0 = ar_inputs(x0, bos_id)
    if part == "ar":  # the clean stream never sees a draft: the plain causal pass is the same
        return ar_cross_entropy(model(y0), x0)
    pos = noise.drafted if noise.drafted is not None else torch.arange(x0.shape[1],
                                                                        device=x0.device)
    pos = pos.to(x0.device)
    xt = torch.where(noise.masked, noise.values, x0)[:, pos]  # (B, K)
    clean, drafted = model(y0, drafts=xt, draft_pos=pos, draft_start=pos - pos % b)
    ar = ar_cross_entropy(clean, x0)
    target = x0[:, pos]
    if weighting == "token":
        d = masked_nll(drafted, target, xt, mask_id) * noise.token_scale
    else:
        t = noise.t[:, pos] if noise.t.dim() == 2 else noise.t[:, None].expand_as(xt)
        k = noise.k[:, pos] if noise.k is not None else None
        weight = block_weights(schedule_of(cfg.schedule, cfg.schedule_eps), t, k, b, 1.0, False)
        d = block_elbo(drafted, target, xt, weight, mask_id)
    draft = torch.zeros_like(ar).index_copy_(1, pos, d.to(ar.dtype))
    return draft if part == "draft" else ar + cfg.hybrid_draft_weight * draft


def vocab_size_of(model: torch.nn.Module) -> int:
    inner = getattr(model, "module", model)  # DDP keeps the model as .module
    return inner.vocab_size


def token_losses(
    model: torch.nn.Module,
    x0: torch.Tensor,
    cfg: DiffusionConfig,
    mask_id: int,
    bos_id: int,
    generator: torch.Generator | None = None,
    t_min: float = 0.0,
    autocast_dtype: torch.dtype | None = None,
    estimator: str = "time",
    weighting: str = "elbo",
    noise: Noise | None = None,
    part: str = "train",
) -> torch.Tensor:
    """Per-token losses (B, L) in nats for clean windows x0 (B, L).

    The objective's entry (diffusion.registry) decides. "mdlm": draw t (low-discrepancy, in
    (t_min, 1]), corrupt, and score with the masked ELBO
    (an upper bound on NLL when t_min = 0), or with estimator "count" draw the number of masks
    instead (the same bound, t integrated out). With weighting "token" the noised batch is
    scored by the plain mean cross-entropy over all its masked tokens instead (a training
    loss, not a bound). "sedd" / "udlm": draw t, corrupt with the configured process, and
    score with that bound (prior term included); estimator and weighting do not apply.
    "ar": exact NLL of the causal twin. `noise` (rows of a larger batch's draw_noise)
    replaces the draw from `generator`, t_min and estimator. "hybrid": `part` (see
    hybrid_token_losses): training's sum, or the AR mode's exact NLL, or the drafts' loss.
    """
    device_type = x0.device.type
    obj = objective(cfg.objective)
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None):
        if obj.hybrid:
            if noise is None and part != "ar":  # the AR mode's NLL reads no noise
                noise = draw_hybrid_noise(cfg, x0.shape[0], x0.shape[1], mask_id, generator,
                                          t_min, 1.0, estimator, x0.device)
            return hybrid_token_losses(model, x0, cfg, mask_id, bos_id, noise, weighting, part)
        if obj.autoregressive:
            logits = model(ar_inputs(x0, bos_id))
            return ar_cross_entropy(logits, x0)
        if obj.blockwise:
            if noise is None:
                noise = draw_block_noise(cfg, x0.shape[0], x0.shape[1], mask_id, generator,
                                         t_min, 1.0, estimator, x0.device)
            return block_token_losses(model, x0, cfg, mask_id, bos_id, noise, weighting)
        vocab_size = vocab_size_of(model)
        if noise is None:
            noise = draw_noise(cfg, x0.shape[0], x0.shape[1], mask_id, generator, t_min,
                               estimator, x0.device, vocab_size)
        xt = torch.where(noise.masked, noise.values, x0)
        logits = model(xt, noise.t)
        if obj.count_estimator and weighting == "token":
            out = masked_nll(logits, x0, xt, mask_id) * noise.token_scale
        elif obj.count_estimator and noise.k is not None:
            out = masked_elbo_by_count(logits, x0, xt, noise.k, mask_id)
        else:
            out = obj.loss(logits, x0, xt, noise.t, process_of(cfg, mask_id, vocab_size))
        return out if noise.scored is None else out * noise.scored
