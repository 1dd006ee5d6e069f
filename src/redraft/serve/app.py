"""The HTTP side: an OpenAI-shaped API over the engine, Server-Sent Events, errors as JSON.

Each generating request passes the guard (API key, declared size: serve/limits.py), then its
body is read under a size and time limit, and parsed, validated and tokenised in a worker thread
(a big body never stalls the event loop, so /health stays fast). It is submitted to the engine
(which raises at once if the queue is full; a list of prompts is one job per prompt), and
awaited: the engine thread hands events to this event loop through a Mailbox (per job, the
newest draft, the newest commit and the final event). A request whose client goes away is
cancelled, so the engine drops its rows at the next tick instead of computing for nobody.
serve/reply.py renders the events as OpenAI objects.

Errors are OpenAI's shape, {"error": {"message", "type", "param", "code"}}: 400 bad input,
401 bad API key, 404 unknown model or route, 405 wrong method (with Allow), 408 body or
headers too slow, 413 body too large, 415 not JSON, 429 queue full, 503 shutting down,
504 timeout. 413 and 408 close the connection; every other error leaves it usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

import redraft.serve.limits as lim
from redraft.config import SERVE
from redraft.errors import RedraftError
from redraft.model import Model
from redraft.serve.engine import Engine, QueueFull, Unavailable
from redraft.serve.jobs import Event
from redraft.serve.limits import HTTPError, Limits
from redraft.serve.reply import Reply
from redraft.serve.schemas import (
    ChatRequest,
    Completion,
    CompletionRequest,
    ErrorReply,
    InfillRequest,
    StreamEvent,
    check_request,
    prompts,
)
from redraft.serve.schemas import to_work as _to_work

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 408: "timeout_error", 413: "invalid_request_error",
               415: "invalid_request_error", 429: "rate_limit_error", 503: "server_unavailable",
               504: "timeout_error"}
HEARTBEAT_S = 1.0  # an SSE comment this often: a send to a closed socket shows a disconnect
CLIENT_GONE = 499  # nginx's status for "the client closed the connection" (metrics only)
GENERATE = {"/v1/completions": (CompletionRequest, "completion"),
            "/v1/chat/completions": (ChatRequest, "chat"), "/v1/infill": (InfillRequest, "infill")}


def error(status: int, message: str, param: str | None = None, close: bool = False,
          headers: dict | None = None) -> JSONResponse:
    headers = {**(headers or {}), **({"Connection": "close"} if close else {})}
    return JSONResponse({"error": {"message": lim.safe_text(message),
                                   "type": ERROR_TYPES.get(status, "error"),
                                   "param": param, "code": status}},
                        status_code=status, headers=headers)


def _validation_message(e: ValidationError) -> tuple[str, str | None]:
    parts, first = [], None
    for err in e.errors()[:5]:
        loc = ".".join(str(p)[:60] for p in err["loc"]) or "body"
        first = first or loc
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts), first


class Guard:
    """ASGI middleware before every route: the API key (every path but /health, and /metrics
    when it is opened for scrapers), a declared Content-Length over the limit (413 before a
    byte of the body is read), and the request count by endpoint and status for /metrics."""

    def __init__(self, app, *, api_key: str | None, limits: Limits, metrics, endpoints,
                 connections: lim.Connections | None = None):
        self.app, self.api_key, self.limits, self.metrics = app, api_key, limits, metrics
        self.connections = connections
        self.endpoints = set(endpoints)
        self.open = set(lim.OPEN_PATHS) | ({"/metrics"} if limits.metrics_open else set())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 0

        async def recorded(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        headers = dict(scope["headers"])
        try:
            if scope["path"] not in self.open and not lim.authorised(headers, self.api_key):
                raise HTTPError(401, "missing or wrong API key: send 'Authorization: Bearer "
                                     "<key>'")
            lim.declared_length(headers, self.limits.max_body_bytes)
            if self.connections is not None and self.connections.over \
                    and scope["path"] not in lim.OPEN_PATHS:  # the reserve: /health only
                raise HTTPError(503, "the server is at its connection limit (--max-connections), "
                                     "every connection busy: retry later", close=True)
        except HTTPError as e:
            await error(e.status, str(e), e.param, e.close)(scope, receive, recorded)
        else:
            await self.app(scope, receive, recorded)
        finally:
            if status:
                path = scope["path"] if scope["path"] in self.endpoints else "other"
                self.metrics.request(path, status)


def create_app(models: list[Model], *, api_key: str | None = None,
               max_batch: int = SERVE.max_batch, max_queue: int = SERVE.max_queue,
               timeout_s: float = SERVE.timeout_s, max_steps: int = SERVE.max_steps,
               grace_s: float = SERVE.grace_s, max_rows: int | None = SERVE.max_rows,
               limits: Limits | None = None) -> FastAPI:
    """The ASGI app for `models` (the first is the default); its engine runs during the app's
    lifespan (uvicorn, or `with TestClient(app)`). Every limit is checked here (a RedraftError
    names a bad one), so a server never starts with a limit it cannot honour."""
    limits = limits or Limits()
    for name, value in (("max_batch", max_batch), ("max_queue", max_queue),
                        ("max_steps", max_steps)):
        lim.positive(name, value, integer=True)
    lim.positive("timeout", timeout_s)
    if not (grace_s >= 0 and grace_s < float("inf")):
        raise RedraftError(f"grace={grace_s!r}: expected a finite number of seconds >= 0")
    if api_key is not None and not api_key:
        raise RedraftError("api_key='': expected a non-empty key (or none)")
    by_name = {m.name: m for m in models}
    engine = Engine(by_name, max_batch=max_batch, max_queue=max_queue, timeout_s=timeout_s,
                    max_rows=max_rows)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        engine.start()
        yield
        await asyncio.to_thread(engine.close, grace_s)

    app = FastAPI(title="redraft", lifespan=lifespan, docs_url=None, redoc_url=None,
                  summary="OpenAI-shaped API over a diffusion LM server (redraft serve)")
    app.state.engine, app.state.limits = engine, limits
    app.state.connections = lim.Connections(limits.max_connections)  # used by run()

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):  # unknown routes and methods: JSON, not HTML
        return error(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return (resources.files("redraft.serve") / "static" / "index.html").read_text()

    @app.get("/health")
    async def health():
        return {"status": "ok", **engine.stats()}

    @app.get("/metrics", response_class=PlainTextResponse,
             responses={200: {"content": {"text/plain": {}},
                              "description": "Prometheus text format 0.0.4"}})
    async def metrics():
        return PlainTextResponse(engine.metrics.render(engine.stats()),
                                 media_type="text/plain; version=0.0.4")

    catalog = [{"id": m.name, "object": "model", "created": 0, "owned_by": "redraft",
                "kind": m.kind, "objective": m.objective.name, "context_length": m.seq_len,
                "samplers": m.decoder.samplers(), "modes": list(m.decoder.modes)}
               for m in models]

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": catalog}

    def prepare(body: bytes, schema, kind: str) -> tuple:
        """Parse, validate and tokenise (a worker thread: all of it is CPU work that grows
        with the body). Raises HTTPError for anything the client got wrong."""
        try:
            req = schema.model_validate(lim.parse_json(body))
        except ValidationError as e:
            raise HTTPError(400, *_validation_message(e)) from None
        served = models[0] if req.model is None else by_name.get(req.model)
        if served is None:
            raise HTTPError(404, f"model {req.model[:100]!r} does not exist: this server has "
                                 f"{list(by_name)}", "model")
        with _as_400():
            if kind == "chat":
                texts, suffix = [served.chat_prompt([m.model_dump() for m in req.messages])], ""
            elif kind == "infill":
                texts, suffix = [req.prefix], req.suffix
            else:
                texts, suffix = prompts(req), req.suffix or ""
            works = [_to_work(req, served, text, suffix, max_steps, limits.max_prompt_tokens,
                              limits.max_work) for text in texts]
            check_request(works, served, limits.max_prompt_tokens, limits.max_work)
            for i, work in enumerate(works[1:], 1):  # sample r of prompt i: seed + i * n + r
                work.seeds = [works[0].seeds[0] + i * work.n + r for r in range(work.n)]
            if sum(w.n for w in works) > engine.max_batch:
                raise RedraftError(f"{len(works)} prompts x n={works[0].n}: this server runs at "
                                   f"most {engine.max_batch} rows at once")
            return req, served, works

    async def generate(request: Request):
        schema, kind = GENERATE[request.url.path]
        box = Mailbox(asyncio.get_running_loop())
        try:
            lim.check_json_type(dict(request.scope["headers"]))
            body = await lim.read_body(request.stream(), limits.max_body_bytes,
                                       limits.body_timeout_s)
            req, served, works = await asyncio.to_thread(prepare, body, schema, kind)
            # On the loop, not the thread: the response starts before the engine's first
            # tick could post a draft (so a stream's every draft reaches a fast client).
            jobs = []
            try:
                with _as_400():
                    for j, work in enumerate(works):
                        jobs.append(engine.submit(work, box.listener(j)))
            except HTTPError:
                for job in jobs:
                    job.cancel()
                raise
        except HTTPError as e:
            return error(e.status, str(e), e.param, e.close)
        except ClientDisconnect:
            return Response(status_code=CLIENT_GONE)
        reply = Reply(kind, served, jobs, req)
        if req.stream:
            return StreamingResponse(stream(reply, box), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache",
                                              "X-Accel-Buffering": "no"})
        try:
            while len(box.finals) < len(jobs):
                if not await box.wait(HEARTBEAT_S) and await request.is_disconnected():
                    return Response(status_code=CLIENT_GONE)  # counted; nobody reads it
                failed = next((e for e in box.finals.values() if e.kind == "error"), None)
                if failed is not None:
                    return error(failed.status, failed.message)
            reply.finals = dict(box.finals)
            return JSONResponse(await asyncio.to_thread(reply.final))
        finally:
            for job in jobs:
                job.cancel()  # a no-op for a finished job; drops it on a disconnect

    for path, (schema, kind) in GENERATE.items():
        app.post(path, name=kind, openapi_extra=_body_doc(schema),
                 responses=_reply_doc())(generate)
    _document(app)
    app.add_middleware(Guard, api_key=api_key, limits=limits, metrics=engine.metrics,
                       endpoints=[r.path for r in app.routes], connections=app.state.connections)
    return app


@contextlib.contextmanager
def _as_400():
    """The engine's and samplers' own checks (all input-driven) as HTTP errors."""
    try:
        yield
    except HTTPError:
        raise
    except QueueFull as e:
        raise HTTPError(429, str(e)) from None
    except Unavailable as e:
        raise HTTPError(503, str(e)) from None
    except (RedraftError, ValueError, TypeError, OverflowError) as e:
        raise HTTPError(400, str(e)) from None


def _body_doc(schema) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{schema.__name__}"}}}}}


def _reply_doc() -> dict:
    ref = "#/components/schemas/{}".format
    errors = {s: {"description": d, "content": {"application/json": {
        "schema": {"$ref": ref("ErrorReply")}}}} for s, d in (
        (400, "bad input"), (401, "missing or wrong API key"), (404, "unknown model"),
        (408, "body too slow"), (413, "body too large"), (415, "not application/json"),
        (429, "queue full"), (503, "shutting down"), (504, "timed out"))}
    return {200: {"description": "the completion; with stream=true, Server-Sent Events, each "
                                 "`data:` line one StreamEvent, then `data: [DONE]`",
                  "content": {"application/json": {"schema": {"$ref": ref("Completion")}},
                              "text/event-stream": {"schema": {"$ref": ref("StreamEvent")}}}},
            **errors}


def _document(app: FastAPI) -> None:
    """The OpenAPI schema with the request bodies, replies and SSE events: the routes read
    their bodies by hand (to bound them), so FastAPI cannot infer these."""
    base = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = base()
            found = doc.setdefault("components", {}).setdefault("schemas", {})
            for model in (CompletionRequest, ChatRequest, InfillRequest, Completion,
                          StreamEvent, ErrorReply):
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                found.update(schema.pop("$defs", {}))
                found[model.__name__] = schema
        return app.openapi_schema

    app.openapi = openapi


class Mailbox:
    """A request's events from the engine thread, kept on the event loop: per job, the newest
    draft, the newest commit (each holds the whole committed canvas, so a newer one replaces an
    older one without losing text) and the final event. A stream's client that stops reading
    holds one of each here, not one per step, and a slow reader skips to the newest."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.drafts: dict[int, Event] = {}
        self.commits: dict[int, Event] = {}
        self.finals: dict[int, Event] = {}
        self.ready = asyncio.Event()

    def listener(self, j: int):
        def put(event: Event) -> None:  # the engine thread
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                self.loop.call_soon_threadsafe(self._put, j, event)
        return put

    def _put(self, j: int, event: Event) -> None:
        {"draft": self.drafts, "commit": self.commits}.get(event.kind, self.finals)[j] = event
        self.ready.set()

    async def wait(self, timeout: float) -> bool:
        """Whether something arrived within timeout."""
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            return False
        self.ready.clear()
        return True

    def take(self) -> tuple[dict[int, Event], dict[int, Event]]:
        """The drafts and commits not yet taken."""
        drafts, commits = self.drafts, self.commits
        self.drafts, self.commits = {}, {}
        return drafts, commits


