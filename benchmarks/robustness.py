"""Robustness benchmark: `redraft serve` under abuse, bounded in time.

A tiny diffusion model and its AR twin (byte tokenizer, trained for a few steps on a generated
corpus in a temporary folder: the weights are near random, which is all a load test needs)
served by `redraft serve` in a subprocess. Phases, each with /health probed every 50 ms:

  load64, load200   64 / 200 closed-loop clients for --seconds each (diffusion, AR, streams)
  body200mb         a 200 MB body with Content-Length, then 200 MB chunked (no length)
  slow200           200 connections that send half a body and stall (--body-timeout 5)
  disconnect100     100 streams dropped after their first event
  small_wait        an 8-token request sent while a maximal one runs (n = max_batch, steps =
                    max_steps, the whole context), with the default fair ticks and again on a
                    server with --max-rows = --max-batch (first come, first served)

and on a third server with --max-work ABUSE_WORK (issue 26):

  longstops16       16 streaming clients, half with four stop strings of the longest length
                    allowed (1,000 characters, each almost matching the text's end, so every
                    delta is held back and searched), half without; every 8th request sends
                    four 250,000-character stop strings (a 1 MB body, under the body limit),
                    which must be a quick 400. Streamed characters/s with and without stops.
  promptlists8      8 clients sending lists of prompts: 64 prompts x 512 steps (over the
                    request's work bound together, one alone within it: a 400), 8 small
                    prompts and 16 AR prompts (200)
  idleflood1100     1,100 connections opened and left idle (past --max-connections 1000)
                    while clients keep sending completions: /health and the completions must
                    be answered throughout

Reports server_errors (5xx responses + tracebacks in the server's log; must be 0),
peak_rss_mb (the server's VmHWM), health p50/p99 per phase and the small request's wait;
writes benchmarks/results/robustness.json and the "robustness" section of BENCHMARKS.md
(unless --no-write).

    python benchmarks/robustness.py               # about 3-4 minutes on 2 CPU cores
    python benchmarks/robustness.py --seconds 5 --no-write    # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import (  # noqa: E402
    ROOT,
    launch_server,
    machine,
    stop_server,
    write_json,
    write_section,
)

SEQ_LEN, MAX_BATCH, MAX_STEPS, BODY_TIMEOUT = 128, 64, 512, 5.0
ABUSE_WORK = 1 << 20  # the third server's --max-work: 64 prompts x 512 steps x 64 is twice it
HEADERS = {"Content-Type": "application/json"}


def train_pair(folder: Path) -> list[Path]:
    """Two tiny runs (mdlm, ar): a few optimiser steps on a generated corpus, seconds each."""
    corpus = folder / "corpus.txt"
    corpus.write_text("".join(f"the {w} sat on the mat. " for w in ("cat", "dog", "rat") * 400))
    runs = []
    for objective in ("mdlm", "ar"):
        out = folder / objective
        overrides = {"data.corpus": corpus, "data.tokenizer": "byte",
                     "data.cache_dir": folder / "cache", "model.n_layer": 2, "model.n_head": 2,
                     "model.d_model": 64, "model.seq_len": SEQ_LEN,
                     "diffusion.objective": objective, "train.batch_size": 8,
                     "train.max_steps": 4, "train.warmup_steps": 1, "train.eval_every": 4,
                     "train.eval_batches": 1, "train.progress": False, "train.out_dir": out}
        subprocess.run([sys.executable, "-m", "redraft", "train",
                        *(f"{k}={v}" for k, v in overrides.items())],
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs.append(out)
    return runs


class Server:
    def __init__(self, runs: list[Path], log: Path, *extra: str):
        self.log = log
        self.proc, self.url, self.args = launch_server(
            [*map(str, runs), "--max-batch", str(MAX_BATCH), "--max-steps", str(MAX_STEPS),
             "--body-timeout", str(BODY_TIMEOUT), "--log-level", "warning", *extra], log)
        self.port = int(self.url.rsplit(":", 1)[1])

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines()
                  if line.startswith("VmHWM:"))
        return kb / 1024

    def tracebacks(self) -> int:
        return self.log.read_text(errors="replace").count("Traceback")

    def stop(self) -> None:
        stop_server(self.proc)


class Tally:
    def __init__(self):
        self.status: dict[int, int] = {}
        self.errors: list[str] = []

    def add(self, status: int, text: str = "") -> None:
        self.status[status] = self.status.get(status, 0) + 1
        if status >= 500 and len(self.errors) < 5:
            self.errors.append(f"{status}: {text[:200]}")

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.status.items() if s >= 500)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _probe(port: int, ready, stop, out) -> None:
    """GET /health every 50 ms on one keep-alive connection until `stop` (its own process, so
    the load generator's busy event loop does not count as the server's latency)."""
    import http.client

    seen, statuses = [], {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            conn.request("GET", "/health")
            r = conn.getresponse()
            r.read()
            status = r.status
        except OSError:
            conn.close()
            status = -1
        seen.append((time.perf_counter() - t0) * 1000)
        statuses[status] = statuses.get(status, 0) + 1
        ready.set()
        time.sleep(0.05)
    out.put((seen, statuses))


async def with_probe(port: int, tally: Tally, work) -> tuple[dict, object]:
    """Run `work` while a probe process times /health: its p50/p99/max in ms."""
    ctx = multiprocessing.get_context("spawn")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    probe = ctx.Process(target=_probe, args=(port, ready, stop, out), daemon=True)
    probe.start()
    await asyncio.to_thread(ready.wait, 60)  # the work starts once the probe is probing
    try:
        result = await work
    finally:
        stop.set()
    seen, statuses = await asyncio.to_thread(out.get, True, 120)
    probe.join(10)
    for status, n in statuses.items():
        for _ in range(n):
            tally.add(status)
    return {"probes": len(seen), "p50_ms": round(_pct(seen, 0.5), 2),
            "p99_ms": round(_pct(seen, 0.99), 2), "max_ms": round(max(seen), 2)}, result


async def load(url: str, clients: int, seconds: float, tally: Tally) -> dict:
    """Closed-loop clients, each cycling diffusion, AR and streamed diffusion requests."""
    bodies = [{"model": "mdlm", "prompt": "the cat ", "max_tokens": 32, "steps": 16},
              {"model": "ar", "prompt": "the dog ", "max_tokens": 32},
              {"model": "mdlm", "prompt": "the ", "max_tokens": 24, "steps": 8, "stream": True,
               "diffusing": True}]
    done = [0]
    end = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient, c: int) -> None:
        i = c
        while time.monotonic() < end:
            body = {**bodies[i % len(bodies)], "seed": i}
            i += 1
            try:
                if body.get("stream"):
                    async with http.stream("POST", url + "/v1/completions", json=body) as r:
                        text = "".join([line async for line in r.aiter_lines()])
                else:
                    r = await http.post(url + "/v1/completions", json=body)
                    text = r.text
            except httpx.HTTPError as e:
                tally.add(-1, repr(e))  # a transport failure: reported, not a 5xx
                continue
            tally.add(r.status_code, text)
            done[0] += r.status_code == 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        await asyncio.gather(*(client(http, c) for c in range(clients)))
    return {"clients": clients, "seconds": seconds, "completed": done[0],
            "requests_per_s": round(done[0] / seconds, 2)}


async def _send_raw(port: int, head: bytes, chunks, read_timeout: float = 60) -> tuple[int, float]:
    """Send head + chunks (stop when the server stops reading); status and seconds to it."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    answer = asyncio.create_task(reader.readline())
    try:
        for chunk in chunks:
            if answer.done():
                break
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    try:
        line = await asyncio.wait_for(answer, read_timeout)
    except ConnectionError:  # the server answered and closed while we sent: the reset may
        line = b""           # discard its answer before we read it (-1: no status seen)
    seconds = time.perf_counter() - t0
    writer.close()
    return (int(line.split()[1]) if line else -1), seconds


