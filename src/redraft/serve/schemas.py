"""Request bodies (OpenAI's fields plus diffusion knobs), the chat template, and the turn of a
validated body into engine Work.

OpenAI's fields that change nothing here are accepted and ignored: user, metadata, store,
service_tier, parallel_tool_calls, tool_choice "none", frequency_penalty / presence_penalty 0,
an empty logit_bias, best_of equal to n. A value that would change the result, and that this
server cannot honour (penalties, a logit bias, tools, best_of > n), is refused with a 400
naming the field, never ignored. response_format (structured outputs) is honoured:
serve/formats.py.

Strict types: "8" is not an integer and 1 is not a boolean, so a client's mistake is a 400 that
names the field rather than a silent conversion. Unknown fields are rejected too (a misspelt
`stpes` would otherwise be ignored). Every integer is bounded, so no request can carry a number
that overflows a tensor or a loop further down.

The response models at the end are documentation only (the OpenAPI schema's responses and SSE
events); the replies themselves are built in app.py.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from redraft.decoders.stops import MAX_STOP_CHARS, MAX_STOPS, check_stops
from redraft.errors import RedraftError
from redraft.model import Model
from redraft.request import Request, check_work, fit, http_fields
from redraft.serve.formats import ResponseFormat, check_constraint, constraint_of
from redraft.serve.jobs import Work

# The chat template: every message on its own line as "role: content", then "assistant: ",
# which the model continues. Small char-level models learn nothing of chat; this keeps the
# endpoint honest (a prompt you can read) rather than clever.
CHAT_ROLE_FORMAT = "{role}: {content}\n"
CHAT_REPLY_PREFIX = "assistant: "
BIG = 2**31 - 1  # the bound of every count field: far past any real request, well inside int64


class _OpenAIFields(BaseModel):
    """The fields of OpenAI's that are not decoding knobs."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None
    stop: str | list[str] | None = Field(None, description=(
        f"up to {MAX_STOPS} strings of at most {MAX_STOP_CHARS} characters: a choice's text "
        "ends where the first one begins"))
    stream: bool = False
    # accepted, and change nothing here (the module docstring)
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    stream_options: dict[str, bool] | None = Field(
        None, description='{"include_usage": true}: end the stream with a chunk whose choices '
                          "are empty and which carries the usage (OpenAI's rule: only when "
                          "asked, since a client reading chunk.choices[0] would break on it)")
    frequency_penalty: float | None = Field(None, description="only 0 (no penalty)")
    presence_penalty: float | None = Field(None, description="only 0 (no penalty)")
    logit_bias: dict[str, float] | None = Field(None, description="only empty (no bias)")
    diffusing: bool = Field(False, description="stream every intermediate draft")


# Fields every generating endpoint takes: OpenAI's, then every decoding knob of
# redraft.request.Request under its HTTP name (max_tokens, n, sampler_options, ...), with the
# Request's defaults, ranges and help: one list of knobs for the CLI, Python and HTTP.
Knobs = create_model("Knobs", __base__=_OpenAIFields, __module__=__name__, **http_fields())


class CompletionRequest(Knobs):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        "", description="a text, token ids, or a list of either: one choice per prompt and "
                        "sample, in order (prompt i's samples at i * n .. i * n + n - 1)")
    suffix: str | None = None
    echo: bool = Field(False, description="put the prompt before each choice's text")
    logprobs: int | None = Field(None, ge=0, le=20, description=(
        "log-probabilities of the chosen tokens and the top `logprobs` alternatives: exact "
        "for the AR twin; for diffusion the denoiser's probability of each token at the step "
        "that committed it (a confidence, not a likelihood)"))
    best_of: int | None = Field(None, ge=1, le=64, description="only equal to n")
    response_format: ResponseFormat | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(Knobs):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=BIG,
                                              description="the same as max_tokens")
    logprobs: bool = Field(False, description="log-probabilities of the chosen tokens (see "
                                              "the completions endpoint for their meaning)")
    top_logprobs: int | None = Field(None, ge=0, le=20)
    parallel_tool_calls: bool | None = None
    tool_choice: Literal["none"] | None = None
    tools: list[dict] | None = Field(None, description="only empty (no tools)")
    response_format: ResponseFormat | None = None


class InfillRequest(Knobs):
    prefix: str = ""
    suffix: str = ""


def chat_prompt(messages: list[Message]) -> str:
    return "".join(CHAT_ROLE_FORMAT.format(role=m.role, content=m.content)
                   for m in messages) + CHAT_REPLY_PREFIX


