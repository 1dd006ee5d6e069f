"""Issue 26 item 6: a flood of connections never shuts /health out. Idle connections past
--max-connections are closed (longest idle first) to make room for new ones; when every
connection is busy with a request, a reserve serves /health only, every other route a 503;
past the reserve a new connection gets a 503 and is closed."""

import http.client
import json
import socket
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from redraft.model import load  # noqa: E402
from redraft.serve import create_app  # noqa: E402
from redraft.serve.limits import Limits, timeout_protocol  # noqa: E402
from tests.serve.live import running  # noqa: E402

LIMIT = 16


@pytest.fixture
def server(serve_runs):
    app = create_app([load(serve_runs["mdlm"])], max_steps=100, grace_s=1.0,
                     limits=Limits(max_connections=LIMIT, body_timeout_s=60.0,
                                   header_timeout_s=60.0, keep_alive_s=60.0))
    pool = app.state.connections
    with running(app, log_level="warning", timeout_keep_alive=60,
                 http=timeout_protocol(60.0, pool)) as (port, _):
        yield port, pool


def _get(port, path, method="GET", body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _wait(cond, what):
    end = time.monotonic() + 30  # a bound on waiting, not a timing assert
    while not cond():
        assert time.monotonic() < end, what
        time.sleep(0.02)


def test_idle_flood_leaves_every_route_answering(server):
    port, pool = server
    flood = [socket.create_connection(("127.0.0.1", port)) for _ in range(4 * LIMIT)]
    try:
        _wait(lambda: pool.evicted >= 3 * LIMIT, "the idle connections were not closed")
        assert _get(port, "/health")[0] == 200
        assert _get(port, "/v1/models")[0] == 200
        status, raw = _get(port, "/v1/completions", "POST",
                           {"prompt": "the ", "max_tokens": 4, "steps": 2})
        assert status == 200, raw
        assert len(pool.open) <= LIMIT and pool.refused == 0
        closed = 0
        for s in flood[:3 * LIMIT]:  # the oldest were closed by the server: EOF (or reset)
            s.settimeout(30)
            try:
                closed += s.recv(1) == b""
            except ConnectionResetError:
                closed += 1
        assert closed >= 3 * LIMIT
    finally:
        for s in flood:
            s.close()


def test_busy_connections_leave_health_a_reserve(server):
    port, pool = server
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n")  # the body never comes: each connection is busy
    busy, idle = [], []
    try:
        for _ in range(LIMIT):  # one at a time: each is busy before the next comes
            busy.append(socket.create_connection(("127.0.0.1", port)))
            busy[-1].sendall(head)
            _wait(lambda: sum(not c.idle() for c in pool.open) >= len(busy), "not busy yet")
        assert _get(port, "/health")[0] == 200  # served from the reserve
        for method, path in (("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
                             ("POST", "/v1/infill"), ("GET", "/v1/models"), ("GET", "/metrics"),
                             ("GET", "/")):
            status, raw = _get(port, path, method, {} if method == "POST" else None)
            assert status == 503 and b"connection limit" in raw, (path, raw)
        # idle newcomers in the reserve make room for each other: it never fills up
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3 * pool.reserve)]
        _wait(lambda: pool.evicted >= 2 * pool.reserve, "the reserve's idle were not closed")
        assert _get(port, "/health")[0] == 200 and pool.refused == 0
        assert len(pool.open) <= LIMIT + pool.reserve
    finally:
        for s in busy + idle:
            s.close()
    _wait(lambda: not pool.over, "the busy connections did not close")
    assert _get(port, "/v1/models")[0] == 200


class Fake:
    def __init__(self, idle: bool, since: float):
        self._idle, self.idle_since, self.closed = idle, since, False
        self.transport = self

    def idle(self):
        return self._idle

    def close(self):
        self.closed = True


def test_admit_closes_the_longest_idle_and_refuses_past_the_reserve():
    from redraft.serve.limits import Connections

    pool = Connections(4, reserve=2)
    old = [Fake(True, t) for t in (3.0, 1.0, 2.0)] + [Fake(False, 0.0)]
    pool.open.update(old)
    new = Fake(True, 9.0)
    pool.open.add(new)
    assert pool.admit(new) and old[1].closed and not old[0].closed and pool.evicted == 1
    pool = Connections(2, reserve=1)
    pool.open.update([Fake(False, 0.0), Fake(False, 0.0)])
    first, second = Fake(True, 5.0), Fake(True, 6.0)
    pool.open.add(first)
    assert pool.admit(first) and pool.over  # all busy: into the reserve
    pool.open.add(second)
    assert pool.admit(second) and first.closed  # the reserve's idle one makes room
    pool.open.add(busy := Fake(False, 7.0))
    second._idle = False
    assert not pool.admit(busy) and pool.refused == 1  # every connection busy: refused