async def stream(reply: Reply, box: Mailbox):
    """Server-Sent Events: drafts or committed-text deltas as they come, then per job the rest
    of the text and each choice's finish_reason; then the usage chunk if asked for, and [DONE]."""
    sent: set[int] = set()
    try:
        while len(sent) < len(reply.jobs):
            if not await box.wait(HEARTBEAT_S):
                yield ": keep-alive\n\n"
                continue
            drafts, commits = box.take()
            # Rendering decodes and searches text: a worker thread, so that however long a
            # request's text or stop strings, the event loop (and /health) never waits on it.
            for j, event in sorted(drafts.items()):
                if j not in box.finals:
                    yield _sse(await asyncio.to_thread(reply.draft, j, event))
            for j, event in sorted(commits.items()):
                if j not in box.finals:
                    for chunk in await asyncio.to_thread(reply.deltas, j, event, False):
                        yield _sse(chunk)
            for j, event in sorted(box.finals.items()):
                if j in sent:
                    continue
                if event.kind == "error":
                    yield _sse({"error": {"message": event.message, "code": event.status,
                                          "type": ERROR_TYPES.get(event.status, "error")}})
                    yield "data: [DONE]\n\n"
                    return
                sent.add(j)
                reply.finals[j] = event
                for chunk in await asyncio.to_thread(reply.deltas, j, event, True):
                    yield _sse(chunk)
        usage = await asyncio.to_thread(reply.usage_chunk)
        if usage is not None:
            yield _sse(usage)
        yield "data: [DONE]\n\n"
    finally:
        for job in reply.jobs:
            job.cancel()  # the client went away (or we are done: then a no-op)


def run(app: FastAPI, host: str, port: int, grace_s: float, log_level: str = "info") -> None:
    """uvicorn until SIGINT/SIGTERM. uvicorn waits for open connections before it runs the
    app's shutdown, so the engine is told at the signal itself: in-flight requests get grace_s
    to finish and then a 503, which closes their connections and lets uvicorn finish."""
    import threading

    import uvicorn

    limits: Limits = app.state.limits
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=grace_s + 5,
        http=lim.timeout_protocol(limits.header_timeout_s, app.state.connections),
        timeout_keep_alive=limits.keep_alive_s))
    handle_exit = server.handle_exit

    def on_signal(sig, frame):
        if not server.should_exit:
            threading.Thread(target=app.state.engine.close, args=(grace_s,), daemon=True).start()
        handle_exit(sig, frame)

    server.handle_exit = on_signal  # read when uvicorn installs its handlers, inside run()
    server.run()


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"
