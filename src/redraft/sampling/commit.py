"""Commit rules around any step rule: early commit (Prophet) and the oracle's first-final record.

Early commit (Prophet, arXiv 2508.19982: "diffusion language models know the
answer before decoding"): at each step, before the rule's own proposal is kept, look at the
denoiser p_theta(x0 | xt) (mask excluded, after guidance, at temperature 1) at every position
of the current block (or canvas) that is still masked and free. With

    gap_j = log p_theta(top-1 at j) - log p_theta(top-2 at j)      (= logit_1 - logit_2)

if min_j gap_j > threshold, every one of those positions takes its argmax now and the block
ends (the rest of its steps are not run). The gap is measured in log-probability, not
probability: the softmax normaliser cancels, so it is the raw logit gap, free of the
temperature the rule draws at; it keeps separating very sure positions where a probability
gap saturates near 1 (p = 0.999 and 0.99999 lie at least 6.9 and 11.5 nats above their
runner-up); and "infinity" is a natural "never". The test is the minimum over the block
(every masked position must be sure), so one unsure position keeps the whole block on the
base rule. A row never differs from the base rule before its block fires; threshold None
(or +inf) is the base rule bit for bit.

The loop (sampling/state.py) applies it to every rule and every model with a mask state:
canvas or block models, time-grid or adaptive rules. It is a loop option (Request.early_commit),
not a rule, so the rules stay as they are.

FirstFinal records, per position, the first step at which the denoiser's argmax was the value
the position ends with, and the step that wrote it: the oracle TPF ceiling (sampling/tpf.py)
counts how few steps would have sufficed had each token been committed at its first-final step.
"""

from __future__ import annotations

import math

import torch

from redraft.diffusion import Process
from redraft.errors import RedraftError


def check_early_commit(threshold: float | None, process: Process) -> float | None:
    """The threshold (None: off), checked: a number >= 0 (inf allowed: never fires) on the
    mask process (the rule commits masked positions)."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(
            threshold) or threshold < 0:
        raise RedraftError(f"early_commit={threshold!r}: expected a log-probability gap >= 0 "
                           "(or None: off)")
    if process.name != "mask":
        raise RedraftError(f"early_commit commits masked positions: it needs the mask process, "
                           f"got {process.name!r}")
    return float(threshold)


def top_gap(logits: torch.Tensor, mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(gap, argmax) of logits (B, L, V): the top-1 minus top-2 log-probability (mask id
    excluded) and the top-1 id, both (B, L)."""
    lg = logits.double().clone()
    lg[..., mask_id] = -torch.inf
    top = lg.topk(2, dim=-1)
    return top.values[..., 0] - top.values[..., 1], top.indices[..., 0]


def commit_early(x: torch.Tensor, xs: torch.Tensor, logits: torch.Tensor, free: torch.Tensor,
                 mask_id: int, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(xs', fired): x (B, L) before the step, xs (B, L) the rule's proposal, logits (B, L, V),
    free (B, L) bool. fired (B,): rows with a masked free position whose every masked free
    position has a gap above `threshold`; their masked free positions take the argmax and the
    rest of x is kept (the rule's proposal for those rows is dropped); other rows keep xs."""
    open_ = free & (x == mask_id)  # (B, L)
    if math.isinf(threshold) or not open_.any():
        return xs, torch.zeros(len(x), dtype=torch.bool, device=x.device)
    gap, best = top_gap(logits, mask_id)
    sure = (gap > threshold) | ~open_
    fired = open_.any(dim=1) & sure.all(dim=1)  # (B,)
    if not fired.any():
        return xs, fired
    out = torch.where(fired[:, None], torch.where(open_, best, x), xs)
    return out, fired


class FirstFinal:
    """Per position of a (B, L) canvas: the denoiser's argmax at each step it was seen, and the
    last step that changed it (opt-in: it keeps one (B, L) id tensor per step)."""

    def __init__(self, batch: int, length: int, device: torch.device | str = "cpu"):
        self.seen: list[tuple[int, torch.Tensor]] = []  # (step, argmax (B, L), -1: unseen)
        self.written = torch.full((batch, length), -1, dtype=torch.long, device=device)

    def see(self, step: int, argmax: torch.Tensor, where: torch.Tensor) -> None:
        """argmax (B, L) of the logits the step at `step` uses, at the positions `where`."""
        self.seen.append((step, torch.where(where, argmax, -1)))

    def changed(self, step: int, old: torch.Tensor, new: torch.Tensor) -> None:
        self.written = torch.where(old != new, step, self.written)

    def first_final(self, final: torch.Tensor) -> torch.Tensor:
        """(B, L) long: the first step at which each position's argmax was its final value,
        or (never) the step that wrote it, whichever came first (-1: never written)."""
        big = torch.iinfo(torch.long).max
        first = torch.full_like(self.written, big)
        for step, am in self.seen:
            first = torch.where((am == final) & (first == big), step, first)
        done = torch.where(self.written >= 0, self.written, big)
        out = torch.minimum(first, done)
        return torch.where(out == big, -1, out)

    def steps_needed(self, final: torch.Tensor, counted: torch.Tensor) -> list[int]:
        """Per row: the distinct first-final steps of its `counted` (B, L) positions (the
        steps an oracle that commits each token at its first-final step would take)."""
        width, length = self.written.shape[1], final.shape[1]
        if width > length:  # a block state's canvas ends in a partial block's padding
            final = torch.nn.functional.pad(final, (0, width - length), value=-2)
            counted = torch.nn.functional.pad(counted, (0, width - length), value=False)
        ff = self.first_final(final.to(self.written.device))
        counted = counted.to(ff.device)
        return [len(set(ff[r][counted[r]].tolist())) for r in range(len(ff))]
