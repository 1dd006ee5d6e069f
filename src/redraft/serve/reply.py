"""Renders engine events as OpenAI objects: text_completion, chat.completion(.chunk).

One reply covers every job of a request (a completions request with a list of prompts runs one
job per prompt; choice index = prompt index x n + sample). Each choice's text is the decoded
committed part of its row's canvas (serve/engine.py), cut at the first stop string.

Streams send deltas that only ever append: a chunk carries the text a row committed since the
last chunk, minus any trailing characters that could still begin a stop string, or an unfinished
UTF-8 character (U+FFFD), which wait for the next token. So the concatenation of a choice's
chunks is exactly its non-streamed text. With `diffusing`, drafts come first instead (each the
whole canvas, replacing the previous one) and the final text is sent whole.

Log-probabilities: each token's figure comes from the row state (sampling/state.py): exact for
the AR twin; for diffusion the denoiser's probability at the step that committed the token, which
is a confidence, not a likelihood (the reply says which in redraft.logprobs). Token strings are
each token decoded alone; text_offset adds them up.
"""

from __future__ import annotations

import math
import secrets
import time
from bisect import bisect_right

from redraft.decoders.stops import IncrementalText, StopScan
from redraft.display import MASK_GLYPH
from redraft.model import Model
from redraft.serve.jobs import Event, Job
from redraft.serve.schemas import cut_at_stop, include_usage, stops, top_logprobs

LOGPROBS_MEANING = {"ar": "exact: log p(token | prompt, text before it) under the model at "
                          "temperature 1",
                    "diffusion": "the denoiser's log-probability of the token at the step that "
                                 "committed it (a confidence, not a likelihood of the text)"}


class Choice:
    """One row's stream state: the text and logprob tokens already sent."""

    def __init__(self, index: int):
        self.index, self.text, self.tokens, self.done = index, "", 0, False
        self.scan: StopScan | None = None  # the committed text so far and its stop strings


