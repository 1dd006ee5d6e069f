"""The AR twin (and any causal redraft backbone): left to right over a KV cache.

Its lane puts every running row of a model in one network call per tick, whatever its position:
the cache holds each row at its own length and the backbone's ragged decode path
(Transformer.forward with `positions`) writes each row's new key/value at its own position and
masks the slots past it. New requests are prefilled together by prompt length, then merged into
the model's running cohort (their caches appended as rows); a finished or cancelled request's
rows, and a row that stopped on its own (EOS, a stop string), are cut out.

Each tick is two halves, so the engine can look at the drawn tokens in between (stream them,
find stop strings) before any computation is spent on a row that has stopped: `draw` one token
for every row (requests with the same knobs in one batched draw, each row from its own random
stream), then `forward` one single-token network call for the rows still running.
"""

from __future__ import annotations

import copy

import torch

from redraft.decoders.base import Decoder, PrefillLane, Stepped
from redraft.decoders.jobs import Job, Work
from redraft.errors import RedraftError
from redraft.models.transformer import KVCache
from redraft.sampling.categorical import check_knobs, draw_tokens
from redraft.sampling.state import ARState


def _take(cache: KVCache, rows: torch.Tensor) -> KVCache:
    out = copy.copy(cache)
    out.k = [k[rows] for k in cache.k]
    out.v = [v[rows] for v in cache.v]
    return out


class Cohort:
    def __init__(self, served, jobs: list[Job], cache: KVCache, logits: torch.Tensor,
                 positions: torch.Tensor, owners: list[tuple[Job, int]]):
        self.served, self.jobs, self.cache = served, jobs, cache
        self.logits = logits  # (R, V): the next position's logits of every row
        self.positions = positions  # (R,) long: where each row's next token is written
        self.owners = owners  # (job, row of that job) of each cohort row, job by job

    @property
    def rows(self) -> int:
        return len(self.logits)

    @classmethod
    def prefill(cls, served, jobs: list[Job]) -> Cohort:
        """Requests with prompts of one length: one network call over [bos, prompt]."""
        x = torch.cat([job.state.tokens for job in jobs])  # (R, 1 + prompt)
        device = served.device
        cache = served.backbone.new_cache(len(x))
        logits = served.backbone(x.to(device), cache=cache)  # (R, 1 + prompt, V)
        start = 0
        for job in jobs:
            job.row_nfe += job.n
            job.state.prompt_logprobs(logits[start:start + job.n])
            start += job.n
        positions = torch.full((len(x),), x.shape[1], dtype=torch.long, device=device)
        owners = [(job, r) for job in jobs for r in range(job.n)]
        return cls(served, jobs, cache, logits[:, -1], positions, owners)

    @classmethod
    def merge(cls, cohorts: list[Cohort]) -> Cohort:
        """One cohort of all the rows (every cache spans the model's whole context)."""
        first = cohorts[0]
        cache = copy.copy(first.cache)
        cache.k = [torch.cat([c.cache.k[i] for c in cohorts]) for i in range(len(first.cache.k))]
        cache.v = [torch.cat([c.cache.v[i] for c in cohorts]) for i in range(len(first.cache.v))]
        return cls(first.served, [j for c in cohorts for j in c.jobs], cache,
                   torch.cat([c.logits for c in cohorts]),
                   torch.cat([c.positions for c in cohorts]),
                   [o for c in cohorts for o in c.owners])

    def keep(self, keep: list[Job]) -> None:
        """Cut out every row that is not a live row of a request in `keep`."""
        wanted = set(map(id, keep))
        if all(id(job) in wanted and job.state.all_live for job in self.jobs):
            return  # nothing to cut (read without touching a tensor)
        live = {id(job): job.state.live.tolist() for job in self.jobs if id(job) in wanted}
        index = [i for i, (job, r) in enumerate(self.owners)
                 if id(job) in live and live[id(job)][r]]
        self.jobs = [job for job in self.jobs if id(job) in live and any(live[id(job)])]
        if len(index) == len(self.owners):
            return
        self.owners = [self.owners[i] for i in index]
        index_t = torch.tensor(index, dtype=torch.long, device=self.logits.device)
        self.cache, self.logits = _take(self.cache, index_t), self.logits[index_t]
        self.positions = self.positions[index_t]

    def _runs(self) -> list[tuple[Job, int, int]]:
        """(job, first cohort row, end) for each request."""
        runs, start = [], 0
        for job in self.jobs:
            end = start
            while end < len(self.owners) and self.owners[end][0] is job:
                end += 1
            runs.append((job, start, end))
            start = end
        return runs

    def draw(self) -> None:
        """One token for every row: requests that share their knobs are drawn in one batched
        call; each row consumes one uniform of its own stream, whether or not it still runs."""
        groups: dict[tuple, list[tuple[Job, int, int, torch.Tensor]]] = {}
        for job, a, b in self._runs():
            w, st = job.work, job.state
            u = st.rng.uniform(1)[:, 0]
            u = u if st.all_live else u[st.live]  # (b - a,): the live rows, in order
            key = (w.temperature, w.top_k, w.top_p, tuple(st.banned))
            groups.setdefault(key, []).append((job, a, b, u))
        drawn = self._constrained()
        for (temperature, top_k, top_p, banned), members in groups.items():
            if len(groups) == 1:  # every row, in order
                logits, masked = self.logits, drawn
            else:
                index = torch.cat([torch.arange(a, b) for _, a, b, _ in members])
                logits = self.logits[index.to(self.logits.device)]
                masked = logits if drawn is self.logits else drawn[index.to(drawn.device)]
            tokens = draw_tokens(masked, torch.cat([u for *_, u in members]), temperature,
                                 top_k, top_p, banned).cpu()
            start = 0
            for job, a, b, _ in members:
                rows = slice(start, start + b - a)
                job.state.append(tokens[rows], logits[rows])
                start += b - a

    def _constrained(self) -> torch.Tensor:
        """The logits to draw from: the rows of structured-output requests with the tokens
        their constraint forbids at -inf (logprobs still read the model's own)."""
        runs = [(job, a, b) for job, a, b in self._runs() if job.state.guard is not None]
        if not runs:
            return self.logits
        out = self.logits.clone()
        for job, a, b in runs:
            st = job.state
            out[a:b] = st.guard.mask(out[a:b], None if st.all_live else st.live)
        return out

    def forward(self) -> int:
        """The network call for the rows still running (the engine may have stopped some
        since `draw`); returns its number of rows."""
        self.keep([job for job in self.jobs if not job.state.done])
        if not self.jobs:
            return 0
        last = torch.cat([job.state.tokens[:, -1] if job.state.all_live
                          else job.state.tokens[job.state.live, -1] for job in self.jobs])
        self.logits = self.served.backbone(last[:, None].to(self.logits.device),
                                           cache=self.cache, positions=self.positions)[:, -1]
        self.positions = self.positions + 1
        for job in self.jobs:
            job.row_nfe += job.n if job.state.all_live else int(job.state.live.sum())
        return len(last)


