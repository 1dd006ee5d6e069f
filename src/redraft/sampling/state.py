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
ones are frozen. With `eos_id` a row stops once its text is settled (it wrote EOS and every
position before that EOS is revealed; for a rule that may change a revealed token: after the
block in which it wrote EOS): the positions it generated after that EOS become EOS and no more
network calls are spent on it, so the text's length is set by the model, not the canvas.
sampling/block.py (BlockState) reuses all of this for block-diffusion models with a KV cache:
the rule then sees only the current block's window (`_rule_step`), and fully fixed blocks are
skipped for every rule.

Progress (what a server streams and stops on): `committed()` counts each row's leading canvas
positions that can no longer change: for a rule that never changes a revealed token on the mask
process (`commits = True`: ancestral, first_hitting, confidence, threshold) the left-to-right
run of revealed positions; for any other rule (remask, the uniform process, score models) only
the fixed prompt until the row finishes. `stop_rows` finishes rows early (a stop string lies in
their committed text): no further network call is spent on them. With `logprobs` the state
records, for every token, the log-probability the denoiser p_theta(x0 | xt) (mask excluded, after
guidance, at temperature 1) gave it at the step that committed it (for non-committing rules:
its last step). That is the model's confidence in a choice, not a likelihood of the text.

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
from redraft.sampling.commit import FirstFinal, check_early_commit, commit_early
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


def spread_steps(steps: int, n_blocks: int, block_size: int, adaptive: bool = False
                 ) -> list[int]:
    """Time-grid steps per block for `steps` in all: as even as it goes, the first
    steps % n_blocks blocks one more (so any total works, e.g. 32 over 3 blocks: 11, 11, 10).
    Every block needs a step: fewer steps than blocks is an error (adaptive rules choose
    their own and take any)."""
    if adaptive:
        return [steps] * n_blocks
    if steps < n_blocks:
        raise RedraftError(f"steps={steps} with {n_blocks} blocks of {block_size}: every block "
                           f"needs a step, so at least {n_blocks} steps (or a larger "
                           "block_size)")
    q, r = divmod(steps, n_blocks)
    return [q + (k < r) for k in range(n_blocks)]


