"""AR requests in lockstep: the AR twin's side of the step-level batcher.

The KV cache has one write position for the whole batch, so AR rows can share one network call
only when they sit at the same position. A cohort is such a group with one shared cache: new
requests are prefilled together by prompt length, and cohorts that reach the same position are
merged (one copy of their caches, then lockstep for good, since every row moves one token per
tick). A finished or cancelled request's rows are cut out of the cache. Each tick: draw one
token for every row (each request with its own knobs and random streams), then one
single-token network call for the rows still running.
"""

from __future__ import annotations

import copy

import torch

from redraft.models.transformer import KVCache
from redraft.sampling.state import next_tokens
from redraft.serve.jobs import Job, Served


def _take(cache: KVCache, rows: torch.Tensor) -> KVCache:
    out = copy.copy(cache)
    out.k = [k[rows] for k in cache.k]
    out.v = [v[rows] for v in cache.v]
    return out


class Cohort:
    def __init__(self, served: Served, jobs: list[Job], cache: KVCache, logits: torch.Tensor):
        self.served, self.jobs, self.cache = served, jobs, cache
        self.logits = logits  # (R, V): the next position's logits of every row

    @property
    def position(self) -> int:
        return self.cache.length

    @property
    def rows(self) -> int:
        return len(self.logits)

    @classmethod
    def prefill(cls, served: Served, jobs: list[Job]) -> Cohort:
        """Requests with prompts of one length: one network call over [bos, prompt]."""
        x = torch.cat([job.state.tokens for job in jobs])  # (R, 1 + prompt)
        device = next(served.model.parameters()).device
        cache = served.model.new_cache(len(x))
        logits = served.model(x.to(device), cache=cache)[:, -1]
        for job in jobs:
            job.row_nfe += job.n
        return cls(served, jobs, cache, logits)

    @classmethod
    def merge(cls, cohorts: list[Cohort]) -> Cohort:
        first = cohorts[0]
        cache = copy.copy(first.cache)
        cache.k = [torch.cat([c.cache.k[i] for c in cohorts]) for i in range(len(first.cache.k))]
        cache.v = [torch.cat([c.cache.v[i] for c in cohorts]) for i in range(len(first.cache.v))]
        return cls(first.served, [j for c in cohorts for j in c.jobs], cache,
                   torch.cat([c.logits for c in cohorts]))

    def keep(self, keep: list[Job]) -> None:
        """Cut every other request's rows out of the cache and logits."""
        if len(keep) == len(self.jobs):
            return
        rows, start = [], 0
        for job in self.jobs:
            if job in keep:
                rows.extend(range(start, start + job.n))
            start += job.n
        index = torch.tensor(rows, dtype=torch.long, device=self.logits.device)
        self.cache, self.logits, self.jobs = _take(self.cache, index), self.logits[index], keep

    def step(self) -> tuple[list[Job], int]:
        """Draw one token per row; returns the requests that are now complete and the number of
        rows in this tick's network call."""
        drawn, start = [], 0
        for job in self.jobs:
            w, rows = job.work, job.state
            nxt = next_tokens(self.logits[start:start + job.n], rows.rng, w.temperature,
                              w.top_k, w.top_p, rows.banned)  # (n,)
            rows.tokens = torch.cat((rows.tokens, nxt[:, None].cpu()), dim=1)
            drawn.append(nxt)
            start += job.n
        jobs = self.jobs
        done = [job for job in jobs if job.state.done]
        running = [job for job in jobs if not job.state.done]
        if not running:
            return done, 0
        nxt = torch.cat([d for d, job in zip(drawn, jobs, strict=True) if not job.state.done])
        self.keep(running)
        self.logits = self.served.model(nxt[:, None], cache=self.cache)[:, -1]
        for job in running:
            job.row_nfe += job.n
        return done, len(nxt)
