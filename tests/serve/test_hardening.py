"""Bad HTTP requests against a real uvicorn server (a thread, 127.0.0.1, a free port): each gets a
4xx with a JSON error naming the problem, no traceback reaches the server log, and the server
answers the next request (on the same keep-alive connection, unless the error closed it on
purpose: 408 and 413). Then what only a socket shows: slow headers, slow and huge bodies, a
client gone mid-request; and `redraft serve` refusing limits it cannot honour."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import socket
import time

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from redraft.cli import main  # noqa: E402
from redraft.model import load  # noqa: E402
from redraft.serve import create_app  # noqa: E402
from redraft.serve.limits import Limits, timeout_protocol  # noqa: E402
from tests.serve.live import running  # noqa: E402

KEY = "s3cret"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {"Content-Type": "application/json"}
LIMITS = Limits(max_body_bytes=1 << 20, body_timeout_s=1.0, header_timeout_s=1.0,
                max_prompt_tokens=32, max_work=10**6)


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        return [r.getMessage() for r in self.records
                if r.exc_info or "Traceback" in r.getMessage() or r.levelno >= logging.ERROR]


@pytest.fixture(scope="module")
def server(serve_runs):
    app = create_app([load(serve_runs["mdlm"]), load(serve_runs["ar"])],
                     api_key=KEY, max_steps=4096, grace_s=1.0, limits=LIMITS)
    log = Records()
    for name in ("uvicorn", "redraft", ""):  # log_config=None: records reach these loggers
        logging.getLogger(name).addHandler(log)
    with running(app, log_config=None, http=timeout_protocol(LIMITS.header_timeout_s),
                 timeout_keep_alive=5) as (port, _):
        yield port, app, log
    for name in ("uvicorn", "redraft", ""):
        logging.getLogger(name).removeHandler(log)


def _body(obj) -> bytes:
    return obj if isinstance(obj, bytes) else json.dumps(obj).encode()


DEEP = b"[" * 100_000 + b"]" * 100_000
BIG_INT = b"9" * 5000
P = "/v1/completions"
C = "/v1/chat/completions"
I = "/v1/infill"  # noqa: E741
# name: (method, path, headers (None: JSON + key), body, status, words the message must hold)
BAD = {
    "truncated json": ("POST", P, None, b'{"prompt": ', 400, "not valid JSON"),
    "empty body": ("POST", P, None, b"", 400, "not valid JSON"),
    "array body": ("POST", P, None, b"[1, 2]", 400, "JSON object"),
    "string body": ("POST", P, None, b'"the cat"', 400, "JSON object"),
    "trailing garbage": ("POST", P, None, b'{"prompt": "a"} x', 400, "Extra data"),
    "single quotes": ("POST", P, None, b"{'prompt': 'a'}", 400, "not valid JSON"),
    "5000-digit integer": ("POST", P, None, b'{"max_tokens": ' + BIG_INT + b"}", 400,
                           "5000 digits"),
    "5000-digit negative integer": ("POST", P, None, b'{"seed": -' + BIG_INT + b"}", 400,
                                    "5000 digits"),
    "5000-digit number in a list": ("POST", P, None, b'{"prompt": [' + BIG_INT + b"]}", 400,
                                    "digits"),
    "float overflow": ("POST", P, None, b'{"temperature": 1e999}', 400, "not a finite"),
    "NaN": ("POST", P, None, b'{"temperature": NaN}', 400, "NaN is not JSON"),
    "Infinity": ("POST", P, None, b'{"guidance": Infinity}', 400, "Infinity is not JSON"),
    "-Infinity": ("POST", P, None, b'{"top_p": -Infinity}', 400, "-Infinity is not JSON"),
    "nested 100000 deep": ("POST", P, None, DEEP, 400, "nested too deeply"),
    "nested deep in a field": ("POST", P, None, b'{"prompt": ' + DEEP + b"}", 400,
                               "nested too deeply"),
    "nested 50 deep": ("POST", P, None, b'{"prompt": ' + b"[" * 50 + b"]" * 50 + b"}", 400,
                       "prompt"),
    "lone high surrogate": ("POST", P, None, b'{"prompt": "the \\ud800 cat"}', 400,
                            "surrogate"),
    "lone low surrogate in chat": ("POST", C, None, b'{"messages": [{"role": "user", '
                                   b'"content": "\\udfff"}]}', 400, "surrogate"),
    "surrogate in a key": ("POST", P, None, b'{"\\ud83d": 1}', 400, "surrogate"),
    "surrogate in infill suffix": ("POST", I, None, b'{"suffix": "\\udc00"}', 400, "surrogate"),
    "not UTF-8": ("POST", P, None, b'{"prompt": "\xff\xfe"}', 400, "not UTF-8"),
    "UTF-16 body": ("POST", P, None, '{"prompt": "a"}'.encode("utf-16"), 400, "not UTF-8"),
    "UTF-8 BOM": ("POST", P, None, b'\xef\xbb\xbf{"prompt": "a"}', 400, "BOM"),
    "string for int": ("POST", P, None, {"max_tokens": "8"}, 400, "max_tokens"),
    "bool for int": ("POST", P, None, {"n": True}, 400, "n: "),
    "float for int": ("POST", P, None, {"steps": 8.5}, 400, "steps"),
    "unknown field": ("POST", P, None, {"stpes": 8}, 400, "stpes"),
    "long unknown field": ("POST", P, None, {"x" * 5000: 1}, 400, "Extra inputs"),
    "steps 0": ("POST", P, None, {"steps": 0}, 400, "steps"),
    "steps past the server's": ("POST", P, None, {"steps": 5000}, 400, "at most 4096"),
    "steps past int32": ("POST", P, None, {"steps": 2**40}, 400, "steps"),
    "n 0": ("POST", P, None, {"n": 0}, 400, "n: "),
    "n 65": ("POST", P, None, {"n": 65}, 400, "n: "),
    "negative seed": ("POST", P, None, {"seed": -1}, 400, "seed"),
    "seed past int63": ("POST", P, None, {"seed": 2**63}, 400, "seed"),
    "max_tokens 0": ("POST", P, None, {"max_tokens": 0}, 400, "max_tokens"),
    "max_tokens past the context": ("POST", P, None, {"prompt": "the ", "max_tokens": 61}, 400,
                                    "at most 60"),
    "prompt past the token limit": ("POST", P, None, {"prompt": "the cat " * 5}, 400,
                                    "--max-prompt-tokens"),
    "work past the limit": ("POST", P, None, {"n": 8, "steps": 4096, "max_tokens": 60}, 400,
                            "--max-work"),
    "ar work within the limit": ("POST", P, None, {"model": "ar", "n": 64, "max_tokens": 60}, 200,
                               None),  # 64 x 64 = 4096 <= 10**6: allowed (a control)
    # issue 26 item 2: a list of prompts is one request; its work and prompt tokens add up
    "64 prompts past the work limit together": ("POST", P, None, {
        "prompt": [""] * 64, "steps": 300, "max_tokens": 60}, 400, "64 prompts are 1,152,000"),
    "one of those prompts alone": ("POST", P, None, {"prompt": [""], "steps": 300,
                                                     "max_tokens": 4}, 200, None),
    "prompts past the prompt tokens together": ("POST", P, None, {
        "prompt": ["the cat " * 3] * 2, "max_tokens": 4, "steps": 2}, 400, "48 tokens together"),
    "ar prompts within the limits together": ("POST", P, None, {
        "model": "ar", "prompt": [[1]] * 32, "n": 2, "max_tokens": 32}, 200, None),
    "chat work past the limit": ("POST", C, None, {
        "messages": [{"role": "user", "content": "a"}], "n": 8, "steps": 4096}, 400,
        "--max-work"),
    "infill work past the limit": ("POST", I, None, {"prefix": "a", "suffix": "b", "n": 8,
                                                     "steps": 4096}, 400, "--max-work"),
    "no prompts": ("POST", P, None, {"prompt": []}, 400, "empty list"),
    "65 prompts": ("POST", P, None, {"prompt": ["a"] * 65}, 400, "at most 64"),
    "prompts x n past max_batch": ("POST", P, None, {"prompt": ["a", "b"], "n": 64}, 400,
                                   "rows at once"),
    "token id outside the vocabulary": ("POST", P, None, {"prompt": [10**6]}, 400,
                                        "outside the vocabulary"),
    "penalty": ("POST", P, None, {"presence_penalty": 1.0}, 400, "presence_penalty"),
    "five stops": ("POST", P, None, {"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    "empty stop": ("POST", P, None, {"stop": [""]}, 400, "stop"),
    # issue 26 item 1: four 250,000-character stop strings (a 1 MB body under the limit)
    "four 250,000-character stops": ("POST", P, None, {"stop": ["ab" * 125_000] * 4,
                                                       "stream": True}, 400, "at most 1,000"),
    "a long stop in chat": ("POST", C, None, {"messages": [{"role": "user", "content": "a"}],
                                              "stop": "x" * 1001}, 400, "1,001 characters"),
    "a long stop in infill": ("POST", I, None, {"prefix": "a", "stop": ["ok", "x" * 5000]}, 400,
                              "stop[1]"),
    "unknown sampler": ("POST", P, None, {"sampler": "nope"}, 400, "unknown sampler 'nope'"),
    "unknown sampler option": ("POST", P, None, {"sampler": "threshold",
                                                  "sampler_options": {"k": 2}}, 400, "no option"),
    "sampler option out of range": ("POST", P, None, {"sampler": "threshold", "sampler_options":
                                                      {"threshold": 3.0}}, 400, "threshold"),
    "nested sampler option": ("POST", P, None, {"sampler_options": {"a": {"b": 1}}}, 400,
                              "sampler_options"),
    "negative temperature": ("POST", P, None, {"temperature": -1.0}, 400, "temperature"),
    "top_p 0": ("POST", P, None, {"top_p": 0.0}, 400, "top_p"),
    "top_k 0": ("POST", P, None, {"top_k": 0}, 400, "top_k"),
    "top_k past int32": ("POST", P, None, {"top_k": 2**40}, 400, "top_k"),
    "guidance 1000": ("POST", P, None, {"guidance": 1000.0}, 400, "guidance"),
    "block_size 0": ("POST", P, None, {"block_size": 0}, 400, "block_size"),
    "fewer steps than blocks": ("POST", P, None, {"max_tokens": 20, "steps": 2,
                                                  "block_size": 8}, 400, "needs a step"),
    # issue 26 item 15: any total is spread over the blocks (20 tokens = 3 blocks of 8)
    "steps not a multiple of blocks": ("POST", P, None, {"max_tokens": 20, "steps": 5,
                                                         "block_size": 8}, 200, None),
    "unknown model": ("POST", P, None, {"model": "gpt-9"}, 404, "gpt-9"),
    "huge model name": ("POST", P, None, {"model": "m" * 100_000}, 404, "does not exist"),
    "ar with suffix": ("POST", I, None, {"model": "ar", "prefix": "a", "suffix": "b"}, 400,
                       "autoregressive"),
    "ar with sampler": ("POST", P, None, {"model": "ar", "sampler": "euler"}, 400,
                        "diffusion model"),
    "chat without messages": ("POST", C, None, {"messages": []}, 400, "messages"),
    "chat with a robot": ("POST", C, None, {"messages": [{"role": "robot", "content": ""}]}, 400,
                          "role"),
    "chat messages not a list": ("POST", C, None, {"messages": "hi"}, 400, "messages"),
    "chat content a number": ("POST", C, None, {"messages": [{"role": "user", "content": 1}]},
                              400, "content"),
    "text/plain": ("POST", P, {**AUTH, "Content-Type": "text/plain"}, {"prompt": "a"}, 415,
                   "application/json"),
    "no Content-Type": ("POST", P, AUTH, {"prompt": "a"}, 415, "application/json"),
    "form": ("POST", P, {**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
             b"prompt=a", 415, "application/json"),
    "multipart": ("POST", C, {**AUTH, "Content-Type": "multipart/form-data; boundary=x"},
                  b"--x--", 415, "application/json"),
    "JSON in latin-1": ("POST", P, {**AUTH, "Content-Type": "application/json; charset=latin-1"},
                        {"prompt": "a"}, 415, "UTF-8"),
    "body over the limit": ("POST", P, None, b" " * (LIMITS.max_body_bytes + 1), 413,
                            "at most 1,048,576"),
    "GET a POST route": ("GET", P, AUTH, None, 405, "Method Not Allowed"),
    "PUT /health": ("PUT", "/health", AUTH, None, 405, "Method Not Allowed"),
    "DELETE /v1/models": ("DELETE", "/v1/models", AUTH, None, 405, "Method Not Allowed"),
    "unknown route": ("POST", "/v1/nothing", None, {}, 404, "Not Found"),
    "no API key": ("POST", P, JSON, {"prompt": "a"}, 401, "API key"),
    "wrong API key": ("POST", P, {**JSON, "Authorization": "Bearer nope"}, {}, 401, "API key"),
    "basic auth": ("GET", "/v1/models", {"Authorization": "Basic czNjcmV0"}, None, 401,
                   "API key"),
    "metrics without the key": ("GET", "/metrics", {}, None, 401, "API key"),
    "openapi without the key": ("GET", "/openapi.json", {}, None, 401, "API key"),
    "page without the key": ("GET", "/", {}, None, 401, "API key"),
    "unknown route without the key": ("GET", "/admin", {}, None, 401, "API key"),
}


def test_at_least_40_bad_requests():
    assert sum(status >= 400 for *_, status, _ in BAD.values()) >= 40


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request(server, case):
    port, app, log = server
    method, path, headers, body, status, needle = BAD[case]
    headers = {**JSON, **AUTH} if headers is None else headers
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/health")
        conn.getresponse().read()
        sock = conn.sock
        before = len(log.records)
        try:
            conn.request(method, path, body=None if body is None else _body(body),
                         headers=headers)
        except (BrokenPipeError, ConnectionResetError):  # answered and closed mid-upload
            assert status == 413
        r = conn.getresponse()
        raw = r.read()
        assert r.status == status, raw[:300]
        if status >= 400:
            assert r.getheader("content-type") == "application/json"
            err = json.loads(raw)["error"]
            assert needle in err["message"] and err["code"] == status, err
            assert len(err["message"]) <= 600
        if status == 405:
            assert r.getheader("allow") in ("POST", "GET")
        assert not log.tracebacks()[before:], log.tracebacks()
        closes = status in (408, 413)
        assert r.will_close == closes
        conn.request("GET", "/health")  # the next request: same socket unless closed on purpose
        assert conn.getresponse().status == 200 and (conn.sock is sock) != closes
    finally:
        conn.close()


def _raw(port: int, data: bytes, wait_s: float = 10.0) -> bytes:
    """Send `data` on a new socket and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_huge_declared_body_is_refused_before_it_is_sent(server):
    port, _, log = server
    head = (f"POST {P} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n").encode()
    reply = _raw(port, head + b"{")  # 1 byte of the promised 200 MB: the answer comes anyway
    assert reply.startswith(b"HTTP/1.1 413 ") and b"200,000,000 bytes" in reply


