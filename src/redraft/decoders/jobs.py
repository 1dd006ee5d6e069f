"""What a decoder runs: Work (a request bound to tokens and seeds), Job (one running request),
Event (what a job tells its listener). No HTTP here: `Model.generate` and the server's engine
both run Jobs through the same decoder lanes (redraft.decoders).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from redraft.decoders.stops import StopScan
from redraft.request import KNOBS, Request
from redraft.sampling.tpf import TPF, counted


class Work:
    """A validated, tokenised request: n rows of a canvas of `length` tokens (prefix and suffix
    included, or one fixed id / None per position in `canvas`), row r drawn with seeds[r],
    decoded with the knobs of `request` (or of the keyword arguments, which replace them).
    drafts: emit every intermediate canvas; stream: emit the committed text as it grows."""

    def __init__(self, model: str, prefix: Sequence[int], length: int, seeds: Sequence[int],
                 suffix: Sequence[int] = (), *, canvas: Sequence[int | None] | None = None,
                 drafts: bool = False, stream: bool = False, request: Request | None = None,
                 **knobs):
        unknown = sorted(set(knobs) - set(KNOBS))
        if unknown:
            raise TypeError(f"Work() got an unexpected knob {unknown[0]!r}")
        request = request or Request()
        self.request = request.replace(**knobs) if knobs else request
        self.model, self.prefix, self.length = model, list(prefix), length
        self.seeds, self.suffix = list(seeds), list(suffix)
        self.canvas = None if canvas is None else list(canvas)
        self.drafts, self.stream = drafts, stream

    def __getattr__(self, name: str):
        if name in KNOBS:  # work.steps, work.temperature, ...: the request's knobs
            return getattr(self.__dict__["request"], name)
        raise AttributeError(name)

    @property
    def n(self) -> int:
        return len(self.seeds)

    def __repr__(self) -> str:
        return (f"Work({self.model!r}, prefix={len(self.prefix)} tokens, length={self.length}, "
                f"seeds={self.seeds}, {self.request})")


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
    """One request inside a lane. `listener(event)` is called from the thread that ticks (the
    engine's); the HTTP side passes one that hands events over to its event loop."""

    def __init__(self, work: Work, served, timeout_s: float = float("inf"),
                 listener: Callable[[Event], None] | None = None, state=None):
        self.work, self.served, self.listener = work, served, listener
        self.submitted = time.monotonic()
        self.deadline = self.submitted + timeout_s
        self.cancelled = False
        self.finished = threading.Event()
        self.final: Event | None = None
        self.row_nfe = 0  # network evaluations of its rows (its lane counts them)
        self.oracle = None  # sampling.commit.FirstFinal, when the TPF ceiling is recorded
        self.skipped = 0  # ticks in a row the engine passed this request over (its fairness)
        self.committed = [0] * work.n  # rows' committed canvas positions at the last look
        dec = served.tokenizer.decode  # each row's committed text, searched as it grows
        self.scans = [StopScan(dec, work.stop) for _ in range(work.n)] if work.stop else []
        # the rows' step state (a RedraftError names a bad knob)
        self.state = served.decoder.start(work) if state is None else state

    @property
    def n(self) -> int:
        return self.work.n

    def tpf(self) -> TPF:
        """Its tokens per forward (sampling/tpf.py): the new tokens its rows committed over the
        network evaluations its lane counted (row_nfe), with the oracle's steps if recorded."""
        w, tok = self.work, self.served.tokenizer
        x = self.state.current().cpu()
        length = x.shape[1]
        if w.canvas is not None:
            generated = torch.tensor([c is None for c in w.canvas])
        else:
            generated = torch.zeros(length, dtype=torch.bool)
            generated[len(w.prefix):length - len(w.suffix)] = True
        new = counted(x, generated, self.state.committed().cpu(), tok.mask_id,
                      tok.eos_id if w.stop_at_eos else None)
        steps = None if self.oracle is None else sum(self.oracle.steps_needed(x, new))
        return TPF(int(new.sum()), self.row_nfe, steps)

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

    def event(self, kind: str, step: int) -> Event:
        """An event carrying the state's canvas, committed counts and logprobs (CPU copies)."""
        lp = self.state.logprob_arrays()
        return Event(kind, step=step, tokens=self.state.current().cpu().clone(),
                     counts=self.state.committed().tolist(),
                     logprobs=None if lp is None else tuple(a.cpu().clone() for a in lp))

    def check_stops(self) -> bool:
        """After a step: stop the rows whose committed text holds a stop string; returns
        whether some row's committed text grew since the last look."""
        w = self.work
        counts = self.state.committed().tolist()
        if counts == self.committed:
            return False
        grown = [r for r, (a, b) in enumerate(zip(self.committed, counts, strict=True)) if b > a]
        self.committed = counts
        if w.stop:
            x = self.state.current()
            stop = torch.zeros(w.n, dtype=torch.bool)
            end = w.length - len(w.suffix)
            for r in grown:  # decoders/stops.py: only the new ids are decoded and searched
                stop[r] = self.scans[r].feed(x[r, len(w.prefix):min(counts[r], end)])
            if stop.any():
                self.state.stop_rows(stop)
                self.committed = self.state.committed().tolist()
        return True
