"""Classifier-free guidance for diffusion LMs: steer towards the condition (the prompt).

The condition is whatever the canvas holds fixed (a prefix, a suffix, the fixed text of an
infilling template). The unconditional prediction is the same canvas with those positions
masked, which a masked model has learned to read as "no condition": every training example
masks a random share of each sequence, and `train.cond_dropout` (train.py) also trains the
exact case of a whole prompt masked. Per position, in logit space:

    logits_guided = logits_cond + w (logits_cond - logits_uncond)

w = 0 is the conditional model as it is (the sampler without guidance, bit for bit); w > 0
sharpens towards what the condition explains; -1 < w < 0 moves towards the unconditional model
and w = -1 is it. Every step rule then treats the guided logits as the model's.
"""

from __future__ import annotations

import math

import torch

from redraft.diffusion import Process
from redraft.errors import RedraftError


def check_guidance(scale: float, process: Process) -> float:
    """The guidance scale as a float; a clear error for a value or process it cannot use."""
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < -1:
        raise RedraftError(f"guidance={scale!r}: expected a finite number >= -1 (0 = none)")
    if scale and process.name == "uniform":
        raise RedraftError("guidance needs a model that has seen masks (process mask or "
                           "mixture): the unconditional call masks the prompt out")
    return float(scale)


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """cond, uncond (B, L, V) -> cond + scale (cond - uncond), same shape."""
    return cond + scale * (cond - uncond)