def prompts(req: CompletionRequest) -> list[str | list[int]]:
    """The request's prompts: each a text or token ids."""
    p = req.prompt
    if isinstance(p, str) or (p and isinstance(p[0], int)):
        return [p]
    if not p:
        raise RedraftError("prompt: an empty list: expected a text, token ids, or a list of "
                           "either")
    if len(p) > 64:
        raise RedraftError(f"prompt: a list of {len(p)} prompts: expected at most 64")
    return list(p)


def top_logprobs(req: Knobs) -> int | None:
    """None (no logprobs) or the number of alternatives per token."""
    if isinstance(req, CompletionRequest):
        return req.logprobs
    if isinstance(req, ChatRequest):
        if req.top_logprobs is not None and not req.logprobs:
            raise RedraftError("top_logprobs needs logprobs: true")
        return (req.top_logprobs or 0) if req.logprobs else None
    return None


def check_openai_fields(req: Knobs) -> None:
    """Values of OpenAI's fields that the schema alone cannot refuse."""
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(req, name) not in (None, 0):
            raise RedraftError(f"{name}={getattr(req, name)!r}: this server has no penalties; "
                               "expected 0 or none")
    if req.logit_bias:
        raise RedraftError("logit_bias: this server does not bias logits; expected {} or none")
    if getattr(req, "tools", None):
        raise RedraftError("tools: this server's models do not call tools; expected [] or none")
    best_of = getattr(req, "best_of", None)
    if best_of is not None and best_of != req.n:
        raise RedraftError(f"best_of={best_of}: this server returns every sample it draws, "
                           f"so best_of must equal n ({req.n})")
    both = (req.max_tokens, getattr(req, "max_completion_tokens", None))
    if None not in both and both[0] != both[1]:
        raise RedraftError("max_tokens and max_completion_tokens differ: give one")


STREAM_OPTIONS = ("include_usage", "include_obfuscation")  # the second is OpenAI's; no-op here


def include_usage(req: Knobs) -> bool:
    """Whether a stream ends with the usage chunk (stream_options.include_usage)."""
    opts = req.stream_options
    if opts is None:
        return False
    unknown = sorted(set(opts) - set(STREAM_OPTIONS))
    if unknown:
        raise RedraftError(f"stream_options.{unknown[0]}: unknown; expected one of "
                           f"{list(STREAM_OPTIONS)}")
    if not req.stream:
        raise RedraftError("stream_options: only allowed with stream: true")
    return bool(opts.get("include_usage", False))


def stops(req: Knobs) -> list[str]:
    return check_stops(req.stop)


def knobs_of(req: Knobs) -> dict:
    """The decoding knobs of a body, under the Request's names."""
    from redraft.request import KNOBS, http_name

    return {k: getattr(req, http_name(k)) for k in KNOBS if hasattr(req, http_name(k))}


def to_work(req: Knobs, served: Model, prefix: str | list[int], suffix: str, max_steps: int,
            max_prompt_tokens: int | None = None, max_work: int | None = None) -> Work:
    """Tokenise and check sizes: prompt + max_tokens (+ suffix) must fit the model's context,
    the prompt must be within max_prompt_tokens and the request's work (its decoder's
    work_units) within max_work."""
    stop = stops(req)
    check_openai_fields(req)
    include_usage(req)
    knobs = knobs_of(req)
    asked = req.max_tokens or getattr(req, "max_completion_tokens", None)
    knobs.update(max_new_tokens=asked, stop=stop, logprobs=top_logprobs(req))
    knobs["seed"] = secrets.randbelow(2**31) if req.seed is None else req.seed
    constraint = constraint_of(getattr(req, "response_format", None))
    check_constraint(constraint, served)
    if constraint is not None:
        knobs["constraint"] = constraint
    request = served.request(Request(**knobs))
    if request.steps > max_steps:
        raise RedraftError(f"steps={request.steps}: this server allows at most {max_steps}")
    tok = served.tokenizer
    pre, suf = served.encode(prefix), tok.encode(suffix)
    if max_prompt_tokens is not None and len(pre) + len(suf) > max_prompt_tokens:
        raise RedraftError(f"the prompt is {len(pre) + len(suf)} tokens; this server allows at "
                           f"most {max_prompt_tokens} (--max-prompt-tokens)")
    try:
        length = fit(len(pre), len(suf), served.seq_len, request.max_new_tokens,
                     model=f"model {served.name!r}", default_new=served.default_new_tokens)
    except RedraftError as e:  # the client's name for the knob
        raise RedraftError(str(e).replace("max_new_tokens=", "max_tokens=")) from None
    d = served.decoder
    if max_work is not None:
        check_work(d.work_units(req.n, request.steps, length, request.mode),
                   d.work_formula(req.n, request.steps, length, request.mode), max_work)
    return Work(model=served.name, prefix=pre, suffix=suf, length=length,
                seeds=[request.seed + r for r in range(req.n)],
                drafts=req.stream and req.diffusing, stream=req.stream, request=request)


