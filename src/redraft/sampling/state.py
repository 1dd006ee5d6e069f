"""One diffusion canvas between reverse steps, and one AR draw: the loop bodies, on their own.

generate_diffusion runs a DiffusionState from start to end; the server's batcher holds one per
request and advances each at its own pace, joining the network calls of states of the same
canvas length. Both drive the same object, which is why a served result equals `redraft
sample` for the same seed.

Time: t_i = 1 - i/N for i = 0..N-1, each step going from t_i to t_{i+1} (t = 1 is noise).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from redraft.diffusion import Process
from redraft.errors import RedraftError
from redraft.sampling.categorical import RowRandom, probabilities, sample


class DiffusionState:
    """Rows of a (B, L) canvas: x_1 = prior with the prompt's fixed positions filled in, then
    `advance` once per step after `set_logits` has supplied logits for the `stale` rows.

    step_rule: an object with step(logits, xt, t, s, rng) -> xs (sampling.registry).
    """

    def __init__(self, process: Process, step_rule, *, steps: int, length: int,
                 prefixes: Sequence[Sequence[int]], suffixes: Sequence[Sequence[int]],
                 seeds: Sequence[int], device: torch.device | str = "cpu"):
        if not isinstance(steps, int) or steps < 1:
            raise RedraftError(f"steps={steps!r}: expected an integer >= 1")
        batch = len(seeds)
        self.step_rule, self.steps, self.i = step_rule, steps, 0
        self.rng = RowRandom(list(seeds))
        x = process.prior((batch, length), device=device, rng=self.rng)
        fixed = torch.zeros((batch, length), dtype=torch.bool, device=device)
        for r, (pre, suf) in enumerate(zip(prefixes, suffixes, strict=True)):
            if len(pre) + len(suf) > length:
                raise RedraftError(f"prompt of {len(pre) + len(suf)} tokens does not fit a canvas "
                                   f"of {length} tokens: shorten the prompt or raise the length")
            x[r, :len(pre)] = torch.tensor(pre, dtype=torch.long)
            fixed[r, :len(pre)] = True
            if suf:
                x[r, length - len(suf):] = torch.tensor(suf, dtype=torch.long)
                fixed[r, length - len(suf):] = True
        self.x, self.fixed, self.template = x, fixed, x.clone()
        self.logits: torch.Tensor | None = None  # (B, L, V) of the last network call per row
        self.last_input: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        return self.i >= self.steps

    @property
    def t(self) -> float:
        return 1.0 - self.i / self.steps

    def stale(self, time_cond: bool) -> torch.Tensor:
        """(B,) bool: rows that need a network call before the next step. Without time
        conditioning a row whose tokens did not change would get exactly the same logits back,
        so it is skipped; a time-conditioned backbone sees a new t every step."""
        if self.logits is None or time_cond:
            return torch.ones(len(self.x), dtype=torch.bool, device=self.x.device)
        return (self.x != self.last_input).any(dim=1)

    def set_logits(self, rows: torch.Tensor, logits: torch.Tensor) -> None:
        """logits (R, L, V) for the R rows where `rows` (B,) is true."""
        if self.logits is None:
            self.logits = logits.float()
        else:
            self.logits[rows] = logits.float()

    def advance(self) -> torch.Tensor:
        """One reverse step t_i -> t_{i+1}; returns the new canvas x (B, L)."""
        t, s = self.t, 1.0 - (self.i + 1) / self.steps
        self.last_input = self.x
        # Prompt positions are clamped back: a non-absorbing process would resample them.
        self.x = torch.where(self.fixed, self.template,
                             self.step_rule.step(self.logits, self.x, t, s, self.rng))
        self.i += 1
        return self.x


def next_tokens(logits: torch.Tensor, rng: RowRandom, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None,
                banned: Sequence[int] = ()) -> torch.Tensor:
    """One AR draw per row: logits (G, V) of the next position -> token ids (G,); `banned` ids
    (mask, pad) get probability 0; each row consumes one uniform of its own stream."""
    if banned:
        logits = logits.clone()
        logits[:, list(banned)] = -torch.inf
    probs = probabilities(logits, temperature, top_k, top_p)
    return sample(probs, rng.uniform(1)[:, 0].to(logits.device))
