"""The analytic ("Tweedie" tau-leaping) step of SEDD for score-parameterised models: t -> s < t.

For a resample-from-pi process the forward kernel over [s, t] is exp(d Q) = beta I +
(1 - beta) pi 1^T with beta = alpha(t) / alpha(s), and its inverse is (1/beta) I +
(1 - 1/beta) pi 1^T. Bayes plus that inverse give, per position with xt = i and the
concrete score s_y ~ p_t(y) / p_t(i) (s_i = 1):

    p(xs = y | xt = i) = q(xt = i | xs = y) p_s(y) / p_t(i)
                       = q(xt = i | xs = y) [ s_y - (1 - beta) pi_y sum_z s_z ] / beta

exact per position when s is the true score (the only error is updating positions
independently, which vanishes as steps grow). Negative entries (an imperfect score) are
clipped to 0; 1/beta is dropped (it does not depend on y). For a denoiser-parameterised model
the bracket is beta q_s(y | x^) / q_t(i | x^), so this step is exactly the ancestral one and the
registry sends "analytic" there for such models. A position whose weights are all zero (only
possible where a score carries no information) keeps its token. alpha(t) is floored at
ALPHA_FLOOR (score_entropy.py) so the first step from t = 1 uses the model's relative scores.
"""

from __future__ import annotations

import torch

from redraft.diffusion import Objective, Process, log_score, objective
from redraft.diffusion.score_entropy import ALPHA_FLOOR
from redraft.sampling.categorical import RowRandom, sample


def score_probs(parameterisation: str, process: Process, logits: torch.Tensor, xt: torch.Tensor,
                t: float) -> torch.Tensor:
    """The concrete score s (B, L, V) float64 that logits of this parameterisation
    (diffusion.registry) imply: s_i = 1, 0 off the states."""
    B = xt.shape[0]
    tt = torch.full((B,), t, dtype=torch.float64, device=xt.device)
    # Capped so that exp stays finite: a huge ratio only ever meets a zero rate or weight.
    log_s = log_score(parameterisation, logits.to(torch.float64), xt, tt, process, ALPHA_FLOOR)
    s = torch.exp(log_s.clamp_max(700))
    s = torch.where(process.states(xt.device), s, 0.0)
    return s.scatter(-1, xt[..., None], 1.0)


def analytic_probs(process: Process, score: torch.Tensor, xt: torch.Tensor, t: float,
                   s: float) -> torch.Tensor:
    """Unnormalised p(xs = . | xt) (B, L, V) of the analytic step from the score (B, L, V)."""
    sched = process.schedule
    a_t = max(float(sched.alpha(torch.tensor(t, dtype=torch.float64))), ALPHA_FLOOR)
    a_s = float(sched.alpha(torch.tensor(s, dtype=torch.float64)))
    beta = a_t / a_s
    pi = process.noise(xt.device)
    back = (score - (1.0 - beta) * pi * score.sum(-1, keepdim=True)).clamp_min(0.0)
    to_xt = (1.0 - beta) * pi[xt][..., None] * torch.ones_like(score)
    to_xt = to_xt.scatter_add(-1, xt[..., None], torch.full_like(score[..., :1], beta))
    return to_xt * back


def draw(probs: torch.Tensor, xt: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Sample each position from unnormalised probs (B, L, V); all-zero rows keep xt."""
    B, L, V = probs.shape
    empty = probs.sum(-1) <= 0
    probs = torch.where(empty[..., None], torch.ones_like(probs), probs)
    xs = sample(probs.view(B * L, V), u.reshape(-1)).view(B, L)
    return torch.where(empty, xt, xs)


class Analytic:
    name = "analytic"

    def __init__(self, process: Process, trained_with: str | Objective):
        self.process = process
        self.parameterisation = objective(trained_with).parameterisation

    def step(self, logits: torch.Tensor, xt: torch.Tensor, t: float, s: float,
             rng: RowRandom, free: torch.Tensor | None = None) -> torch.Tensor:
        """logits (B, L, V) of the score model at (xt, t), xt (B, L) -> xs (B, L) at time s."""
        u = rng.uniform(xt.shape[1]).to(xt.device)
        score = score_probs(self.parameterisation, self.process, logits, xt, t)
        probs = analytic_probs(self.process, score, xt, t, s)
        if s <= 0:
            # At s = 0 the chain is data, and the mask is never a data token. The exact score
            # gives it weight 0 there; a learned one need not (its ratios rarely sum to what
            # alpha(t) implies), which would leave masks in the output. Drop that weight, and
            # where nothing is left, draw from the score over data tokens.
            mask = self.process.mask_id
            probs[..., mask] = 0.0
            data_score = score.clone()
            data_score[..., mask] = 0.0
            probs = torch.where((probs.sum(-1) <= 0)[..., None], data_score, probs)
        return draw(probs, xt, u)