class Reply:
    def __init__(self, kind: str, served: Model, jobs: list[Job], req):
        self.kind, self.served, self.jobs, self.req = kind, served, jobs, req
        self.stop = stops(req)
        self.echo = bool(getattr(req, "echo", False))
        self.top = top_logprobs(req)
        self.usage = include_usage(req)  # a stream's chunks carry usage: null, then the total
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.started = time.monotonic()
        self.choices = [Choice(i * job.n + r) for i, job in enumerate(jobs) for r in range(job.n)]
        self.finals: dict[int, Event] = {}

    # --- one row's text and tokens ---------------------------------------------------------

    def _row(self, j: int, event: Event, r: int) -> tuple[list[int], int, int]:
        """(canvas ids, start, end): the tokens the choice covers are ids[start:end] (the
        prompt too with echo), the generated ones ids[len(prefix):end]."""
        w = self.jobs[j].work
        end = min(event.counts[r], w.length - len(w.suffix))
        ids = event.tokens[r, :end].tolist()
        return ids, 0 if self.echo else len(w.prefix), end

    def _cut(self, j: int, event: Event, r: int) -> bool:
        """Whether the row's text was cut at a stop string."""
        ids, _, end = self._row(j, event, r)
        p = len(self.jobs[j].work.prefix)
        return cut_at_stop(self.served.tokenizer.decode(ids[p:end]), self.stop)[1]

    def _text(self, j: int, event: Event, r: int, final: bool) -> tuple[str, bool]:
        """The choice's final text, and whether it ended on a stop string or EOS."""
        ids, start, end = self._row(j, event, r)
        p = len(self.jobs[j].work.prefix)
        dec = self.served.tokenizer.decode
        text, found = cut_at_stop(dec(ids[p:end]), self.stop)
        eos = self.jobs[j].work.stop_at_eos and self.served.tokenizer.eos_id in ids[p:end]
        return (dec(ids[:p]) if self.echo else "") + text, found or eos

    def _settled(self, c: Choice, j: int, event: Event, r: int) -> str:
        """The choice's text that can no longer change (a stream's, before the end): only the
        ids committed since the last look are decoded and searched (decoders/stops.py), so a
        stream costs time linear in its text whatever its stop strings."""
        w = self.jobs[j].work
        end = min(event.counts[r], w.length - len(w.suffix))
        if c.scan is None:
            c.scan = StopScan(self.served.tokenizer.decode, self.stop)
        c.scan.feed(event.tokens[r, len(w.prefix):max(end, len(w.prefix))])
        echo = self.served.tokenizer.decode(event.tokens[r, :len(w.prefix)]) if self.echo else ""
        return echo + c.scan.visible()

    def _ends(self, c: Choice, ids: list[int], start: int, whole: bool) -> list[int]:
        """Per token of ids[start:], the length of the text up to its end (one pass)."""
        if c.scan is not None and not self.echo and len(c.scan.text.ids) == len(ids) - start:
            return c.scan.text.ends
        inc = IncrementalText(self.served.tokenizer.decode)
        for i in ids[start:]:
            inc.extend([i])
        inc.extend([], final=whole)
        return inc.ends

    def _logprobs(self, c: Choice, j: int, event: Event, r: int, text_len: int,
                  whole: bool) -> dict | None:
        """The logprobs of the tokens after those already sent: all of them (whole), or those
        whose text lies within the first text_len characters. None when not asked for."""
        if self.top is None or event.logprobs is None:
            return None
        ids, start, end = self._row(j, event, r)
        dec = self.served.tokenizer.decode
        ends = self._ends(c, ids[:end], start, whole)
        lo = c.tokens
        hi = end - start if whole else max(lo, bisect_right(ends, text_len))
        c.tokens = hi
        lp, top_ids, top_lp = event.logprobs
        items = []
        for k in range(lo, hi):
            pos = start + k
            value = float(lp[r, pos])
            alts = [(dec([i]), v) for i, v in zip(top_ids[r, pos].tolist(),
                                                  top_lp[r, pos].tolist(), strict=True)
                    if not math.isnan(v)]
            items.append((dec([ids[pos]]), None if math.isnan(value) else value, alts,
                          ends[k - 1] if 0 < k <= len(ends) else 0 if k == 0
                          else len(dec(ids[start:pos]))))
        if self.kind == "chat":
            return {"content": [{"token": t, "logprob": v if v is not None else -9999.0,
                                 "bytes": list(t.encode()),
                                 "top_logprobs": [{"token": a, "logprob": b,
                                                   "bytes": list(a.encode())} for a, b in alts]}
                                for t, v, alts, _ in items]}
        return {"tokens": [t for t, *_ in items], "token_logprobs": [v for _, v, _, _ in items],
                "top_logprobs": [dict(alts) if self.top else None for _, _, alts, _ in items],
                "text_offset": [o for *_, o in items]}

    # --- OpenAI objects ----------------------------------------------------------------------

    def _choice(self, i: int, text: str, finish: str | None, chunk: bool,
                logprobs: dict | None = None) -> dict:
        if self.kind != "chat":
            return {"index": i, "text": text, "finish_reason": finish, "logprobs": logprobs}
        key = "delta" if chunk else "message"
        return {"index": i, key: {"role": "assistant", "content": text}, "logprobs": logprobs,
                "finish_reason": finish}

    def _object(self, choices: list[dict], chunk: bool, **extra) -> dict:
        obj = "chat.completion" if self.kind == "chat" else "text_completion"
        if chunk and self.usage:
            extra.setdefault("usage", None)
        return {"id": self.id, "object": obj + (".chunk" if chunk and self.kind == "chat" else ""),
                "created": self.created, "model": self.served.name, "choices": choices, **extra}

    def _rows(self):
        """(choice, job index, row) for every choice."""
        k = 0
        for j, job in enumerate(self.jobs):
            for r in range(job.n):
                yield self.choices[k], j, r
                k += 1

    def extras(self) -> dict:
        seconds = time.monotonic() - self.started
        prompt = sum(len(job.work.prefix) + len(job.work.suffix) for job in self.jobs)
        generated = 0
        for j, job in enumerate(self.jobs):
            w, event = job.work, self.finals.get(j)
            if event is not None:
                generated += sum(min(c, w.length - len(w.suffix)) - len(w.prefix)
                                 for c in event.counts)
        ar = not self.served.decoder.uses_steps
        tpf = [job.tpf() for j, job in enumerate(self.jobs) if j in self.finals]
        out = {"usage": {"prompt_tokens": prompt, "completion_tokens": generated,
                         "total_tokens": prompt + generated,
                         # redraft's: new tokens / per-row network evaluations (sampling/tpf.py)
                         "tokens_per_forward": round(sum(tpf[1:], tpf[0]).value, 4)
                         if tpf else None},
               "redraft": {"steps": None if ar else self.jobs[0].work.steps,
                           "network_rows": sum(job.row_nfe for job in self.jobs),
                           "seconds": round(seconds, 6),
                           "tokens_per_s": round(generated / max(seconds, 1e-9), 3),
                           "seeds": [s for job in self.jobs for s in job.work.seeds]}}
        if self.top is not None:
            out["redraft"]["logprobs"] = LOGPROBS_MEANING[self.served.kind]
        return out

    def usage_chunk(self) -> dict | None:
        """The stream's last chunk (no choices, the usage), or None when the request did not
        ask for it: OpenAI and vLLM send it only then, as clients read chunk.choices[0]."""
        return self._object([], chunk=True, **self.extras()) if self.usage else None

    def final(self) -> dict:
        """The non-streamed reply, once every job's final event is in self.finals."""
        choices = []
        for c, j, r in self._rows():
            event = self.finals[j]
            text, stopped = self._text(j, event, r, final=True)
            whole = not self._cut(j, event, r)  # nothing cut: every token
            choices.append(self._choice(c.index, text, "stop" if stopped else "length", False,
                                        self._logprobs(c, j, event, r, len(text), whole)))
        return self._object(choices, chunk=False, **self.extras())

    def draft(self, j: int, event: Event) -> dict:
        """A diffusing event: the whole current draft of each row of job j (masks as
        MASK_GLYPH). The text replaces the previous draft; it is not a delta to append."""
        w = self.jobs[j].work
        end = w.length - len(w.suffix)
        total = w.steps if self.served.decoder.uses_steps else 0
        base = sum(job.n for job in self.jobs[:j])
        choices = [self._choice(base + r, self.served.tokenizer.decode(
            row[len(w.prefix):end], mask_text=MASK_GLYPH), None, True)
            for r, row in enumerate(event.tokens)]
        return self._object(choices, chunk=True, draft=True, step=event.step, steps=total)

    def deltas(self, j: int, event: Event, final: bool) -> list[dict]:
        """Chunks for the text job j's rows added since the last chunk (final: the rest of
        it, then each row's finish_reason)."""
        out = []
        for c, jj, r in self._rows():
            if jj != j or c.done:
                continue
            if self.jobs[j].work.drafts and not final:
                continue
            if final:
                text, stopped = self._text(j, event, r, final)
            else:
                text, stopped = self._settled(c, j, event, r), False
            new = text[len(c.text):] if text.startswith(c.text) else ""
            if final and not text.startswith(c.text):  # a tokenizer whose decode of a longer
                new = text[len(c.text):]                # run rewrote the end: send the rest
            logprobs = self._logprobs(c, j, event, r, len(c.text) + len(new),
                                      final and not self._cut(j, event, r))
            if new or logprobs and (logprobs.get("tokens") or logprobs.get("content")):
                c.text += new
                out.append(self._object([self._choice(c.index, new, None, True, logprobs)],
                                        chunk=True))
            if final:
                c.done = True
                out.append(self._object([self._choice(c.index, "", "stop" if stopped
                                                       else "length", True)], chunk=True))
        return out