class ARLane(PrefillLane):
    """New requests are prefilled together by prompt length, then merged into the model's one
    running cohort; per tick: draw a token for every row, let the caller look (stop strings,
    streaming), then one network call for the rows still running."""

    every_tick = True
    cohort_class = Cohort

    def __init__(self, decoder):
        super().__init__(decoder)
        self.cohorts: list[Cohort] = []  # here: at most one, all the running rows

    @property
    def cohort(self) -> Cohort | None:
        return self.cohorts[0] if self.cohorts else None

    def keep(self, keep: list[Job]) -> None:
        super().keep(keep)
        for c in self.cohorts:
            c.keep(self.jobs)
        self.cohorts = [c for c in self.cohorts if c.jobs]

    def _prefill(self) -> list[int]:
        """The new requests' prompts, one call per prompt length, each a new cohort."""
        groups: dict[int, list[Job]] = {}
        for job in self.fresh:
            groups.setdefault(len(job.work.prefix), []).append(job)
        self.fresh = []
        new = [self.cohort_class.prefill(self.decoder.model, group) for group in groups.values()]
        self.cohorts = [*self.cohorts, *new]
        return [c.rows for c in new]

    def _step(self, cohort: Cohort, stepped: Stepped) -> int:
        """Draw, let the caller look at every job, then the network call."""
        cohort.draw()
        for job in cohort.jobs:
            stepped(job, job.state.i)
        return cohort.forward()

    def tick(self, jobs: list[Job], stepped: Stepped, max_rows: int) -> list[int]:
        sizes = self._prefill()
        if len(self.cohorts) > 1:  # every row of the model in one cohort: one call a tick
            self.cohorts = [Cohort.merge(self.cohorts)]
        sizes += [self._step(c, stepped) for c in self.cohorts]
        self.cohorts = [c for c in self.cohorts if c.jobs]
        return sizes


class ARDecoder(Decoder):
    """A causal redraft backbone: exact, one token per call, the KV cache's ragged rows."""

    name = "ar"
    lane_class = ARLane
    uses_steps = False
    infills = False
    modes = ("ar",)

    def samplers(self) -> list[str]:
        return []

    def check_infill(self) -> None:
        raise RedraftError(f"infill needs a diffusion model: {self.model.name!r} is the AR "
                           "twin, which only continues a prefix, left to right")

    def start(self, work: Work, **extra) -> ARState:
        m, r = self.model, work.request
        check_knobs(r.temperature, r.top_k, r.top_p)
        self.check_fit(work)
        self.left_to_right(work)
        if len(work.prefix) >= work.length:
            raise RedraftError("the prompt leaves nothing to generate")
        state = ARState(m.tokenizer.eos_id, work.prefix, work.seeds, work.length,
                        m.tokenizer.non_text_ids, pad_id=m.tokenizer.mask_id,
                        eos_id=m.tokenizer.eos_id if r.stop_at_eos else None,
                        logprobs=r.logprobs)
        if r.constraint is not None:
            from redraft.constraints import ARGuard, compile_constraint

            state.guard = ARGuard(compile_constraint(r.constraint, m.tokenizer), work.n,
                                  work.length - len(work.prefix))
        return state

    def left_to_right(self, work: Work) -> None:
        """Diffusion-only knobs are errors: the AR twin continues a prefix, left to right."""
        r = work.request
        used = [name for name, value in (("suffix", work.suffix), ("infill", work.canvas),
                                         ("sampler", r.sampler), ("options", r.options),
                                         ("block_size", r.block_size),
                                         ("guidance", r.guidance),
                                         ("early_commit", r.early_commit is not None))
                if value]
        if used:
            raise RedraftError(f"{used[0]} needs a diffusion model: {self.model.name!r} is "
                               "the autoregressive twin, which only continues a prefix, left "
                               "to right")
