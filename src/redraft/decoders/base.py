"""The step-state protocol every kind of model decodes through.

A Decoder is one way of decoding one kind of model (decided once, in `redraft.load`):

    state = decoder.start(work)        # one request's rows (a RedraftError names a bad knob)
    lane = decoder.lane()              # the running requests of this model, stepped together
    lane.add(job); lane.tick(jobs, stepped, max_rows)   # one step of every row of `jobs`
    lane.keep(jobs)                    # drop the requests not in `jobs` (finished, cancelled)

A state offers what callers read between steps: `done`, `current()` (n, length) the canvas,
`committed()` (n,) the leading positions that can no longer change, `stop_rows(rows)` (finish
rows now) and `logprob_arrays()`. After each step of a job, the lane calls `stepped(job,
step)`: the caller looks at its progress (stop strings, streaming, drafts, the end). The
server's engine (serve/engine.py) and `Model.generate` (decoders/run.py) are the two callers,
so a served result is the offline result; the engine never asks what kind a model is, only
whether a lane's rows all step every tick (`every_tick`: AR and block rows hold KV caches) or
may be passed over for fairness (full-canvas diffusion).
"""

from __future__ import annotations

from collections.abc import Callable

from redraft.decoders.jobs import Job, Work
from redraft.errors import RedraftError
from redraft.request import DEFAULT_STEPS

Stepped = Callable[[Job, int], None]


class Lane:
    """The running requests of one decoder of one model."""

    every_tick = False  # every row steps every tick (else the engine may pass a job over)

    def __init__(self, decoder: Decoder):
        self.decoder = decoder
        self.jobs: list[Job] = []  # replaced, never changed in place (stats() reads it)

    @property
    def rows(self) -> int:
        return sum(job.n for job in self.jobs)

    def add(self, job: Job) -> None:
        self.jobs = [*self.jobs, job]

    def keep(self, keep: list[Job]) -> None:
        wanted = set(map(id, keep))
        self.jobs = [job for job in self.jobs if id(job) in wanted]

    def clear(self) -> None:
        self.keep([])

    def tick(self, jobs: list[Job], stepped: Stepped, max_rows: int) -> list[int]:
        """One step of every row of `jobs` (a subset of self.jobs); returns the rows of each
        network call made."""
        raise NotImplementedError


class PrefillLane(Lane):
    """A lane whose new requests wait in `fresh` until their first call (the prompt's
    prefill) at the next tick."""

    def __init__(self, decoder: Decoder):
        super().__init__(decoder)
        self.fresh: list[Job] = []  # admitted, not yet prefilled

    def add(self, job: Job) -> None:
        super().add(job)
        self.fresh = [*self.fresh, job]

    def keep(self, keep: list[Job]) -> None:
        super().keep(keep)
        self.fresh = [job for job in self.fresh if job in self.jobs]


class ModeLanes(Lane):
    """A lane of lanes: each request goes to the sub-lane of its mode (`lane_of`), and a tick
    steps each sub-lane's own requests (a hybrid's ar / speculative / block rows)."""

    every_tick = True

    def __init__(self, decoder: Decoder, lanes: tuple[Lane, ...]):
        super().__init__(decoder)
        self.lanes = lanes

    def lane_of(self, job: Job) -> Lane:
        raise NotImplementedError

    def add(self, job: Job) -> None:
        super().add(job)
        self.lane_of(job).add(job)

    def keep(self, keep: list[Job]) -> None:
        super().keep(keep)
        for lane in self.lanes:
            lane.keep([job for job in keep if job in lane.jobs])

    def tick(self, jobs: list[Job], stepped: Stepped, max_rows: int) -> list[int]:
        sizes = []
        for lane in self.lanes:
            mine = [job for job in jobs if self.lane_of(job) is lane]
            if mine:
                sizes += lane.tick(mine, stepped, max_rows)
        return sizes


class Decoder:
    """One kind of model's decoding: its knobs' meaning, its states and its lane."""

    name = "decoder"
    lane_class: type[Lane] = Lane
    uses_steps = True  # `steps` sets the work (the AR twin: one token a call)
    infills = True  # holds a suffix / fills templates
    adaptive_steps = False  # chooses its own number of steps whatever the sampler

    default_steps = DEFAULT_STEPS
    modes: tuple[str, ...] = ()  # the values of the `mode` knob it takes (a hybrid's several)

    def __init__(self, model):
        self.model = model

    def steps(self, request) -> int:
        """The request's steps, or this model's default."""
        return self.default_steps if request.steps is None else request.steps

    def start(self, work: Work, **extra):
        raise NotImplementedError

    def check_mode(self, request) -> None:
        """A `mode` this model does not decode in is an error naming the ones it does."""
        if request.mode is not None and request.mode not in self.modes:
            offered = f"modes {list(self.modes)}" if self.modes else "no mode knob (it is for " \
                "hybrids)"
            raise RedraftError(f"mode={request.mode!r}: {self.model.name!r} takes {offered}")

    def lane(self) -> Lane:
        return self.lane_class(self)

    def work_units(self, n: int, steps: int, length: int, mode: str | None = None) -> int:
        """Token positions the network evaluates for n rows of a canvas of `length` (at most,
        for a request in `mode`)."""
        return n * steps * length if self.uses_steps else n * length

    def work_formula(self, n: int, steps: int, length: int, mode: str | None = None) -> str:
        return (f"n x steps x length = {n} x {steps} x {length}" if self.uses_steps
                else f"n x length = {n} x {length}")

    def check_fit(self, work: Work) -> None:
        """The canvas within the model's context (Model.generate and the server size it with
        redraft.request.fit; this guards the callers that build Work themselves)."""
        if not 1 <= work.length <= self.model.seq_len:
            raise RedraftError(f"a canvas of {work.length} tokens does not fit the model's "
                               f"context of {self.model.seq_len}")

    def check_infill(self) -> None:
        """Refuse templates and suffixes when the model cannot hold text after a span."""
        if not self.infills:
            raise RedraftError(f"infill needs a diffusion model: {self.model.name!r} only "
                               "continues a prefix, left to right")

    def default_sampler(self) -> str | None:
        return self.model.objective.default_sampler

    def samplers(self) -> list[str]:
        """The step rules this model accepts (the server's /v1/models lists them): those its
        step-rule factory builds without an error."""
        from redraft.sampling.registry import SAMPLERS

        out = []
        for name in SAMPLERS:
            try:
                self.rule(name)
            except RedraftError:
                continue
            out.append(name)
        return out

    def rule(self, name: str | None, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, options: dict | None = None):
        """The step rule for these knobs (a RedraftError when the model cannot take it)."""
        raise RedraftError(f"{self.model.name!r} has no diffusion step rules")
