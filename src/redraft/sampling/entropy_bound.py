"""DiffusionGemma's step rule: accept the tokens that are nearly independent, re-noise the rest.

The canvas is not masked: it starts as uniformly random tokens, and every step redraws it.
With raw decoder logits z (B, C, V) at step i of N (r = N - i steps remain, N..1):

    schedule     T_r = t_min + (t_max - t_min) r / N                      (linear in r)
    processed    l = z / T_r ; p = softmax(l) ; H_j = entropy of p at position j
    draw         y_j ~ softmax(l_j / temperature) (float64 inverse CDF, one stream per row;
                 temperature 1 is the reference, 0 takes the argmax)
    accept       sort H ascending: H_(1) <= H_(2) <= ...; accept the k lowest with
                 sum_{m<=k} H_(m) - H_(k) <= entropy_bound
                 (the left side bounds the joint mutual information of the accepted tokens,
                 arXiv 2505.24857, so they may be drawn independently)
    re-noise     x'_j = y_j where accepted, else a fresh uniform token
    draft        argmax_j l_j (what the canvas becomes when the loop stops)

The next decoder call is conditioned on p (self-conditioning): the loop keeps l. A row stops
early once it is stable (the argmax canvas unchanged for `stability_threshold` steps) and
confident (mean H below `confidence_threshold`); its canvas is then the last argmax. Nothing
is frozen between steps: every step chooses afresh which draws to keep.

measure="confidence" | "margin" | "entropy" replaces the entropy bound by redraft's confidence
rule (sampling/confidence.py, same scores) on this canvas: accept the k_i surest positions,
k_i = ceil(C (i+1) / N), so the last step accepts all. It is the other acceptance rule that
makes sense without a mask state; redraft's masked samplers (ancestral, first_hitting,
threshold, remask) need masks DiffusionGemma never had.

Randomness comes from a `Noise` source: RowRandom (redraft's float64 streams) by default, or a
recorded tape (tests replay transformers' own draws through it to reproduce its tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from redraft.sampling.categorical import RowRandom, probabilities, sample
from redraft.sampling.confidence import MEASURES as CONFIDENCE_MEASURES
from redraft.sampling.confidence import ranks, scores

MEASURES = ("entropy_bound", *CONFIDENCE_MEASURES)


class Noise(Protocol):
    def tokens(self, rows: torch.Tensor, length: int, vocab: int) -> torch.Tensor:
        """(R, length) uniform token ids for the rows selected by `rows` (B,) bool."""

    def draw(self, rows: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """(R, C) ids drawn from probs (R, C, V) (float64, sums to 1 on the last axis)."""


class RowNoise:
    """redraft's draws: float64 inverse CDF from each row's own counter-based stream."""

    def __init__(self, rng: RowRandom):
        self.rng = rng

    def _sub(self, rows: torch.Tensor) -> RowRandom:
        sub = RowRandom.__new__(RowRandom)
        sub.keys, sub.counters = self.rng.keys[rows], self.rng.counters[rows]
        return sub

    def tokens(self, rows, length, vocab):
        sub = self._sub(rows)
        u = sub.uniform(length)
        self.rng.counters[rows] = sub.counters
        return (u * vocab).floor().long().clamp_(max=vocab - 1)

    def draw(self, rows, probs):
        sub = self._sub(rows)
        r, c, v = probs.shape
        u = sub.uniform(c)
        self.rng.counters[rows] = sub.counters
        return sample(probs.reshape(r * c, v), u.reshape(-1)).view(r, c)


@dataclass
class EntropyBound:
    """The rule's knobs (defaults: DiffusionGemma's generation config). steps = N."""

    steps: int
    entropy_bound: float = 0.1
    t_min: float = 0.4
    t_max: float = 0.8
    stability_threshold: int = 1
    confidence_threshold: float = 0.005
    temperature: float = 1.0
    measure: str = "entropy_bound"
    name = "entropy_bound"

    def process(self, logits: torch.Tensor, i: int) -> torch.Tensor:
        """The temperature-scheduled logits l of step i (0-based) of N, same dtype as logits."""
        remaining = self.steps - i
        t = self.t_min + (self.t_max - self.t_min) * (remaining / self.steps)
        return logits / t

    def accept(self, processed: torch.Tensor, drawn: torch.Tensor, i: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(accepted (R, C) bool, entropy (R, C)) of processed logits (R, C, V) and the drawn
        tokens (R, C) at step i."""
        # The reference's own entropy call: which tokens pass the bound is decided by float
        # comparisons, so the same arithmetic keeps the same trajectory.
        entropy = torch.distributions.Categorical(logits=processed).entropy()
        r, c, v = processed.shape
        if self.measure == "entropy_bound":
            h, order = torch.sort(entropy, dim=-1, descending=False)
            keep = torch.cumsum(h, dim=-1) - h <= self.entropy_bound
            return torch.zeros_like(keep).scatter(-1, order, keep), entropy
        p = processed.double().softmax(-1).reshape(r * c, v)
        score = scores(p, drawn.reshape(-1), self.measure).view(r, c)
        k = min(c, math.ceil(c * (i + 1) / self.steps))
        return ranks(score) < k, entropy

    def step(self, logits: torch.Tensor, canvas: torch.Tensor, i: int, rows: torch.Tensor,
             noise: Noise) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step for the rows `rows` (B,) selects: logits (R, C, V) raw, canvas (R, C).
        Returns (next canvas, argmax draft, processed logits, mean entropy (R,))."""
        processed = self.process(logits, i)
        r, c, v = processed.shape
        probs = probabilities(processed.reshape(r * c, v), self.temperature).view(r, c, v)
        drawn = noise.draw(rows, probs)
        accepted, entropy = self.accept(processed, drawn, i)
        kept = torch.where(accepted, drawn, canvas)
        fresh = noise.tokens(rows, canvas.shape[1], logits.shape[-1])
        return (torch.where(accepted, kept, fresh), processed.argmax(-1), processed,
                entropy.mean(-1))
