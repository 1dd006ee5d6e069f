"""One diffusion canvas between reverse steps: the loop body, on its own.

generate_diffusion runs a DiffusionState from start to end; the server's batcher holds one per
request and advances each at its own pace, joining the network calls of states of the same
canvas length. Both drive the same object, which is why a served result equals `redraft
sample` for the same seed.

Time: t = 1 is noise. A step rule on the time grid (ancestral, confidence, remask, ...) goes
from t_i = 1 - i/N to t_{i+1} within a block of N steps. An adaptive rule (first-hitting,
threshold; `adaptive = True`) decides how many positions to reveal itself and returns the time
its next call happens at; its block ends when no mask is left in it.

Blocks (semi-autoregressive decoding, mask process only): the canvas is cut into blocks of
`block_size` positions decoded left to right; inside the current block any rule works as it
would on a whole canvas, later blocks stay masked (the backbone sees them as masks), earlier
ones are frozen. With `eos_id` a row stops after the first block in which it wrote EOS: the
positions it generated after that EOS become EOS and no more network calls are spent on it,
so the text's length is set by the model, not the canvas. sampling/block.py (BlockState)
reuses all of this for block-diffusion models with a KV cache: the rule then sees only the
current block's window (`_rule_step`), and fully fixed blocks are skipped for every rule.

Guidance (classifier-free, mask-aware processes): with scale w != 0 every call also runs the
canvas with the condition (the fixed, prompt positions) masked out, and the step sees
logits_cond + w (logits_cond - logits_uncond) (sampling/guidance.py). w = 0 is the plain
conditional sampler, bit for bit, at half the cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from redraft.diffusion import Process
from redraft.errors import RedraftError
from redraft.sampling.categorical import RowRandom
from redraft.sampling.guidance import check_guidance, guided_logits


def _canvas(length: int, prefixes: Sequence[Sequence[int]], suffixes: Sequence[Sequence[int]],
            canvases: Sequence[Sequence[int | None]] | None, batch: int
            ) -> list[list[int | None]]:
    """Per row: a fixed id or None (free) for each of the `length` positions."""
    if canvases is not None:
        if any(len(p) for p in prefixes) or any(len(s) for s in suffixes):
            raise RedraftError("give either canvases or prefixes/suffixes, not both")
        if len(canvases) != batch:
            raise RedraftError(f"{len(canvases)} canvases given for a batch of {batch}")
        rows = [list(c) for c in canvases]
        for c in rows:
            if len(c) != length:
                raise RedraftError(f"a canvas of {len(c)} positions given for length {length}")
            if any(tok is not None and int(tok) < 0 for tok in c):
                raise RedraftError("a canvas holds a negative token id: expected ids >= 0 "
                                   "or None (free)")
        return rows
    rows = []
    for pre, suf in zip(prefixes, suffixes, strict=True):
        if len(pre) + len(suf) > length:
            raise RedraftError(f"prompt of {len(pre) + len(suf)} tokens does not fit a canvas "
                               f"of {length} tokens: shorten the prompt or raise the length")
        rows.append(list(pre) + [None] * (length - len(pre) - len(suf)) + list(suf))
    return rows


class DiffusionState:
    """Rows of a (B, L) canvas: x = prior with the fixed positions filled in, then `advance`
    once per step after `set_logits` has supplied logits for the rows `inputs` asked for.

    step_rule: from sampling.registry.make_sampler. prefixes / suffixes (one list per row) or
    canvases (per row, a fixed id or None for each position) say what stays fixed.
    steps: steps per canvas on the time grid (a multiple of the number of blocks); adaptive
    rules take as many as they need (at most one per free position) and ignore it.
    """

    skip_fixed_blocks = False  # time-grid rules too skip blocks with nothing to reveal

    def __init__(self, process: Process, step_rule, *, steps: int, length: int,
                 seeds: Sequence[int], prefixes: Sequence[Sequence[int]] | None = None,
                 suffixes: Sequence[Sequence[int]] | None = None,
                 canvases: Sequence[Sequence[int | None]] | None = None,
                 block_size: int | None = None, eos_id: int | None = None,
                 guidance: float = 0.0, device: torch.device | str = "cpu"):
        if not isinstance(steps, int) or steps < 1:
            raise RedraftError(f"steps={steps!r}: expected an integer >= 1")
        batch = len(seeds)
        prefixes = prefixes if prefixes is not None else [[]] * batch
        suffixes = suffixes if suffixes is not None else [[]] * batch
        rows = _canvas(length, prefixes, suffixes, canvases, batch)
        self.process, self.step_rule, self.steps = process, step_rule, steps
        self.adaptive = bool(getattr(step_rule, "adaptive", False))
        self.mask_id, self.eos_id = process.mask_id, eos_id
        self.guidance = check_guidance(guidance, process)
        self.block_size = length if block_size is None else block_size
        if not isinstance(self.block_size, int) or not 1 <= self.block_size <= length:
            raise RedraftError(f"block_size={block_size!r}: expected an integer in 1..{length}")
        self.n_blocks = math.ceil(length / self.block_size)
        if self.n_blocks > 1 and process.name != "mask":
            raise RedraftError(f"block decoding needs the mask process (later blocks wait "
                               f"masked), got {process.name!r}")
        if not self.adaptive and steps % self.n_blocks:
            raise RedraftError(f"steps={steps} with {self.n_blocks} blocks of {self.block_size}: "
                               "steps must be a multiple of the number of blocks")
        self.per_block = steps // self.n_blocks

        self.rng = RowRandom(list(seeds))
        x = process.prior((batch, length), device=device, rng=self.rng)
        ids = torch.tensor([[-1 if tok is None else int(tok) for tok in row] for row in rows],
                           dtype=torch.long, device=device).view(batch, length)
        fixed = ids >= 0
        x = torch.where(fixed, ids, x)
        self.x, self.fixed, self.template = x, fixed, x.clone()
        self.i = 0  # steps taken (all rows)
        self.local = 0  # step within the current block (time-grid rules; all rows alike)
        self.block = torch.zeros(batch, dtype=torch.long, device=device)
        self._t = torch.ones(batch, dtype=torch.float64, device=device)
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.logits: torch.Tensor | None = None  # (B, L, V) of the last network call per row
        self.last_input: torch.Tensor | None = None
        if self.adaptive or self.skip_fixed_blocks:  # skip blocks with nothing to reveal
            self._end_blocks(~((x == self.mask_id) & self.free()).any(dim=1))

    @property
    def done(self) -> bool:
        return bool(self.finished.all())

    @property
    def t(self) -> torch.Tensor:
        """(B,) float64: the time of each row's next network call."""
        if self.adaptive:
            return self._t
        return torch.full_like(self._t, 1.0 - self.local / self.per_block)

    def window(self) -> torch.Tensor:
        """(B, L) bool: the positions of each row's current block."""
        cols = torch.arange(self.x.shape[1], device=self.x.device)
        start = (self.block * self.block_size)[:, None]
        return (cols >= start) & (cols < start + self.block_size)

    def free(self) -> torch.Tensor:
        """(B, L) bool: the positions the next step may change."""
        return self.window() & ~self.fixed & ~self.finished[:, None]

    def stale(self, time_cond: bool) -> torch.Tensor:
        """(B,) bool: rows that need a network call before the next step. Without time
        conditioning a row whose tokens did not change would get exactly the same logits back,
        so it is skipped; a time-conditioned backbone sees a new t every step. Finished rows
        are never run again."""
        if self.logits is None:
            return ~self.finished
        changed = (self.x != self.last_input).any(dim=1) | time_cond
        return changed & ~self.finished

    def inputs(self, time_cond: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """rows (B,) bool, x (R', L) and t (R',) float32 for the next network call: the stale
        rows, followed by the same rows with the condition masked out when guided (R' = 2R)."""
        rows = self.stale(time_cond)
        x, t = self.x[rows], self.t[rows].float()
        if self.guidance:
            x = torch.cat((x, torch.where(self.fixed[rows], self.mask_id, x)))
            t = torch.cat((t, t))
        return rows, x, t

    def set_logits(self, rows: torch.Tensor, logits: torch.Tensor) -> None:
        """logits (R', L, V) of the call `inputs` described, for the rows where `rows` is true."""
        logits = logits.float()
        if self.guidance:
            cond, uncond = logits.chunk(2)
            logits = guided_logits(cond, uncond, self.guidance)
        if self.logits is None:
            self.logits = logits.new_zeros((len(rows), *logits.shape[1:]))
        self.logits[rows] = logits

    def advance(self) -> torch.Tensor:
        """One reverse step for every unfinished row; returns the new canvas x (B, L)."""
        free = self.free()
        xs = self._rule_step(self.x, self.logits, free)
        if not self.adaptive:
            self.local += 1
        self.last_input = self.x
        # Fixed positions, other blocks and finished rows are clamped back: a non-absorbing
        # process would resample them, and a rule may draw for the whole canvas.
        self.x = torch.where(free, xs, self.x)
        self.i += 1
        if self.adaptive:
            left = ((self.x == self.mask_id) & self.free()).any(dim=1)
            self._end_blocks(~left & ~self.finished)
        elif self.local == self.per_block:
            self.local = 0
            self._end_blocks(~self.finished)
        return self.x

    def _rule_step(self, x: torch.Tensor, logits: torch.Tensor,
                   free: torch.Tensor) -> torch.Tensor:
        """The step rule's proposal for canvas x given the logits (sampling.block calls it on
        one block's window instead of the whole canvas)."""
        if self.adaptive:
            xs, s = self.step_rule.step(logits, x, self._t.clone(), self.rng, free)
            self._t = torch.where(self.finished, self._t, s)
            return xs
        t, s = 1.0 - self.local / self.per_block, 1.0 - (self.local + 1) / self.per_block
        return self.step_rule.step(logits, x, t, s, self.rng, free=free)

    def _end_blocks(self, ended: torch.Tensor) -> None:
        """Move the `ended` rows (B,) to their next block (or finish them), then keep moving
        adaptive rows past blocks with nothing left to reveal."""
        while ended.any():
            if self.eos_id is not None:
                self._stop_at_eos(ended)
            self.block = torch.where(ended, self.block + 1, self.block)
            self._t = torch.where(ended, 1.0, self._t)
            self.finished |= self.block >= self.n_blocks
            if not (self.adaptive or self.skip_fixed_blocks):
                return
            ended = ~self.finished & ~((self.x == self.mask_id) & self.free()).any(dim=1)

    def _stop_at_eos(self, ended: torch.Tensor) -> None:
        """Finish the ended rows that wrote EOS; everything they generated after it becomes
        EOS (the text ends there; texts are cut at the first EOS)."""
        wrote = (self.x == self.eos_id) & ~self.fixed & ~(self.x == self.mask_id)
        stop = ended & wrote.any(dim=1)
        if not stop.any():
            return
        cols = torch.arange(self.x.shape[1], device=self.x.device)
        first = torch.where(wrote, cols, self.x.shape[1]).min(dim=1).values  # (B,)
        tail = stop[:, None] & (cols > first[:, None]) & ~self.fixed
        self.x = torch.where(tail, self.eos_id, self.x)
        self.finished |= stop



class ARState:
    """The rows of one AR request between draws: [bos, prefix, generated...] (n, 1 + position),
    each with its own random stream. The server's cohorts (serve/cohort.py) draw every row's next
    token and run the network; generate_ar is the same loop for one batch."""

    def __init__(self, bos_id: int, prefix: Sequence[int], seeds: Sequence[int], length: int,
                 banned: Sequence[int] = ()):
        self.tokens = torch.tensor([[bos_id, *prefix]] * len(seeds), dtype=torch.long)
        self.rng = RowRandom(list(seeds))
        self.length = length
        self.banned = list(banned)

    @property
    def done(self) -> bool:
        return self.tokens.shape[1] - 1 >= self.length

    def canvas(self, placeholder: int) -> torch.Tensor:
        """(n, length): generated so far, the rest shown as `placeholder` (the mask id)."""
        out = torch.full((len(self.tokens), self.length), placeholder, dtype=torch.long)
        out[:, :self.tokens.shape[1] - 1] = self.tokens[:, 1:]
        return out
