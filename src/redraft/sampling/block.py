"""Block-diffusion sampling with an exact KV cache (BD3-LM): blocks left to right, each block
denoised by any masked step rule, every finished block computed once.

The canvas x (B, L) is cut into blocks of b positions (the model's block size). The backbone
reads y, which is x itself ("same" alignment) or [bos, x_0 .. x_{L-2}] ("next", shift=True:
the output at position j predicts x_j from y up to block j // b, as in training, see
diffusion/block.py). Per row, at its current block k:

    the cache holds y's blocks 0 .. k-1, all clean (prompt, or finished blocks);
    one network call runs y's block k (the window) against the cache: bidirectional inside
    the window, so its logits are exactly those of the uncached block-causal pass over the
    whole canvas (test_block_sampling checks it at every step);
    the step rule (ancestral, first_hitting, confidence, threshold, remask, analytic, euler)
    updates the block's b positions from those logits: DiffusionState's own step call, on a
    (B, b) window instead of the (B, L) canvas.

When a block is finished its clean y block still has to reach the cache: it is not run on its
own but as the first half of the next block's first call (the call covers blocks
cached .. k, block-causal inside it), so committing costs no extra network call; the prompt's
whole blocks go in with the first call the same way. A row's call is skipped when its window
did not change (no time conditioning; the logits would be the same). Rows at different
blocks (different prompts, adaptive rules, EOS stops) share calls: each row reads and writes
its own cache row at its own positions (the ragged call of models.Transformer); rows whose
calls have different lengths go in separate calls. Each row's draws come from its own stream,
so a row's result does not depend on the batch.

With eos_id a row stops once its text is settled (DiffusionState; the rest becomes EOS). A
length that is not a multiple of b ends in a partial block; its missing positions are
treated as masks that are never revealed (cut from the output).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import torch

from redraft.diffusion import Process
from redraft.diffusion.block import reveal_times
from redraft.errors import RedraftError
from redraft.sampling.categorical import check_knobs
from redraft.sampling.generate import Generation, _rows, _seeds
from redraft.sampling.registry import make_sampler
from redraft.sampling.state import DiffusionState


class BlockState(DiffusionState):
    """A DiffusionState whose step rule sees one block's window, with the bookkeeping of the
    block model's cache: `calls()` says what to run, `set_window_logits` takes the result."""

    skip_fixed_blocks = True  # a block of prompt is committed, never denoised

    def __init__(self, process: Process, step_rule, *, steps_per_block: int, length: int,
                 block_size: int, seeds: Sequence[int],
                 prefixes: Sequence[Sequence[int]] | None = None,
                 canvases: Sequence[Sequence[int | None]] | None = None,
                 shift: bool = False, bos_id: int | None = None, eos_id: int | None = None,
                 reveal_width: float = 1.0, reveal_last: bool = False,
                 device: torch.device | str = "cpu", early_commit: float | None = None):
        if not isinstance(steps_per_block, int) or steps_per_block < 1:
            raise RedraftError(f"steps_per_block={steps_per_block!r}: expected an integer >= 1")
        if shift and bos_id is None:
            raise RedraftError("the next-token alignment (shift) needs bos_id")
        batch = len(seeds)
        b = block_size
        padded = -(-length // b) * b
        pad = [process.mask_id] * (padded - length)  # never revealed: fixed masks
        if canvases is not None:
            rows = [list(c) + pad for c in canvases]
            if any(len(c) != length for c in canvases):
                raise RedraftError(f"a canvas must have {length} positions")
        else:
            prefixes = prefixes if prefixes is not None else [[]] * batch
            for pre in prefixes:
                if len(pre) > length:
                    raise RedraftError(f"prompt of {len(pre)} tokens does not fit a canvas of "
                                       f"{length} tokens")
            rows = [list(pre) + [None] * (length - len(pre)) + pad for pre in prefixes]
        if len(rows) != batch:
            raise RedraftError(f"{len(rows)} canvases given for a batch of {batch}")
        super().__init__(process, step_rule, steps=steps_per_block * (padded // b),
                         length=padded, seeds=seeds, canvases=rows, block_size=b,
                         eos_id=eos_id, device=device, early_commit=early_commit)
        self.length, self.shift, self.bos_id = length, shift, bos_id
        if not 0 < reveal_width <= 1:
            raise RedraftError(f"reveal_width={reveal_width!r}: expected 0 < width <= 1")
        self.reveal_width = reveal_width
        if reveal_last and not shift:
            raise RedraftError("reveal_last is for the next-token alignment (shift)")
        self.reveal_last = reveal_last
        self.cached = torch.zeros(batch, dtype=torch.long, device=device)  # y blocks in cache
        self.stopped = torch.zeros(batch, dtype=torch.bool, device=device)  # by stop_rows
        self.seen_block = torch.full((batch,), -1, dtype=torch.long, device=device)
        self.seen_window: torch.Tensor | None = None
        # Per row, so that rows of different requests (other lengths, steps, starting ticks)
        # can share one state (merge): the step within the block, the steps per block, the
        # canvas length without padding.
        self.local = torch.zeros(batch, dtype=torch.long, device=device)
        self.row_steps = torch.full((batch,), self.per_block, dtype=torch.long, device=device)
        self.lengths = torch.full((batch,), length, dtype=torch.long, device=device)

    # Per-row fields (dim 0 is the row), and those that start as None.
    _ROWS = ("x", "fixed", "template", "block", "_t", "finished", "stopped", "cached",
             "seen_block", "local", "row_steps", "lengths")

    @classmethod
    def merge(cls, states: Sequence[BlockState]) -> BlockState:
        """One state holding the rows of `states` in order, so one step (one step-rule call)
        advances all of them: the server's batcher merges the requests of a model whose step
        rules are alike (same rule and knobs, EOS handling) and either adaptive or able to
        take a time per row (`row_times`). Each row keeps its own random stream, time, steps
        per block, length and block, so its tokens are those it gets alone. Canvases of
        different widths are padded with fixed masks (whole blocks that are skipped)."""
        first = states[0]
        if len(states) == 1:
            return first
        if any(s.logprobs is not None or s.guidance for s in states):
            raise RedraftError("block states recording logprobs or guided cannot be merged")
        width = max(s.x.shape[1] for s in states)

        def cat(name: str, pad: object = None) -> torch.Tensor:
            parts = [getattr(s, name) for s in states]
            if pad is not None:
                parts = [torch.nn.functional.pad(a, (0, width - a.shape[1]), value=pad)
                         for a in parts]
            return torch.cat(parts)

        out = copy.copy(first)  # the shared scalars: rule, process, block size, alignment
        for name in cls._ROWS[3:]:  # x, fixed, template: padded below
            setattr(out, name, cat(name))
        out.x, out.template = cat("x", first.mask_id), cat("template", first.mask_id)
        out.fixed = cat("fixed", True)
        b = first.block_size
        out.seen_window = None if all(s.seen_window is None for s in states) else torch.cat(
            [s.seen_window if s.seen_window is not None else
             torch.full((len(s.x), b), -1, dtype=torch.long, device=s.x.device)
             for s in states])
        known = [s.logits for s in states if s.logits is not None]
        out.logits = None if not known else torch.cat(
            [s.logits if s.logits is not None else known[0].new_zeros((len(s.x), *known[0]
                                                                      .shape[1:]))
             for s in states])
        out.last_input = None
        out.rng = copy.copy(first.rng)
        out.rng.keys = torch.cat([s.rng.keys for s in states])
        out.rng.counters = torch.cat([s.rng.counters for s in states])
        out.n_blocks = width // b
        out.length = max(s.length for s in states)
        out.i = 0
        return out

    def take(self, rows: torch.Tensor) -> BlockState:
        """A state of the given rows (R,) long only (a copy; this one is unchanged)."""
        out = copy.copy(self)
        for name in self._ROWS:
            setattr(out, name, getattr(self, name)[rows])
        for name in ("seen_window", "logits", "last_input"):
            if getattr(self, name) is not None:
                setattr(out, name, getattr(self, name)[rows])
        out.rng = copy.copy(self.rng)
        out.rng.keys, out.rng.counters = self.rng.keys[rows], self.rng.counters[rows]
        return out

    @property
    def t(self) -> torch.Tensor:
        """(B,) float64: the time of each row's next network call."""
        if self.adaptive:
            return self._t
        return 1.0 - self.local.double() / self.row_steps

    def _grid_times(self) -> tuple[float | torch.Tensor, float | torch.Tensor]:
        """(t, s) of the next time-grid step: floats when every row is at the same step of
        blocks of the same steps (always, for one request), else per row (B,) float64, for a
        rule that takes them (`row_times`)."""
        local, steps = self.local[0], self.row_steps[0]
        if bool(((self.local == local) & (self.row_steps == steps)).all()):
            local, steps = int(local), int(steps)
            return 1.0 - local / steps, 1.0 - (local + 1) / steps
        if not getattr(self.step_rule, "row_times", False):
            raise RedraftError(f"the {self.step_rule.name!r} rule takes one time for all rows; "
                               "rows at different steps cannot share its state")
        steps = self.row_steps.double()
        return 1.0 - self.local.double() / steps, 1.0 - (self.local + 1).double() / steps

    def _rule_times(self):
        """(t, s) for the step rule: _grid_times, or with ordered reveals (reveal_width < 1)
        each window position's own times tau_j (B, b), for a rule that takes them
        (`position_times`: ancestral); the other rules keep the block's time."""
        t, s = self._grid_times()
        if self.reveal_width >= 1 or not getattr(self.step_rule, "position_times", False):
            return t, s
        shape = (len(self.x), self.block_size)
        t, s = (torch.as_tensor(a, dtype=torch.float64, device=self.x.device) for a in (t, s))
        t, s = (a[:, None].expand(shape) if a.dim() else a.expand(shape) for a in (t, s))
        return (reveal_times(t, self.block_size, self.reveal_width),
                reveal_times(s, self.block_size, self.reveal_width))

    def _end_committed(self, rows: torch.Tensor) -> None:
        """Rows whose block early commit filled end it now (each row has its own grid); a
        block whose last position waits (reveal_last) takes one more step for it."""
        rows = rows & ~((self.x == self.mask_id) & self.window() & ~self.fixed).any(dim=1)
        self.local = torch.where(rows, self.row_steps, self.local)

    def _spread(self, window: torch.Tensor) -> torch.Tensor:
        """(B, L) of a per-window-position tensor (B, b); -1 outside the window."""
        out = torch.full_like(self.x, -1)
        return out.scatter(1, self._index(), window)

    def _end_grid_blocks(self) -> None:
        """Rows after their block's last step move on (each row's own count)."""
        ended = self.local >= self.row_steps
        if bool(ended.any()):
            self.local = torch.where(ended, 0, self.local)
            self._end_blocks(ended & ~self.finished)

    def model_input(self) -> torch.Tensor:
        """y (B, L_padded): what the backbone reads for the canvas x."""
        if not self.shift:
            return self.x
        bos = torch.full_like(self.x[:, :1], self.bos_id)
        return torch.cat((bos, self.x[:, :-1]), dim=1)

    def _index(self) -> torch.Tensor:
        """(B, b) canvas positions of each row's current block."""
        b = self.block_size
        block = self.block.clamp(max=self.n_blocks - 1)  # finished rows: any valid window
        return block[:, None] * b + torch.arange(b, device=self.x.device)

    def window_time(self) -> torch.Tensor:
        """(B,) float32: the time of each row's next call (its block's)."""
        return self.t.float()

    def stale(self, time_cond: bool) -> torch.Tensor:
        """(B,) bool: unfinished rows whose window (or block, or cache) changed since their
        last call, or every unfinished row for a time-conditioned backbone."""
        window = self.model_input().gather(1, self._index())
        if self.seen_window is None:
            return ~self.finished
        changed = ((window != self.seen_window).any(dim=1) | (self.block != self.seen_block)
                   | (self.cached < self.block) | time_cond)
        return changed & ~self.finished

    def calls(self, time_cond: bool) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                   torch.Tensor]]:
        """The cached calls of the next step: [(rows (R,) long, tokens (R, n), positions (R,),
        t (R, n) float32)], one per call length n. Row r runs y from its first uncached block
        to the end of its current block, at the positions where they belong; t is 0 on the
        clean blocks and the row's time on the window."""
        rows = torch.nonzero(self.stale(time_cond)).flatten()
        y, b = self.model_input(), self.block_size
        first, end = self.cached * b, (self.block + 1) * b
        out = []
        for n in torch.unique(end[rows] - first[rows]).tolist():
            group = rows[(end[rows] - first[rows]) == n]
            idx = first[group][:, None] + torch.arange(n, device=y.device)
            t = torch.zeros((len(group), n), device=y.device)
            t[:, -b:] = self.window_time()[group][:, None]
            out.append((group, y[group[:, None], idx], first[group], t))
        return out

    def uncached_call(self, time_cond: bool) -> tuple[torch.Tensor, torch.Tensor,
                                                      torch.Tensor]:
        """The reference without a cache: (rows (R,), y (R, L_padded), t (R, L_padded)); the
        window's logits are those of the plain block-causal pass over the whole canvas."""
        rows = torch.nonzero(self.stale(time_cond)).flatten()
        y = self.model_input()[rows]
        cols = torch.arange(y.shape[1], device=y.device)
        t = torch.where(cols[None, :] < (self.block[rows] * self.block_size)[:, None],
                        0.0, self.window_time()[rows][:, None])
        return rows, y, t

    def set_window_logits(self, rows: torch.Tensor, logits: torch.Tensor) -> None:
        """logits (R, b, V) of the windows of `rows`; marks their blocks as cached."""
        logits = logits.float()
        if self.logits is None:
            self.logits = logits.new_zeros((len(self.x), *logits.shape[1:]))
            self.seen_window = torch.full((len(self.x), self.block_size), -1,
                                          dtype=torch.long, device=self.x.device)
        self.logits[rows] = logits
        self.seen_window[rows] = self.model_input().gather(1, self._index())[rows]
        self.seen_block[rows] = self.block[rows]
        self.cached[rows] = self.block[rows]

    def _rule_step(self, x: torch.Tensor, logits: torch.Tensor,
                   free: torch.Tensor) -> torch.Tensor:
        idx = self._index()
        window, free = x.gather(1, idx), free.gather(1, idx)
        if not self.reveal_last:
            return x.scatter(1, idx, super()._rule_step(window, logits, free))
        # The block's last position waits while another is masked, except at the last step
        # of a time grid (s = 0 reveals everything left). Rules that honour `free` pass it
        # by; for the others (analytic, euler) its draw is put back.
        others = ((window == self.mask_id) & free)[:, :-1].any(dim=1)
        final = (self.local == self.row_steps - 1) & (not self.adaptive)
        hold = others & ~final
        free = free.clone()
        free[:, -1] &= ~hold
        xs = super()._rule_step(window, logits, free)
        xs[:, -1] = torch.where(hold, window[:, -1], xs[:, -1])
        return x.scatter(1, idx, xs)

    @property
    def tokens(self) -> torch.Tensor:
        """(B, length): the canvas without the padding of a partial last block."""
        return self.x[:, :self.length]

    # What a server streams and stops on (the same three calls as the other row states).

    def committed(self) -> torch.Tensor:
        """(B,) long: each row's leading canvas positions that can no longer change: its
        finished blocks (the whole length once it has run to its end: the positions after
        an EOS stop are EOS for good)."""
        done = torch.minimum(self.block * self.block_size, self.lengths)
        return torch.where(self.finished & ~self.stopped, self.lengths, done)

    def current(self) -> torch.Tensor:
        """(B, length): the canvas now."""
        return self.tokens

    def stop_rows(self, rows: torch.Tensor) -> None:
        """Finish rows (B,) bool now (a server found a stop string in their committed text):
        no further calls; their current block is masked again, so the canvas holds only what
        was committed (and the fixed positions)."""
        rows = rows.to(self.finished.device) & ~self.finished
        if not rows.any():
            return
        cols = torch.arange(self.x.shape[1], device=self.x.device)
        undo = rows[:, None] & (cols[None, :] >= (self.block * self.block_size)[:, None])
        self.x = torch.where(undo & ~self.fixed, self.mask_id, self.x)
        self.stopped |= rows
        self.finished |= rows


