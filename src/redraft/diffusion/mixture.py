"""Absorbing + uniform: a corrupted token becomes the mask w.p. mask_share, else a uniform id.

pi = mask_share * onehot(mask) + (1 - mask_share) * uniform(ids but the mask). mask_share = 1
is the mask process, 0 the uniform one. Unlike the mask process, a mask is not absorbing here:
it is resampled like any other token, so a revealed token can still change later.
"""

from __future__ import annotations

import torch

from redraft.diffusion.processes import Process
from redraft.diffusion.schedules import Schedule
from redraft.errors import RedraftError


class MixtureProcess(Process):
    name = "mixture"

    def __init__(self, vocab_size: int, mask_id: int, schedule: Schedule,
                 mask_share: float = 0.5):
        super().__init__(vocab_size, mask_id, schedule)
        if not 0.0 < mask_share < 1.0:
            raise RedraftError(f"mixture mask_share={mask_share!r}: expected 0 < mask_share < 1 "
                               "(use process 'mask' or 'uniform' for the end points)")
        self.mask_share = float(mask_share)

    def noise(self, device: torch.device | str = "cpu") -> torch.Tensor:
        pi = torch.full((self.vocab_size,), (1.0 - self.mask_share) / (self.vocab_size - 1),
                        dtype=torch.float64, device=device)
        pi[self.mask_id] = self.mask_share
        return pi
