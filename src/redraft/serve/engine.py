"""Step-level continuous batching: one thread owns the models and runs one tick at a time.

A tick: (1) retire cancelled and timed-out requests; (2) admit queued requests, first come first
served, while the admitted rows stay within max_rows (and the AR rows within max_batch);
(3) choose the diffusion requests this tick steps: the ones passed over longest first, packed
while the tick's rows stay within max_batch (always at least one); (4) for every (model, canvas
length) bucket of the chosen requests, stack the rows that need logits into ONE network call
with a per-row t (so requests at different steps, with different step counts and samplers,
share it), then let each request's own step rule advance its own rows; (5) step the AR rows of
each model together, one token each, whatever their positions (serve/cohort.py); (6) step the
block-diffusion rows of each model together over one shared KV cache, each row at its own
block and step (serve/blocks.py).

After each step the engine looks at every request's progress (`_progress`), through three
calls any row state offers (sampling/state.py: DiffusionState, ARState; a block state can
offer the same): `committed()` (B,), the leading canvas positions of each row that can no
longer change; `current()` (B, L), the canvas; `stop_rows(rows)`, finish rows now. With stop
strings, the text of each row's committed positions is searched for them, and a row that holds
one is stopped at once (no more network calls for it; an AR row is checked between its draw
and its next call). With `stream`, a "commit" event carries the canvas and the counts whenever
a row's committed text grew, so a client gets text as soon as it is final: every token for an
AR row, the left-to-right settled run for a diffusion row.

Fairness: max_rows (default 2 x max_batch) lets a small request in beside a maximal one (n =
max_batch rows for thousands of steps), and step (3) then alternates the two instead of
running the big one to the end first: the small request's wait grows by the big one's tick
time per step instead of by its whole run. max_rows = max_batch is plain first come, first
served. A request that
finishes is retired at once, and its slot is free for the next tick. Diffusion buckets use
exact lengths, so no row is padded; AR rows mask the cache slots past their own position. A
row's logits do not depend on its batch-mates (up to the float rounding of batched matmuls).

The queue is bounded: submit() raises QueueFull rather than let memory grow. Torch releases
the GIL inside its kernels, so the HTTP event loop stays responsive while the engine computes.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import torch

from redraft.config import SERVE
from redraft.errors import RedraftError
from redraft.model import Model
from redraft.serve.blocks import BlockLane
from redraft.serve.cohort import Cohort
from redraft.serve.jobs import Event, Job, Work
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
        self._active: list[Job] = []  # diffusion requests
        self._cohorts: list[Cohort] = []  # AR requests
        self._fresh_ar: list[Job] = []  # admitted AR requests not yet prefilled
        self._blocks = BlockLane()  # block-diffusion requests (serve/blocks.py)
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
            active = self._active + self._fresh_ar + [j for c in self._cohorts for j in c.jobs]
            active += self._blocks.jobs
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
        for job in [*self._pending, *self._active, *self._fresh_ar,
                    *(j for c in self._cohorts for j in c.jobs), *self._blocks.jobs]:
            job.emit(Event("error", status=503, message="the server shut down before the "
                                                          "request finished"))
        self._pending.clear()
        self._blocks.clear()
        self._active, self._fresh_ar, self._cohorts = [], [], []

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
                self._active, self._fresh_ar, self._cohorts = [], [], []
                self._blocks.clear()

    def _busy(self) -> bool:
        return bool(self._pending or self._active or self._fresh_ar or self._cohorts
                    or self._blocks.jobs)

    def _all_running(self) -> list[Job]:
        return [*self._active, *self._fresh_ar, *(j for c in self._cohorts for j in c.jobs),
                *self._blocks.jobs]

    @torch.no_grad()
    def tick(self) -> None:
        """One step for every active request (see the module docstring)."""
        self._retire_dropped()
        self._admit()
        chosen = self._schedule()
        rows = [self._diffusion_bucket(key, jobs) for key, jobs in self._buckets(chosen).items()]
        rows += self._ar_tick()
        rows += self._blocks.tick(lambda job: self._finish(job, job.state.i), self._progress,
                                  max_rows=self.max_batch)
        self.last_batch_rows = max(rows, default=0)
        for r in rows:
            if r:
                self.metrics.batch(r)

    def _retire_dropped(self) -> None:
        now = time.monotonic()
        for job in self._all_running():
            if job.cancelled and not job.finished.is_set():  # cancel() after done is a no-op
                self.metrics.cancelled += 1
            elif now > job.deadline:
                job.emit(Event("error", status=504, message=f"request timed out after "
                                                            f"{self.timeout_s:g} s"))
        keep = [j for j in self._all_running() if not j.cancelled and not j.finished.is_set()]
        with self._cv:
            for job in [j for j in self._pending if now > j.deadline and not j.cancelled]:
                job.emit(Event("error", status=504, message=f"request timed out after "
                                                            f"{self.timeout_s:g} s in the queue"))
            self._pending = deque(j for j in self._pending
                                  if not j.cancelled and not j.finished.is_set())
            self._active = [j for j in self._active if j in keep]
            self._fresh_ar = [j for j in self._fresh_ar if j in keep]
            for c in self._cohorts:
                c.keep([j for j in c.jobs if j in keep])
            self._cohorts = [c for c in self._cohorts if c.jobs]
            self._blocks.keep(keep)

    def _ar_rows(self) -> int:
        """Rows that step every tick: the AR rows and the block-diffusion rows."""
        return sum(j.n for j in [*self._fresh_ar, *(j for c in self._cohorts for j in c.jobs)]
                   ) + self._blocks.rows

    def _admit(self) -> None:
        """First come, first served: the head waits until it fits (nothing overtakes it, so
        a big request is never starved by a stream of small ones)."""
        with self._cv:
            used, ar = sum(j.n for j in self._all_running()), self._ar_rows()
            while self._pending:
                job = self._pending[0]
                if job.cancelled:
                    self._pending.popleft()
                    continue
                # AR and block rows all step every tick, so they alone must fit one call.
                every_tick = job.served.is_ar or job.served.objective.blockwise
                if used + job.n > self.max_rows or (every_tick and ar + job.n > self.max_batch):
                    break
                self._pending.popleft()
                used += job.n
                if job.served.objective.blockwise:
                    ar += job.n
                    self._blocks.add(job)
                elif job.served.is_ar:
                    ar += job.n
                    self._fresh_ar.append(job)
                else:
                    self._active.append(job)

    def _schedule(self) -> list[Job]:
        """The diffusion requests this tick steps: longest passed over first (then oldest),
        packed within max_batch rows beside the AR rows; the first always goes."""
        order = sorted(self._active, key=lambda j: (-j.skipped, j.submitted))
        chosen, rows = [], self._ar_rows()
        for job in order:
            if not chosen or rows + job.n <= self.max_batch:
                chosen.append(job)
                rows += job.n
        for job in self._active:
            job.skipped = 0 if job in chosen else job.skipped + 1
        return chosen

    def _buckets(self, jobs: list[Job]) -> dict[tuple[str, int], list[Job]]:
        buckets: dict[tuple[str, int], list[Job]] = {}
        for job in jobs:
            # A state may name its own bucket (DiffusionGemma: one per model, any length).
            length = getattr(job.state, "bucket", job.work.length)
            buckets.setdefault((job.work.model, length), []).append(job)
        return buckets

    def _diffusion_bucket(self, key: tuple[str, int], jobs: list[Job]) -> int:
        served = self.models[key[0]]
        if getattr(served, "batches_own_steps", False):  # redraft.hf: serve/hf_batch.py
            from redraft.serve.hf_batch import step_jobs

            return step_jobs(jobs, self._finish)
        inputs = [job.state.inputs(served.time_conditioned) for job in jobs]  # (rows, x, t) each
        counts = [len(x) for _, x, _ in inputs]
        if sum(counts):
            x = torch.cat([x for _, x, _ in inputs])
            t = torch.cat([t for _, _, t in inputs]).to(x.device)
            logits = served.backbone(x, t).split(counts)
            for job, (rows, _, _), lg, c in zip(jobs, inputs, logits, counts, strict=True):
                if c:
                    job.state.set_logits(rows, lg)
                    job.row_nfe += c
        for job in jobs:
            x = job.state.advance()
            self._progress(job)
            if job.state.done:
                self._finish(job, job.state.i)  # adaptive samplers choose their own count
            elif job.work.drafts:
                job.emit(Event("draft", step=job.state.i, tokens=x.cpu().clone()))
        return sum(counts)

    def _ar_tick(self) -> list[int]:
        rows = []
        groups: dict[tuple[str, int], list[Job]] = {}
        for job in self._fresh_ar:
            groups.setdefault((job.work.model, len(job.work.prefix)), []).append(job)
        with self._cv:
            self._fresh_ar = []
        for (name, _), jobs in groups.items():
            cohort = Cohort.prefill(self.models[name], jobs)
            rows.append(cohort.rows)
            self._cohorts.append(cohort)
        by_model: dict[str, list[Cohort]] = {}
        for c in self._cohorts:
            by_model.setdefault(c.served.name, []).append(c)
        cohorts = [Cohort.merge(cs) if len(cs) > 1 else cs[0] for cs in by_model.values()]
        for cohort in cohorts:
            cohort.draw()
            for job in cohort.jobs:
                self._progress(job)
                drawn = job.state.tokens.shape[1] - 1 - len(job.work.prefix)
                if job.state.done:
                    self._finish(job, drawn)
                elif job.work.drafts:
                    job.emit(Event("draft", step=drawn, tokens=job.state.current()))
            rows.append(cohort.forward())
        with self._cv:
            self._cohorts = [c for c in cohorts if c.jobs]
        return rows

    def _progress(self, job: Job) -> None:
        """After a step: stop the rows whose committed text holds a stop string, and send a
        "commit" event if a streaming request's committed text grew (module docstring)."""
        w = job.work
        if not (w.stop or w.stream):
            return
        counts = job.state.committed().tolist()
        if counts == job.committed:
            return
        grown = [r for r, (a, b) in enumerate(zip(job.committed, counts, strict=True)) if b > a]
        job.committed = counts
        x = job.state.current()
        if w.stop:
            stop = torch.zeros(w.n, dtype=torch.bool)
            end = w.length - len(w.suffix)
            for r in grown:  # serve/stops.py: only the new ids are decoded and searched
                stop[r] = job.scans[r].feed(x[r, len(w.prefix):min(counts[r], end)])
            if stop.any():
                job.state.stop_rows(stop)
                job.committed = job.state.committed().tolist()
        if w.stream and not w.drafts and not job.state.done:
            job.emit(self._event("commit", job, 0))

    def _event(self, kind: str, job: Job, step: int) -> Event:
        lp = job.state.logprob_arrays()
        return Event(kind, step=step, tokens=job.state.current().cpu().clone(),
                     counts=job.state.committed().tolist(),
                     logprobs=None if lp is None else tuple(a.cpu().clone() for a in lp))

    def _finish(self, job: Job, steps: int) -> None:
        with self._cv:
            if job in self._active:
                self._active.remove(job)
        self.metrics.finished(job)
        job.emit(self._event("done", job, steps))

