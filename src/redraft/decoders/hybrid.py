"""A hybrid (objective "hybrid"): one causal backbone, decoded the way each request asks.

    mode         what one network call does
    ar           the clean stream alone: the AR twin's lane (decoders/ar.py) over the same
                 weights, one exact token a call
    speculative  verifies the previous call's drafts with the AR head and drafts the next
                 block by diffusion in the same pass (TiDAR); drafts are accepted by
                 speculative sampling (sampling/speculative.py), so a row's text has the AR
                 mode's law at any temperature / top-k / top-p, and a call commits between 1
                 and block tokens
    block        block diffusion: blocks left to right, each denoised in `steps` by any
                 masked step rule, over the clean stream's exact cache: the block model's
                 lane (decoders/block.py) through HybridBlocks, which makes the hybrid look
                 like a block-causal backbone

A speculative call over a row whose cache holds positions < c (position p holds token p - 1,
after bos) carries, beside the clean tokens [x_{c-1}, d_1 .. d_m] (the last committed token
and the drafts to verify: their logits are p_0 .. p_m), draft blocks of `block` masks: the
block that would follow a acceptances starts at position c + a and sees the clean keys up to
it. Layout "all" (TiDAR) carries a block for every possible a (m + 1 blocks); layout "last"
only the block after all m (one block: a cheaper call, and no drafts for the next call when a
draft is rejected). The next drafts are the block's positions 1.. (its position 0 is the
token the AR head draws). Every row consumes 2 x block - 1 uniforms of its own stream a call,
so a row's text does not depend on the batch.
"""

from __future__ import annotations

import copy

import torch

from redraft.decoders.ar import ARDecoder, ARLane, _take
from redraft.decoders.base import Decoder, Lane, ModeLanes, PrefillLane, Stepped
from redraft.decoders.block import BlockLane
from redraft.decoders.jobs import Job, Work
from redraft.errors import RedraftError
from redraft.models.transformer import KVCache
from redraft.sampling.block import start_block
from redraft.sampling.categorical import RowRandom, check_knobs, probabilities, sample
from redraft.sampling.speculative import accept
from redraft.sampling.state import ARState

MODES = ("speculative", "ar", "block")
LAYOUTS = ("all", "last")