def check_request(works: list[Work], served: Model, max_prompt_tokens: int | None = None,
                  max_work: int | None = None) -> None:
    """The per-request bounds over the request as a whole: a list of prompts is one request,
    so its prompts' tokens and its work (work_units) add up; to_work checks each prompt alone
    first, with a message about that prompt."""
    if len(works) < 2:
        return
    tokens = sum(len(w.prefix) + len(w.suffix) for w in works)
    if max_prompt_tokens is not None and tokens > max_prompt_tokens:
        raise RedraftError(f"the {len(works)} prompts are {tokens} tokens together; this server "
                           f"allows at most {max_prompt_tokens} a request "
                           "(--max-prompt-tokens): send fewer or shorter prompts")
    d = served.decoder
    work = sum(d.work_units(w.n, w.steps, w.length, w.request.mode) for w in works)
    if max_work is not None and work > max_work:
        w = works[0]
        what = d.work_formula(w.n, w.steps, w.length, w.request.mode).split(" = ")[0]
        raise RedraftError(f"the {len(works)} prompts are {work:,} units of work together (the "
                           f"sum of each one's {what}); this server allows at most "
                           f"{max_work:,} a request (--max-work): send fewer prompts, or lower "
                           "n, steps or max_tokens")


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """The text up to the first stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


# --- documentation only: what the endpoints answer (OpenAPI responses and SSE events) --------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    tokens_per_forward: float | None = Field(
        None, description="redraft's: new tokens / per-row network evaluations (1 for the "
                          "AR twin; a diffusion model's parallelism)")


class Choice(BaseModel):
    index: int
    text: str | None = Field(None, description="completions: the generated text")
    message: dict[str, str] | None = Field(None, description="chat: {role, content}")
    delta: dict[str, str] | None = Field(None, description="chat stream chunks: {role, content}")
    finish_reason: Literal["stop", "length"] | None
    logprobs: dict[str, Any] | None = Field(None, description=(
        "completions: {tokens, token_logprobs, top_logprobs, text_offset}; chat: {content: "
        "[{token, logprob, bytes, top_logprobs}]}; see redraft.logprobs for their meaning"))


class Completion(BaseModel):
    """A non-streamed reply (text_completion or chat.completion)."""

    id: str
    object: Literal["text_completion", "chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    redraft: dict[str, Any] = Field(description="steps, network_rows, seconds, tokens_per_s, "
                                                "seeds")


class StreamEvent(BaseModel):
    """One SSE `data:` line of a stream (`stream: true`); the stream ends with `data: [DONE]`.

    Without `diffusing`, each chunk's text is a delta to append: the text a choice committed
    since its last chunk (AR: every token; diffusion: the settled left-to-right run, block
    diffusion: each committed block, or, for
    rules that may still change any token, the whole text at the end), with its logprobs when
    asked for; the chunks of a choice add up to its non-streamed text. With `diffusing: true`,
    draft events come first: `draft` true, `step` of `steps`, and each choice's text is the
    WHOLE current draft (masks as U+2591), replacing the previous one; then the final text.
    Each choice ends with a chunk holding its finish_reason. With `stream_options:
    {"include_usage": true}` every chunk has `usage: null` and a last chunk with no choices
    carries the usage (and `redraft`); without it no chunk has empty choices. An error after
    the stream began is an event {"error": {message, type, code}}."""

    id: str
    object: Literal["text_completion", "chat.completion.chunk"]
    created: int
    model: str
    choices: list[Choice]
    draft: bool | None = None
    step: int | None = None
    steps: int | None = None
    usage: Usage | None = None


class ErrorDetail(BaseModel):
    message: str = Field(description="one line naming the bad value and what was expected")
    type: str
    param: str | None = None
    code: int = Field(description="the HTTP status")


class ErrorReply(BaseModel):
    error: ErrorDetail