def start_block(
    model,
    process: Process,
    *,
    steps_per_block: int,
    block_size: int | None = None,
    batch: int = 1,
    length: int | None = None,
    prefix: Sequence[int] | Sequence[Sequence[int]] | None = None,
    canvas: Sequence[int | None] | Sequence[Sequence[int | None]] | None = None,
    shift: bool = False,
    bos_id: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | Sequence[int] = 0,
    sampler: str | None = None,
    options: dict | None = None,
    eos_id: int | None = None,
    reveal_width: float = 1.0,
    reveal_last: bool = False,
    early_commit: float | None = None,
) -> BlockState:
    """The starting BlockState of a (batch, length) canvas of a block-diffusion model, checked
    against the model; generate_block runs it to the end, the server's batcher
    (serve/blocks.py) steps it beside other requests' states.

    model: a block-causal backbone (models.Transformer with block_size, from a checkpoint of
    objective "block"); block_size, if given, must be its own. shift/bos_id: the model's
    alignment (its diffusion.block_shift; bos_id is the tokenizer's eos_id, as in training).
    steps_per_block: reverse steps per block for the time-grid rules (adaptive rules,
    first_hitting and threshold, take what they need). sampler/options: any rule of
    sampling.registry for a masked denoiser (default ancestral). prefix: the prompt (once
    for all rows or one per row); canvas: instead, a fixed id or None per position. eos_id:
    stop a row once its text is settled (it wrote EOS; the rest becomes EOS). reveal_width:
    the model's diffusion.block_reveal_width (ordered in-block reveals; the ancestral rule
    follows them). reveal_last: the model's diffusion.block_reveal_last (each block's last
    position is revealed after its others, by every rule). early_commit: a block whose masked
    positions all have a top-1/top-2 log-probability gap above it takes their argmax at once
    (sampling/commit.py; None: off).
    """
    if getattr(model, "block_size", None) is None:
        raise RedraftError("generate_block needs a block-diffusion model (objective 'block', "
                           "block-causal attention)")
    if block_size is not None and block_size != model.block_size:
        raise RedraftError(f"block_size={block_size}: this model was trained with blocks of "
                           f"{model.block_size}")
    if process.name != "mask":
        raise RedraftError(f"block diffusion uses the mask process, got {process.name!r}")
    b = model.block_size
    seq_len = model.cfg.seq_len
    length = length or seq_len
    if not 1 <= length <= seq_len or -(-length // b) * b > seq_len:
        raise RedraftError(f"length={length}: expected 1..{seq_len // b * b} (whole blocks of "
                           f"{b} within the model's seq_len {seq_len})")
    check_knobs(temperature, top_k, top_p)
    step_rule = make_sampler(sampler, process, "mdlm", temperature, top_k, top_p, options)
    device = next(model.parameters()).device
    if canvas is not None and len(canvas) and not isinstance(canvas[0], (list, tuple)):
        canvas = [list(canvas) for _ in range(batch)]
    return BlockState(process, step_rule, steps_per_block=steps_per_block, length=length,
                      block_size=b, seeds=_seeds(seed, batch),
                      prefixes=_rows(prefix, batch) if canvas is None else None,
                      canvases=canvas, shift=shift, bos_id=bos_id, eos_id=eos_id,
                      reveal_width=reveal_width, reveal_last=reveal_last, device=device,
                      early_commit=early_commit)


@torch.no_grad()
def generate_block(model, process: Process, *, use_cache: bool = True,
                   on_step: Callable[[int, torch.Tensor], None] | None = None,
                   **knobs) -> Generation:
    """Sample a (batch, length) canvas block by block from a block-diffusion model.

    knobs: those of start_block (steps_per_block, batch, length, prefix, canvas, shift,
    bos_id, temperature, top_k, top_p, seed, sampler, options, eos_id, reveal_width,
    reveal_last, early_commit).
    use_cache False recomputes the whole canvas every call (the same logits; for testing and
    measuring).
    """
    state = start_block(model, process, **knobs)
    batch, b = len(state.x), state.block_size
    time_cond = model.time is not None
    cache = model.new_cache(batch) if use_cache else None
    nfe = row_nfe = 0
    start = time.perf_counter()
    while not state.done:
        if use_cache:
            for rows, y, positions, t in state.calls(time_cond):
                every = len(rows) == batch  # then rows is 0..B-1: read the cache as a view
                logits = model(y, t, cache=cache, positions=positions,
                               cache_rows=None if every else rows)
                state.set_window_logits(rows, logits[:, -b:])
                nfe += 1
                row_nfe += len(rows)
        else:
            rows, y, t = state.uncached_call(time_cond)
            if len(rows):
                logits = model(y, t)
                state.set_window_logits(rows, logits.gather(
                    1, state._index()[rows][..., None].expand(-1, -1, logits.shape[-1])))
                nfe += 1
                row_nfe += len(rows)
        i = state.i
        state.advance()
        if on_step is not None:
            on_step(i, state.tokens)
    return Generation(state.tokens, nfe, row_nfe, time.perf_counter() - start, state.i)