class SpecState:
    """The rows of one speculative request: y (n, 1 + length) = [bos, prompt, generated,
    placeholders], each row's fill, cached positions and pending drafts (with the drafter's
    distributions, which the verification needs)."""

    def __init__(self, bos_id: int, prefix, seeds, length: int, block: int, *, banned=(),
                 pad_id: int, eos_id: int | None, layout: str, vocab: int):
        n, P = len(seeds), len(prefix)
        self.y = torch.full((n, length + 1), pad_id, dtype=torch.long)
        self.y[:, 0] = bos_id
        self.y[:, 1:1 + P] = torch.tensor(prefix, dtype=torch.long)
        self.filled = [1 + P] * n  # valid entries of y per row
        self.cached = [0] * n  # key positions < cached hold y
        self.drafts = torch.zeros((n, block - 1), dtype=torch.long)
        self.q = torch.zeros((n, block - 1, vocab), dtype=torch.float64)
        self.n_drafts = [0] * n
        self.live = torch.ones(n, dtype=torch.bool)
        self.rng = RowRandom(list(seeds))
        self.length, self.prompt, self.block = length, P, block
        self.banned, self.pad_id, self.eos_id, self.layout = list(banned), pad_id, eos_id, layout
        self.guard = None  # a constraints.ARGuard: a structured-output request's rows
        self.calls = 0  # network calls made for these rows (a step each)
        self.accepted = 0  # drafts accepted, over all rows and calls

    @property
    def n(self) -> int:
        return len(self.filled)

    @property
    def done(self) -> bool:
        return not bool(self.live.any())

    @property
    def i(self) -> int:
        return self.calls

    def committed(self) -> torch.Tensor:
        return torch.tensor(self.filled, dtype=torch.long) - 1

    def current(self) -> torch.Tensor:
        return self.y[:, 1:].clone()

    def stop_rows(self, rows: torch.Tensor) -> None:
        self.live &= ~rows.cpu()

    def logprob_arrays(self):
        return None

    def commit(self, r: int, tokens: list[int], accepted: int, drafts: torch.Tensor | None,
               q: torch.Tensor | None, drafted: bool) -> None:
        """Row r's call: `tokens` committed (its accepted drafts and the drawn token), the
        next drafts (b - 1,) with their distributions when the call drafted them."""
        keys = self.filled[r] + accepted  # positions <= filled - 1 + accepted hold y now
        room = self.length - (self.filled[r] - 1)
        tokens = tokens[:room]
        if self.eos_id is not None and self.eos_id in tokens:
            tokens = tokens[:tokens.index(self.eos_id) + 1]
            self.live[r] = False
        f = self.filled[r]
        self.y[r, f:f + len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        if self.guard is not None:  # the automaton follows the committed tokens
            self.guard.follow(r, tokens)
        self.filled[r] = f + len(tokens)
        self.cached[r] = keys
        self.accepted += accepted
        left = self.length - (self.filled[r] - 1)
        if left <= 0:
            self.live[r] = False
        m = max(0, min(self.block - 1, left - 1)) if drafted else 0
        self.n_drafts[r] = m
        if m:
            self.drafts[r], self.q[r] = drafts, q


def _row_slices(lane_rows: list[tuple[Job, int]]):
    """(job, [lane rows], [job rows]) per job, in lane order."""
    out: dict[int, tuple[Job, list[int], list[int]]] = {}
    for i, (job, r) in enumerate(lane_rows):
        out.setdefault(id(job), (job, [], []))
        out[id(job)][1].append(i)
        out[id(job)][2].append(r)
    return list(out.values())


def _probs(logits: torch.Tensor, work: Work, banned: list[int]) -> torch.Tensor:
    """float64 probabilities (..., V) on the CPU under the request's temperature / top-k /
    top-p, banned ids (mask, pad) at 0: the same transform for the verifier and the drafter."""
    logits = logits.double()
    if banned:
        logits = logits.clone()
        logits[..., banned] = -torch.inf
    shape = logits.shape
    out = probabilities(logits.reshape(-1, shape[-1]), work.temperature, work.top_k,
                        work.top_p)
    return out.view(shape).cpu()


def _guarded(logits: torch.Tensor, st: SpecState, rows: list[int],
             n_drafts: list[int]) -> torch.Tensor:
    """A structured-output request's verifier logits (n, b, V): p_i (after the prefix and
    d_1..d_i) keeps only the tokens the constraint allows in the automaton's state after
    d_1..d_i, as the AR mode masks its draws, so the accepted text has the constrained AR
    law. A draft the constraint forbids has p = 0 there and is rejected; the positions past
    it are never read."""
    guard = st.guard
    if guard is None:
        return logits
    c, out = guard.c, torch.full_like(logits, -torch.inf)
    v = c.vocab
    for k, r in enumerate(rows):
        q, left = guard.q[r], guard.left[r]
        for i in range(logits.shape[1]):
            if q < 0 or left - i < 1:
                out[k, i:] = logits[k, i:]  # past a forbidden draft or the end: never read
                break
            allowed = c.ar_allowed(q, left - i).to(logits.device)
            out[k, i, :v] = logits[k, i, :v].masked_fill(~allowed, -torch.inf)
            if i < n_drafts[k]:
                d = int(st.drafts[r, i])
                q = int(c.T[q, d]) if d < v else -1
    return out


def speculative_call(model, rows: list[tuple[Job, int]], cache: KVCache,
                     cache_rows: torch.Tensor | None = None) -> None:
    """One verify-and-draft call over the given rows, all of one layout (row i of the call
    is cache row cache_rows[i], default i)."""
    backbone, tok = model.backbone, model.tokenizer
    b = backbone.draft_block
    device = backbone.device
    R = len(rows)
    states = [job.state for job, _ in rows]
    fresh = [st.filled[r] - st.cached[r] for st, (_, r) in zip(states, rows, strict=True)]
    nd = [st.n_drafts[r] for st, (_, r) in zip(states, rows, strict=True)]
    W = max(fresh) + b - 1
    x = torch.full((R, W), tok.mask_id, dtype=torch.long)
    for i, (st, (_, r)) in enumerate(zip(states, rows, strict=True)):
        x[i, :fresh[i]] = st.y[r, st.cached[r]:st.filled[r]]
        x[i, fresh[i]:fresh[i] + nd[i]] = st.drafts[r, :nd[i]]
    positions = torch.tensor([st.cached[r] for st, (_, r) in zip(states, rows, strict=True)])
    last = torch.tensor(fresh) - 1  # (R,) index in x of the last committed token
    layout = states[0].layout
    offsets = torch.arange(b)[None, :].expand(R, b) if layout == "all" else \
        torch.tensor(nd)[:, None]  # (R, blocks): acceptance counts that get a block
    starts = positions[:, None] + last[:, None] + offsets  # (R, blocks) block positions
    draft_start = starts.repeat_interleave(b, dim=1)
    draft_pos = draft_start + torch.arange(b).repeat(starts.shape[1])[None, :]
    drafts = torch.full(draft_pos.shape, tok.mask_id, dtype=torch.long)
    clean, drafted = backbone(x.to(device), cache=cache, positions=positions.to(device),
                              drafts=drafts.to(device), draft_pos=draft_pos.to(device),
                              draft_start=draft_start.to(device),
                              cache_rows=None if cache_rows is None else cache_rows.to(device))
    verify = last[:, None] + torch.arange(b)[None, :]  # (R, b) logits p_0 .. p_{b-1}
    p_logits = clean.gather(1, verify.to(device)[..., None].expand(R, b, clean.shape[-1]))
    drafted = drafted.view(R, starts.shape[1], b, -1)
    # Requests with the same knobs are verified in one batched draw (a structured-output
    # request alone: its masks are its own); each row keeps its own stream.
    groups: dict[tuple, list] = {}
    for job, lane_rows, job_rows in _row_slices(rows):
        w, st = job.work, job.state
        key = (w.temperature, w.top_k, w.top_p, tuple(st.banned),
               id(job) if st.guard is not None else None)
        groups.setdefault(key, []).append((job, lane_rows, job_rows))
    for members in groups.values():
        w, st0 = members[0][0].work, members[0][0].state
        i = torch.tensor([k for _, lane_rows, _ in members for k in lane_rows]).to(device)
        logits = p_logits[i]
        if st0.guard is not None:
            job, lane_rows, job_rows = members[0]
            logits = _guarded(logits, st0, job_rows, [nd[k] for k in lane_rows])
        p = _probs(logits, w, st0.banned)  # (n, b, V)
        # every row of a job draws, live or not (a row's stream never depends on the batch)
        u = torch.cat([job.state.rng.uniform(2 * b - 1)[torch.tensor(jr)]
                       for job, _, jr in members])
        n_d = torch.tensor([nd[k] for _, lane_rows, _ in members for k in lane_rows])
        q_prev = torch.cat([job.state.q[torch.tensor(jr)] for job, _, jr in members])
        d_prev = torch.cat([job.state.drafts[torch.tensor(jr)] for job, _, jr in members])
        accepted, tokens = accept(p, q_prev, d_prev, n_d, u[:, :b - 1], u[:, b - 1])
        # the block after the accepted drafts, if the call carried it
        has = (accepted == n_d) if layout == "last" else torch.ones(len(i), dtype=torch.bool)
        blk = accepted if layout == "all" else torch.zeros_like(accepted)
        q = _probs(drafted[i, blk.to(device), 1:], w, st0.banned)  # (n, b - 1, V)
        nxt = torch.stack([sample(q[:, j], u[:, b + j]) for j in range(b - 1)], dim=1)
        at = 0
        for job, _, job_rows in members:
            for r in job_rows:
                a = int(accepted[at])
                job.state.commit(r, tokens[at, :a + 1].tolist(), a, nxt[at], q[at],
                                 bool(has[at]))
                at += 1
            job.row_nfe += len(job_rows)
    for st in {id(s): s for s in states}.values():
        st.calls += 1


class SpecLane(PrefillLane):
    """Every running speculative row of a model in one call per tick and layout (new
    requests' first calls, their prompts' prefill, are their own: one per layout and prompt
    length); rows accept different numbers of tokens and keep their own cache lengths."""

    every_tick = True

    def __init__(self, decoder):
        super().__init__(decoder)
        self.cache: KVCache | None = None
        self.slots: list[tuple[Job, int]] = []  # (job, its row) of each cache row

    def keep(self, keep: list[Job]) -> None:
        super().keep(keep)
        wanted = set(map(id, self.jobs))
        index = [i for i, (job, r) in enumerate(self.slots)
                 if id(job) in wanted and bool(job.state.live[r])]
        if len(index) != len(self.slots):
            self.slots = [self.slots[i] for i in index]
            self.cache = _take(self.cache, torch.tensor(index, dtype=torch.long,
                                                        device=self.cache.k[0].device)) \
                if index else None

    def tick(self, jobs: list[Job], stepped: Stepped, max_rows: int) -> list[int]:
        sizes = []
        model = self.decoder.model
        running = [job for job in jobs if job not in self.fresh]
        self.keep(self.jobs)  # rows that stopped since the last tick leave the cache
        for layout in LAYOUTS:  # one call per layout (they carry different blocks)
            index = [i for i, (job, _) in enumerate(self.slots) if job.state.layout == layout]
            if index:
                every = len(index) == len(self.slots)
                speculative_call(model, [self.slots[i] for i in index], self.cache,
                                 None if every else torch.tensor(index, dtype=torch.long))
                sizes.append(len(index))
        # New requests' first calls (their prompts' prefill): one call per layout and prompt
        # length, as the AR lane's prefill groups them, so requests arriving together share it.
        groups: dict[tuple[str, int], list[Job]] = {}
        for job in [j for j in self.fresh if j in jobs]:
            groups.setdefault((job.state.layout, len(job.work.prefix)), []).append(job)
        for group in groups.values():
            rows = [(job, r) for job in group for r in range(job.n)]
            cache = model.backbone.new_cache(len(rows))
            speculative_call(model, rows, cache)
            sizes.append(len(rows))
            self.slots = [*self.slots, *rows]
            self.cache = cache if self.cache is None else _cat(self.cache, cache)
            running += group
        self.fresh = [j for j in self.fresh if j not in jobs]
        for job in running:
            stepped(job, job.state.i)
        return sizes


def _cat(a: KVCache, b: KVCache) -> KVCache:
    out = copy.copy(a)
    out.k = [torch.cat((x, y)) for x, y in zip(a.k, b.k, strict=True)]
    out.v = [torch.cat((x, y)) for x, y in zip(a.v, b.v, strict=True)]
    return out


class HybridBlocks(torch.nn.Module):
    """A hybrid seen as a block-causal backbone of blocks of its draft size, for the block
    model's sampler and lane ("same" alignment: the output at position p predicts token p).

    A call's row is one block of tokens at positions p..p+b-1: a clean block of the canvas
    on its way to the cache, or a window being denoised; the two cannot be told apart here,
    so each row runs both ways: its tokens as the clean stream at p+1..p+b (position q holds
    token q - 1: these keys are what the next block reads) and as a draft block at p..p+b-1
    seeing the keys <= p (its logits are returned). A window's clean writes land past its own
    start, which no window reads before the finished block overwrites them. Every cache row
    starts with bos's keys at position 0 (they depend on nothing else)."""

    def __init__(self, hybrid, bos_id: int):
        super().__init__()
        self.hybrid, self.bos_id = hybrid, bos_id
        self.block_size = hybrid.draft_block
        self.cfg, self.vocab_size, self.causal = hybrid.cfg, hybrid.vocab_size, False
        self.time_conditioned = False

    @property
    def seq_len(self) -> int:
        return self.hybrid.seq_len

    @property
    def device(self) -> torch.device:
        return self.hybrid.device

    def new_cache(self, batch: int) -> KVCache:
        cache = self.hybrid.new_cache(batch)
        one = self.hybrid.new_cache(1)
        self.hybrid(torch.full((1, 1), self.bos_id, device=self.device), cache=one)
        for dst, src in zip([*cache.k, *cache.v], [*one.k, *one.v], strict=True):
            dst[:, :, :1] = src[:, :, :1]
        return cache

    def forward(self, y, t=None, cache=None, positions=None, cache_rows=None):
        if cache is None or positions is None:
            raise ValueError("HybridBlocks runs over a cache, one position per row")
        b = self.block_size
        _, drafted = self.hybrid(y, cache=cache, positions=positions + 1, cache_rows=cache_rows,
                                 drafts=y, draft_pos=positions[:, None] + torch.arange(
                                     b, device=y.device), draft_start=positions[:, None].expand(
                                     -1, b))
        return drafted


class _BlockServed:
    """What the block lane reads of its model, with the hybrid behind HybridBlocks."""

    def __init__(self, model):
        self.backbone = HybridBlocks(model.backbone, model.tokenizer.eos_id)
        self.device, self.time_conditioned = model.device, False


class HybridLane(ModeLanes):
    """The AR-mode rows in the AR twin's lane, the speculative rows in theirs, the block
    rows in the block model's."""

    def __init__(self, decoder):
        self.ar, self.spec, self.block = ARLane(decoder), SpecLane(decoder), BlockLane(decoder)
        self.block.served = decoder.blocks
        super().__init__(decoder, (self.ar, self.spec, self.block))

    def lane_of(self, job: Job) -> Lane:
        if isinstance(job.state, SpecState):
            return self.spec
        return self.ar if isinstance(job.state, ARState) else self.block


class HybridDecoder(Decoder):
    """A hybrid checkpoint: `mode` per request (speculative by default, ar or block)."""

    name = "hybrid"
    lane_class = HybridLane
    uses_steps = False
    infills = False
    modes = MODES

    def __init__(self, model):
        super().__init__(model)
        self.blocks = _BlockServed(model)  # block mode's view of the model

    def default_sampler(self) -> str | None:
        return "ancestral"  # block mode's (the other modes take no step rule)

    def work_units(self, n: int, steps: int, length: int, mode: str | None = None) -> int:
        """At most: speculative, a call per token (every draft rejected) of b + b^2 positions
        (layout all); block, per block steps_per_block + 1 calls of 2b positions (the clean
        and the draft stream); ar, the AR twin's n x length."""
        b, mode = self.model.backbone.draft_block, mode or MODES[0]
        if mode == "speculative":
            return n * length * (b + b * b)
        if mode == "block":
            blocks = -(-length // b)
            return n * blocks * (max(1, -(-steps // blocks)) + 1) * 2 * b
        return n * length

    def work_formula(self, n: int, steps: int, length: int, mode: str | None = None) -> str:
        b, mode = self.model.backbone.draft_block, mode or MODES[0]
        if mode == "speculative":
            return f"n x length x (b + b^2) = {n} x {length} x {b + b * b}"
        if mode == "block":
            blocks = -(-length // b)
            return (f"n x blocks x (steps per block + 1) x 2b = {n} x {blocks} x "
                    f"{max(1, -(-steps // blocks)) + 1} x {2 * b}")
        return f"n x length = {n} x {length}"

    def rule(self, name, temperature=1.0, top_k=None, top_p=None, options=None):
        from redraft.sampling.registry import make_sampler

        return make_sampler(name, self.mask_process(), "mdlm", temperature, top_k, top_p,
                            options)

    def mask_process(self):
        from redraft.losses import process_of

        m = self.model
        return process_of(m.diffusion_config(), m.tokenizer.mask_id, m.backbone.vocab_size)

    def check_infill(self) -> None:
        raise RedraftError(f"infill is not supported by the hybrid {self.model.name!r}: its "
                           "modes continue a prefix, left to right")

    def start(self, work: Work, **extra):
        r = work.request
        mode = r.mode or MODES[0]
        if mode not in MODES:
            raise RedraftError(f"mode={mode!r}: the hybrid {self.model.name!r} decodes in "
                               f"modes {list(MODES)}")
        if mode != "block" and (r.sampler or r.block_size):
            raise RedraftError(f"{'sampler' if r.sampler else 'block_size'} is for mode "
                               f"'block'; mode {mode!r} decodes left to right")
        if mode == "block":
            return self._start_block(work)
        if mode == "ar":
            return ARDecoder(self.model).start(work.__class__(
                work.model, work.prefix, work.length, work.seeds, work.suffix,
                canvas=work.canvas, request=r.replace(options=None)))
        check_knobs(r.temperature, r.top_k, r.top_p)
        self.check_fit(work)
        ARDecoder(self.model).left_to_right(work.__class__(
            work.model, work.prefix, work.length, work.seeds, work.suffix, canvas=work.canvas,
            request=r.replace(options=None)))
        options = dict(r.options or {})
        layout = options.pop("layout", "all")
        if options or layout not in LAYOUTS:
            bad = f"layout={layout!r}" if layout not in LAYOUTS else repr(sorted(options)[0])
            raise RedraftError(f"speculative mode takes options layout ('all' or 'last'); "
                               f"got {bad}")
        if r.logprobs is not None:
            raise RedraftError("logprobs: speculative mode does not record them; use mode 'ar' "
                               "(the same law, one token a call)")
        if len(work.prefix) >= work.length:
            raise RedraftError("the prompt leaves nothing to generate")
        m, tok = self.model, self.model.tokenizer
        state = SpecState(tok.eos_id, work.prefix, work.seeds, work.length,
                          m.backbone.draft_block, banned=tok.non_text_ids, pad_id=tok.mask_id,
                          eos_id=tok.eos_id if r.stop_at_eos else None, layout=layout,
                          vocab=m.backbone.vocab_size)
        if r.constraint is not None:
            from redraft.constraints import ARGuard, compile_constraint

            state.guard = ARGuard(compile_constraint(r.constraint, tok), work.n,
                                  work.length - len(work.prefix))
        return state

    def _start_block(self, work: Work):
        m, r = self.model, work.request
        b = m.backbone.draft_block
        if r.block_size is not None and r.block_size != b:
            raise RedraftError(f"block_size={r.block_size}: this hybrid drafts blocks of {b}")
        if r.guidance or r.logprobs is not None:
            raise RedraftError(f"{'guidance' if r.guidance else 'logprobs'} is not available "
                               "in a hybrid's block mode")
        self.check_fit(work)
        if len(work.prefix) >= work.length:
            raise RedraftError("the prompt leaves nothing to generate")
        n_blocks = -(-work.length // b)
        state = start_block(
            self.blocks.backbone, self.mask_process(),
            steps_per_block=max(1, -(-self.steps(r) // n_blocks)), batch=work.n,
            length=work.length, prefix=work.prefix, temperature=r.temperature, top_k=r.top_k,
            top_p=r.top_p, seed=work.seeds, sampler=r.sampler, options=r.options,
            eos_id=m.tokenizer.eos_id if r.stop_at_eos else None)
        if r.constraint is not None:
            from redraft.decoders.canvas import canvas_guard

            state.guard = canvas_guard(work, state, m)
        return state
