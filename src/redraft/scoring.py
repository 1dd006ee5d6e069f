"""Scorers: what `Model.nll` computes for each kind of model, chosen once when it is loaded.

    ExactNLL   a causal model (the AR twin, a Hugging Face causal LM): -log p(text | BOS),
               exact, one network call
    Bound      a diffusion model: its objective's upper bound (ELBO / score entropy),
               a Monte Carlo estimate over draws of (t, xt), with its standard error
    NoScore    a model redraft has no likelihood for (DiffusionGemma): a clear error
"""

from __future__ import annotations

import math

import torch

from redraft.errors import RedraftError
from redraft.losses import draw_noise, token_losses


class Scorer:
    exact = False  # an exact likelihood (else a bound, or none)
    available = True

    def __init__(self, model):
        self.model = model

    @property
    def kind(self) -> str:
        return self.model.objective.bound

    def nats(self, ids: list[int], samples: int, gen: torch.Generator,
             estimator: str) -> tuple[float, float]:
        """(nats, standard error) of one text's token ids."""
        raise NotImplementedError


class ExactNLL(Scorer):
    exact = True

    def nats(self, ids, samples, gen, estimator):
        m = self.model
        x0 = torch.tensor([ids], dtype=torch.long, device=m.device)
        nats = token_losses(m.backbone, x0, m.diffusion_config(), m.tokenizer.mask_id,
                            m.tokenizer.eos_id).double().sum().item()
        return nats, 0.0


class Bound(Scorer):
    def nats(self, ids, samples, gen, estimator):
        m = self.model
        diff = m.diffusion_config()
        x0 = torch.tensor([ids], dtype=torch.long, device=m.device).expand(samples, -1)
        noise = draw_noise(diff, samples, len(ids), m.tokenizer.mask_id, gen, 0.0, estimator,
                           m.device, m.backbone.vocab_size)
        per = token_losses(m.backbone, x0, diff, m.tokenizer.mask_id, m.tokenizer.eos_id,
                           noise=noise).double().sum(dim=1)
        err = (per.std() / math.sqrt(samples)).item() if samples > 1 else float("nan")
        return per.mean().item(), err


class NoScore(Scorer):
    available = False

    def nats(self, ids, samples, gen, estimator):
        raise RedraftError(f"{self.model.name!r} ({self.model.objective.name}): redraft has no "
                           "likelihood bound it can compute for it")


def scorer_for(objective) -> type[Scorer]:
    """A redraft objective's scorer: exact for a causal objective, else its bound."""
    return ExactNLL if objective.autoregressive else Bound
