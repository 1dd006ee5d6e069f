"""Ancestral sampler for masked (absorbing) diffusion: one reverse step from t to s < t.

    p(x_s | x_t): a revealed position stays as it is; a masked position is revealed with
    probability (alpha(s) - alpha(t)) / (1 - alpha(t)), its value drawn from the denoiser
    p_theta(x0 | x_t) (SUBS: mask token excluded), and otherwise stays masked.

At s = 0, alpha(s) = 1, so every remaining mask is revealed: the last step leaves no mask.
Temperature, top-k and top-p reshape the denoiser's distribution over x0 at each reveal
(temperature divides its logits; 0 picks the most likely token).
"""

from __future__ import annotations

import torch

from redraft.diffusion import MaskProcess
from redraft.sampling.categorical import RowRandom, probabilities, sample


class MaskedAncestral:
    name = "ancestral"
    commits = True  # never changes a revealed token: the server streams settled text
    row_times = True  # t and s may be given per row (B,): rows of requests at other steps
    position_times = True  # or per position (B, L): ordered in-block reveals (block models)

    def __init__(self, process: MaskProcess, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None):
        self.process = process
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def step(self, logits: torch.Tensor, xt: torch.Tensor, t: float | torch.Tensor,
             s: float | torch.Tensor, rng: RowRandom,
             free: torch.Tensor | None = None) -> torch.Tensor:
        """logits (B, L, V) of p_theta(x0 | xt), xt (B, L) at time t -> xs (B, L) at time s;
        t and s floats, float64 (B,) for rows at different times (the server's batcher), or
        (B, L) per position (a block model's ordered reveals: a position whose window is over,
        alpha(t) = 1, is revealed already; its 0/0 is read as 1)."""
        B, L = xt.shape
        mask_id = self.process.mask_id
        p_reveal = self.process.unmask_probability(torch.as_tensor(t, dtype=torch.float64),
                                                   torch.as_tensor(s, dtype=torch.float64))
        if p_reveal.dim() == 2:
            p_reveal = p_reveal.nan_to_num(1.0).to(xt.device)
        else:
            p_reveal = p_reveal.to(xt.device)[:, None] if p_reveal.dim() else float(p_reveal)
        u_reveal = rng.uniform(L).to(xt.device)  # (B, L): one stream per row
        u_token = rng.uniform(L).to(xt.device)
        reveal = (xt == mask_id) & (u_reveal < p_reveal)
        if free is not None:
            reveal &= free
        if not reveal.any():
            return xt
        logits = logits[reveal].to(torch.float64)  # (N, V)
        logits[:, mask_id] = -torch.inf
        probs = probabilities(logits, self.temperature, self.top_k, self.top_p)
        xs = xt.clone()
        xs[reveal] = sample(probs, u_token[reveal])
        return xs


def draw_candidates(logits: torch.Tensor, where: torch.Tensor, u: torch.Tensor, mask_id: int,
                    temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A token for each position where `where` (B, L) is true, drawn from the denoiser
    (logits (B, L, V), mask excluded) reshaped by temperature / top-k / top-p with uniforms
    u (B, L); returns (tokens (N,), the model's own probabilities (N, V) at T = 1, which is
    what confidence-based rules rank by)."""
    lg = logits[where].to(torch.float64)  # (N, V)
    lg[:, mask_id] = -torch.inf
    tokens = sample(probabilities(lg, temperature, top_k, top_p), u[where])
    return tokens, torch.softmax(lg, dim=-1)
