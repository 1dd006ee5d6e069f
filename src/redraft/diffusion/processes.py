"""Noise processes: what corruption does to a token (the schedule says how fast).

MaskProcess is absorbing-state diffusion: each token independently stays itself with
probability alpha(t) and becomes the mask token otherwise, and a masked token stays masked.
Its forward marginal is q(xt | x0) = alpha(t) * onehot(x0) + (1 - alpha(t)) * onehot(mask).
"""

from __future__ import annotations

import torch

from redraft.diffusion.schedules import Schedule


class MaskProcess:
    """Absorbing ("masked") diffusion over a vocabulary with a reserved mask id."""

    name = "mask"

    def __init__(self, mask_id: int, schedule: Schedule):
        self.mask_id = mask_id
        self.schedule = schedule

    def prior(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
        """x1 ~ p(x1): every position masked. Shape `shape`, dtype long."""
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
