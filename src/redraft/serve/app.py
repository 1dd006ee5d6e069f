"""The HTTP side: an OpenAI-shaped API over the engine, Server-Sent Events, errors as JSON.

Each generating request is validated and tokenised here, submitted to the engine (which raises
at once if the queue is full), and then awaited: the engine thread hands events to this event
loop through an asyncio.Queue. A request whose client goes away is cancelled, so the engine
drops its rows at the next tick instead of computing for nobody.

Errors are OpenAI's shape, {"error": {"message", "type", "param", "code"}}: 400 bad input,
401 bad API key, 404 unknown model or route, 429 queue full, 503 shutting down, 504 timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from redraft.config import SERVE
from redraft.display import MASK_GLYPH
from redraft.errors import RedraftError
from redraft.model import Model
from redraft.sampling.registry import SAMPLERS
from redraft.serve.engine import Engine, QueueFull, Unavailable
from redraft.serve.jobs import Event, Job
from redraft.serve.schemas import (
    ChatRequest,
    CompletionRequest,
    InfillRequest,
    chat_prompt,
    cut_at_stop,
    prompt_text,
    stops,
)
from redraft.serve.schemas import to_work as _to_work

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               429: "rate_limit_error", 503: "server_unavailable", 504: "timeout_error"}
HEARTBEAT_S = 1.0  # an SSE comment this often: a send to a closed socket shows a disconnect


def error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": ERROR_TYPES.get(status, "error"),
                                   "param": param, "code": status}}, status_code=status)


def _validation_message(e: ValidationError) -> tuple[str, str | None]:
    parts, first = [], None
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        first = first or loc
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts), first


def create_app(models: list[Model], *, api_key: str | None = None,
               max_batch: int = SERVE.max_batch, max_queue: int = SERVE.max_queue,
               timeout_s: float = SERVE.timeout_s, max_steps: int = SERVE.max_steps,
               grace_s: float = SERVE.grace_s) -> FastAPI:
    """The ASGI app for `models` (the first is the default); its engine runs during the app's
    lifespan (uvicorn, or `with TestClient(app)`)."""
    by_name = {m.name: m for m in models}
    engine = Engine(by_name, max_batch=max_batch, max_queue=max_queue, timeout_s=timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        engine.start()
        yield
        await asyncio.to_thread(engine.close, grace_s)

    app = FastAPI(title="redraft", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine = engine

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):  # unknown routes and methods: JSON, not HTML
        return error(exc.status_code, str(exc.detail))

    def record(request: Request, response):
        engine.metrics.request(request.url.path, response.status_code)
        return response

    def unauthorised(request: Request) -> JSONResponse | None:
        if api_key is None:
            return None
        given = request.headers.get("authorization", "")
        if secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            return None
        return error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return (resources.files("redraft.serve") / "static" / "index.html").read_text()

    @app.get("/health")
    async def health():
        return {"status": "ok", **engine.stats()}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(engine.metrics.render(engine.stats()),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models(request: Request):
        if (bad := unauthorised(request)) is not None:
            return record(request, bad)
        data = [{"id": m.name, "object": "model", "created": 0, "owned_by": "redraft",
                 "kind": m.kind, "objective": m.objective.name,
                 "context_length": m.seq_len,
                 "samplers": [] if m.is_ar else list(SAMPLERS)} for m in models]
        return record(request, JSONResponse({"object": "list", "data": data}))

    async def generate(request: Request, schema, kind: str):
        if (bad := unauthorised(request)) is not None:
            return record(request, bad)
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return record(request, error(400, f"the body is not valid JSON: {e}"))
        if not isinstance(body, dict):
            return record(request, error(400, "the body must be a JSON object"))
        try:
            req = schema.model_validate(body)
        except ValidationError as e:
            return record(request, error(400, *_validation_message(e)))
        served = models[0] if req.model is None else by_name.get(req.model)
        if served is None:
            return record(request, error(404, f"model {req.model!r} does not exist: this server "
                                              f"has {list(by_name)}", "model"))
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()

        def listener(event: Event) -> None:  # engine thread -> this event loop
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, event)

        try:
            if kind == "chat":
                prefix, suffix = chat_prompt(req.messages), ""
            elif kind == "infill":
                prefix, suffix = req.prefix, req.suffix
            else:
                prefix, suffix = prompt_text(req), req.suffix or ""
            work = _to_work(req, served, prefix, suffix, max_steps)
            job = engine.submit(work, listener)
        except QueueFull as e:
            return record(request, error(429, str(e)))
        except Unavailable as e:
            return record(request, error(503, str(e)))
        except RedraftError as e:
            return record(request, error(400, str(e)))
        reply = Reply(kind, served, job, req)
        if req.stream:
            return record(request, StreamingResponse(
                reply.stream(queue), media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}))
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return None
                    continue
                if event.kind == "error":
                    return record(request, error(event.status, event.message))
                if event.kind == "done":
                    return record(request, JSONResponse(reply.final(event)))
        finally:
            job.cancel()  # a no-op for a finished job; drops it on a disconnect or shutdown

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await generate(request, CompletionRequest, "completion")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await generate(request, ChatRequest, "chat")

    @app.post("/v1/infill")
    async def infill(request: Request):
        return await generate(request, InfillRequest, "infill")

    return app


class Reply:
    """Renders a job's events as OpenAI objects: text_completion or chat.completion(.chunk)."""

    def __init__(self, kind: str, served: Model, job: Job, req):
        self.kind, self.served, self.job, self.req = kind, served, job, req
        self.stop = stops(req)
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.started = time.monotonic()

    def texts(self, tokens, mask_text: str | None = None) -> list[str]:
        """The generated part of each row (prompt and suffix cut off)."""
        w = self.job.work
        end = w.length - len(w.suffix)
        return [self.served.tokenizer.decode(row[len(w.prefix):end], mask_text=mask_text)
                for row in tokens]

    def _choice(self, i: int, text: str, finish: str | None, chunk: bool) -> dict:
        if self.kind != "chat":
            return {"index": i, "text": text, "finish_reason": finish, "logprobs": None}
        key = "delta" if chunk else "message"
        return {"index": i, key: {"role": "assistant", "content": text}, "finish_reason": finish}

    def _object(self, choices: list[dict], chunk: bool, **extra) -> dict:
        obj = "chat.completion" if self.kind == "chat" else "text_completion"
        return {"id": self.id, "object": obj + (".chunk" if chunk and self.kind == "chat" else ""),
                "created": self.created, "model": self.served.name, "choices": choices, **extra}

    def _extras(self) -> dict:
        w, seconds = self.job.work, time.monotonic() - self.started
        generated = w.n * (w.length - len(w.prefix) - len(w.suffix))
        return {"usage": {"prompt_tokens": len(w.prefix) + len(w.suffix),
                          "completion_tokens": generated,
                          "total_tokens": generated + len(w.prefix) + len(w.suffix)},
                "redraft": {"steps": None if self.served.is_ar else w.steps,
                            "network_rows": self.job.row_nfe, "seconds": round(seconds, 6),
                            "tokens_per_s": round(generated / max(seconds, 1e-9), 3),
                            "seeds": w.seeds}}

    def final(self, event: Event) -> dict:
        choices = [self._choice(i, *cut_at_stop(text, self.stop), chunk=False)
                   for i, text in enumerate(self.texts(event.tokens))]
        return self._object(choices, chunk=False, **self._extras())

    def draft(self, event: Event) -> dict:
        """A diffusing event: the whole current draft of each row (masks as MASK_GLYPH). The
        text replaces the previous draft; it is not a delta to append."""
        total = 0 if self.served.is_ar else self.job.work.steps
        choices = [self._choice(i, text, None, chunk=True)
                   for i, text in enumerate(self.texts(event.tokens, MASK_GLYPH))]
        return self._object(choices, chunk=True, draft=True, step=event.step, steps=total)

    async def stream(self, queue: asyncio.Queue):
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                while event.kind == "draft" and not queue.empty():
                    event = queue.get_nowait()  # a slow reader gets the newest draft only
                if event.kind == "draft":
                    yield _sse(self.draft(event))
                    continue
                if event.kind == "error":
                    yield _sse({"error": {"message": event.message, "code": event.status,
                                          "type": ERROR_TYPES.get(event.status, "error")}})
                else:
                    done = self.final(event)
                    key = "message" if self.kind == "chat" else None
                    for c in done["choices"]:
                        text = c[key]["content"] if key else c["text"]
                        finish = c["finish_reason"]
                        yield _sse(self._object([self._choice(c["index"], text, None, True)],
                                                chunk=True))
                        yield _sse(self._object([self._choice(c["index"], "", finish, True)],
                                                chunk=True))
                    yield _sse(self._object([], chunk=True, **self._extras()))
                yield "data: [DONE]\n\n"
                return
        finally:
            self.job.cancel()  # the client went away (or we are done: then a no-op)


def run(app: FastAPI, host: str, port: int, grace_s: float, log_level: str = "info") -> None:
    """uvicorn until SIGINT/SIGTERM. uvicorn waits for open connections before it runs the
    app's shutdown, so the engine is told at the signal itself: in-flight requests get grace_s
    to finish and then a 503, which closes their connections and lets uvicorn finish."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           timeout_graceful_shutdown=grace_s + 5))
    handle_exit = server.handle_exit

    def on_signal(sig, frame):
        if not server.should_exit:
            threading.Thread(target=app.state.engine.close, args=(grace_s,), daemon=True).start()
        handle_exit(sig, frame)

    server.handle_exit = on_signal  # read when uvicorn installs its handlers, inside run()
    server.run()


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"
