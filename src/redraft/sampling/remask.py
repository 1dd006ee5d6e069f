"""Remasking (ReMDM, Wang et al. 2025) for masked models: committed tokens may be masked again.

The plain ancestral step never revisits a revealed token, so an early mistake stays. ReMDM
uses a reverse process that, from t to s, re-masks each revealed (non-prompt) token with
probability sigma_t and reveals each masked one with probability

    (alpha(s) - (1 - sigma_t) alpha(t)) / (1 - alpha(t)),

values drawn from the denoiser p_theta(x0 | xt). For any 0 <= sigma_t <= sigma_max =
min(1, (1 - alpha(s)) / alpha(t)) this keeps the forward marginals of the absorbing process
(the share of masks still follows the schedule), so the model is queried on inputs like the
ones it was trained on; sigma_t = 0 is the ancestral step. Schedules for sigma_t ("schedule"):

    cap      sigma_t = min(eta, sigma_max)     (ReMDM-cap)
    rescale  sigma_t = eta sigma_max           (ReMDM-rescale, 0 <= eta <= 1)

At s = 0, sigma_max = 0, so the last step reveals everything and re-masks nothing. Each token
committed can now be redrawn later with more context: extra steps buy extra quality
(inference-time scaling), where the ancestral step's quality flattens with steps.
Temperature, top-k and top-p reshape the denoiser at each reveal.
"""

from __future__ import annotations

import torch

from redraft.diffusion import MaskProcess
from redraft.sampling.categorical import RowRandom
from redraft.sampling.masked import draw_candidates

SCHEDULES = ("cap", "rescale")


class Remask:
    name = "remask"

    def __init__(self, process: MaskProcess, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, eta: float = 0.04, schedule: str = "cap"):
        self.process = process
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.eta, self.schedule = eta, schedule

    def sigma(self, a_t: float, a_s: float) -> float:
        """The re-mask probability of a step from alpha(t) = a_t to alpha(s) = a_s."""
        sigma_max = min(1.0, (1.0 - a_s) / a_t) if a_t > 0 else 1.0
        if self.schedule == "cap":
            return min(self.eta, sigma_max)
        return self.eta * sigma_max

    def step(self, logits: torch.Tensor, xt: torch.Tensor, t: float, s: float,
             rng: RowRandom, free: torch.Tensor | None = None) -> torch.Tensor:
        """logits (B, L, V) of p_theta(x0 | xt), xt (B, L) at time t -> xs (B, L) at time s."""
        B, L = xt.shape
        mask_id = self.process.mask_id
        sched = self.process.schedule
        a_t = float(sched.alpha(torch.tensor(t, dtype=torch.float64)))
        a_s = float(sched.alpha(torch.tensor(s, dtype=torch.float64)))
        sigma = self.sigma(a_t, a_s)
        p_reveal = min(1.0, max(0.0, (a_s - (1.0 - sigma) * a_t) / (1.0 - a_t)))
        u_move = rng.uniform(L).to(xt.device)  # (B, L): one stream per row
        u_token = rng.uniform(L).to(xt.device)
        free = torch.ones_like(xt, dtype=torch.bool) if free is None else free
        masked = xt == mask_id
        reveal = masked & free & (u_move < p_reveal)
        remask = ~masked & free & (u_move < sigma)
        xs = torch.where(remask, mask_id, xt)
        if reveal.any():
            tokens, _ = draw_candidates(logits, reveal, u_token, mask_id, self.temperature,
                                        self.top_k, self.top_p)
            xs[reveal] = tokens
        return xs