async def big_bodies(port: int, tally: Tally) -> dict:
    size, block = 200 * 1024 * 1024, b"x" * (1 << 20)
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    declared = await _send_raw(port, head, (block for _ in range(200)))
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b"%x\r\n" % len(block) + block + b"\r\n"
    chunked = await _send_raw(port, head, (piece for _ in range(200)))
    for status, _ in (declared, chunked):
        tally.add(status)
    return {"declared": {"status": declared[0], "seconds": round(declared[1], 3)},
            "chunked": {"status": chunked[0], "seconds": round(chunked[1], 3)}}


async def slow_bodies(port: int, n: int, tally: Tally) -> dict:
    """n connections that promise 1000 bytes, send 20 and stall: each must get 408."""
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    results = await asyncio.gather(*(_send_raw(port, head, [b'{"prompt": "the cat"']) for _ in
                                     range(n)))
    for status, _ in results:
        tally.add(status)
    counts: dict[int, int] = {}
    for status, _ in results:
        counts[status] = counts.get(status, 0) + 1
    return {"connections": n, "status": counts,
            "max_seconds": round(max(s for _, s in results), 2)}


async def disconnects(url: str, n: int, tally: Tally) -> dict:
    """n streams, each closed after its first draft event; then the engine must drain."""
    body = {"model": "mdlm", "prompt": "the ", "max_tokens": 64, "steps": MAX_STEPS,
            "stream": True, "diffusing": True}

    async def one(http: httpx.AsyncClient, i: int) -> None:
        async with http.stream("POST", url + "/v1/completions", json={**body, "seed": i}) as r:
            tally.add(r.status_code)
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    return  # leaving the block closes the connection mid-stream

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(one(http, i) for i in range(n)))
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=30) as http:
        while (await http.get(url + "/health")).json()["active_requests"]:
            if time.perf_counter() - t0 > 60:
                break
            await asyncio.sleep(0.1)
        metrics = (await http.get(url + "/metrics")).text
    cancelled = next(int(float(line.split()[-1])) for line in metrics.splitlines()
                     if line.startswith("redraft_cancelled_total"))
    return {"streams": n, "drained_s": round(time.perf_counter() - t0, 2),
            "cancelled_total": cancelled}


