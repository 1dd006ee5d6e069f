"""Block diffusion (objective "block"): blocks left to right over an exact KV cache, each
denoised in a few steps by any step rule of sampling.registry.

A block-diffusion request holds a BlockState (sampling/block.py): its rows decode blocks left
to right, each block denoised in a few steps over an exact KV cache of the prompt and the
finished blocks. Here every block request of a model shares ONE KV cache: each request row
owns a slot (a cache row) while it runs. Per tick, each request's state says which of its
rows need a call and what they run (`BlockState.calls`: a row's not yet cached clean blocks,
then its current window, at the positions where they belong). All of it goes into ONE network
call of shape (rows, b): every block of every call is a row of its own, at its own positions
and cache slot (the backbone's ragged cached call, `cache_rows`). That is exact: each row
writes its keys before any row reads, so a window reads the finished block that entered the
cache in the same call, and a block never attends to the blocks after it. So rows of
different requests at different blocks and steps share a call, as the AR rows do
(serve/cohort.py), and a request that has just finished a block (whose clean block enters the
cache with its next window) or a new request with a long prompt does not cost a second call.

Then the step rule runs once per GROUP of requests, not once per request: requests whose
rules are alike (same rule and knobs, same EOS handling) and either adaptive or able to take a
time per row (`row_times`, the ancestral rule) share one merged BlockState (BlockState.merge),
whatever their prompts, lengths, steps and the tick they joined at: every row keeps its own
step within its block, steps per block, length and random stream. So a tick's work after the
network is one step-rule call over all the rows of a group (a per-request loop of small
tensor ops cost as much as the network call at 16 clients). Any other rule steps each request
in a group of its own. A row's tokens are those of offline sampling (`Model.generate`) for the
same seed, whatever else is running (up to the float rounding of batched matmuls). Each
request sees its rows through a `Rows` view; a request ends when all its rows are finished:
every block decoded, or (stop_at_eos) the block in which a row wrote EOS, and then leaves
its group (BlockState.take) with a copy of its own rows.

After every step the caller looks at each request (`stepped`): its committed positions are
its finished blocks (BlockState.committed()), so a stream carries each block's text when it is
committed.

Slots are reused: a new request's rows take the slots of finished ones (their stale keys are
never read: a row's call masks every key past its own positions); the cache doubles when it
is full and is dropped with the model's last request. Lists here are replaced, never changed
in place, so the HTTP thread's stats() may read them at any time.
"""

from __future__ import annotations

import torch

from redraft.decoders.base import Decoder, Lane, Stepped
from redraft.decoders.jobs import Job, Work
from redraft.errors import RedraftError
from redraft.models.transformer import KVCache
from redraft.sampling.block import BlockState, start_block


class Rows:
    """A request's rows inside its group's merged BlockState (a slice of its rows, cut to the
    request's own length): what the engine reads of a request (done, i, committed, current,
    stop_rows, logprob_arrays). When the request leaves, it keeps a copy of its own rows."""

    def __init__(self, state: BlockState):
        self.state, self.start, self.n, self.length = state, 0, len(state.x), state.length
        self.base = self.origin = 0  # i = base + state.i - origin

    def move(self, state: BlockState, start: int) -> None:
        """The request's rows now sit at `start` of `state` (a new merged state)."""
        self.base, self.state, self.start, self.origin = self.i, state, start, state.i

    @property
    def rows(self) -> slice:
        return slice(self.start, self.start + self.n)

    @property
    def done(self) -> bool:
        return bool(self.state.finished[self.rows].all())

    @property
    def i(self) -> int:
        return self.base + self.state.i - self.origin

    @property
    def tokens(self) -> torch.Tensor:
        return self.state.x[self.rows, :self.length]

    def committed(self) -> torch.Tensor:
        return self.state.committed()[self.rows]

    def current(self) -> torch.Tensor:
        return self.tokens

    def stop_rows(self, rows: torch.Tensor) -> None:
        every = torch.zeros(len(self.state.x), dtype=torch.bool, device=self.state.x.device)
        every[self.rows] = rows.to(every.device)
        self.state.stop_rows(every)

    def logprob_arrays(self) -> None:
        return None  # block states record no log-probabilities


def _group_key(job: Job) -> tuple:
    """Requests whose rows may share one merged state: alike step rules that are adaptive or
    take a time per row (any steps, lengths, prompts, seeds); any other rule steps alone."""
    state, w = job.state, job.work
    if state.oracle is not None or not (state.adaptive
                                        or getattr(state.step_rule, "row_times", False)):
        return ("alone", id(job))
    return (state.step_rule.name, repr(sorted((w.options or {}).items())), w.temperature,
            w.top_k, w.top_p, state.eos_id, state.early_commit)


