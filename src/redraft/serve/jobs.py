"""What the server asks the engine for (Work), what it holds per request (Job), and the models
it serves (redraft.Model). No HTTP here: the engine and the tests use these directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from redraft.model import Model
from redraft.sampling.state import ARState, DiffusionState
from redraft.serve.stops import StopScan


@dataclass
class Work:
    """A validated, tokenised request: n rows of a canvas of `length` tokens (prefix and suffix
    included), row r drawn with seeds[r]. steps and sampler are ignored by the AR twin."""

    model: str
    prefix: list[int]
    length: int
    seeds: list[int]
    suffix: list[int] = field(default_factory=list)
    steps: int = 64
    sampler: str | None = None
    options: dict | None = None  # the sampler's knobs
    block_size: int | None = None
    stop_at_eos: bool = False
    guidance: float = 0.0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    drafts: bool = False  # emit every intermediate canvas
    stream: bool = False  # emit the committed text as it grows ("commit" events)
    stop: list[str] = field(default_factory=list)  # end a row once its text holds one
    logprobs: int | None = None  # record log-probabilities and the top `logprobs`

    @property
    def n(self) -> int:
        return len(self.seeds)


FINAL = ("done", "error")  # the event kinds that end a request


@dataclass
class Event:
    """draft: the canvas after `step` steps; commit: the canvas when some row's committed
    text grew; done: the final canvas; error: status + message. tokens (n, length) on the CPU;
    counts: per row, the leading canvas positions committed (commit and done); logprobs: the
    state's logprob_arrays() (CPU copies) when the request asked for them."""

    kind: str
    step: int = 0
    tokens: torch.Tensor | None = None
    status: int = 200
    message: str = ""
    counts: list[int] | None = None
    logprobs: tuple | None = None


class Job:
    """One request inside the engine. `listener(event)` is called from the engine thread; the
    HTTP side passes one that hands events over to its event loop."""

    def __init__(self, work: Work, served: Model, timeout_s: float,
                 listener: Callable[[Event], None] | None = None):
        self.work, self.served, self.listener = work, served, listener
        self.submitted = time.monotonic()
        self.deadline = self.submitted + timeout_s
        self.cancelled = False
        self.finished = threading.Event()
        self.final: Event | None = None
        self.row_nfe = 0
        self.skipped = 0  # ticks in a row the engine passed this request over (its fairness)
        self.committed = [0] * work.n  # rows' committed canvas positions at the last look
        dec = served.tokenizer.decode  # each row's committed text, searched as it grows
        self.scans = [StopScan(dec, work.stop) for _ in range(work.n)] if work.stop else []
        self.state = start_state(served, work)

    @property
    def n(self) -> int:
        return self.work.n

    def cancel(self) -> None:
        """Ask the engine to drop this request at its next tick (a plain flag: the engine
        thread is the only one that touches the state)."""
        self.cancelled = True

    def emit(self, event: Event) -> None:
        final = event.kind in FINAL
        if final:
            self.final = event
        if self.listener is not None:
            self.listener(event)
        if final:
            self.finished.set()

    def wait(self, timeout: float | None = None) -> Event:
        """Block until the final event (for callers without an event loop: tests, scripts)."""
        if not self.finished.wait(timeout):
            raise TimeoutError("the engine did not finish the request in time")
        return self.final


def start_state(served: Model, work: Work) -> DiffusionState | ARState:  # BlockState too
    """The starting rows of a request; a RedraftError names what is wrong with it."""
    return served.start(work.prefix, length=work.length, seeds=work.seeds, suffix=work.suffix,
                        steps=work.steps, sampler=work.sampler, options=work.options,
                        temperature=work.temperature, top_k=work.top_k, top_p=work.top_p,
                        block_size=work.block_size, stop_at_eos=work.stop_at_eos,
                        guidance=work.guidance, logprobs=work.logprobs)
