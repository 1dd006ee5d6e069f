"""What bounds a request before the engine sees it: body size and read time, header read time,
the API key, and the strict JSON reader. No model code here.

Every check fails with one line naming the value and the limit (an HTTPError the app renders
as an OpenAI-shaped JSON error), never a traceback: the adversarial inputs this guards against
(a 200 MB body, a 5000-digit number, JSON nested 100,000 deep, a lone UTF-16 surrogate, a body
sent one byte a second) are listed in tests/serve/test_hardening.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from dataclasses import dataclass

from redraft.config import SERVE
from redraft.errors import RedraftError

MAX_DIGITS = 19  # an integer literal longer than this cannot be a valid field (all are < 2**63)
JSON_TYPES = ("application/json",)
OPEN_PATHS = ("/health",)  # answered without the API key: a load balancer's liveness probe


class HTTPError(RedraftError):
    """A request the server refuses: the status, one line, and the field it is about."""

    def __init__(self, status: int, message: str, param: str | None = None, close: bool = False):
        super().__init__(message)
        self.status, self.param, self.close = status, param, close


@dataclass(frozen=True)
class Limits:
    """The server's per-request bounds (defaults documented in docs/serving.md; `redraft serve`
    has a flag for each)."""

    max_body_bytes: int = SERVE.max_body_bytes  # 413 past it, from Content-Length or streamed
    body_timeout_s: float = SERVE.body_timeout_s  # the whole body must arrive within this
    header_timeout_s: float = SERVE.header_timeout_s  # request line + headers (408, closed)
    keep_alive_s: float = SERVE.keep_alive_s  # an idle keep-alive connection is closed after
    max_connections: int = SERVE.max_connections  # open connections (limits.Connections)
    # Both bound a request as a whole: a list of prompts adds up (serve/schemas.check_request).
    max_prompt_tokens: int | None = SERVE.max_prompt_tokens  # None: the model's context
    max_work: int = SERVE.max_work  # n x steps x length (serve/schemas.work_units)
    metrics_open: bool = False  # /metrics without the API key (for scrapers)

    def __post_init__(self):
        for name in ("max_body_bytes", "max_connections", "max_work"):
            positive(name, getattr(self, name), integer=True)
        for name in ("body_timeout_s", "header_timeout_s", "keep_alive_s"):
            positive(name, getattr(self, name))
        if self.max_prompt_tokens is not None:
            positive("max_prompt_tokens", self.max_prompt_tokens, integer=True)


def positive(name: str, value, integer: bool = False) -> None:
    """Raise a RedraftError unless `value` is a finite number > 0 (an int if `integer`)."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) \
            or value <= 0:
        kind = "integer" if integer else "number"
        raise RedraftError(f"{name}={value!r}: expected a finite {kind} > 0")


def authorised(headers: dict[bytes, bytes], api_key: str | None) -> bool:
    if api_key is None:
        return True
    return secrets.compare_digest(headers.get(b"authorization", b""),
                                  f"Bearer {api_key}".encode())


def declared_length(headers: dict[bytes, bytes], limit: int) -> None:
    """Refuse a body by its Content-Length before a byte of it is read."""
    raw = headers.get(b"content-length")
    if raw is None:
        return
    if not raw.isdigit() or len(raw) > MAX_DIGITS:
        raise HTTPError(400, f"Content-Length {raw[:40].decode('latin-1')!r}: expected a "
                             "non-negative integer", close=True)
    if int(raw) > limit:
        raise HTTPError(413, f"the body is {int(raw):,} bytes; this server accepts at most "
                             f"{limit:,} (--max-body)", close=True)


def check_json_type(headers: dict[bytes, bytes]) -> None:
    """JSON endpoints read only `application/json` (UTF-8): a page on another site cannot send
    that type without a CORS preflight, which this server never grants, so no CSRF."""
    raw = headers.get(b"content-type", b"").decode("latin-1")
    media, _, params = raw.partition(";")
    pairs = (p.strip().partition("=") for p in params.split(";"))
    charset = next((v.strip().strip('"').lower() for k, _, v in pairs if k.lower() == "charset"),
                   "utf-8")
    if media.strip().lower() not in JSON_TYPES or charset not in ("utf-8", "utf8"):
        raise HTTPError(415, f"Content-Type {raw[:80]!r}: expected 'application/json' (UTF-8)",
                        "Content-Type")


async def read_body(stream, limit: int, timeout_s: float) -> bytes:
    """The body from Starlette's `request.stream()`: 413 once more than `limit` bytes arrived
    (a chunked body has no Content-Length to check first), 408 if it takes over timeout_s."""
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in stream:
                size += len(chunk)
                if size > limit:
                    raise HTTPError(413, f"the body is over {limit:,} bytes, the most this "
                                         "server accepts (--max-body)", close=True)
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPError(408, f"the body did not arrive within {timeout_s:g} s "
                             f"({size:,} bytes came; --body-timeout)", close=True) from None
    return b"".join(chunks)