class Group:
    """The requests of one merged BlockState: its rows in request order, their cache slots
    (rows,) and the request each row belongs to (rows,)."""

    def __init__(self, key: tuple, jobs: list[Job], state: BlockState, slots: torch.Tensor):
        self.key, self.jobs, self.state, self.slots = key, jobs, state, slots
        self.owner = torch.cat([torch.full((job.n,), i, dtype=torch.long)
                                for i, job in enumerate(jobs)])
        at = 0
        for job in jobs:
            job.state.move(state, at)
            at += job.n


class BlockLane(Lane):
    """One block model's running requests and their shared KV cache. All their rows step
    every tick (each holds a cache slot)."""

    every_tick = True

    def __init__(self, decoder):
        super().__init__(decoder)
        self.served = decoder.model
        self.groups: list[Group] = []
        self.slots: dict[Job, torch.Tensor] = {}  # each request's cache rows, (n,) long
        self.free: list[int] = []
        self.cache: KVCache | None = None

    def add(self, job: Job) -> None:
        if len(self.free) < job.n:
            self._grow(job.n - len(self.free))
        take, self.free = self.free[:job.n], self.free[job.n:]
        self.slots = {**self.slots, job: torch.tensor(take, dtype=torch.long,
                                                      device=self.served.device)}
        job.committed = job.state.committed().tolist()  # the prompt's blocks: no news
        key = _group_key(job)
        own = job.state
        job.state = Rows(own)
        self.jobs = [*self.jobs, job]
        old = next((g for g in self.groups if g.key == key), None)
        if old is None:
            self.groups = [*self.groups, Group(key, [job], own, self.slots[job])]
            return
        state = BlockState.merge([old.state, own])
        state.i = old.state.i  # Rows.move keeps each request's own count
        group = Group(key, [*old.jobs, job], state, torch.cat((old.slots, self.slots[job])))
        self.groups = [group if g is old else g for g in self.groups]

    def _grow(self, more: int) -> None:
        """At least `more` new slots: double the cache (copying the running rows' keys)."""
        old = 0 if self.cache is None else self.cache.k[0].shape[0]
        size = max(2 * old, old + more)
        cache = self.served.backbone.new_cache(size)
        if self.cache is not None:
            for new, cur in zip([*cache.k, *cache.v], [*self.cache.k, *self.cache.v],
                                strict=True):
                new[:old] = cur
        self.cache = cache
        self.free = [*self.free, *range(old, size)]

    def keep(self, keep: list[Job]) -> None:
        """Drop every request not in `keep` and free its slots; a dropped request keeps a copy
        of its own rows (its final event reads them)."""
        gone = [job for job in self.jobs if job not in keep]
        if not gone:
            return
        self.free = [*self.free, *(s for job in gone for s in self.slots[job].tolist())]
        self.jobs = [job for job in self.jobs if job in keep]
        self.slots = {job: self.slots[job] for job in self.jobs}
        groups = []
        for g in self.groups:
            stay = [job for job in g.jobs if job in keep]
            if len(stay) == len(g.jobs):
                groups.append(g)
                continue
            for job in g.jobs:
                if job not in keep:
                    job.state.move(g.state.take(torch.arange(job.state.start,
                                                             job.state.start + job.n)), 0)
            if stay:
                rows = torch.cat([torch.arange(job.state.start, job.state.start + job.n)
                                  for job in stay])
                state = g.state.take(rows)
                groups.append(Group(g.key, stay, state, g.slots[rows]))
        self.groups = groups

    def clear(self) -> None:
        super().clear()
        self.groups, self.slots, self.free, self.cache = [], {}, [], None

    def tick(self, jobs: list[Job], stepped: Stepped, max_rows: int) -> list[int]:
        """One step for every request: the network calls, then one step of each group's
        merged state; stepped(job, step) after it; a request now complete leaves its group.
        Returns the rows of each network call."""
        sizes = self._call(max_rows)
        for group in self.groups:
            group.state.advance()
            for job in group.jobs:
                stepped(job, job.state.i)
        done = [job for job in self.jobs if job.state.done]
        if done:
            self.keep([job for job in self.jobs if job not in done])
        if not self.jobs:
            self.clear()  # the cache is dropped with the model's last request
        return sizes

    def _call(self, max_rows: int) -> list[int]:
        """The network call of this tick: every group's calls (BlockState.calls), cut into
        rows of one block each, in ONE call of shape (rows, b), or in calls of at most
        max_rows rows, earlier blocks first; returns the rows of each call."""
        backbone, device = self.served.backbone, self.served.device
        b, time_cond = backbone.block_size, self.served.time_conditioned
        ys, ts, positions, slots, before, windows = [], [], [], [], [], []
        at = 0
        for group in self.groups:
            for rows, y, pos, t in group.state.calls(time_cond):
                blocks = y.shape[1] // b
                # Block j of a row's call becomes a row of its own at pos + j b in the same
                # cache slot: the keys of every row are written before any row reads, and a
                # block never sees the blocks after it, so this is the long call, exactly.
                ys.append(y.view(len(rows), blocks, b).transpose(0, 1).reshape(-1, b))
                ts.append(t.view(len(rows), blocks, b).transpose(0, 1).reshape(-1, b))
                offsets = torch.arange(blocks, device=pos.device)[:, None] * b
                positions.append((pos[None, :] + offsets).reshape(-1))
                slots.append(group.slots[rows].repeat(blocks))
                # blocks before its row's window (0: the window), for the order across calls
                before.append((blocks - 1 - torch.arange(blocks))[:, None].expand(
                    -1, len(rows)).reshape(-1))
                at += len(rows) * blocks
                windows.append((group, rows, at - len(rows)))  # the last block's rows
        if not ys:
            return []
        y, t, pos, slot = (torch.cat(a) for a in (ys, ts, positions, slots))
        if len(y) <= max_rows:
            logits = backbone(y.to(device), t.to(device), cache=self.cache,
                              positions=pos.to(device), cache_rows=slot)
            sizes = [len(y)]
        else:
            # Split: a row's earlier blocks must reach the cache before its window reads
            # them, so the calls go farthest-from-the-window first.
            order = torch.sort(torch.cat(before), descending=True, stable=True).indices
            logits = torch.empty((len(y), b, backbone.vocab_size), device=device)
            sizes = []
            for part in order.split(max_rows):
                logits[part.to(device)] = backbone(
                    y[part].to(device), t[part].to(device), cache=self.cache,
                    positions=pos[part].to(device), cache_rows=slot[part.to(slot.device)]
                ).to(logits.dtype)
                sizes.append(len(part))
        for group, rows, start in windows:
            group.state.set_window_logits(rows, logits[start:start + len(rows)])
            if len(group.jobs) == 1:
                group.jobs[0].row_nfe += len(rows)
                continue
            counts = torch.bincount(group.owner[rows.cpu()], minlength=len(group.jobs))
            for job, n in zip(group.jobs, counts.tolist(), strict=True):
                job.row_nfe += n
        return sizes