async def small_wait(url: str, cap_s: float, tally: Tally) -> dict:
    """Seconds an 8-token request takes alone, and while a maximal request runs."""
    small = {"model": "mdlm", "prompt": "the ", "max_tokens": 8, "steps": 8, "seed": 1}
    big = {"model": "mdlm", "prompt": "the ", "max_tokens": SEQ_LEN - 4, "steps": MAX_STEPS,
           "n": MAX_BATCH, "seed": 2}
    async with httpx.AsyncClient(timeout=cap_s + 900) as http:  # a loaded machine: patience
        t0 = time.perf_counter()
        tally.add((await http.post(url + "/v1/completions", json=small)).status_code)
        alone = time.perf_counter() - t0
        started = time.perf_counter()
        task = asyncio.create_task(http.post(url + "/v1/completions", json=big))
        while (await http.get(url + "/health")).json()["active_rows"] < MAX_BATCH:
            await asyncio.sleep(0.02)
        t0 = time.perf_counter()
        try:
            r = await asyncio.wait_for(http.post(url + "/v1/completions", json=small), cap_s)
            tally.add(r.status_code)
            behind = round(time.perf_counter() - t0, 3)
        except asyncio.TimeoutError:
            behind = f"> {cap_s:g} (cap)"
        r = await task
        tally.add(r.status_code, r.text)
        return {"alone_s": round(alone, 3), "behind_maximal_s": behind,
                "maximal_s": round(time.perf_counter() - started, 3),
                "maximal": f"n={MAX_BATCH}, steps={MAX_STEPS}, length={SEQ_LEN}"}


async def _closed_loop(url: str, clients: int, seconds: float, tally: Tally, bodies: list,
                       expect: dict[int, int] | None = None) -> dict:
    """Closed-loop clients cycling `bodies` (streams read to the end); per body: statuses,
    and for streams the characters of text received. expect: body index -> its status (a
    different one is counted as unexpected)."""
    per = [{"status": {}, "chars": 0, "seconds": 0.0} for _ in bodies]
    unexpected = [0]
    end = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient, c: int) -> None:
        i = c
        while time.monotonic() < end:
            k = i % len(bodies)
            body = {**bodies[k], "seed": i}
            i += 1
            t0 = time.perf_counter()
            try:
                if body.get("stream"):
                    async with http.stream("POST", url + "/v1/completions", json=body) as r:
                        text = ""
                        async for line in r.aiter_lines():
                            text += line
                            if line.startswith("data: {"):
                                for ch in json.loads(line[6:]).get("choices", []):
                                    per[k]["chars"] += len(ch.get("text") or "")
                else:
                    r = await http.post(url + "/v1/completions", json=body)
                    text = r.text
            except httpx.HTTPError as e:
                tally.add(-1, repr(e))
                continue
            per[k]["seconds"] += time.perf_counter() - t0
            tally.add(r.status_code, text)
            per[k]["status"][r.status_code] = per[k]["status"].get(r.status_code, 0) + 1
            if expect is not None and expect.get(k, 200) != r.status_code:
                unexpected[0] += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        await asyncio.gather(*(client(http, c) for c in range(clients)))
    return {"clients": clients, "seconds": seconds, "per_body": per,
            "unexpected_status": unexpected[0],
            "completed": sum(n for p in per for n in p["status"].values())}


