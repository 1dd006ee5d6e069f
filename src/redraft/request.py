"""Request: every decoding knob of one generation request, from every door to the decoder.

The three doors (Python keyword arguments of `Model.generate` / `infill`, `redraft sample`'s
flags, the server's JSON body) all end in one Request; its defaults are written once, below,
and its checks run once, in `Request.check` (ranges) and in the two functions after it (the
canvas that fits the context, the work it costs). The CLI's flags (`add_flags`) and the HTTP
schema's fields (serve/schemas.py, `http_fields`) are derived from the field list, so a new
knob is one field here (the role of vLLM's SamplingParams).

What a knob means for each kind of model is its decoder's business (redraft.decoders): the AR
twin ignores `steps`, a block model takes its own block size, DiffusionGemma refuses top_k.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from redraft.errors import RedraftError
from redraft.validate import MAX_SAMPLE_SEED

HF_NEW_TOKENS = 256  # a Hugging Face model's default completion (redraft.hf.DEFAULT_NEW_TOKENS)
DEFAULT_STEPS = 64  # a redraft diffusion model's steps per canvas (decoders read it)
BIG = 2**31 - 1  # the bound of every count: far past any real request, well inside int64


def _knob(default, help: str, *, low=None, high=None, low_open: bool = False,
          http: str | None = "", cli: str | None = "", http_high=None, http_default=...):
    """A Request field. low/high: its range (low_open: low excluded); http / cli: the name
    of its HTTP field / CLI flag ("" the field's own name, None: not at that door);
    http_high, http_default: the server's tighter bound or other default."""
    meta = {"help": help, "low": low, "high": high, "low_open": low_open, "http": http,
            "cli": cli, "http_high": http_high, "http_default": http_default}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Request:
    """One request's decoding knobs (rows of a prompt, each from its own seed)."""

    max_new_tokens: int | None = _knob(
        None, "tokens to generate after the prompt (default: the rest of the context; hf: "
        f"models: {HF_NEW_TOKENS}, as transformers and OpenAI default to a short completion)",
        low=1, high=BIG, http="max_tokens", cli="max-new-tokens")
    length: int | None = _knob(
        None, "the whole canvas in tokens, prompt and suffix included (instead of "
        f"max_new_tokens; default: the model's context, seq_len; hf: models: the prompt + "
        f"{HF_NEW_TOKENS} new tokens)", low=1, high=BIG, http=None)
    num_samples: int = _knob(1, "rows (samples) per prompt", low=1, high=BIG, http="n",
                             http_high=64)
    seed: int = _knob(0, "row r of a prompt draws from seed + r", low=0, high=MAX_SAMPLE_SEED,
                      http_default=None)
    steps: int | None = _knob(
        None, "reverse steps for the whole canvas (default: the model's, "
        f"{DEFAULT_STEPS} for redraft's diffusion models), any number: with blocks "
        "(block_size) they are spread over them as evenly as it goes, the earlier blocks one "
        "more when it does not divide (32 over 3 blocks: 11, 11, 10), at least one a block; a "
        "block-diffusion model takes ceil(steps / blocks) in each of its blocks; adaptive "
        "samplers take as many as they need; the AR twin ignores it", low=1, high=BIG)
    sampler: str | None = _knob(None, "diffusion step rule (default: the objective's; "
                                      "`redraft samplers`)")
    options: dict | None = _knob(None, "the sampler's knobs, e.g. {\"threshold\": 0.9}",
                                 http="sampler_options", cli=None)
    temperature: float = _knob(1.0, "temperature (0: greedy; see `redraft samplers`)", low=0,
                               high=100)
    top_k: int | None = _knob(None, "keep the k most likely tokens (default: all)", low=1,
                              high=BIG)
    top_p: float | None = _knob(None, "nucleus: the smallest set with this much probability",
                                low=0, high=1, low_open=True)
    block_size: int | None = _knob(None, "decode blocks of this many tokens left to right "
                                         "(semi-autoregressive; steps are split over them)",
                                   low=1, high=BIG)
    stop_at_eos: bool = _knob(False, "stop a row once its text is settled: it wrote EOS and "
                              "every position before it is decided (the rest becomes EOS)")
    early_commit: float | None = _knob(
        None, "diffusion: commit the current block (or canvas) at once, each masked position "
        "its most likely token, when every one of them has a top-1/top-2 log-probability gap "
        "above this (Prophet; default: off)", low=0)
    guidance: float = _knob(0.0, "classifier-free guidance scale towards the prompt (0: none)",
                            low=-1, high=100)
    stop: list = _knob([], "end a row once its text holds one of these strings", http=None,
                       cli="stop")
    logprobs: int | None = _knob(None, "record each token's log-probability and the top k",
                                 low=0, high=20, http=None, cli=None)

    def check(self) -> Request:
        """Types and ranges of every knob (a RedraftError names the first bad one)."""
        hints = typing.get_type_hints(Request)
        for f in dataclasses.fields(self):
            check_value(f.name, getattr(self, f.name), hints[f.name], f.metadata)
        if self.max_new_tokens is not None and self.length is not None:
            raise RedraftError("give max_new_tokens or length, not both")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise RedraftError("stop: expected non-empty strings")
        return self

    def replace(self, **changes: Any) -> Request:
        return dataclasses.replace(self, **changes)


DEFAULTS = Request()
"""The defaults themselves (read by `redraft bench`, lm-eval and the docs)."""
KNOBS = tuple(f.name for f in dataclasses.fields(Request))


def _types(hint) -> tuple[type, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for t in typing.get_args(hint) if t is not type(None))
    return (typing.get_origin(hint) or hint,)


def check_value(name: str, value, hint, meta) -> None:
    """One knob against its type (None where the type allows it) and range."""
    allowed = _types(hint)
    if value is None:
        if type(None) in typing.get_args(hint):
            return
        raise RedraftError(f"{name}=None: expected {allowed[0].__name__}")
    if isinstance(value, bool):
        ok = bool in allowed  # True is not an integer here
    else:  # an int is a float's value too
        ok = any(isinstance(value, t) for t in allowed) or (float in allowed
                                                             and isinstance(value, int))
    if not ok:
        raise RedraftError(f"{name}={value!r}: expected {' or '.join(t.__name__ for t in allowed)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RedraftError(f"{name}={value!r}: expected a finite number")
    low, high = meta.get("low"), meta.get("high")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if low is not None and (value <= low if meta.get("low_open") else value < low):
            raise RedraftError(f"{name}={value!r}: expected "
                               f"{'>' if meta.get('low_open') else '>='} {low}")
        if high is not None and value > high:
            raise RedraftError(f"{name}={value!r}: expected <= {high}")


def fit(prompt: int, suffix: int, seq_len: int, max_new_tokens: int | None = None,
        length: int | None = None, model: str = "the model",
        default_new: int | None = None) -> int:
    """The canvas length of a request (prompt + new tokens + suffix), checked against the
    context: max_new_tokens, or the whole canvas `length`, or (neither) `default_new` new
    tokens as far as they fit (None: the rest of the context). The one place that says what
    fits."""
    fixed = prompt + suffix
    room = seq_len - fixed
    if room < 1:
        raise RedraftError(f"the prompt is {fixed} tokens: with anything to generate it does "
                           f"not fit the {seq_len}-token context of {model}")
    if max_new_tokens is not None:
        if max_new_tokens > room:
            raise RedraftError(f"max_new_tokens={max_new_tokens} does not fit: the prompt takes "
                               f"{fixed} of the {seq_len}-token context of {model}, so at most "
                               f"{room} fit")
        return fixed + max_new_tokens
    if length is None:
        return seq_len if default_new is None else fixed + min(default_new, room)
    if length > seq_len:
        raise RedraftError(f"length={length} does not fit the {seq_len}-token context of {model}")
    if length <= fixed:
        raise RedraftError(f"length={length}: the prompt takes {fixed} tokens, so a canvas of "
                           f"{length} leaves nothing to generate")
    return length


def check_work(units: int, what: str, max_work: int) -> None:
    """A request's work (its decoder's work_units, summed over its prompts) within max_work."""
    if units > max_work:
        raise RedraftError(f"the request is {units:,} units of work ({what}); the limit is "
                           f"{max_work:,} (--max-work): lower the number of samples or "
                           "prompts, steps or length")


# --- the derived doors ------------------------------------------------------------------------


def add_flags(parser, *, choices: dict[str, list] | None = None,
              skip: tuple[str, ...] = ()) -> None:
    """argparse flags for the knobs that have a CLI name: --steps, --top-k, ... with the
    Request's defaults, ranges and help (choices: a knob's allowed values, e.g. the sampler
    names, which live above this module)."""
    from redraft.validate import integer, number

    hints = typing.get_type_hints(Request)
    for f in dataclasses.fields(Request):
        meta = f.metadata
        name = meta["cli"] if meta["cli"] else f.name.replace("_", "-")
        if meta["cli"] is None or f.name in skip:
            continue
        kind = _types(hints[f.name])[0]
        kw: dict[str, Any] = {"help": meta["help"], "dest": f.name}
        if kind is bool:
            kw.update(action="store_true")
        elif kind is list:
            kw.update(action="append", default=None, metavar="TEXT")
        elif kind is int:
            kw.update(type=integer(meta["low"], meta["high"]), default=f.default)
        elif kind is float:
            kw.update(type=number(meta["low"], meta["high"], low_open=meta["low_open"]),
                      default=f.default)
        else:
            kw.update(default=f.default)
        if choices and f.name in choices:
            kw["choices"] = choices[f.name]
        parser.add_argument(f"--{name}", **kw)


def from_args(args, **extra: Any) -> Request:
    """The Request of parsed flags (add_flags), plus knobs the command builds itself."""
    knobs = {k: getattr(args, k) for k in KNOBS if hasattr(args, k)}
    knobs["stop"] = knobs.get("stop") or []
    knobs.update(extra)
    return Request(**knobs).check()


def http_fields() -> dict[str, tuple[Any, Any]]:
    """The HTTP schema's fields for the knobs that have an HTTP name: name -> (type, Field)."""
    from pydantic import Field

    hints = typing.get_type_hints(Request)
    out = {}
    for f in dataclasses.fields(Request):
        meta = f.metadata
        if meta["http"] is None:
            continue
        name = meta["http"] or f.name
        default = f.default if meta["http_default"] is ... else meta["http_default"]
        hint = hints[f.name]
        if default is None and type(None) not in typing.get_args(hint):
            hint = hint | None
        if f.name == "options":
            hint = dict[str, str | int | float] | None
        bounds = {}
        low, high = meta["low"], meta["http_high"] or meta["high"]
        if low is not None:
            bounds["gt" if meta["low_open"] else "ge"] = low
        if high is not None:
            bounds["le"] = high
        out[name] = (hint, Field(default, description=meta["help"], **bounds))
    return out


def http_name(knob: str) -> str:
    """The HTTP field of a knob (for error messages that name what the client sent)."""
    meta = {f.name: f.metadata for f in dataclasses.fields(Request)}[knob]
    return meta["http"] or knob
