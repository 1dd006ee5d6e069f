"""Glue between a batch of clean tokens and an objective: noise it, run the backbone, score it.

`token_losses` is shared by training and evaluation so that the number a run optimises is
exactly the number it reports.
"""

from __future__ import annotations

import torch

from redraft.config import DiffusionConfig
from redraft.diffusion import (
    PROCESSES,
    MaskProcess,
    MixtureProcess,
    Process,
    ar_cross_entropy,
    make_schedule,
    masked_elbo,
    masked_elbo_by_count,
    masked_nll,
    sample_mask_counts,
    sample_times,
    sedd_loss,
    uniform_elbo,
)
from redraft.errors import RedraftError

# Objectives of the form f(logits, x0, xt, t, process) -> per-token nats (B, L), bound included.
BOUNDS = {"sedd": sedd_loss, "udlm": uniform_elbo}


def make_process(cfg: DiffusionConfig, mask_id: int, vocab_size: int | None = None) -> Process:
    """The noise process a diffusion config describes. vocab_size (the model's) is needed by
    every process but the mask one, whose noise is a single id."""
    schedule = make_schedule(cfg.schedule, cfg.schedule_eps)
    if cfg.process == "mask":
        return MaskProcess(mask_id, schedule, vocab_size)
    if cfg.process not in PROCESSES:
        raise RedraftError(f"diffusion.process={cfg.process!r}: expected one of "
                           f"{list(PROCESSES)}")
    if vocab_size is None:
        raise RedraftError(f"process {cfg.process!r} needs the vocabulary size: "
                           "make_process(cfg, mask_id, vocab_size)")
    if cfg.process == "mixture":
        return MixtureProcess(vocab_size, mask_id, schedule, cfg.mask_share)
    return PROCESSES[cfg.process](vocab_size, mask_id, schedule)


def ar_inputs(x0: torch.Tensor, bos_id: int) -> torch.Tensor:
    """[bos, x_0 .. x_{L-2}]: the causal model's input that predicts every token of x0 (B, L)."""
    bos = torch.full_like(x0[:, :1], bos_id)
    return torch.cat((bos, x0[:, :-1]), dim=1)


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
) -> torch.Tensor:
    """Per-token losses (B, L) in nats for clean windows x0 (B, L).

    "mdlm": draw t (low-discrepancy, in (t_min, 1]), corrupt, and score with the masked ELBO
    (an upper bound on NLL when t_min = 0), or with estimator "count" draw the number of masks
    instead (the same bound, t integrated out). With weighting "token" the noised batch is
    scored by the plain mean cross-entropy over all its masked tokens instead (a training
    loss, not a bound). "sedd" / "udlm": draw t, corrupt with the configured process, and
    score with that bound (prior term included); estimator and weighting do not apply.
    "ar": exact NLL of the causal twin.
    """
    device_type = x0.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None):
        if cfg.objective == "ar":
            logits = model(ar_inputs(x0, bos_id))
            return ar_cross_entropy(logits, x0)
        if cfg.objective in BOUNDS:
            process = make_process(cfg, mask_id, model.vocab_size)
            t = sample_times(x0.shape[0], generator, t_min=t_min, device=x0.device)
            xt = process.corrupt(x0, t, generator)
            return BOUNDS[cfg.objective](model(xt, t), x0, xt, t, process)
        process = make_process(cfg, mask_id)
        if estimator == "count":
            k = sample_mask_counts(x0.shape[0], x0.shape[1], generator, device=x0.device)
            xt = process.corrupt_count(x0, k, generator)
            t = k.float() / x0.shape[1]  # the mask rate, for a time-conditioned backbone
        else:
            t = sample_times(x0.shape[0], generator, t_min=t_min, device=x0.device)
            xt = process.corrupt(x0, t, generator)
        logits = model(xt, t)
        if weighting == "token":
            n_masked = (xt == mask_id).sum().clamp_min(1)
            return masked_nll(logits, x0, xt, mask_id) * (x0.numel() / n_masked)
        if estimator == "count":
            return masked_elbo_by_count(logits, x0, xt, k, mask_id)
        return masked_elbo(logits, x0, xt, t, process.schedule, mask_id)
