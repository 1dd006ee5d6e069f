"""Offline decoding: `Model.generate` / `infill` run their rows through the model's decoder
lane exactly as the server's engine does (one lane, every job every tick, no row limit), so
an offline result is a served one for the same seeds."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from redraft.decoders.jobs import Job, Work
from redraft.errors import RedraftError
from redraft.sampling.commit import FirstFinal


@torch.no_grad()
def run(model, works: Sequence[Work], on_step: Callable[[int, torch.Tensor], None] | None = None,
        oracle: bool = False, **extra) -> tuple[list[Job], int, float]:
    """Run every work to its end: (jobs, network calls, seconds). on_step(step, canvas) after
    each step of each job (step counts from 0); oracle: record each step's argmax for the
    oracle TPF ceiling (Job.tpf; diffusion states only); extra: the decoder's start options."""
    decoder = model.decoder
    jobs = [Job(w, model, state=decoder.start(w, **extra)) for w in works]
    if oracle:
        for job in jobs:
            job.oracle = watch(job.state, model.name)
    lane = decoder.lane()
    for job in jobs:
        lane.add(job)

    def stepped(job: Job, step: int) -> None:
        if job.work.stop:
            job.check_stops()
        if on_step is not None:
            on_step(step - 1, job.state.current())

    calls, start = 0, time.perf_counter()
    while running := [job for job in jobs if not job.state.done]:
        calls += sum(1 for rows in lane.tick(running, stepped, max_rows=1 << 62) if rows)
        lane.keep([job for job in jobs if not job.state.done])
    return jobs, calls, time.perf_counter() - start


def watch(state, name: str) -> FirstFinal:
    """Attach the oracle's record to a diffusion state (before its lane sees it)."""
    if not hasattr(state, "oracle"):
        raise RedraftError(f"the oracle TPF ceiling needs a diffusion model that keeps its "
                           f"per-step logits; {name!r} does not")
    state.oracle = FirstFinal(len(state.x), state.x.shape[1], state.x.device)
    return state.oracle
