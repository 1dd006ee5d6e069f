"""Noise schedules: how fast information is destroyed.

Time convention, stated once for the whole package: **t = 0 is clean data, t = 1 is pure
noise** (the SEDD/MDLM direction). A schedule gives alpha(t), the probability that a token
is still intact at time t, with alpha(0) = 1 exactly and alpha decreasing to alpha(1) = eps
(0 <= eps < 1), and its time derivative dalpha(t) (<= 0). The total noise is
sigma(t) = -log alpha(t) (SEDD's "noise level"), with rate dsigma(t) = -dalpha(t) / alpha(t).

eps is what is left of the data at t = 1. With eps = 0 the terminal state is exactly the
prior and a bound needs no prior term; with eps > 0 the bound adds KL(q(x1 | x0) || prior)
per token (processes.py), which is tiny for small eps, and rates stay finite at t = 1 (score
entropy needs that). Schedules are stateless and know nothing about tokens: the process
(processes.py) decides what "not intact" means (masked, resampled, ...).
"""

from __future__ import annotations

import math

import torch

from redraft.errors import RedraftError


class Schedule:
    """alpha(t) and its derivative; t is a float tensor of any shape with values in [0, 1]."""

    name = "base"
    default_eps = 0.0
    eps = 0.0

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Total noise -log alpha(t) (infinite where alpha = 0)."""
        return -torch.log(self.alpha(t))

    def dsigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise rate -alpha'(t) / alpha(t): every token is resampled at this rate at time t."""
        return -self.dalpha(t) / self.alpha(t)

    def elbo_weight(self, t: torch.Tensor) -> torch.Tensor:
        """-alpha'(t) / (1 - alpha(t)): the weight of the masked-diffusion ELBO integrand."""
        return -self.dalpha(t) / (1.0 - self.alpha(t))

    def time_at(self, alpha: torch.Tensor) -> torch.Tensor:
        """The time t in [0, 1] with alpha(t) = alpha (float64, any shape; alpha clamped to
        [alpha(1), 1]). Bisection, since alpha is decreasing: samplers that choose how many
        tokens to reveal (first-hitting, threshold) use it to tell the backbone the time."""
        alpha = alpha.to(torch.float64)
        lo, hi = torch.zeros_like(alpha), torch.ones_like(alpha)
        for _ in range(60):  # 2^-60: below float64 resolution on [0, 1]
            mid = (lo + hi) / 2
            later = self.alpha(mid) > alpha  # still too much data left at mid: go later
            lo, hi = torch.where(later, mid, lo), torch.where(later, hi, mid)
        return hi


def _check_eps(name: str, eps: float, positive: bool = False) -> float:
    ok = 0.0 < eps < 1.0 if positive else 0.0 <= eps < 1.0
    if not ok:
        bound = "0 < eps < 1" if positive else "0 <= eps < 1"
        raise RedraftError(f"{name} schedule eps={eps!r}: expected {bound} (alpha(1) = eps)")
    return float(eps)


class LogLinearSchedule(Schedule):
    """alpha(t) = 1 - (1 - eps) t, i.e. total noise sigma(t) = -log(1 - (1 - eps) t).

    Called log-linear because sigma is the log of a linear function (SEDD, MDLM). With the
    default eps = 0 the terminal state is exactly the prior (alpha(1) = 0), so the ELBO has no
    prior term and the masked ELBO weight is simply 1/t.
    """

    name = "loglinear"

    def __init__(self, eps: float | None = None):
        self.eps = _check_eps(self.name, self.default_eps if eps is None else eps)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - (1.0 - self.eps) * t

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, -(1.0 - self.eps))

    def elbo_weight(self, t: torch.Tensor) -> torch.Tensor:
        # Closed form avoids 0/0 noise at tiny t: (1 - eps) / ((1 - eps) t) = 1 / t.
        return 1.0 / t

    def time_at(self, alpha: torch.Tensor) -> torch.Tensor:
        """Closed form of the inverse (the samplers call it every step)."""
        return ((1.0 - alpha.to(torch.float64)) / (1.0 - self.eps)).clamp(0.0, 1.0)


class LinearSchedule(Schedule):
    """Linear total noise: sigma(t) = -log(eps) t, i.e. alpha(t) = eps^t (needs eps > 0)."""

    name = "linear"
    default_eps = 1e-3

    def __init__(self, eps: float | None = None):
        self.eps = _check_eps(self.name, self.default_eps if eps is None else eps, positive=True)
        self.rate = -math.log(self.eps)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.rate * t)

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        return -self.rate * torch.exp(-self.rate * t)


class GeometricSchedule(Schedule):
    """SEDD's geometric noise, shifted to start at 0: sigma(t) = smin^(1-t) smax^t - smin.

    SEDD uses sigma(t) = smin^(1-t) smax^t with smin = 1e-4, leaving a little noise at t = 0;
    subtracting smin makes t = 0 exactly clean (so no reconstruction term is needed) without
    changing the rate dsigma. smax = smin - log(eps) so that alpha(1) = eps (default e^-20).
    """

    name = "geometric"
    default_eps = math.exp(-20.0)

    def __init__(self, eps: float | None = None, sigma_min: float = 1e-4):
        self.eps = _check_eps(self.name, self.default_eps if eps is None else eps, positive=True)
        self.sigma_min = sigma_min
        self.sigma_max = sigma_min - math.log(self.eps)
        self.log_ratio = math.log(self.sigma_max / sigma_min)

    def _geo(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min ** (1.0 - t) * self.sigma_max ** t

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(self._geo(t) - self.sigma_min))

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        return -self.alpha(t) * self._geo(t) * self.log_ratio


class CosineSchedule(Schedule):
    """alpha(t) = 1 - (1 - eps) (1 - cos(pi t / 2)): slow destruction early, fast late."""

    name = "cosine"

    def __init__(self, eps: float | None = None):
        self.eps = _check_eps(self.name, self.default_eps if eps is None else eps)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        # cos(pi / 2) is 6e-17 in floating point, not 0: pin alpha(1) to eps exactly.
        cos = torch.where(t >= 1.0, 0.0, torch.cos(0.5 * math.pi * t))
        return self.eps + (1.0 - self.eps) * cos

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        return -(1.0 - self.eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t)


SCHEDULES = {s.name: s for s in (LogLinearSchedule, LinearSchedule, GeometricSchedule,
                                 CosineSchedule)}


def make_schedule(name: str, eps: float | None = None) -> Schedule:
    """The schedule called `name` (see SCHEDULES) with alpha(1) = eps (None: its default)."""
    if name not in SCHEDULES:
        raise RedraftError(f"unknown schedule {name!r}: expected one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](eps)