async def long_stops(url: str, clients: int, seconds: float, tally: Tally) -> dict:
    """Streams with the longest stop strings allowed beside streams without; every 8th
    request four 250,000-character stop strings (refused)."""
    teasers = [("the " * 250)[:999] + "\x00", ("a" * 999) + "\x00", (" " * 999) + "\x00",
               ("e " * 500)[:999] + "\x00"]
    stream = {"model": "mdlm", "prompt": "the ", "max_tokens": 96, "steps": 24,
              "stream": True}
    ar = {"model": "ar", "prompt": "the ", "max_tokens": 96, "stream": True}
    huge = {**stream, "stop": ["ab" * 125_000] * 4}
    bodies = [{**stream, "stop": teasers}, stream, {**ar, "stop": teasers}, ar] * 2
    bodies[7] = huge
    out = await _closed_loop(url, clients, seconds, tally, bodies, expect={7: 400})

    def rate(ks):
        chars = sum(out["per_body"][k]["chars"] for k in ks)
        return round(chars / seconds, 1)
    out["chars_per_s"] = {"mdlm_with_stops": rate([0, 4]), "mdlm_without": rate([1, 5]),
                          "ar_with_stops": rate([2, 6]), "ar_without": rate([3])}
    refused = out["per_body"][7]
    out["huge_stops"] = {"status": refused["status"],
                         "mean_s": round(refused["seconds"] / max(1, sum(
                             refused["status"].values())), 3)}
    del out["per_body"]
    return out


async def prompt_lists(url: str, clients: int, seconds: float, tally: Tally) -> dict:
    over = {"model": "mdlm", "prompt": ["the "] * 64, "steps": MAX_STEPS, "max_tokens": 60}
    small = {"model": "mdlm", "prompt": ["the ", "a "] * 4, "steps": 16, "max_tokens": 32}
    ar = {"model": "ar", "prompt": ["the "] * 16, "max_tokens": 64}
    # clients x the longest list stays within the queue (--max-queue 256 jobs): no 429
    out = await _closed_loop(url, clients, seconds, tally, [over, small, ar], expect={0: 400})
    out["status_by_body"] = {name: p["status"] for name, p in
                             zip(("64x512 steps (over)", "8 small", "16 ar"), out["per_body"],
                                 strict=True)}
    del out["per_body"]
    return out


async def idle_flood(url: str, port: int, n: int, seconds: float, tally: Tally) -> dict:
    """n idle connections (opened in batches, kept while `seconds` of completions run)."""
    flood = []
    failed = 0
    for i in range(0, n, 100):
        opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port)
                                        for _ in range(min(100, n - i))),
                                      return_exceptions=True)
        flood += [o for o in opened if not isinstance(o, BaseException)]
        failed += sum(isinstance(o, BaseException) for o in opened)
    body = {"model": "mdlm", "prompt": "the ", "max_tokens": 16, "steps": 8}
    out = await _closed_loop(url, 8, seconds, tally, [body, {**body, "model": "ar"}])
    closed = 0
    for reader, writer in flood:
        try:
            closed += await asyncio.wait_for(reader.read(1), 0.01) == b""
        except ConnectionError:  # reset: closed by the server too
            closed += 1
        except TimeoutError:  # still open
            continue
        finally:
            writer.close()
    return {"connections": n, "open_failed": failed, "closed_by_server": closed,
            "completions": out["completed"], "status": out["per_body"][0]["status"]}


