"""AR requests in one batch: the AR twin's side of the step-level batcher.

Every AR row of a model shares one network call per tick, whatever its position: the cache
holds each row at its own length and the backbone's ragged decode path (Transformer.forward
with `positions`) writes each row's new key/value at its own position and masks the slots
past it. New requests are prefilled together by prompt length, then merged into the model's
running cohort (their caches appended as rows); a finished or cancelled request's rows are
cut out. Each tick: draw one token for every row (each request with its own knobs and random
streams), then one single-token network call for all rows still running.
"""

from __future__ import annotations

import copy

import torch

from redraft.model import Model
from redraft.models.transformer import KVCache
from redraft.sampling.categorical import next_tokens
from redraft.serve.jobs import Job


def _take(cache: KVCache, rows: torch.Tensor) -> KVCache:
    out = copy.copy(cache)
    out.k = [k[rows] for k in cache.k]
    out.v = [v[rows] for v in cache.v]
    return out


class Cohort:
    def __init__(self, served: Model, jobs: list[Job], cache: KVCache, logits: torch.Tensor,
                 positions: torch.Tensor):
        self.served, self.jobs, self.cache = served, jobs, cache
        self.logits = logits  # (R, V): the next position's logits of every row
        self.positions = positions  # (R,) long: where each row's next token is written

    @property
    def rows(self) -> int:
        return len(self.logits)

    @classmethod
    def prefill(cls, served: Model, jobs: list[Job]) -> Cohort:
        """Requests with prompts of one length: one network call over [bos, prompt]."""
        x = torch.cat([job.state.tokens for job in jobs])  # (R, 1 + prompt)
        device = served.device
        cache = served.backbone.new_cache(len(x))
        logits = served.backbone(x.to(device), cache=cache)[:, -1]
        for job in jobs:
            job.row_nfe += job.n
        positions = torch.full((len(x),), x.shape[1], dtype=torch.long, device=device)
        return cls(served, jobs, cache, logits, positions)

    @classmethod
    def merge(cls, cohorts: list[Cohort]) -> Cohort:
        """One cohort of all the rows (every cache spans the model's whole context)."""
        first = cohorts[0]
        cache = copy.copy(first.cache)
        cache.k = [torch.cat([c.cache.k[i] for c in cohorts]) for i in range(len(first.cache.k))]
        cache.v = [torch.cat([c.cache.v[i] for c in cohorts]) for i in range(len(first.cache.v))]
        return cls(first.served, [j for c in cohorts for j in c.jobs], cache,
                   torch.cat([c.logits for c in cohorts]),
                   torch.cat([c.positions for c in cohorts]))

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
        self.positions = self.positions[index]

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
            self.jobs = []  # all done: the engine drops this cohort
            return done, 0
        nxt = torch.cat([d for d, job in zip(drawn, jobs, strict=True) if not job.state.done])
        self.keep(running)
        self.logits = self.served.backbone(nxt[:, None], cache=self.cache,
                                        positions=self.positions)[:, -1]
        self.positions = self.positions + 1
        for job in running:
            job.row_nfe += job.n
        return done, len(nxt)