class BlockDecoder(Decoder):
    """A block-diffusion model: its own blocks, `steps` split evenly over the canvas's blocks
    (at least one a block), its training alignment and in-block reveal order."""

    name = "block"
    lane_class = BlockLane

    def rule(self, name, temperature=1.0, top_k=None, top_p=None, options=None):
        from redraft.sampling.registry import make_sampler

        return make_sampler(name, self.model.process, "mdlm", temperature, top_k, top_p,
                            options)

    def start(self, work: Work, **extra) -> BlockState:
        m, r = self.model, work.request
        b = m.backbone.block_size
        if r.block_size is not None and r.block_size != b:
            raise RedraftError(f"block_size={r.block_size}: this block-diffusion model decodes "
                               f"blocks of {b} (its training block size)")
        if r.guidance:
            raise RedraftError("guidance is not available for block-diffusion models yet")
        if r.logprobs is not None:
            raise RedraftError(f"logprobs: {m.name!r} is a block-diffusion model, which does "
                               "not record log-probabilities yet")
        self.check_fit(work)
        canvas = work.canvas
        if canvas is None and work.suffix:
            canvas = (work.prefix + [None] * (work.length - len(work.prefix) - len(work.suffix))
                      + work.suffix)
        if canvas is None and len(work.prefix) >= work.length:
            raise RedraftError(f"a prompt of {len(work.prefix)} tokens in a canvas of "
                               f"{work.length} leaves nothing to generate")
        if canvas is not None and all(tok is not None for tok in canvas):
            raise RedraftError(f"a prompt of {len(work.prefix) + len(work.suffix)} tokens in a "
                               f"canvas of {work.length} leaves nothing to generate")
        d = m.diffusion_config()
        n_blocks = -(-work.length // b)
        return start_block(
            m.backbone, m.process, steps_per_block=max(1, -(-self.steps(r) // n_blocks)),
            batch=work.n, length=work.length, prefix=None if canvas is not None else work.prefix,
            canvas=canvas, shift=d.block_shift, bos_id=m.tokenizer.eos_id,
            temperature=r.temperature, top_k=r.top_k, top_p=r.top_p, seed=work.seeds,
            sampler=r.sampler, options=r.options,
            eos_id=m.tokenizer.eos_id if r.stop_at_eos else None,
            reveal_width=d.block_reveal_width, reveal_last=d.block_reveal_last,
            early_commit=r.early_commit)
