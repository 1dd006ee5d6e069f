"""Noise processes: what corruption does to a token (the schedule says how fast).

Every process here is the same kind of continuous-time Markov chain, one token at a time:
at rate dsigma(t) = -alpha'(t) / alpha(t) the token is replaced by a fresh draw from a fixed
noise distribution pi over the vocabulary (pi = "what noise looks like"). So the rate of a
jump y -> x (x != y) is dsigma(t) * pi[x], and everything follows in closed form:

    marginal     q(xt | x0)  = alpha(t) onehot(x0)  + (1 - alpha(t)) pi
    transition   q(xt | xs)  = beta onehot(xs)      + (1 - beta) pi,    beta = alpha(t) / alpha(s)
    prior        p(x1)       = pi                   (exact when alpha(1) = 0)

A process is therefore just its pi (plus a name): MaskProcess (pi = onehot(mask): absorbing),
UniformProcess (uniform.py: pi uniform over every id but the mask), MixtureProcess
(mixture.py). To add one, write a small file with a subclass that implements `noise(V)` and
register it in diffusion/registry.py (PROCESSES). Objectives and samplers only ever use the
methods below, never the concrete class (except MDLM's SUBS, which is absorbing-only).
"""

from __future__ import annotations

import torch

from redraft.diffusion.schedules import Schedule
from redraft.errors import RedraftError


