"""What the server asks the engine for (Work), what it holds per request (Job), and the models
it serves (Served). No HTTP here: the engine and the tests use these directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from redraft.checkpoint import load_checkpoint
from redraft.data import Tokenizer
from redraft.diffusion import Process
from redraft.errors import RedraftError
from redraft.losses import make_process
from redraft.models import Transformer
from redraft.sampling.categorical import RowRandom, check_knobs
from redraft.sampling.registry import make_sampler
from redraft.sampling.state import DiffusionState


@dataclass
class Served:
    """One model the server answers for: the AR twin (process None) or a diffusion model."""

    name: str
    model: Transformer
    tokenizer: Tokenizer
    objective: str  # "ar" or the diffusion objective its logits are parameterised by
    process: Process | None

    @property
    def is_ar(self) -> bool:
        return self.process is None

    @property
    def seq_len(self) -> int:
        return self.model.cfg.seq_len

    @property
    def time_cond(self) -> bool:
        return self.model.time is not None


def load_served(path: str | Path, name: str | None = None,
                device: str | torch.device = "cpu") -> Served:
    """A checkpoint (or run folder) ready to serve; its name defaults to the run folder's."""
    ck = load_checkpoint(path, device)
    objective = ck.config.diffusion.objective
    process = None if objective == "ar" else make_process(
        ck.config.diffusion, ck.tokenizer.mask_id, ck.model.vocab_size)
    if name is None:
        name = ck.path.parent.name if ck.path.name.startswith("ckpt-") else ck.path.name
    return Served(name, ck.model, ck.tokenizer, objective, process)


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

    @property
    def n(self) -> int:
        return len(self.seeds)


@dataclass
class Event:
    """draft: the canvas after `step` steps; done: the final canvas; error: status + message.
    tokens (n, length) on the CPU."""

    kind: str
    step: int = 0
    tokens: torch.Tensor | None = None
    status: int = 200
    message: str = ""


class ARRows:
    """The AR rows of one request: [bos, prefix, generated...] (n, 1 + position)."""

    def __init__(self, served: Served, work: Work):
        tok = served.tokenizer
        self.tokens = torch.tensor([[tok.eos_id, *work.prefix]] * work.n, dtype=torch.long)
        self.rng = RowRandom(work.seeds)
        self.length = work.length
        self.banned = tok.non_text_ids

    @property
    def done(self) -> bool:
        return self.tokens.shape[1] - 1 >= self.length

    def canvas(self, placeholder: int) -> torch.Tensor:
        """(n, length): generated so far, the rest shown as `placeholder` (the mask id)."""
        out = torch.full((len(self.tokens), self.length), placeholder, dtype=torch.long)
        out[:, :self.tokens.shape[1] - 1] = self.tokens[:, 1:]
        return out


class Job:
    """One request inside the engine. `listener(event)` is called from the engine thread; the
    HTTP side passes one that hands events over to its event loop."""

    def __init__(self, work: Work, served: Served, timeout_s: float,
                 listener: Callable[[Event], None] | None = None):
        self.work, self.served, self.listener = work, served, listener
        self.submitted = time.monotonic()
        self.deadline = self.submitted + timeout_s
        self.cancelled = False
        self.finished = threading.Event()
        self.final: Event | None = None
        self.row_nfe = 0
        self.skipped = 0  # ticks in a row the engine passed this request over (its fairness)
        self.state = start_state(served, work)

    @property
    def n(self) -> int:
        return self.work.n

    def cancel(self) -> None:
        """Ask the engine to drop this request at its next tick (a plain flag: the engine
        thread is the only one that touches the state)."""
        self.cancelled = True

    def emit(self, event: Event) -> None:
        if event.kind != "draft":
            self.final = event
        if self.listener is not None:
            self.listener(event)
        if event.kind != "draft":
            self.finished.set()

    def wait(self, timeout: float | None = None) -> Event:
        """Block until the final event (for callers without an event loop: tests, scripts)."""
        if not self.finished.wait(timeout):
            raise TimeoutError("the engine did not finish the request in time")
        return self.final


def start_state(served: Served, work: Work) -> DiffusionState | ARRows:
    """The starting rows of a request; a RedraftError names what is wrong with it."""
    check_knobs(work.temperature, work.top_k, work.top_p)
    if not 1 <= work.length <= served.seq_len:
        raise RedraftError(f"a canvas of {work.length} tokens does not fit the model's context "
                           f"of {served.seq_len}")
    if served.is_ar:
        if work.suffix:
            raise RedraftError(f"model {served.name!r} is autoregressive: it cannot fill in "
                               "before a suffix; use a diffusion model")
        knobs = [k for k, used in (("sampler", work.sampler), ("sampler_options", work.options),
                                   ("block_size", work.block_size),
                                   ("guidance", work.guidance)) if used]
        if knobs:
            raise RedraftError(f"{knobs[0]} needs a diffusion model: {served.name!r} samples "
                               "left to right")
        if len(work.prefix) >= work.length:
            raise RedraftError("the prompt leaves nothing to generate")
        return ARRows(served, work)
    rule = make_sampler(work.sampler, served.process, served.objective, work.temperature,
                        work.top_k, work.top_p, work.options)
    device = next(served.model.parameters()).device
    eos = served.tokenizer.eos_id if work.stop_at_eos else None
    return DiffusionState(served.process, rule, steps=work.steps, length=work.length,
                          prefixes=[work.prefix] * work.n, suffixes=[work.suffix] * work.n,
                          seeds=work.seeds, block_size=work.block_size, eos_id=eos,
                          guidance=work.guidance, device=device)
