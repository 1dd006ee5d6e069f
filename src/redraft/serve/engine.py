"""Step-level continuous batching: one thread owns the models and runs one tick at a time.

Each served model has one lane, its decoder's (redraft.decoders: AR, full-canvas diffusion,
block diffusion, DiffusionGemma, Hugging Face causal LMs); the engine never asks what kind a
model is. A tick: (1) retire cancelled and timed-out requests; (2) admit queued requests,
first come first served, while the admitted rows stay within max_rows (and the rows of lanes
that step every tick, `Lane.every_tick`: the KV-cache kinds, within max_batch); (3) choose the
requests of the other lanes this tick steps: the ones passed over longest first, packed while
the tick's rows stay within max_batch (always at least one); (4) let every lane step its
requests: each lane batches the rows of all its requests, of different knobs, lengths and
steps, into shared network calls (see each decoder's module).

After each step of a request the lane calls back (`_stepped`): the engine looks at the
request's progress through three calls every state offers (decoders/base.py): `committed()`
(n,), the leading canvas positions of each row that can no longer change; `current()` (n, L),
the canvas; `stop_rows(rows)`, finish rows now. With stop strings, the text of each row's
committed positions is searched for them, and a row that holds one is stopped at once (no more
network calls for it; an AR row is checked between its draw and its next call). With `stream`,
a "commit" event carries the canvas and the counts whenever a row's committed text grew, so a
client gets text as soon as it is final: every token for an AR row, the left-to-right settled
run for a diffusion row, each block for a block model.

Fairness: max_rows (default 2 x max_batch) lets a small request in beside a maximal one (n =
max_batch rows for thousands of steps), and step (3) then alternates the two instead of
running the big one to the end first: the small request's wait grows by the big one's tick
time per step instead of by its whole run. max_rows = max_batch is plain first come, first
served. A request that finishes is retired at the next tick, and its slot is free for it.
`Model.generate` runs the same lanes offline (decoders/run.py), so a served row is an offline
row for the same seed (up to the float rounding of batched matmuls).

The queue is bounded: submit() raises QueueFull rather than let memory grow. Torch releases
the GIL inside its kernels, so the HTTP event loop stays responsive while the engine computes.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import torch

from redraft.config import SERVE
from redraft.decoders import Event, Job, Lane, Work
from redraft.errors import RedraftError
from redraft.model import Model
from redraft.serve.metrics import Metrics


class QueueFull(RedraftError):
    """The bounded queue is full: the client should retry later (HTTP 429)."""


class Unavailable(RedraftError):
    """The engine is shutting down (HTTP 503)."""


class Engine:
    def __init__(self, models: dict[str, Model], *, max_batch: int = SERVE.max_batch,
                 max_queue: int = SERVE.max_queue, timeout_s: float = SERVE.timeout_s,
                 metrics: Metrics | None = None, max_rows: int | None = SERVE.max_rows):
        if not models:
            raise RedraftError("the engine needs at least one model")
        max_rows = 2 * max_batch if max_rows is None else max_rows
        if max_rows < max_batch:
            raise RedraftError(f"max_rows={max_rows}: expected >= max_batch ({max_batch})")
        self.models, self.max_batch, self.max_queue = models, max_batch, max_queue
        self.max_rows = max_rows
        self.timeout_s = timeout_s
        self.metrics = metrics or Metrics()
        self._pending: deque[Job] = deque()
        self._lanes: dict[str, Lane] = {name: m.decoder.lane() for name, m in models.items()}
        self._cv = threading.Condition()
        self._accepting = True
        self._stop = False
        self._thread: threading.Thread | None = None
        self.last_batch_rows = 0  # rows of the largest network call of the last tick

    # --- the request side (any thread) ---------------------------------------------------

    def submit(self, work: Work, listener=None) -> Job:
        served = self.models.get(work.model)
        if served is None:
            raise KeyError(work.model)
        if work.n > self.max_batch:
            raise RedraftError(f"n={work.n}: this server runs at most {self.max_batch} rows at "
                               "once")
        job = Job(work, served, self.timeout_s, listener)  # validates: RedraftError
        with self._cv:
            if not self._accepting:
                raise Unavailable("the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} requests waiting): retry "
                                "later")
            self._pending.append(job)
            self._cv.notify()
        return job

    def stats(self) -> dict:
        with self._cv:
            active = self._all_running()
            return {"queue_depth": len(self._pending), "active_requests": len(active),
                    "active_rows": sum(j.n for j in active),
                    "last_batch_rows": self.last_batch_rows}

    def start(self) -> Engine:
        self._thread = threading.Thread(target=self._run, name="redraft-engine", daemon=True)
        self._thread.start()
        return self

    def close(self, grace_s: float = 10.0) -> None:
        """Stop admitting, let in-flight requests finish for up to grace_s, cancel the rest
        (each gets a 503 error event), and stop the thread."""
        with self._cv:
            if not self._accepting:  # closed already (a signal, then the app's shutdown)
                return
            self._accepting = False
        end = time.monotonic() + grace_s
        while time.monotonic() < end and self.stats()["active_requests"] + len(self._pending):
            time.sleep(0.01)
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join()
        for job in [*self._pending, *self._all_running()]:
            if not job.finished.is_set():
                job.emit(Event("error", status=503, message="the server shut down before the "
                                                              "request finished"))
        self._pending.clear()
        self._clear()

    # --- the engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._busy():
                    self._cv.wait()
                if self._stop:
                    return
            try:
                self.tick()
            except Exception as e:  # a bug must fail its requests, not hang them
                for job in self._all_running():
                    job.emit(Event("error", status=500, message=f"engine error: {e!r}"))
                self._clear()

    def _clear(self) -> None:
        for lane in self._lanes.values():
            lane.clear()

    def _busy(self) -> bool:
        return bool(self._pending or self._all_running())

    def _all_running(self) -> list[Job]:
        return [job for lane in list(self._lanes.values()) for job in lane.jobs]

    @torch.no_grad()
    def tick(self) -> None:
        """One step for every active request (see the module docstring)."""
        self._retire_dropped()
        self._admit()
        chosen = set(map(id, self._schedule()))
        rows = []
        for lane in self._lanes.values():
            jobs = [j for j in lane.jobs if lane.every_tick or id(j) in chosen]
            if jobs:
                rows += lane.tick(jobs, self._stepped, self.max_batch)
        self.last_batch_rows = max(rows, default=0)
        for r in rows:
            if r:
                self.metrics.batch(r)

    def _retire_dropped(self) -> None:
        now = time.monotonic()
        for job in self._all_running():
            if job.cancelled and not job.finished.is_set():  # cancel() after done is a no-op
                self.metrics.cancelled += 1
            elif now > job.deadline and not job.finished.is_set():
                job.emit(Event("error", status=504, message=f"request timed out after "
                                                            f"{self.timeout_s:g} s"))
        with self._cv:
            for job in [j for j in self._pending if now > j.deadline and not j.cancelled]:
                job.emit(Event("error", status=504, message=f"request timed out after "
                                                            f"{self.timeout_s:g} s in the queue"))
            self._pending = deque(j for j in self._pending
                                  if not j.cancelled and not j.finished.is_set())
            for lane in self._lanes.values():
                lane.keep([j for j in lane.jobs if not j.cancelled and not j.finished.is_set()])

    def _every_tick_rows(self) -> int:
        """Rows that step every tick (the lanes whose rows hold KV caches)."""
        return sum(lane.rows for lane in self._lanes.values() if lane.every_tick)

    def _admit(self) -> None:
        """First come, first served: the head waits until it fits (nothing overtakes it, so
        a big request is never starved by a stream of small ones)."""
        with self._cv:
            used, every = sum(j.n for j in self._all_running()), self._every_tick_rows()
            while self._pending:
                job = self._pending[0]
                if job.cancelled:
                    self._pending.popleft()
                    continue
                lane = self._lanes[job.work.model]
                # Rows that step every tick must fit one call together.
                if used + job.n > self.max_rows or (lane.every_tick
                                                    and every + job.n > self.max_batch):
                    break
                self._pending.popleft()
                used += job.n
                every += job.n if lane.every_tick else 0
                lane.add(job)

    def _schedule(self) -> list[Job]:
        """The requests of the passable lanes this tick steps: longest passed over first (then
        oldest), packed within max_batch rows beside the every-tick rows; the first always
        goes."""
        waiting = [j for lane in self._lanes.values() if not lane.every_tick for j in lane.jobs]
        order = sorted(waiting, key=lambda j: (-j.skipped, j.submitted))
        chosen, rows = [], self._every_tick_rows()
        for job in order:
            if not chosen or rows + job.n <= self.max_batch:
                chosen.append(job)
                rows += job.n
        for job in waiting:
            job.skipped = 0 if job in chosen else job.skipped + 1
        return chosen

    def _stepped(self, job: Job, step: int) -> None:
        """After a step of a request: its progress, its end or its draft."""
        self._progress(job)
        if job.state.done:
            self._finish(job, step)
        elif job.work.drafts:
            job.emit(Event("draft", step=step, tokens=job.state.current().cpu().clone()))

    def _progress(self, job: Job) -> None:
        """Stop the rows whose committed text holds a stop string, and send a "commit" event
        if a streaming request's committed text grew (module docstring)."""
        w = job.work
        if not (w.stop or w.stream):
            return
        grew = job.check_stops()
        if grew and w.stream and not w.drafts and not job.state.done:
            job.emit(job.event("commit", 0))

    def _finish(self, job: Job, steps: int) -> None:
        self.metrics.finished(job)
        job.emit(job.event("done", steps))