class DiffusionState:
    """Rows of a (B, L) canvas: x = prior with the fixed positions filled in, then `advance`
    once per step after `set_logits` has supplied logits for the rows `inputs` asked for.

    step_rule: from sampling.registry.make_sampler. prefixes / suffixes (one list per row) or
    canvases (per row, a fixed id or None for each position) say what stays fixed.
    steps: steps per canvas on the time grid, spread over the blocks (spread_steps); adaptive
    rules take as many as they need (at most one per free position) and ignore it.
    """

    skip_fixed_blocks = False  # time-grid rules too skip blocks with nothing to reveal

    def __init__(self, process: Process, step_rule, *, steps: int, length: int,
                 seeds: Sequence[int], prefixes: Sequence[Sequence[int]] | None = None,
                 suffixes: Sequence[Sequence[int]] | None = None,
                 canvases: Sequence[Sequence[int | None]] | None = None,
                 block_size: int | None = None, eos_id: int | None = None,
                 guidance: float = 0.0, device: torch.device | str = "cpu",
                 logprobs: int | None = None, early_commit: float | None = None):
        if not isinstance(steps, int) or steps < 1:
            raise RedraftError(f"steps={steps!r}: expected an integer >= 1")
        batch = len(seeds)
        prefixes = prefixes if prefixes is not None else [[]] * batch
        suffixes = suffixes if suffixes is not None else [[]] * batch
        rows = _canvas(length, prefixes, suffixes, canvases, batch)
        self.process, self.step_rule, self.steps = process, step_rule, steps
        self.adaptive = bool(getattr(step_rule, "adaptive", False))
        self.commits = bool(getattr(step_rule, "commits", False)) and process.name == "mask"
        self.mask_id, self.eos_id = process.mask_id, eos_id
        self.guidance = check_guidance(guidance, process)
        self.block_size = length if block_size is None else block_size
        if not isinstance(self.block_size, int) or not 1 <= self.block_size <= length:
            raise RedraftError(f"block_size={block_size!r}: expected an integer in 1..{length}")
        self.n_blocks = math.ceil(length / self.block_size)
        if self.n_blocks > 1 and process.name != "mask":
            raise RedraftError(f"block decoding needs the mask process (later blocks wait "
                               f"masked), got {process.name!r}")
        self.block_steps = spread_steps(steps, self.n_blocks, self.block_size, self.adaptive)
        self.per_block = self.block_steps[0]  # the current grid block's (all rows alike)

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
        self.stopped = torch.zeros(batch, dtype=torch.bool, device=device)  # by stop_rows
        self.logprobs = logprobs  # None: record nothing; k: the chosen token and the top k
        if logprobs is not None:
            k = max(logprobs, 0)
            self.token_lp = torch.full((batch, length), torch.nan, dtype=torch.float64,
                                       device=device)  # (B, L)
            self.top_ids = torch.zeros((batch, length, k), dtype=torch.long, device=device)
            self.top_lp = torch.full((batch, length, k), torch.nan, dtype=torch.float64,
                                     device=device)  # (B, L, k)
        self.logits: torch.Tensor | None = None  # (B, L, V) of the last network call per row
        self.last_input: torch.Tensor | None = None
        self.fired: torch.Tensor | None = None  # (B,) rows early commit filled at the last step
        # Early commit (sampling/commit.py): the gap threshold, or None (off).
        self.early_commit = check_early_commit(early_commit, process)
        self.paused: torch.Tensor | None = None  # (B,) rows waiting out a committed grid block
        self.oracle: FirstFinal | None = None  # the oracle TPF ceiling's record (opt-in)
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
        return self.window() & ~self.fixed & ~self._idle()[:, None]

    def _idle(self) -> torch.Tensor:
        """(B,) bool: rows that take no step now (finished, or done with the grid block)."""
        return self.finished if self.paused is None else self.finished | self.paused

    def stale(self, time_cond: bool) -> torch.Tensor:
        """(B,) bool: rows that need a network call before the next step. Without time
        conditioning a row whose tokens did not change would get exactly the same logits back,
        so it is skipped; a time-conditioned backbone sees a new t every step. Finished rows
        are never run again."""
        if self.logits is None:
            return ~self._idle()
        changed = (self.x != self.last_input).any(dim=1) | time_cond
        return changed & ~self._idle()

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
        if self.oracle is not None:
            self._see_argmax(free)
        self.fired = None
        xs = self._rule_step(self.x, self.logits, free)
        if not self.adaptive:
            self.local = self.local + 1  # an int, or per row (B,) in a BlockState
        self.last_input = self.x
        # Fixed positions, other blocks and finished rows are clamped back: a non-absorbing
        # process would resample them, and a rule may draw for the whole canvas.
        self.x = torch.where(free, xs, self.x)
        if self.logprobs is not None:
            self._record(self.last_input, self.logits, free)
        if self.oracle is not None:
            self.oracle.changed(self.i, self.last_input, self.x)
        self.i += 1
        if self.eos_id is not None and self.commits:
            self._stop_settled_eos()
        if self.fired is not None and not self.adaptive:
            self._end_committed(self.fired & ~self.finished)
        if self.adaptive:
            left = ((self.x == self.mask_id) & self.free()).any(dim=1)
            self._end_blocks(~left & ~self.finished)
        else:
            self._end_grid_blocks()
        return self.x

    def _end_grid_blocks(self) -> None:
        """Time-grid rules: after a block's last step, every row moves on (early: once every
        running row has committed its block, early_commit)."""
        waiting = self.paused is not None and bool((self.paused | self.finished).all())
        if self.local == self.per_block or waiting:
            self.local = 0
            self.paused = None
            self._end_blocks(~self.finished)
            # the rows still running all sit in the highest block (stopped rows stay behind)
            self.per_block = self.block_steps[min(int(self.block.max()), self.n_blocks - 1)]

    def _record(self, old: torch.Tensor, logits: torch.Tensor, free: torch.Tensor) -> None:
        """Log-probabilities of the tokens this step committed (see the module docstring):
        old, free (B', L) of the canvas or window the step changed; logits (B', L, V)."""
        where = free & (old == self.mask_id) & (self.x != self.mask_id) if self.commits else free
        if not where.any():
            return
        lp = logits[where].double()  # (N, V)
        if self.process.name == "mask":
            lp[:, self.mask_id] = -torch.inf
        lp = lp.log_softmax(dim=-1)
        self.token_lp[where] = lp.gather(-1, self.x[where][:, None])[:, 0]
        if self.top_ids.shape[-1]:
            top = lp.topk(self.top_ids.shape[-1], dim=-1)
            self.top_lp[where], self.top_ids[where] = top.values, top.indices

    def committed(self) -> torch.Tensor:
        """(B,) long: each row's leading canvas positions that can no longer change (see the
        module docstring); a row that ran to its end: the whole length."""
        settled = (self.x != self.mask_id) if self.commits else self.fixed
        if self.eos_id is not None:  # what follows a row's first EOS is rewritten at its end
            wrote = (self.x == self.eos_id) & ~self.fixed
            settled = settled & ~((wrote.long().cumsum(dim=1) - wrote.long()) > 0)
        lead = settled.long().cumprod(dim=1).sum(dim=1)
        return torch.where(self.finished & ~self.stopped, self.x.shape[1], lead)

    def stop_rows(self, rows: torch.Tensor) -> None:
        """Finish rows (B,) bool now (a server found a stop string in their committed text):
        they take no further steps; their canvas keeps what was committed."""
        rows = rows.to(self.finished.device) & ~self.finished
        self.stopped |= rows
        self.finished |= rows

    def current(self) -> torch.Tensor:
        """(B, L): the canvas now."""
        return self.x

    def logprob_arrays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(token log-prob (B, L), top ids (B, L, k), top log-probs (B, L, k)); NaN where
        nothing was recorded (the prompt, positions not committed yet). None unless asked."""
        if self.logprobs is None:
            return None
        return self.token_lp, self.top_ids, self.top_lp

    def _rule_step(self, x: torch.Tensor, logits: torch.Tensor,
                   free: torch.Tensor) -> torch.Tensor:
        """The step rule's proposal for canvas x given the logits (sampling.block calls it on
        one block's window instead of the whole canvas), then early commit's override."""
        if self.adaptive:
            xs, s = self.step_rule.step(logits, x, self._t.clone(), self.rng, free)
            self._t = torch.where(self.finished, self._t, s)
        else:
            t, s = self._rule_times()
            xs = self.step_rule.step(logits, x, t, s, self.rng, free=free)
        if self.early_commit is None:
            return xs
        xs, self.fired = commit_early(x, xs, logits, free, self.mask_id, self.early_commit)
        return xs

    def _end_committed(self, rows: torch.Tensor) -> None:
        """Time-grid rows whose block early commit has just filled: they wait (no step, no
        network call) until the other rows end the block, as the grid is shared; a
        BlockState, with a grid per row, ends their blocks now."""
        if rows.any():
            self.paused = rows if self.paused is None else self.paused | rows

    def _stop_settled_eos(self) -> None:
        """EOS-aware stop: a row whose text is settled (it wrote EOS, and every position
        before its first EOS is revealed; the rule never changes a revealed token) finishes
        now, not at its block's end: the steps left could only fill what is rewritten as EOS,
        so the canvas is the one the block's end would give, for fewer network calls."""
        live = ~self.finished
        if not live.any():
            return
        wrote = (self.x == self.eos_id) & ~self.fixed
        open_ = (self.x == self.mask_id) & ~self.fixed  # fixed masks: a partial block's pad
        before = (wrote.long().cumsum(dim=1) == 0)  # positions before the first EOS
        settled = live & wrote.any(dim=1) & ~(open_ & before).any(dim=1)
        if settled.any():
            self._stop_at_eos(settled)

    def _see_argmax(self, free: torch.Tensor) -> None:
        """The oracle's look at this step's denoiser argmax over the positions it covers."""
        am = self.logits.clone()
        if self.process.name == "mask":
            am[..., self.mask_id] = -torch.inf
        self.oracle.see(self.i, self._spread(am.argmax(dim=-1)), free)

    def _spread(self, window: torch.Tensor) -> torch.Tensor:
        """(B, L) of a per-position tensor the logits cover (here: the whole canvas)."""
        return window

    def _rule_times(self):
        """(t, s) the step rule gets (a block state may give per-position times)."""
        return self._grid_times()

    def _grid_times(self) -> tuple[float, float]:
        """(t, s) of the next time-grid step, the same for every row."""
        return 1.0 - self.local / self.per_block, 1.0 - (self.local + 1) / self.per_block

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
            # only the rows that just moved (rows of a merged BlockState may be mid-block)
            ended = ended & ~self.finished & ~((self.x == self.mask_id) & self.free()).any(dim=1)

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
    each with its own random stream. The server's cohorts (serve/cohort.py) draw every running
    row's next token and run the network; generate_ar is the same loop for one batch.

    A row stops at `length`, at `eos_id` when given (stop_at_eos), or by `stop_rows` (a stop
    string); a stopped row's later columns hold `pad_id` and it takes no more network calls.
    With `logprobs`, each drawn token's exact log-probability under the model (temperature 1,
    nothing banned: the figures sum to the text's log-likelihood) and the top `logprobs`."""

    def __init__(self, bos_id: int, prefix: Sequence[int], seeds: Sequence[int], length: int,
                 banned: Sequence[int] = (), *, pad_id: int = 0, eos_id: int | None = None,
                 logprobs: int | None = None):
        n = len(seeds)
        self.tokens = torch.tensor([[bos_id, *prefix]] * n, dtype=torch.long)
        self.rng = RowRandom(list(seeds))
        self.length, self.prompt = length, len(prefix)
        self.banned = list(banned)
        self.pad_id, self.eos_id = pad_id, eos_id
        self.count = torch.zeros(n, dtype=torch.long)  # tokens drawn per row
        self.live = torch.ones(n, dtype=torch.bool)
        # Every row still running: a Python flag, so the common step reads no tensor back.
        self.all_live = True
        self.logprobs = logprobs
        if logprobs is not None:
            k = max(logprobs, 0)
            self.token_lp = torch.full((n, length), torch.nan, dtype=torch.float64)
            self.top_ids = torch.zeros((n, length, k), dtype=torch.long)
            self.top_lp = torch.full((n, length, k), torch.nan, dtype=torch.float64)

    @property
    def done(self) -> bool:
        return False if self.all_live else not bool(self.live.any())

    @property
    def i(self) -> int:
        """Steps taken: tokens drawn (every row draws at each step, stopped or not)."""
        return self.tokens.shape[1] - 1 - self.prompt

    def append(self, tokens: torch.Tensor, logits: torch.Tensor | None = None) -> None:
        """The next tokens (R,) of the live rows, drawn from logits (R, V)."""
        if self.all_live:  # every row drew: the same step without the masks
            col = tokens.cpu()
            at = self.tokens.shape[1] - 1  # the canvas index of the new column
            self.tokens = torch.cat((self.tokens, col[:, None]), dim=1)
            self.count += 1
            if self.logprobs is not None and logits is not None:
                self._record(self.live.clone(), at, logits, tokens)
            if at + 1 >= self.length:  # every row has its whole canvas
                self.live[:] = False
                self.all_live = False
            elif self.eos_id is not None:
                self.live &= col != self.eos_id
                self.all_live = bool(self.live.all())
            return
        live = self.live.clone()
        col = torch.full((len(live),), self.pad_id, dtype=torch.long)
        col[live] = tokens.cpu()
        at = self.tokens.shape[1] - 1  # the canvas index of the new column
        self.tokens = torch.cat((self.tokens, col[:, None]), dim=1)
        self.count += live.long()
        if self.logprobs is not None and logits is not None:
            self._record(live, at, logits, tokens)
        if self.eos_id is not None:
            self.live &= col != self.eos_id
        self.live &= self.prompt + self.count < self.length

    def _record(self, rows: torch.Tensor, at: int, logits: torch.Tensor,
                tokens: torch.Tensor) -> None:
        lp = logits.double().log_softmax(dim=-1).cpu()  # (R, V)
        self.token_lp[rows, at] = lp.gather(-1, tokens.cpu()[:, None])[:, 0]
        k = self.top_ids.shape[-1]
        if k:
            top = lp.topk(k, dim=-1)
            self.top_lp[rows, at], self.top_ids[rows, at] = top.values, top.indices

    def prompt_logprobs(self, logits: torch.Tensor) -> None:
        """Record the prompt's own tokens from the prefill logits (n, 1 + prompt, V): position
        p's logits predict token p + 1 (the first prompt token follows BOS)."""
        if self.logprobs is None or not self.prompt:
            return
        lp = logits[:, :self.prompt].double().log_softmax(dim=-1).cpu()  # (n, P, V)
        ids = self.tokens[:, 1:1 + self.prompt]
        self.token_lp[:, :self.prompt] = lp.gather(-1, ids[..., None])[..., 0]
        k = self.top_ids.shape[-1]
        if k:
            top = lp.topk(k, dim=-1)
            self.top_lp[:, :self.prompt], self.top_ids[:, :self.prompt] = top.values, top.indices

    def committed(self) -> torch.Tensor:
        """(n,) long: canvas positions fixed so far (prompt + drawn tokens): nothing AR draws
        ever changes."""
        return self.prompt + self.count

    def stop_rows(self, rows: torch.Tensor) -> None:
        self.live &= ~rows.cpu()
        self.all_live = self.all_live and not bool(rows.any())

    def current(self) -> torch.Tensor:
        return self.canvas(self.pad_id)

    def logprob_arrays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        if self.logprobs is None:
            return None
        return self.token_lp, self.top_ids, self.top_lp

    def canvas(self, placeholder: int) -> torch.Tensor:
        """(n, length): generated so far, the rest shown as `placeholder` (the mask id)."""
        out = torch.full((len(self.tokens), self.length), placeholder, dtype=torch.long)
        out[:, :self.tokens.shape[1] - 1] = self.tokens[:, 1:]
        return out
