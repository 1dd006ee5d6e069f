"""Full-canvas diffusion (masked, uniform, mixture; redraft checkpoints and Hugging Face masked
models alike): every step reads the whole canvas, any step rule of sampling.registry.

The lane buckets its requests by canvas length (nothing is padded) and stacks the rows that
need logits into ONE network call per bucket, each row at its own t, so requests at different
steps, with different step counts and samplers, share it; then each request's own rule advances
its own rows (sampling/state.py: DiffusionState). A row's logits do not depend on its
batch-mates (up to the float rounding of batched matmuls).
"""

from __future__ import annotations

import torch

from redraft.decoders.base import Decoder, Lane, Stepped
from redraft.decoders.jobs import Job, Work
from redraft.errors import RedraftError
from redraft.sampling.categorical import check_knobs
from redraft.sampling.registry import make_sampler
from redraft.sampling.state import DiffusionState


class CanvasLane(Lane):
    def tick(self, jobs: list[Job], stepped: Stepped, max_rows: int) -> list[int]:
        model = self.decoder.model
        buckets: dict[int, list[Job]] = {}
        for job in jobs:
            buckets.setdefault(job.work.length, []).append(job)
        sizes = []
        for bucket in buckets.values():
            inputs = [job.state.inputs(model.time_conditioned) for job in bucket]  # (rows, x, t)
            counts = [len(x) for _, x, _ in inputs]
            if sum(counts):
                x = torch.cat([x for _, x, _ in inputs])
                t = torch.cat([t for _, _, t in inputs]).to(x.device)
                logits = model.backbone(x, t).split(counts)
                for job, (rows, _, _), lg, c in zip(bucket, inputs, logits, counts, strict=True):
                    if c:
                        job.state.set_logits(rows, lg)
                        job.row_nfe += c
            for job in bucket:
                job.state.advance()
                stepped(job, job.state.i)
            sizes.append(sum(counts))
        return sizes


def early_commit(model, request) -> float | None:
    """The request's early-commit threshold, for a model whose logits are token
    probabilities (a denoiser: the gap is read from them)."""
    if request.early_commit is not None and not model.objective.denoiser:
        raise RedraftError(f"early_commit: {model.name!r} is a {model.objective.name!r} model, "
                           "whose network outputs scores, not token probabilities")
    return request.early_commit


class CanvasDecoder(Decoder):
    name = "canvas"
    lane_class = CanvasLane

    def rule(self, name, temperature=1.0, top_k=None, top_p=None, options=None):
        m = self.model
        return make_sampler(name, m.process, m.objective, temperature, top_k, top_p, options)

    def start(self, work: Work, **extra) -> DiffusionState:
        m, r = self.model, work.request
        check_knobs(r.temperature, r.top_k, r.top_p)
        self.check_fit(work)
        if r.logprobs is not None and not m.objective.denoiser:
            raise RedraftError(f"logprobs: {m.name!r} is a {m.objective.name!r} model, "
                               "whose network outputs scores, not token probabilities")
        rule = self.rule(r.sampler, r.temperature, r.top_k, r.top_p, r.options)
        canvases = None if work.canvas is None else [work.canvas] * work.n
        state = DiffusionState(m.process, rule, steps=self.steps(r), length=work.length,
                              prefixes=None if canvases else [work.prefix] * work.n,
                              suffixes=None if canvases else [work.suffix] * work.n,
                              canvases=canvases, seeds=work.seeds, block_size=r.block_size,
                              eos_id=m.tokenizer.eos_id if r.stop_at_eos else None,
                              guidance=r.guidance, device=m.device, logprobs=r.logprobs,
                              early_commit=early_commit(m, r))
        if r.constraint is not None:
            state.guard = canvas_guard(work, state, m)
        return state


def canvas_guard(work: Work, state, model):
    """The CanvasGuard of a structured-output request: its span is the text after the prompt
    and before the suffix (a template: the whole canvas). Only the mask process keeps what it
    commits; a uniform-noise model may change any token at any step."""
    from redraft.constraints import CanvasGuard, compile_constraint

    if model.process is not None and model.process.name != "mask":  # (a hybrid: None)
        raise RedraftError(f"constraint: {model.name!r} is a {model.process.name!r}-noise "
                           "model, whose steps may change any token of the canvas at any "
                           "time, so no step can promise the final text matches; structured "
                           "outputs need a masked (absorbing) diffusion model or the AR twin")
    if work.canvas is not None:
        span = (0, work.length)
    else:
        span = (len(work.prefix), work.length - len(work.suffix))
    guard = CanvasGuard(compile_constraint(work.request.constraint, model.tokenizer),
                        [span] * work.n, state.mask_id)
    guard.check(state.x[:, :work.length])
    return guard
