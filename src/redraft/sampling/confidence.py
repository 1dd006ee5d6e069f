"""Confidence-based parallel decoding for masked models: reveal where the model is surest.

Each step draws a candidate token at every masked position of the current block (from the
denoiser reshaped by temperature / top-k / top-p; temperature 0 = its argmax), scores each
candidate with the model's own distribution p at T = 1 and commits only some of them; the rest
stay masked and are drawn afresh at the next step. Scores ("measure"):

    confidence  p(candidate)                         (LLaDA's low-confidence remasking)
    margin      p(top 1) - p(top 2)                  (how clear the winner is)
    entropy     -H(p) = sum_v p_v log p_v            (how peaked the whole distribution is)

"confidence" (Confidence) commits the k best per step, k set by the schedule as the
expected number the ancestral step would reveal: k = round(n (alpha(s) - alpha(t)) /
(1 - alpha(t))) of the n still masked, and all of them at s = 0, so the number of network
calls is the step count (LLaDA spreads k evenly the same way for its linear schedule).

"threshold" (Threshold, Fast-dLLM's parallel decoding) commits every candidate whose score
exceeds the threshold, and at least the best one, so each step reveals >= 1 position and the
number of network calls adapts to how sure the model is: high thresholds approach
one-token-per-step decoding, threshold 1 is exactly that. It reports to the loop the time at
which the schedule expects the masked share it left (for time-conditioned backbones).

Unlike the ancestral step these rules are not samplers of the model's distribution: picking
sure positions first trades diversity (entropy) for fewer errors; report entropy beside any
quality figure.
"""

from __future__ import annotations

import torch

from redraft.diffusion import MaskProcess
from redraft.sampling.categorical import RowRandom
from redraft.sampling.masked import draw_candidates

MEASURES = ("confidence", "margin", "entropy")


def scores(probs: torch.Tensor, tokens: torch.Tensor, measure: str) -> torch.Tensor:
    """How sure the model is of each candidate: probs (N, V) at T = 1, tokens (N,) -> (N,)."""
    if measure == "confidence":
        return probs.gather(-1, tokens[:, None]).squeeze(-1)
    if measure == "margin":
        top = probs.topk(2, dim=-1).values
        return top[:, 0] - top[:, 1]
    return (probs * probs.clamp_min(1e-300).log()).sum(-1)


def ranks(score: torch.Tensor) -> torch.Tensor:
    """(B, L) -> rank of each position within its row, 0 = highest score, ties by position."""
    order = score.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    return rank.scatter_(1, order, torch.arange(score.shape[1], device=score.device)
                         .expand_as(order).contiguous())


class _Candidates:
    commits = True  # never changes a revealed token: the server streams settled text
    def __init__(self, process: MaskProcess, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, measure: str = "confidence"):
        self.process = process
        self.temperature, self.top_k, self.top_p, self.measure = temperature, top_k, top_p, measure

    def candidates(self, logits: torch.Tensor, xt: torch.Tensor, rng: RowRandom,
                   free: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """masked (B, L) bool, candidate canvas (B, L), score (B, L) (-inf off the masked)."""
        u = rng.uniform(xt.shape[1]).to(xt.device)  # (B, L): one stream per row
        masked = xt == self.process.mask_id
        if free is not None:
            masked &= free
        cand = xt.clone()
        score = torch.full(xt.shape, -torch.inf, dtype=torch.float64, device=xt.device)
        if masked.any():
            tokens, probs = draw_candidates(logits, masked, u, self.process.mask_id,
                                            self.temperature, self.top_k, self.top_p)
            cand[masked] = tokens
            score[masked] = scores(probs, tokens, self.measure)
        return masked, cand, score


class Confidence(_Candidates):
    """Commit the k most confident masked positions per step, k from the schedule."""

    name = "confidence"

    def step(self, logits: torch.Tensor, xt: torch.Tensor, t: float, s: float,
             rng: RowRandom, free: torch.Tensor | None = None) -> torch.Tensor:
        """logits (B, L, V) of p_theta(x0 | xt), xt (B, L) at time t -> xs (B, L) at time s."""
        masked, cand, score = self.candidates(logits, xt, rng, free)
        n = masked.sum(dim=1)  # (B,)
        if s <= 0:
            k = n
        else:
            p = float(self.process.unmask_probability(torch.tensor(t, dtype=torch.float64),
                                                      torch.tensor(s, dtype=torch.float64)))
            k = (n.double() * p).round().long()
        commit = masked & (ranks(score) < k[:, None])
        return torch.where(commit, cand, xt)


class Threshold(_Candidates):
    """Commit every masked position whose score passes `threshold`, and at least the best."""

    name = "threshold"
    adaptive = True

    def __init__(self, process: MaskProcess, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, measure: str = "confidence",
                 threshold: float = 0.9):
        super().__init__(process, temperature, top_k, top_p, measure)
        self.threshold = threshold

    def step(self, logits: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, rng: RowRandom,
             free: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits (B, L, V), xt (B, L), t (B,) -> (xs (B, L), time of the next call (B,))."""
        masked, cand, score = self.candidates(logits, xt, rng, free)
        commit = masked & ((score > self.threshold) | (ranks(score) == 0))
        left = (masked & ~commit).sum(dim=1).double()
        share = left / free.sum(dim=1).clamp_min(1).double()  # masked share of the block
        s = self.process.schedule.time_at(1.0 - share)
        return torch.where(commit, cand, xt), torch.where(masked.any(dim=1), s, t)
