"""Counters and histograms in the Prometheus text format, by hand (no client library needed).

Written from the engine thread and the event loop, read by GET /metrics: one lock guards all.
"""

from __future__ import annotations

import threading
import time
from collections import deque

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RATE_WINDOW_S = 10.0


class Histogram:
    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0
        self.max = 0.0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
        self.sum += value
        self.count += 1
        self.max = max(self.max, value)

    def lines(self, name: str) -> list[str]:
        out = [f'{name}_bucket{{le="{b}"}} {c}' for b, c in zip(self.buckets, self.counts,
                                                                  strict=True)]
        return [*out, f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.sum:.6f}",
                f"{name}_count {self.count}"]


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_rows = Histogram(BATCH_BUCKETS)
        self.tokens_total = 0
        self.cancelled = 0
        self.recent: deque[tuple[float, int]] = deque()  # (time, tokens) of finished requests

    def request(self, endpoint: str, status: int) -> None:
        with self.lock:
            self.requests[endpoint, status] = self.requests.get((endpoint, status), 0) + 1

    def batch(self, rows: int) -> None:
        with self.lock:
            self.batch_rows.observe(rows)

    def finished(self, job) -> None:
        w = job.work
        tokens = w.n * (w.length - len(w.prefix) - len(w.suffix))
        now = time.monotonic()
        with self.lock:
            self.latency.observe(now - job.submitted)
            self.tokens_total += tokens
            self.recent.append((now, tokens))

    def tokens_per_s(self) -> float:
        """Generated tokens per second over the last RATE_WINDOW_S seconds."""
        now = time.monotonic()
        with self.lock:
            while self.recent and self.recent[0][0] < now - RATE_WINDOW_S:
                self.recent.popleft()
            return sum(n for _, n in self.recent) / RATE_WINDOW_S

    def render(self, engine_stats: dict) -> str:
        rate = self.tokens_per_s()
        with self.lock:
            lines = ["# HELP redraft_requests_total HTTP requests by endpoint and status.",
                     "# TYPE redraft_requests_total counter"]
            lines += [f'redraft_requests_total{{endpoint="{e}",status="{s}"}} {n}'
                      for (e, s), n in sorted(self.requests.items())]
            for key, help_ in (("queue_depth", "requests waiting to join the batch"),
                               ("active_requests", "requests in the step loop"),
                               ("active_rows", "rows (sequences) in the step loop"),
                               ("last_batch_rows", "rows in the last tick's largest call")):
                lines += [f"# HELP redraft_{key} {help_}.", f"# TYPE redraft_{key} gauge",
                          f"redraft_{key} {engine_stats[key]}"]
            lines += ["# HELP redraft_tokens_per_second Generated tokens/s, last 10 s.",
                      "# TYPE redraft_tokens_per_second gauge",
                      f"redraft_tokens_per_second {rate:.3f}",
                      "# HELP redraft_generated_tokens_total Generated tokens.",
                      "# TYPE redraft_generated_tokens_total counter",
                      f"redraft_generated_tokens_total {self.tokens_total}",
                      "# HELP redraft_cancelled_total Requests dropped on disconnect.",
                      "# TYPE redraft_cancelled_total counter",
                      f"redraft_cancelled_total {self.cancelled}",
                      "# HELP redraft_batch_rows Rows per network call.",
                      "# TYPE redraft_batch_rows histogram",
                      *self.batch_rows.lines("redraft_batch_rows"),
                      "# HELP redraft_request_latency_seconds Submit to final result.",
                      "# TYPE redraft_request_latency_seconds histogram",
                      *self.latency.lines("redraft_request_latency_seconds")]
        return "\n".join(lines) + "\n"
