"""Noise processes, schedules and training objectives for discrete diffusion."""

from redraft.diffusion.mixture import MixtureProcess
from redraft.diffusion.objectives import (
    ar_cross_entropy,
    masked_elbo,
    masked_elbo_by_count,
    masked_nll,
    sample_mask_counts,
    sample_times,
    subs_log_probs,
)
from redraft.diffusion.processes import MaskProcess, Process
from redraft.diffusion.schedules import (
    SCHEDULES,
    CosineSchedule,
    GeometricSchedule,
    LinearSchedule,
    LogLinearSchedule,
    Schedule,
    make_schedule,
)
from redraft.diffusion.score_entropy import (
    denoiser_log_probs,
    log_score,
    mean_log_score,
    score_entropy,
    sedd_log_score,
    sedd_loss,
    uniform_elbo,
)
from redraft.diffusion.uniform import UniformProcess

# name -> class; each takes (vocab_size, mask_id, schedule, **knobs). Add a process here.
PROCESSES = {"mask": MaskProcess, "uniform": UniformProcess, "mixture": MixtureProcess}

# Objectives of the bidirectional model and the processes each is valid for.
OBJECTIVES = {
    "mdlm": ("mask",),  # SUBS denoiser + masked ELBO: absorbing only
    "sedd": ("mask", "uniform", "mixture"),  # score entropy, s = exp(logits)
    "udlm": ("mask", "uniform", "mixture"),  # mean-parameterised ELBO (UDLM / Duo)
    # Block diffusion (diffusion/block.py): SUBS denoiser inside blocks, block-causal attention
    # (models.Transformer block_size), loss losses.block_token_losses, sampler
    # sampling.block.generate_block with any masked step rule (default ancestral).
    "block": ("mask",),
}

__all__ = [
    "OBJECTIVES",
    "PROCESSES",
    "SCHEDULES",
    "CosineSchedule",
    "GeometricSchedule",
    "LinearSchedule",
    "LogLinearSchedule",
    "MaskProcess",
    "MixtureProcess",
    "Process",
    "Schedule",
    "UniformProcess",
    "ar_cross_entropy",
    "denoiser_log_probs",
    "log_score",
    "make_schedule",
    "masked_elbo",
    "masked_elbo_by_count",
    "masked_nll",
    "mean_log_score",
    "sample_mask_counts",
    "sample_times",
    "score_entropy",
    "sedd_log_score",
    "sedd_loss",
    "subs_log_probs",
    "uniform_elbo",
]
