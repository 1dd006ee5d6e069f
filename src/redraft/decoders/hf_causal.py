"""A Hugging Face causal LM (AutoModelForCausalLM) as a left-to-right baseline, servable.

Its cache is the model's own (transformers' Cache), which holds every row at one shared
position: it has no ragged decode path like redraft's KV cache. So its lane keeps each group
of requests admitted in the same tick with prompts of one length as a cohort of its own, in
lockstep, and runs one network call per cohort per tick; a row that stopped (EOS, a stop
string) keeps feeding its pad token until its cohort ends, so the cache stays aligned. The
rows, their draws and their knobs are the AR twin's (decoders/ar.py: ARState, Cohort.draw).
"""

from __future__ import annotations

import torch

from redraft.decoders.ar import ARDecoder, ARLane, Cohort
from redraft.decoders.base import Stepped
from redraft.decoders.jobs import Job


class LockstepCohort(Cohort):
    def keep(self, keep: list[Job]) -> None:
        wanted = set(map(id, keep))
        self.jobs = [job for job in self.jobs if id(job) in wanted and not job.state.done]

    def forward(self) -> int:
        """One call over every row of the cohort (stopped rows feed their pad token)."""
        self.keep(self.jobs)
        if not self.jobs:
            return 0
        last = torch.cat([job.state.tokens[:, -1] for job in self.jobs])
        if len(last) != self.rows:  # a request left: its cache rows cannot be cut out
            last = self._full(last)
        self.logits = self.served.backbone(last[:, None].to(self.logits.device),
                                           cache=self.cache)[:, -1]
        for job in self.jobs:
            job.row_nfe += int(job.state.live.sum())
        return self.rows

    def _full(self, last: torch.Tensor) -> torch.Tensor:
        """The input of every cache row: a running request's tokens, 0 for a finished one's
        (its rows are never read again)."""
        running = set(map(id, self.jobs))
        index = [i for i, (job, _) in enumerate(self.owners) if id(job) in running]
        out = torch.zeros(self.rows, dtype=torch.long)
        out[index] = last
        return out

    def draw(self) -> None:
        """As Cohort.draw, over the live rows of the running requests only."""
        owners, logits = self.owners, self.logits
        running = set(map(id, self.jobs))
        live = [i for i, (job, r) in enumerate(owners)
                if id(job) in running and bool(job.state.live[r])]
        self.owners = [owners[i] for i in live]
        self.logits = logits[live]
        try:
            super().draw()
        finally:
            self.owners, self.logits = owners, logits

    @property
    def rows(self) -> int:
        return len(self.owners)


class LockstepLane(ARLane):
    """The AR lane without merging: each cohort steps on its own, one call a tick."""

    cohort_class = LockstepCohort

    def tick(self, jobs: list[Job], stepped: Stepped, max_rows: int) -> list[int]:
        sizes = self._prefill()
        sizes += [self._step(c, stepped) for c in self.cohorts]
        self.cohorts = [c for c in self.cohorts if c.jobs]
        return sizes


class HFCausalDecoder(ARDecoder):
    name = "hf_causal"
    lane_class = LockstepLane
