"""Uniform-state diffusion: a corrupted token is any other id, uniformly (D3PM, SEDD, UDLM, Duo).

pi is uniform over the N = V - 1 ids that are not the mask (specials such as EOS included:
they occur in the data). The mask id never appears, so the model's mask column is ignored.
"""

from __future__ import annotations

import torch

from redraft.diffusion.processes import Process


class UniformProcess(Process):
    name = "uniform"

    def noise(self, device: torch.device | str = "cpu") -> torch.Tensor:
        pi = torch.full((self.vocab_size,), 1.0 / (self.vocab_size - 1), dtype=torch.float64,
                        device=device)
        pi[self.mask_id] = 0.0
        return pi
