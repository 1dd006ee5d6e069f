"""Noise schedules: how fast information is destroyed.

Time convention, stated once for the whole package: **t = 0 is clean data, t = 1 is pure
noise** (the SEDD/MDLM direction). A schedule gives alpha(t), the probability that a token
is still intact at time t, with alpha(0) = 1 and alpha decreasing to alpha(1) ~ 0, and its
time derivative dalpha(t) (<= 0). Schedules are stateless and know nothing about tokens:
the process (processes.py) decides what "not intact" means (masked, resampled, ...).
"""

from __future__ import annotations

import torch

from redraft.errors import RedraftError


class Schedule:
    """alpha(t) and its derivative; t is a float tensor of any shape with values in [0, 1]."""

    name = "base"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def elbo_weight(self, t: torch.Tensor) -> torch.Tensor:
        """-alpha'(t) / (1 - alpha(t)): the weight of the masked-diffusion ELBO integrand."""
        return -self.dalpha(t) / (1.0 - self.alpha(t))


class LogLinearSchedule(Schedule):
    """alpha(t) = 1 - (1 - eps) t, i.e. total noise sigma(t) = -log(1 - (1 - eps) t).

    Called log-linear because sigma is the log of a linear function (SEDD, MDLM). With the
    default eps = 0 the terminal state is exactly the prior (alpha(1) = 0), so the ELBO has no
    prior term and the ELBO weight is simply 1/t.
    """

    name = "loglinear"

    def __init__(self, eps: float = 0.0):
        if not 0.0 <= eps < 1.0:
            raise RedraftError(f"loglinear schedule eps={eps!r}: expected 0 <= eps < 1")
        self.eps = eps

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - (1.0 - self.eps) * t

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, -(1.0 - self.eps))

    def elbo_weight(self, t: torch.Tensor) -> torch.Tensor:
        # Closed form avoids 0/0 noise at tiny t: (1 - eps) / ((1 - eps) t) = 1 / t.
        return 1.0 / t


SCHEDULES = {"loglinear": LogLinearSchedule}


def make_schedule(name: str, **kwargs) -> Schedule:
    """The schedule called `name` (see SCHEDULES), built with its keyword knobs."""
    if name not in SCHEDULES:
        raise RedraftError(f"unknown schedule {name!r}: expected one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](**kwargs)