async def abuse(runs: list[Path], args, folder: Path, tally: Tally) -> tuple[dict, float, int,
                                                                             list[str]]:
    """The issue-26 phases on a server with --max-work ABUSE_WORK."""
    server = Server(runs, folder / "server-abuse.log", "--max-work", str(ABUSE_WORK))
    phases: dict[str, dict] = {}
    try:
        for name, work in (
                ("longstops16", lambda: long_stops(server.url, 16, args.seconds, tally)),
                ("promptlists8", lambda: prompt_lists(server.url, 8, args.seconds, tally)),
                ("idleflood1100", lambda: idle_flood(server.url, server.port, 1100,
                                                     args.seconds, tally))):
            probe, out = await with_probe(server.port, tally, work())
            phases[name] = {**out, "health": probe}
            print(f"{name}: {phases[name]}", file=sys.stderr)
        return phases, server.peak_rss_mb(), server.tracebacks(), server.args
    finally:
        server.stop()


async def run_all(runs: list[Path], args, folder: Path) -> dict:
    tally = Tally()
    server = Server(runs, folder / "server.log")
    phases: dict[str, dict] = {}
    try:
        for clients in (64, 200):
            probe, out = await with_probe(server.port, tally,
                                          load(server.url, clients, args.seconds, tally))
            phases[f"load{clients}"] = {**out, "health": probe}
            print(f"load{clients}: {phases[f'load{clients}']}", file=sys.stderr)
        probe, out = await with_probe(server.port, tally, big_bodies(server.port, tally))
        phases["body200mb"] = {**out, "health": probe}
        probe, out = await with_probe(server.port, tally, slow_bodies(server.port, 200, tally))
        phases["slow200"] = {**out, "health": probe}
        probe, out = await with_probe(server.port, tally, disconnects(server.url, 100, tally))
        phases["disconnect100"] = {**out, "health": probe}
        for name in ("body200mb", "slow200", "disconnect100"):
            print(f"{name}: {phases[name]}", file=sys.stderr)
        fair = await small_wait(server.url, args.cap, tally)
        print(f"small_wait (fair): {fair}", file=sys.stderr)
        peak, tracebacks, args_used = server.peak_rss_mb(), server.tracebacks(), server.args
    finally:
        server.stop()
    fifo_server = Server(runs, folder / "server-fifo.log", "--max-rows", str(MAX_BATCH))
    try:
        fifo = await small_wait(fifo_server.url, args.cap, tally)
        print(f"small_wait (first come, first served): {fifo}", file=sys.stderr)
        tracebacks += fifo_server.tracebacks()
    finally:
        fifo_server.stop()
    abused, abuse_peak, abuse_tracebacks, abuse_args = await abuse(runs, args, folder, tally)
    phases.update(abused)
    tracebacks += abuse_tracebacks
    peak = max(peak, abuse_peak)
    health_p99 = max(p["health"]["p99_ms"] for p in phases.values())
    return {"server_errors": tally.server_errors + tracebacks, "server_tracebacks": tracebacks,
            "error_samples": tally.errors, "status_counts": dict(sorted(tally.status.items())),
            "peak_rss_mb": round(peak, 1), "health_p99_ms": health_p99,
            "health_p99_s": round(health_p99 / 1000, 4),
            "health_p99_s_issue26": round(max(p["health"]["p99_ms"]
                                              for p in abused.values()) / 1000, 4),
            "abuse_server_command": "redraft " + shlex.join(abuse_args),
            "small_wait": {"fair": fair, "first_come_first_served": fifo},
            "phases": phases, "server_command": "redraft " + shlex.join(args_used)}


