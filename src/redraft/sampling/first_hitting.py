"""First-hitting sampler for masked models (Zheng et al. 2024): one exact reveal per call.

In the reverse of the absorbing process each masked position is revealed at its own time, and
given n positions still masked at time t those times are independent, each with
P(revealed after s | masked at t) = (1 - alpha(s)) / (1 - alpha(t)). So instead of stepping on
a grid (where most steps reveal nothing or several positions at once), draw the next reveal
time directly,

    1 - alpha(s) = (1 - alpha(t)) u^(1/n),   u ~ U(0, 1)   (the latest of n such times),

reveal one masked position chosen uniformly at random, drawing its token from the denoiser
p_theta(x0 | xt). This is exact (no discretisation error): with the true denoiser it samples
the data distribution exactly, and it needs exactly one network call per masked position.
For a backbone without time conditioning the times only order the reveals (a uniformly random
order); a time-conditioned one is called at the drawn times, except the first reveal of a
block, which it sees at t = 1 (where the loop starts every block).

Temperature, top-k and top-p reshape the denoiser at each reveal, as in the ancestral step.
"""

from __future__ import annotations

import torch

from redraft.diffusion import MaskProcess
from redraft.sampling.categorical import RowRandom
from redraft.sampling.masked import draw_candidates


class FirstHitting:
    name = "first_hitting"
    commits = True  # never changes a revealed token: the server streams settled text
    adaptive = True

    def __init__(self, process: MaskProcess, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None):
        self.process = process
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def step(self, logits: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, rng: RowRandom,
             free: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits (B, L, V), xt (B, L), t (B,) -> (xs (B, L), time of the next reveal (B,))."""
        B, L = xt.shape
        u = rng.uniform(3).to(xt.device)  # (B, 3): which position, its token, the next time
        masked = (xt == self.process.mask_id) & free
        n = masked.sum(dim=1)  # (B,)
        j = (u[:, 0] * n).floor().long().clamp(max=(n - 1).clamp_min(0))  # (B,)
        pick = masked & (masked.cumsum(dim=1) - 1 == j[:, None])  # (B, L): one per row with n > 0
        xs = xt.clone()
        if pick.any():
            token_u = u[:, 1:2].expand(B, L)
            tokens, _ = draw_candidates(logits, pick, token_u, self.process.mask_id,
                                        self.temperature, self.top_k, self.top_p)
            xs[pick] = tokens
        # The next reveal among the n - 1 left, counted from the time of this one.
        left = (n - 1).clamp_min(1).double()
        sched = self.process.schedule
        noise_s = (1.0 - sched.alpha(t)) * u[:, 2] ** (1.0 / left)
        s = torch.where(n > 1, sched.time_at(1.0 - noise_s), torch.zeros_like(t))
        return xs, torch.where(n > 0, s, t)
