"""First-order (Euler / tau-leaping) step over the learned reverse rates: t -> s < t.

The reverse chain jumps i -> y (y != i) at rate dsigma(t) pi_i s_y, with s the model's
concrete score. Over the step, with dsigma integrated exactly, d = sigma(t) - sigma(s):

    p(xs = y | xt = i) = d pi_i s_y  (y != i),    p(xs = i | xt = i) = max(0, 1 - sum of those)

normalised if the jumps exceed 1 (at most one jump per position per step, as in SEDD's Euler
sampler). Its error is first order in the step size, so it needs more steps than the analytic
step. The last step (s = 0) is the analytic denoising step, as in SEDD: a rate step to s = 0
would leave noise (sigma(0) = 0, so there is nothing to integrate up to).
"""

from __future__ import annotations

import math

import torch

from redraft.diffusion.score_entropy import ALPHA_FLOOR
from redraft.sampling.analytic import Analytic, draw, score_probs
from redraft.sampling.categorical import RowRandom


class Euler(Analytic):
    """The first-order step; its last step to s = 0 is the analytic denoise (the base class)."""

    name = "euler"

    def step(self, logits: torch.Tensor, xt: torch.Tensor, t: float, s: float,
             rng: RowRandom, free: torch.Tensor | None = None) -> torch.Tensor:
        """logits (B, L, V) of the model at (xt, t), xt (B, L) -> xs (B, L) at time s."""
        if s <= 0:
            return super().step(logits, xt, t, s, rng)
        u = rng.uniform(xt.shape[1]).to(xt.device)
        score = score_probs(self.parameterisation, self.process, logits, xt, t)
        sched = self.process.schedule
        # sigma(1) is infinite when alpha(1) = 0: the same floor as the score's.
        a_t = max(float(sched.alpha(torch.tensor(t, dtype=torch.float64))), ALPHA_FLOOR)
        a_s = float(sched.alpha(torch.tensor(s, dtype=torch.float64)))
        d = math.log(a_s / a_t)  # sigma(t) - sigma(s)
        pi = self.process.noise(xt.device)
        jump = d * pi[xt][..., None] * score  # (B, L, V)
        jump = jump.scatter(-1, xt[..., None], 0.0)
        stay = (1.0 - jump.sum(-1, keepdim=True)).clamp_min(0.0)
        return draw(jump.scatter(-1, xt[..., None], stay), xt, u)
