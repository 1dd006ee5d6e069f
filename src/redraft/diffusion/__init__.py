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
from redraft.diffusion.registry import (
    OBJECTIVES,
    PROCESSES,
    Objective,
    make_process,
    objective,
)
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
    "Objective",
    "Process",
    "Schedule",
    "UniformProcess",
    "ar_cross_entropy",
    "denoiser_log_probs",
    "log_score",
    "make_process",
    "make_schedule",
    "masked_elbo",
    "masked_elbo_by_count",
    "masked_nll",
    "mean_log_score",
    "objective",
    "sample_mask_counts",
    "sample_times",
    "score_entropy",
    "sedd_log_score",
    "sedd_loss",
    "subs_log_probs",
    "uniform_elbo",
]
