"""A DiffusionGemma's place in a redraft.Model: its objective entry and its backbone facts.

load_hf builds a plain redraft.Model around them with the gemma decoder
(redraft.decoders.gemma: its rule, rows and lane, which `generate` and the server's engine
both drive) and no scorer (redraft.scoring.NoScore).
What it does not have: a likelihood bound (DiffusionGemma is trained without one redraft can
compute), infilling (its canvas always follows the prompt's cache), guidance, and blocks other
than its canvas.
"""

from __future__ import annotations

import torch

from redraft.diffusion.registry import Objective
from redraft.errors import RedraftError

GEMMA = Objective("diffusion_gemma", "DiffusionGemma: encoder prompt cache, self-conditioned "
                  "decoder over a uniform-noise canvas", "self-conditioned denoiser",
                  "bidirectional", ("uniform",), "none (no likelihood bound)", "entropy_bound")


class GemmaBackbone:
    """The facts the rest of redraft reads (vocab, context, device); the network itself is
    driven by hf/gemma.py, not through __call__."""

    causal = False
    time_conditioned = False

    def __init__(self, hf):
        self.hf = hf
        self.vocab_size = hf.config.text_config.vocab_size

    @property
    def seq_len(self) -> int:
        return int(self.hf.config.text_config.max_position_embeddings)

    @property
    def device(self) -> torch.device:
        return self.hf.device

    def __call__(self, *args, **kwargs):
        raise RedraftError("DiffusionGemma's decoder needs its prompt cache and "
                           "self-conditioning: drive it through redraft.hf.gemma")
