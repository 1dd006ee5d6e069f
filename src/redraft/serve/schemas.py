"""Request bodies (OpenAI's fields plus diffusion knobs), the chat template, and the turn of a
validated body into engine Work.

OpenAI's fields that change nothing here are accepted and ignored: user, metadata, store,
service_tier, parallel_tool_calls, stream_options (the usage chunk is always sent),
tool_choice "none", response_format {"type": "text"}, frequency_penalty / presence_penalty 0,
an empty logit_bias, best_of equal to n. A value that would change the result, and that this
server cannot honour (penalties, a logit bias, tools, JSON mode, best_of > n), is refused with
a 400 naming the field, never ignored.

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

from pydantic import BaseModel, ConfigDict, Field

from redraft.config import SAMPLE
from redraft.errors import RedraftError
from redraft.hf import default_length
from redraft.model import Model
from redraft.serve.jobs import Work

# The chat template: every message on its own line as "role: content", then "assistant: ",
# which the model continues. Small char-level models learn nothing of chat; this keeps the
# endpoint honest (a prompt you can read) rather than clever.
CHAT_ROLE_FORMAT = "{role}: {content}\n"
CHAT_REPLY_PREFIX = "assistant: "
BIG = 2**31 - 1  # the bound of every count field: far past any real request, well inside int64


class Knobs(BaseModel):
    """Fields every generating endpoint takes."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=BIG, description="tokens to generate (default: "
                                                                    "the rest of the context; "
                                                                    "256 for hf: models)")
    temperature: float = Field(SAMPLE.temperature, ge=0, le=100)
    top_p: float | None = Field(SAMPLE.top_p, gt=0, le=1)
    top_k: int | None = Field(SAMPLE.top_k, ge=1, le=BIG)
    n: int = Field(SAMPLE.num_samples, ge=1, le=64)
    seed: int | None = Field(None, ge=0, lt=2**63 - 64)
    stop: str | list[str] | None = None
    stream: bool = False
    # accepted, and change nothing here (the module docstring)
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    stream_options: dict[str, bool] | None = Field(
        None, description="accepted; the usage chunk is always sent at the end of a stream")
    frequency_penalty: float | None = Field(None, description="only 0 (no penalty)")
    presence_penalty: float | None = Field(None, description="only 0 (no penalty)")
    logit_bias: dict[str, float] | None = Field(None, description="only empty (no bias)")
    # diffusion knobs
    steps: int = Field(SAMPLE.steps, ge=1, le=BIG)
    sampler: str | None = SAMPLE.sampler
    sampler_options: dict[str, str | int | float] | None = Field(
        None, description="the sampler's knobs, e.g. {\"threshold\": 0.9} (`redraft samplers`)")
    block_size: int | None = Field(SAMPLE.block_size, ge=1, le=BIG,
                                   description="semi-autoregressive blocks")
    stop_at_eos: bool = Field(SAMPLE.stop_at_eos,
                              description="stop a row after the block where it wrote EOS")
    guidance: float = Field(SAMPLE.guidance, ge=-1, le=100,
                            description="classifier-free guidance scale")
    diffusing: bool = Field(False, description="stream every intermediate draft")


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
    response_format: dict[str, Literal["text"]] | None = Field(
        None, description='only {"type": "text"}')


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


def stops(req: Knobs) -> list[str]:
    found = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(found) > 4 or any(not s for s in found):
        raise RedraftError("stop: expected up to 4 non-empty strings")
    return found


def work_units(served: Model, n: int, steps: int, length: int) -> int:
    """Token positions the network evaluates for a request: n x steps x length for diffusion
    (every step reads the whole canvas), n x length for the AR twin (one token per step)."""
    return n * length if served.is_ar else n * steps * length


def to_work(req: Knobs, served: Model, prefix: str | list[int], suffix: str, max_steps: int,
            max_prompt_tokens: int | None = None, max_work: int | None = None) -> Work:
    """Tokenise and check sizes: prompt + max_tokens (+ suffix) must fit the model's context,
    the prompt must be within max_prompt_tokens and the request's work (work_units) within
    max_work."""
    stop = stops(req)
    check_openai_fields(req)
    if req.steps > max_steps:
        raise RedraftError(f"steps={req.steps}: this server allows at most {max_steps}")
    tok = served.tokenizer
    pre, suf = served.encode(prefix), tok.encode(suffix)
    if max_prompt_tokens is not None and len(pre) + len(suf) > max_prompt_tokens:
        raise RedraftError(f"the prompt is {len(pre) + len(suf)} tokens; this server allows at "
                           f"most {max_prompt_tokens} (--max-prompt-tokens)")
    room = served.seq_len - len(pre) - len(suf)
    if room < 1:
        raise RedraftError(f"the prompt is {len(pre) + len(suf)} tokens; the context of model "
                           f"{served.name!r} is {served.seq_len} tokens, so nothing is left to "
                           "generate")
    asked = req.max_tokens or getattr(req, "max_completion_tokens", None)
    # Unasked: the rest of the context; an hf: model a short completion (hf.default_length)
    max_tokens = min(room, default_length(served, 0)) if asked is None else asked
    if max_tokens > room:
        raise RedraftError(f"max_tokens={max_tokens}: the prompt takes {len(pre) + len(suf)} of "
                           f"the {served.seq_len}-token context, so at most {room} fit")
    length = len(pre) + max_tokens + len(suf)
    work = work_units(served, req.n, req.steps, length)
    if max_work is not None and work > max_work:
        what = (f"n x length = {req.n} x {length}" if served.is_ar
                else f"n x steps x length = {req.n} x {req.steps} x {length}")
        raise RedraftError(f"the request is {work:,} units of work ({what}); this server "
                           f"allows at most {max_work:,} (--max-work): lower n, steps or "
                           "max_tokens")
    seed = secrets.randbelow(2**31) if req.seed is None else req.seed
    return Work(model=served.name, prefix=pre, suffix=suf, length=length,
                seeds=[seed + r for r in range(req.n)], steps=req.steps, sampler=req.sampler,
                options=req.sampler_options, block_size=req.block_size,
                stop_at_eos=req.stop_at_eos, guidance=req.guidance,
                temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                drafts=req.stream and req.diffusing, stream=req.stream, stop=stop,
                logprobs=top_logprobs(req))


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """The text up to the first stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


def held_back(text: str, stop: list[str]) -> int:
    """How many trailing characters of `text` could still start a stop string (a stream
    holds them back until the next token shows whether the stop string follows)."""
    return max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


def settled(text: str, stop: list[str]) -> str:
    """The part of a committed text that the final text surely starts with: up to the first
    stop string, less a tail that a later token could complete into one (a stop string can
    straddle the seam), and less trailing U+FFFD (a character whose bytes are not all
    committed yet)."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    end = min([len(text) - max((len(s) - 1 for s in stop), default=0), *cuts])
    return text[:max(end, 0)].rstrip("\ufffd")


# --- documentation only: what the endpoints answer (OpenAPI responses and SSE events) --------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


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
    Each choice ends with a chunk holding its finish_reason; then a chunk with no choices and
    the usage. An error after the stream began is an event {"error": {message, type, code}}."""

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
