"""Infilling anywhere: a template of fixed text and free spans -> a canvas -> filled text.

A template is text with span markers, or the same as a list of segments:

    "def add(a, b):\\n    <|mask:12|>\\n"          ["def add(a, b):\\n    ", Span(12), "\\n"]

    <|mask:N|>     a span of exactly N tokens
    <|mask:<=N|>   a span of at most N tokens (flexible): it gets N positions and is cut at the
                   first EOS or pad token the model writes in it ("trailing pads")

Any number of spans at any positions. Fixed text is tokenised segment by segment and kept
byte for byte (the loop never changes a fixed position). A flexible span ends where the model
writes EOS/pad; a model trained on packed documents rarely writes one mid-document, so such a
span usually fills to its maximum. Works with every sampler and with guidance (the fixed text
is the condition); the model's context bounds the whole canvas.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from redraft.data.tokenizers import Tokenizer
from redraft.errors import RedraftError

MARKER = re.compile(r"<\|mask:(<=)?(\d+)\|>")


@dataclass(frozen=True)
class Span:
    """A free span of `length` tokens (at most `length` when flexible)."""

    length: int
    flexible: bool = False

    def __post_init__(self):
        if not isinstance(self.length, int) or self.length < 1:
            raise RedraftError(f"span length {self.length!r}: expected an integer >= 1")


def _span_length(digits: str) -> int:
    # int() refuses more than 4300 digits with a bare ValueError; no context is 10^12 long.
    if len(digits.lstrip("0")) > 12:
        raise RedraftError(f"span marker <|mask:{digits[:12]}...|> ({len(digits)} digits): "
                           "expected a length in tokens that fits the model's context")
    return int(digits)


def parse_template(template: str) -> list[str | Span]:
    """Split a template into fixed text and spans; a malformed marker is an error."""
    segments: list[str | Span] = []
    pos = 0
    for m in MARKER.finditer(template):
        if m.start() > pos:
            segments.append(template[pos:m.start()])
        segments.append(Span(_span_length(m.group(2)), flexible=bool(m.group(1))))
        pos = m.end()
    if pos < len(template):
        segments.append(template[pos:])
    for seg in segments:
        if isinstance(seg, str) and "<|mask" in seg:
            bad = seg[seg.index("<|mask"):][:24]
            raise RedraftError(f"malformed span marker near {bad!r}: expected <|mask:N|> or "
                               "<|mask:<=N|> with N >= 1")
    if not any(isinstance(s, Span) for s in segments):
        raise RedraftError("the template has no span to fill: mark one with <|mask:N|>")
    return segments


@dataclass
class Infill:
    """A template tokenised: canvas (a fixed id or None per position) and the spans' places."""

    canvas: list[int | None]
    spans: list[tuple[int, int, bool]]  # (start, end, flexible) in canvas positions
    segments: list[str | Span]

    @classmethod
    def build(cls, template: str | Sequence[str | Span], tokenizer: Tokenizer,
              max_len: int | None = None) -> Infill:
        """max_len: the model's context, checked before a span's positions are made (a span
        of 10^12 tokens is an error, not a MemoryError)."""
        segments = parse_template(template) if isinstance(template, str) else list(template)
        canvas: list[int | None] = []
        spans = []
        for seg in segments:
            if isinstance(seg, Span):
                if max_len is not None and len(canvas) + seg.length > max_len:
                    raise RedraftError(f"a span of {seg.length:,} tokens makes the template "
                                       f"longer than the model's context of {max_len} tokens")
                spans.append((len(canvas), len(canvas) + seg.length, seg.flexible))
                canvas.extend([None] * seg.length)
            elif isinstance(seg, str):
                canvas.extend(tokenizer.encode(seg))
            else:
                raise RedraftError(f"template segment {seg!r}: expected text or a Span")
        if not spans:
            raise RedraftError("the template has no span to fill")
        return cls(canvas, spans, segments)

    def span_ids(self, tokens: Sequence[int], tokenizer: Tokenizer) -> list[list[int]]:
        """The ids each span holds in a sampled canvas; flexible ones cut at EOS/pad."""
        tokens = [int(t) for t in tokens]
        out = []
        for start, end, flexible in self.spans:
            ids = tokens[start:end]
            if flexible:
                stops = [i for i, t in enumerate(ids) if t in (tokenizer.eos_id, tokenizer.pad_id)]
                ids = ids[:stops[0]] if stops else ids
            out.append(ids)
        return out

    def fill(self, tokens: Sequence[int], tokenizer: Tokenizer) -> tuple[str, list[str]]:
        """(the whole text with every span filled, each span's text) of a sampled canvas."""
        fills = [tokenizer.decode(ids) for ids in self.span_ids(tokens, tokenizer)]
        parts, k = [], 0
        for seg in self.segments:
            if isinstance(seg, Span):
                parts.append(fills[k])
                k += 1
            else:
                parts.append(seg)
        return "".join(parts), fills


def infill(model, process, tokenizer: Tokenizer, template: str | Sequence[str | Span], *,
           steps: int, batch: int = 1, objective: str | None = None, **kwargs):
    """Fill every span of `template` with generate_diffusion (kwargs: sampler, options,
    temperature, seed, guidance, ...); returns (texts, span_texts, Generation), one per row."""
    from redraft.sampling.generate import generate_diffusion

    spec = Infill.build(template, tokenizer, model.seq_len)
    if len(spec.canvas) > model.seq_len:
        raise RedraftError(f"the template takes {len(spec.canvas)} tokens, more than the model's "
                           f"context of {model.seq_len}")
    gen = generate_diffusion(model, process, steps=steps, batch=batch, length=len(spec.canvas),
                             canvas=spec.canvas, objective=objective, **kwargs)
    filled = [spec.fill(row.tolist(), tokenizer) for row in gen.tokens]
    return [f[0] for f in filled], [f[1] for f in filled], gen
