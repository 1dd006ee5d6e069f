"""Tokens per forward (TPF): a decoder's parallelism, as DiffusionGemma, Nemotron-Labs-Diffusion
and dUltra report it.

    TPF = new tokens / forwards

new tokens: the generated positions of a request's final canvases that hold a committed token
(prompt, suffix and template text excluded; with stop_at_eos, up to and including each row's
first EOS, as the text ends there; a row stopped by a stop string: what it had committed).
forwards: the network evaluations of each row (a batched call of n rows counts n: TPF does not
depend on the batch). The AR twin draws one token per forward (its prefill gives the first), so
its TPF is 1 by construction; a diffusion model's is new tokens / (steps that ran the network).

Any decoder feeds it the same way: its lane adds each row's calls to `Job.row_nfe`, its state
offers `current()` and `committed()` (decoders/base.py), and `Job.tpf()` counts.

The oracle ceiling (opt-in, offline: the state keeps each step's argmax, sampling/commit.py
FirstFinal): a token counts as final from the first step at which the denoiser's argmax at its
position (mask excluded, over the positions the step could change) equals the value it ends
with, or the step that wrote it if that came first. An oracle committing each token at that
step needs, per row, as many steps as there are distinct first-final steps, so

    ceiling = new tokens / sum over rows of (distinct first-final steps)

is what a perfect commit rule could reach with the same denoiser and the same final text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TPF:
    """A run's token and forward counts (sums over its rows and requests: add them with +)."""

    tokens: int
    """new tokens (see the module docstring)"""
    forwards: int
    """network evaluations, per row"""
    oracle_steps: int | None = None
    """the oracle's steps (None: not recorded)"""

    @property
    def value(self) -> float:
        """tokens / forwards (0.0 for a run without forwards)."""
        return self.tokens / self.forwards if self.forwards else 0.0

    @property
    def ceiling(self) -> float | None:
        """The oracle TPF ceiling: tokens / oracle steps (None: not recorded)."""
        if self.oracle_steps is None:
            return None
        return self.tokens / self.oracle_steps if self.oracle_steps else 0.0

    def __add__(self, other: TPF) -> TPF:
        steps = (None if self.oracle_steps is None or other.oracle_steps is None
                 else self.oracle_steps + other.oracle_steps)
        return TPF(self.tokens + other.tokens, self.forwards + other.forwards, steps)

    def as_dict(self) -> dict:
        out = {"tokens": self.tokens, "forwards": self.forwards,
               "tokens_per_forward": round(self.value, 4)}
        if self.oracle_steps is not None:
            out["oracle_steps"] = self.oracle_steps
            out["oracle_ceiling"] = round(self.ceiling, 4)
        return out

    def __str__(self) -> str:
        text = f"{self.value:.3f} tokens/forward ({self.tokens} tokens, {self.forwards} forwards)"
        if self.oracle_steps is not None:
            text += f", oracle ceiling {self.ceiling:.3f}"
        return text


def counted(tokens: torch.Tensor, generated: torch.Tensor, committed: torch.Tensor,
            placeholder: int | None, eos_id: int | None) -> torch.Tensor:
    """(n, L) bool: the new tokens of final canvases tokens (n, L): positions `generated`
    (n, L) or (L,) bool, below each row's committed count (n,), holding a token (not the
    placeholder id of undecided positions), up to and including the row's first generated EOS
    when eos_id is given (stop_at_eos)."""
    n, length = tokens.shape
    cols = torch.arange(length, device=tokens.device)
    out = generated.expand(n, length) & (cols[None, :] < committed.to(tokens.device)[:, None])
    if placeholder is not None:
        out = out & (tokens != placeholder)
    if eos_id is not None:
        eos = out & (tokens == eos_id)
        out = out & ((eos.long().cumsum(dim=1) - eos.long()) == 0)  # nothing after the first
    return out
