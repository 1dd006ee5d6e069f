"""Noise processes, schedules and training objectives for discrete diffusion."""

from redraft.diffusion.objectives import (
    ar_cross_entropy,
    masked_elbo,
    masked_elbo_by_count,
    masked_nll,
    sample_mask_counts,
    sample_times,
    subs_log_probs,
)
from redraft.diffusion.processes import MaskProcess
from redraft.diffusion.schedules import LogLinearSchedule, Schedule, make_schedule

__all__ = [
    "LogLinearSchedule",
    "MaskProcess",
    "Schedule",
    "ar_cross_entropy",
    "make_schedule",
    "masked_elbo",
    "masked_elbo_by_count",
    "masked_nll",
    "sample_mask_counts",
    "sample_times",
    "subs_log_probs",
]