def _big_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise HTTPError(400, f"a number with {len(text.lstrip('-'))} digits: at most "
                             f"{MAX_DIGITS} are accepted")
    return int(text)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise HTTPError(400, f"the number {text[:40]} is out of range (not a finite float)")
    return value


def _constant(name: str):
    raise HTTPError(400, f"{name} is not JSON: numbers must be finite")


def parse_json(body: bytes) -> dict:
    """The body as a JSON object, or an HTTPError naming what is wrong with it. Strict JSON
    (RFC 8259): UTF-8, no NaN/Infinity, integers of at most MAX_DIGITS digits, no lone UTF-16
    surrogates (they cannot be tokenised or even printed)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HTTPError(400, f"the body is not UTF-8: byte {e.start} is {body[e.start]:#04x}") \
            from None
    try:
        obj = json.loads(text, parse_int=_big_int, parse_float=_finite, parse_constant=_constant)
    except json.JSONDecodeError as e:
        raise HTTPError(400, f"the body is not valid JSON: {e.msg} at line {e.lineno} column "
                             f"{e.colno}") from None
    except RecursionError:
        raise HTTPError(400, "the body is nested too deeply to be a request") from None
    if not isinstance(obj, dict):
        raise HTTPError(400, f"the body must be a JSON object, not {type(obj).__name__}")
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise HTTPError(400, f"the body has a lone UTF-16 surrogate ({e.object[e.start]!a}): "
                             "strings must be valid Unicode") from None
    except RecursionError:
        raise HTTPError(400, "the body is nested too deeply to be a request") from None
    return obj


def safe_text(message: str, limit: int = 600) -> str:
    """A message that always renders: lone surrogates escaped, cut to `limit` characters."""
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return message if len(message) <= limit else message[:limit - 3] + "..."


class Connections:
    """The open connections of a server against --max-connections.

    uvicorn's own limit (limit_concurrency) answers 503 to every request, /health included,
    while the open connections are at the limit, idle ones too: 1,100 connections that send
    nothing shut a server out for the whole header timeout. Here a new connection at the limit
    closes the connections that have waited longest for a request instead (an idle keep-alive
    connection may be closed at any time; its client reconnects). Only when every connection is
    busy with a request does a new one go past the limit, into a reserve of `reserve`
    connections where only OPEN_PATHS (/health) are served (the Guard answers 503 to the rest);
    past the reserve a new connection gets a 503 and is closed."""

    def __init__(self, limit: int, reserve: int | None = None):
        self.limit = limit
        self.reserve = max(8, limit // 10) if reserve is None else reserve
        self.open: set = set()
        self.evicted = 0  # idle connections closed to make room
        self.refused = 0  # connections answered 503 past the reserve

    @property
    def over(self) -> bool:
        """Whether the server is into its reserve (only /health is served)."""
        return len(self.open) > self.limit

    def admit(self, new) -> bool:
        """Make room for connection `new` (already in self.open); False: refuse it."""
        if len(self.open) <= self.limit:
            return True
        idle = sorted((c for c in self.open if c is not new and c.idle()),
                      key=lambda c: c.idle_since)
        for c in idle[:len(self.open) - self.limit]:
            c.transport.close()
            self.open.discard(c)  # connection_lost comes later, on the next loop turn
            self.evicted += 1
        if len(self.open) <= self.limit + self.reserve:
            return True
        self.refused += 1
        return False


def timeout_protocol(header_timeout_s: float, connections: Connections | None = None):
    """uvicorn's h11 protocol plus a header timeout: a connection whose request line and
    headers have not all arrived header_timeout_s after it opened (or after its last response)
    gets a 408 and is closed. uvicorn's own keep-alive timer is reset by every byte, so a
    client sending one header byte a second would otherwise hold the connection forever.
    With `connections`, the connection limit is kept as Connections describes (run uvicorn
    without limit_concurrency then)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    reply = json.dumps({"error": {"message": f"the request headers did not arrive within "
                                             f"{header_timeout_s:g} s (--header-timeout)",
                                  "type": "timeout_error", "param": None, "code": 408}}).encode()
    raw = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
           b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(reply), reply))

    busy = json.dumps({"error": {"message": "the server is at its connection limit "
                                           "(--max-connections), every connection busy: retry "
                                           "later", "type": "server_unavailable", "param": None,
                                "code": 503}}).encode()
    full = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(busy), busy))

    class Protocol(H11Protocol):
        _header_timer = None
        idle_since = 0.0

        def idle(self) -> bool:
            """Waiting for a request (none in progress, no request line complete yet)."""
            return ((self.cycle is None or self.cycle.response_complete)
                    and self.conn.their_state is h11.IDLE and not self.transport.is_closing())

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(header_timeout_s, self._expire)

        def _expire(self) -> None:
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.write(raw)
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.idle_since = self.loop.time()
            self._arm()
            if connections is not None:
                connections.open.add(self)
                if not connections.admit(self):
                    transport.write(full)
                    transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.idle_since = self.loop.time()
            self._arm()

        def connection_lost(self, exc) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            if connections is not None:
                connections.open.discard(self)
            super().connection_lost(exc)

    return Protocol