class Process:
    """A resample-from-pi process over vocab_size ids; subclasses define `noise`."""

    name = "base"

    def __init__(self, vocab_size: int, mask_id: int, schedule: Schedule):
        if not 0 <= mask_id < vocab_size:
            raise RedraftError(f"mask_id={mask_id} is outside the vocabulary of {vocab_size}")
        self.vocab_size, self.mask_id, self.schedule = vocab_size, mask_id, schedule

    def noise(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """pi (V,), float64: the distribution a resampled token is drawn from."""
        raise NotImplementedError

    def states(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(V,) bool: ids x_t can take, pi's support plus data tokens (every id but the mask,
        unless pi puts mass on it). Scores and rates are defined between these only."""
        ok = torch.ones(self.vocab_size, dtype=torch.bool, device=device)
        ok[self.mask_id] = bool(self.noise(device)[self.mask_id] > 0)
        return ok

    def prior(self, shape: tuple[int, ...], device: torch.device | str = "cpu",
              rng=None) -> torch.Tensor:
        """x1 ~ pi, long tensor of `shape` = (B, L). rng (a sampling.RowRandom, one stream per
        row) keeps a row's draw independent of the batch; without it torch's global RNG."""
        u = rng.uniform(shape[-1]).to(device) if rng is not None else torch.rand(
            shape, dtype=torch.float64, device=device)
        return _inverse_cdf(self.noise(device), u)

    def corrupt(self, x0: torch.Tensor, t: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """xt ~ q(xt | x0): each token of x0 (B, L) kept w.p. alpha(t) (t (B,)), else ~ pi."""
        replaced, fresh = self.replacement(tuple(x0.shape), t, generator, x0.device)
        return torch.where(replaced, fresh, x0)

    def replacement(self, shape: tuple[int, int], t: torch.Tensor,
                    generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(replaced (B, L) bool, fresh (B, L) long): which positions corruption replaces, each
        w.p. 1 - alpha(t_b), and the pi draws they get. Neither depends on the clean tokens,
        so a whole batch's corruption can be drawn once and its rows scored apart."""
        keep = self.schedule.alpha(t).to(torch.float64)[:, None]  # (B, 1)
        u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
        fresh = _inverse_cdf(self.noise(device),
                             torch.rand(shape, generator=generator, device=device,
                                        dtype=torch.float64))
        return u >= keep, fresh

    def marginal(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(xt = . | x0) (B, L, V) float64 for x0 (B, L), t (B,)."""
        a = self.schedule.alpha(t.to(torch.float64))[:, None, None]
        onehot = torch.nn.functional.one_hot(x0, self.vocab_size).to(torch.float64)
        return a * onehot + (1.0 - a) * self.noise(x0.device)

    def keep_probability(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """beta = alpha(t) / alpha(s), s < t: q(xt | xs) = beta onehot(xs) + (1 - beta) pi."""
        return self.schedule.alpha(t) / self.schedule.alpha(s)

    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """KL(q(x1 | x0) || pi) per token (B, L) in nats: the bound's prior term.

        Zero when alpha(1) = eps = 0; infinite for the mask process with eps > 0 (x1 may keep
        a data token the all-mask prior cannot produce), which config validation rules out.
        """
        if self.schedule.eps <= 0:
            return torch.zeros(x0.shape, dtype=torch.float32, device=x0.device)
        pi = self.noise(x0.device)
        q1 = self.marginal(x0, torch.ones(x0.shape[0], device=x0.device))  # (B, L, V)
        terms = torch.where(q1 > 0, q1 * (q1.log() - pi.log()), torch.zeros_like(q1))
        return terms.sum(-1).float()


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Ids drawn from probs (V,) float64 by inverse CDF with float64 uniforms u (any shape)."""
    cdf = probs.cumsum(0)
    idx = torch.searchsorted(cdf, (u * cdf[-1]).contiguous(), right=True)
    idx = idx.clamp(max=len(probs) - 1)
    # Rounding at the very top of the CDF could land on a zero-probability tail id.
    return torch.where(probs[idx] > 0, idx, probs.argmax().expand_as(idx))


class MaskProcess(Process):
    """Absorbing ("masked") diffusion: pi = onehot(mask); a masked token stays masked.

    Its forward marginal is q(xt | x0) = alpha(t) onehot(x0) + (1 - alpha(t)) onehot(mask).
    vocab_size is only needed by the generic methods (marginal, prior_kl); the mask-specific
    ones below work without it.
    """

    name = "mask"

    def __init__(self, mask_id: int, schedule: Schedule, vocab_size: int | None = None):
        self.mask_id, self.schedule = mask_id, schedule
        self.vocab_size = vocab_size if vocab_size is not None else mask_id + 1

    def noise(self, device: torch.device | str = "cpu") -> torch.Tensor:
        pi = torch.zeros(self.vocab_size, dtype=torch.float64, device=device)
        pi[self.mask_id] = 1.0
        return pi

    def prior(self, shape: tuple[int, ...], device: torch.device | str = "cpu",
              rng=None) -> torch.Tensor:
        """x1 ~ p(x1): every position masked. Shape `shape`, dtype long (no randomness used)."""
        return torch.full(shape, self.mask_id, dtype=torch.long, device=device)

    def corrupt(
        self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """xt ~ q(xt | x0): mask each token of x0 (B, L) independently w.p. 1 - alpha(t), t (B,)."""
        masked = self.mask_pattern(tuple(x0.shape), t, generator, x0.device)
        return torch.where(masked, torch.full_like(x0, self.mask_id), x0)

    def corrupt_count(
        self, x0: torch.Tensor, k: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mask exactly k[b] positions of row b of x0 (B, L), chosen uniformly at random.

        This is q(xt | x0) conditioned on the number of masks, which does not depend on t.
        """
        masked = self.mask_pattern_count(tuple(x0.shape), k, generator, x0.device)
        return torch.where(masked, torch.full_like(x0, self.mask_id), x0)

    def replacement(self, shape, t, generator=None, device="cpu"):
        return (self.mask_pattern(shape, t, generator, device),
                torch.full(shape, self.mask_id, dtype=torch.long, device=device))

    # Which positions get masked never depends on the tokens themselves, so the pattern of a
    # whole batch can be drawn once and its rows handed to different micro-batches or ranks.

    def mask_pattern(self, shape: tuple[int, int], t: torch.Tensor,
                     generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, L) bool: position masked, each independently w.p. 1 - alpha(t_b)."""
        keep = self.schedule.alpha(t).to(torch.float32)[:, None]  # (B, 1)
        u = torch.rand(shape, generator=generator, device=device)
        return u >= keep

    def mask_pattern_count(self, shape: tuple[int, int], k: torch.Tensor,
                           generator: torch.Generator | None = None,
                           device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, L) bool: exactly k[b] positions of row b masked, chosen uniformly at random."""
        u = torch.rand(shape, generator=generator, device=device)
        rank = u.argsort(dim=1).argsort(dim=1)  # a uniform random permutation per row
        return rank < k[:, None]

    def unmask_probability(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """q(x_s != mask | x_t = mask, x0) = (alpha(s) - alpha(t)) / (1 - alpha(t)), for s < t.

        The reverse (ancestral) step reveals each still-masked position with this probability,
        drawing its value from the model's denoiser p(x0 | xt).
        """
        a_t, a_s = self.schedule.alpha(t), self.schedule.alpha(s)
        return ((a_s - a_t) / (1.0 - a_t)).clamp(0.0, 1.0)

