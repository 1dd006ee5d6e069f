"""Ancestral sampler for denoiser (mean) parameterised models of any process: t -> s < t.

Per position, with x^ = p_theta(x0 | xt) reshaped by temperature / top-k / top-p:

    p(xs = y | xt = i) ∝ q(xt = i | xs = y) q_s(y | x^),  q_s = alpha(s) x^ + (1 - alpha(s)) pi

the posterior of the forward chain with x^ plugged in for x0 (UDLM/Duo). For the exact
x^_l = p(x0_l | xt without position l) this is exactly the reverse marginal of each position;
updating all positions at once is the only approximation, and it vanishes as steps grow.
It is also what the analytic (Tweedie) step computes for such models (see analytic.py), so
one code path serves both names. At s = 0 every position is drawn from x^ weighted by how
well it explains xt, and the mask (never a data token) cannot be drawn.
"""

from __future__ import annotations

import torch

from redraft.diffusion import Process
from redraft.sampling.categorical import RowRandom, probabilities, sample


class Ancestral:
    name = "ancestral"

    def __init__(self, process: Process, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None):
        self.process = process
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def step(self, logits: torch.Tensor, xt: torch.Tensor, t: float, s: float,
             rng: RowRandom, free: torch.Tensor | None = None) -> torch.Tensor:
        """logits (B, L, V) of p_theta(x0 | xt), xt (B, L) at time t -> xs (B, L) at time s."""
        B, L, V = logits.shape
        u = rng.uniform(L).to(xt.device)  # (B, L): one stream per row
        logits = logits.to(torch.float64).clone()
        logits[..., self.process.mask_id] = -torch.inf
        x_hat = probabilities(logits.view(B * L, V), self.temperature, self.top_k,
                              self.top_p).view(B, L, V)
        sched = self.process.schedule
        a_t = float(sched.alpha(torch.tensor(t, dtype=torch.float64)))
        a_s = float(sched.alpha(torch.tensor(s, dtype=torch.float64)))
        beta = a_t / a_s
        pi = self.process.noise(xt.device)  # (V,)
        to_xt = (1.0 - beta) * pi[xt][..., None].expand(B, L, V).clone()  # q(xt | xs = y)
        to_xt.scatter_add_(-1, xt[..., None], torch.full((B, L, 1), beta, dtype=torch.float64,
                                                         device=xt.device))
        probs = to_xt * (a_s * x_hat + (1.0 - a_s) * pi)  # (B, L, V), unnormalised
        return sample(probs.view(B * L, V), u.view(-1)).view(B, L)