def report(summary: dict) -> str:
    m, p, w = summary["machine"], summary["phases"], summary["small_wait"]
    fifo = w["first_come_first_served"]["behind_maximal_s"]
    cancelled = p["disconnect100"]["cancelled_total"]
    load = " / ".join(str(v) for v in summary.get("load_average_1min", {}).values()) or "?"
    rows = "\n".join(
        f"| {name} | {ph.get('completed', ph.get('completions', ''))} | "
        f"{ph['health']['probes']} | "
        f"{ph['health']['p50_ms']} | "
        f"{ph['health']['p99_ms']} | {ph['health']['max_ms']} |" for name, ph in p.items())
    return f"""## Robustness: the server under abuse

`{summary['command']}` on {m['cpu']} ({m['cores']} cores; 1-minute load average {load} at
the start and end: above about 1, other jobs were running and the latencies are upper bounds),
{m['date']}. Tiny model pair ({summary['model']}), served
as `{summary['server_command_short']}`.

| | value | bar |
|---|---|---|
| `server_errors` (5xx responses + tracebacks in the log) | {summary['server_errors']} | 0 |
| `peak_rss_mb` (server VmHWM, whole run) | {summary['peak_rss_mb']} | < 1000 |
| `health_p99_ms` (worst phase) | {summary['health_p99_ms']} | |
| small request alone | {w['fair']['alone_s']} s | |
| small request behind a maximal one, fair ticks (default) | {w['fair']['behind_maximal_s']} s | |
| ... first come, first served (`--max-rows {MAX_BATCH}`) | {fifo} s | |

The maximal request: {w['fair']['maximal']}; it took {w['fair']['maximal_s']} s with the
small one beside it, {w['first_come_first_served']['maximal_s']} s first come, first served
(one run each on a shared machine; the fair ticks cost the big request at most one tick per
step of the small one). Per phase (`/health` probed every
50 ms on its own connection from its own process; ms):

| phase | requests completed | /health probes | p50 | p99 | max |
|---|---|---|---|---|---|
{rows}

- 200 MB body with Content-Length: HTTP {p['body200mb']['declared']['status']} in
  {p['body200mb']['declared']['seconds']} s (refused before reading); chunked, no length:
  HTTP {p['body200mb']['chunked']['status']} in {p['body200mb']['chunked']['seconds']} s.
- 200 slow bodies (half sent, then silence): statuses {p['slow200']['status']}, all answered
  within {p['slow200']['max_seconds']} s (`--body-timeout {BODY_TIMEOUT:g}`).
- 100 streams dropped after their first event: the engine drained in
  {p['disconnect100']['drained_s']} s; `redraft_cancelled_total` {cancelled}.
- All statuses seen by the clients and probes: {summary['status_counts']}.

Issue 26 phases, on a server with `--max-work {ABUSE_WORK}` (`/health` p99 over them:
{summary.get('health_p99_s_issue26')} s):

- Streams beside the longest stop strings allowed (4 x 1,000 characters, always almost
  matching): characters/s {p['longstops16']['chars_per_s']}; four 250,000-character stop
  strings (1 MB body): {p['longstops16']['huge_stops']['status']}, answered in
  {p['longstops16']['huge_stops']['mean_s']} s on average.
- Lists of prompts: {p['promptlists8']['status_by_body']} (a list is bounded as a whole).
- 1,100 idle connections (`--max-connections 1000`): {p['idleflood1100']['closed_by_server']}
  closed by the server to make room, {p['idleflood1100']['completions']} completions answered
  meanwhile ({p['idleflood1100']['status']} for the diffusion ones).
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="per load phase")
    ap.add_argument("--cap", type=float, default=120.0,
                    help="the longest the small request is waited for")
    ap.add_argument("--no-write", action="store_true", help="print only (smoke runs)")
    ap.add_argument("--reuse", action="store_true",
                    help="rewrite the BENCHMARKS.md section from results/robustness.json")
    args = ap.parse_args()
    if args.reuse:
        summary = json.loads((ROOT / "benchmarks" / "results" / "robustness.json").read_text())
        write_section("robustness", report(summary))
        return
    load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = train_pair(folder)
        result = asyncio.run(run_all(runs, args, folder))
    result["load_average_1min"] = {"start": round(load_before, 2),
                                   "end": round(os.getloadavg()[0], 2)}
    command = "python benchmarks/robustness.py " + shlex.join(sys.argv[1:])
    summary = {"machine": machine(), "command": command.strip(),
               "model": f"byte tokenizer, 2 layers, d_model 64, context {SEQ_LEN}, mdlm + ar",
               **result}
    summary["server_command_short"] = " ".join(
        a for a in summary["server_command"].split() if not a.startswith("/"))
    print(json.dumps(summary, indent=2))
    if not args.no_write:
        path = write_json("robustness", summary)
        write_section("robustness", report(summary))
        print(f"wrote {path} and BENCHMARKS.md", file=sys.stderr)


if __name__ == "__main__":
    main()
