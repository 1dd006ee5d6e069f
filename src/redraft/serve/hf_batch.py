"""The server's step for models that batch their own steps (redraft.hf's DiffusionGemma).

The engine buckets a model's DiffusionGemma requests together whatever their lengths (their
states say `bucket = "canvas"`: every request's canvas has the model's canvas_length) and
hands the bucket here once per tick (hf/gemma.py: decode_step): the prompts of new requests
and the canvases just committed are written into each request's own cache (one encoder call
for all of equal lengths), then ONE decoder call runs the canvases of all its requests that
still denoise, their caches left-padded to a common length with the pad slots masked, and
each request's own rule advances its rows. Drafts stream as usual.
"""

from __future__ import annotations

from collections.abc import Callable

from redraft.hf.gemma import decode_step
from redraft.serve.jobs import Event, Job


def step_jobs(jobs: list[Job], finish: Callable) -> int:
    """One step for every request of the bucket; returns the rows of the decoder call."""
    states = [job.state for job in jobs]
    live = [s for s in states if not s.done]
    rows = decode_step(jobs[0].served.hf, live) if live else 0
    for job in jobs:
        s = job.state
        job.row_nfe = s.row_nfe
        x = s.view()
        if s.done:
            finish(job, s.i)
        elif job.work.drafts:
            job.emit(Event("draft", step=s.i, tokens=x.cpu().clone()))
    return rows