def test_chunked_body_over_the_limit(server):
    port, _, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    chunks = (b"x" * 65536 for _ in range(40))  # 2.5 MB, no Content-Length
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # closed mid-upload
        conn.request("POST", P, body=chunks, headers={**JSON, **AUTH}, encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413 and "over 1,048,576 bytes" in json.loads(r.read())["error"]["message"]
    conn.close()


def test_slow_body_and_slow_headers_time_out(server):
    port, _, log = server
    head = (f"POST {P} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n").encode()
    reply = _raw(port, head + b'{"prompt"')  # 9 of 100 bytes, then nothing
    assert reply.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 s" in reply
    assert b"9 bytes came" in reply
    reply = _raw(port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")  # headers never end
    assert reply.startswith(b"HTTP/1.1 408 ") and b"headers did not arrive" in reply

    # One header byte every 0.2 s resets uvicorn's keep-alive timer, not the header timer.
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(0.2)
        for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"x" * 200:
            try:
                s.sendall(bytes([byte]))
                reply += s.recv(65536)  # waits up to 0.2 s
            except TimeoutError:
                continue
            except OSError:
                break
            if reply:
                break
    assert reply.startswith(b"HTTP/1.1 408 ") and b"headers did not arrive" in reply
    assert not log.tracebacks()


def test_disconnected_requests_are_counted_and_cancelled(server):
    port, app, _ = server
    engine = app.state.engine
    cancelled = engine.metrics.cancelled
    # remask changes the canvas at every step, so none of the 4096 calls is skipped: the
    # request outlives the server's 1 s heartbeat however fast the machine is.
    body = _body({"prompt": "the ", "max_tokens": 32, "steps": 4096, "seed": 1,
                  "sampler": "remask"})
    head = (f"POST {P} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body)
        end = time.monotonic() + 10
        while engine.stats()["active_rows"] < 1:
            assert time.monotonic() < end
            time.sleep(0.01)
    end = time.monotonic() + 10  # the server notices within its 1 s heartbeat
    while engine.stats()["active_rows"] or engine.metrics.cancelled == cancelled:
        assert time.monotonic() < end, engine.stats()
        time.sleep(0.02)
    assert engine.metrics.cancelled == cancelled + 1
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics", headers=AUTH)
    text = conn.getresponse().read().decode()
    assert f'redraft_requests_total{{endpoint="{P}",status="499"}} 1' in text

    # A completed AR request is not a cancelled one (it once was, by the cancel after done).
    before = engine.metrics.cancelled
    for model in ("ar", "mdlm"):  # the second request gives the engine another tick
        conn.request("POST", P, body=_body({"model": model, "max_tokens": 4, "steps": 2}),
                     headers={**JSON, **AUTH})
        assert conn.getresponse().read() and engine.metrics.cancelled == before
    conn.close()


def test_openapi_documents_bodies_replies_and_metrics(server):
    port, _, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/openapi.json", headers=AUTH)
    doc = json.loads(conn.getresponse().read())
    schemas = doc["components"]["schemas"]
    for path, name in ((P, "CompletionRequest"), (C, "ChatRequest"), (I, "InfillRequest")):
        op = doc["paths"][path]["post"]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{name}" and name in schemas
        replies = op["responses"]["200"]["content"]
        assert replies["text/event-stream"]["schema"]["$ref"].endswith("/StreamEvent")
        assert {"400", "413", "415"} <= set(op["responses"])
    assert "steps" in schemas["CompletionRequest"]["properties"] and "Message" in schemas
    assert "draft" in schemas["StreamEvent"]["properties"]
    assert list(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    conn.close()


def test_metrics_can_be_opened_for_scrapers(serve_runs):
    from fastapi.testclient import TestClient

    app = create_app([load(serve_runs["ar"])], api_key=KEY,
                     limits=Limits(metrics_open=True))
    with TestClient(app) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/health").status_code == 200
        assert c.get("/v1/models").status_code == 401
        assert c.get("/openapi.json").status_code == 401


@pytest.mark.parametrize("argv, needle", [
    (["--timeout", "-1"], "--timeout"), (["--timeout", "nan"], "--timeout"),
    (["--timeout", "inf"], "--timeout"), (["--grace", "-5"], "--grace"),
    (["--max-body", "0"], "--max-body"), (["--body-timeout", "0"], "--body-timeout"),
    (["--header-timeout", "-1"], "--header-timeout"), (["--keep-alive", "x"], "--keep-alive"),
    (["--max-work", "-3"], "--max-work"), (["--max-prompt-tokens", "0"], "--max-prompt-tokens"),
    (["--max-connections", "0"], "--max-connections"), (["--port", "70000"], "--port"),
    (["--port", "0"], "--port"), (["--max-batch", "9" * 5000], "--max-batch"),
    (["--log-level", "loud"], "--log-level"),
])
def test_serve_refuses_bad_limits_at_startup(serve_runs, capsys, argv, needle):
    with pytest.raises(SystemExit) as e:
        main(["serve", str(serve_runs["ar"]), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_serve_refuses_max_rows_below_max_batch(serve_runs, capsys):
    assert main(["serve", str(serve_runs["ar"]), "--max-batch", "8", "--max-rows", "4"]) == 2
    assert "--max-rows 4: expected >= --max-batch (8)" in capsys.readouterr().err


def test_a_stream_that_is_not_read_holds_one_draft():
    """The engine posts a draft every step; a client that stops reading must not make the
    server keep them all (a 4096-step stream would hold 4096 canvases)."""
    from redraft.serve.app import Mailbox
    from redraft.serve.jobs import Event

    async def go():
        box = Mailbox(asyncio.get_running_loop())
        put = box.listener(0)
        for step in range(1000):
            put(Event("draft", step=step))
            put(Event("commit", step=step))  # each commit holds the whole committed canvas
        assert await box.wait(5)
        drafts, commits = box.take()
        assert drafts[0].step == 999 and commits[0].step == 999 and not box.finals
        assert not await box.wait(0.01) and box.take() == ({}, {})
        put(Event("draft", step=1000))
        put(Event("done", step=1000))
        assert await box.wait(5)
        drafts, _ = box.take()  # the last draft is not lost behind the final event
        assert drafts[0].step == 1000 and box.finals[0].kind == "done"

    asyncio.run(go())
