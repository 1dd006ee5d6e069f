"""DiffusionGemma (transformers' `diffusion_gemma`) driven by redraft's loop, one step at a time.

The model is an encoder-decoder over one sequence: a causal encoder writes the prompt (and
then each committed canvas) into a KV cache; a bidirectional decoder reads that cache
read-only and denoises a canvas of C = config.canvas_length tokens that starts as uniform
random tokens, conditioned on its own previous step's (temperature-scheduled) logits
(self-conditioning). The step rule is sampling/entropy_bound.py. Canvases are generated left to
right, each with up to N = `steps` denoising steps, until the requested length is covered:

    cache <- encoder([bos] + prompt)
    repeat ceil(new tokens / C) times:
        x <- C uniform tokens; s <- none
        for i in 0..N-1 (a row stops early when stable and confident):
            z <- decoder(x, cache, self-conditioning s, positions after the cache)   # (B, C, V)
            x, draft, s <- rule.step(z, x, i)
        commit draft; cache <- encoder(draft)          (stop a row at EOS if asked)

GemmaRows holds one request's rows between steps; `decode_step` runs the decoder ONCE for the
rows of several requests (the server's batcher, serve/hf_batch.py) by stacking their caches,
left-padded to a common length with the pad slots masked out, each row at its own positions;
`encode_pending` runs one encoder call for the requests whose caches and pending tokens have
equal lengths (a batch of prompts, canvases committed in step).
`Model.sample` drives the same objects alone, so a served result equals `redraft sample`
(up to the float rounding of a batched call). Every step is the transformers reference's own
call sequence (generation_diffusion_gemma.py); tests/hf check logits and tokens against it.
"""

from __future__ import annotations

import copy
import math
import time
from types import SimpleNamespace

import torch

from redraft.errors import RedraftError
from redraft.sampling.categorical import RowRandom
from redraft.sampling.entropy_bound import EntropyBound, Noise, RowNoise


class GemmaRows:
    """The rows of one request: a prefix (shared), `length` canvas positions in all (prefix
    included), row r drawn with seeds[r]. `view()` (n, length) shows the prefix, committed
    canvases, the current draft, and `placeholder` past it."""

    bucket = "canvas"  # the server batches all of a model's requests, whatever their length

    def __init__(self, hf, rule: EntropyBound, prefix: list[int], length: int,
                 seeds: list[int], *, bos_id: int | None, eos_id: int | None, placeholder: int,
                 noise: Noise | None = None):
        if len(prefix) >= length:
            raise RedraftError("the prompt leaves nothing to generate")
        prompt = list(prefix)
        if bos_id is not None and (not prompt or prompt[0] != bos_id):
            prompt = [bos_id, *prompt]
        if not prompt:
            raise RedraftError("an empty prompt needs a BOS token, and this tokenizer has none")
        self.hf, self.rule, self.n = hf, rule, len(seeds)
        self.C = hf.config.canvas_length
        self.vocab = hf.config.text_config.vocab_size
        self.device = hf.device
        self.prefix, self.length, self.eos_id = list(prefix), length, eos_id
        self.n_canvases = math.ceil((length - len(prefix)) / self.C)
        self.noise = noise if noise is not None else RowNoise(RowRandom(list(seeds),
                                                                        self.device))
        self.generated = torch.empty((self.n, 0), dtype=torch.long, device=self.device)
        self.placeholder = placeholder
        self.cache = None
        self.cache_len = 0
        self.pending = torch.tensor([prompt], dtype=torch.long, device=self.device)  # to encode
        self.finished = torch.zeros(self.n, dtype=torch.bool, device=self.device)
        self.i = 0  # steps taken over all canvases (drafts are numbered by it)
        self.nfe = 0
        self.row_nfe = 0
        self.canvas_no = 0
        self.logits: torch.Tensor | None = None

    # --- the encoder side -----------------------------------------------------------------

    def encode(self) -> None:
        """Write the pending tokens into the cache and draw a fresh canvas (encode_pending
        does this for several requests in one encoder call)."""
        encode_pending(self.hf, [self])

    def _start_canvas(self) -> None:
        """A fresh canvas of uniform tokens, no self-conditioning, no history."""
        everyone = torch.ones(self.n, dtype=torch.bool, device=self.device)
        self.canvas = self.noise.tokens(everyone, self.C, self.vocab)  # (n, C)
        self.draft = self.canvas
        self.selfcond: torch.Tensor | None = None  # (n, C, V) processed logits, or none yet
        self.local = 0
        self.history = torch.full((self.n, max(self.rule.stability_threshold, 1), self.C), -1,
                                  dtype=torch.long, device=self.device)
        self.stopped = self.finished.clone()

    # --- the decoder side -----------------------------------------------------------------

    @property
    def done(self) -> bool:
        return bool(self.finished.all())

    def stale(self) -> torch.Tensor:
        """(n,) bool: rows that need a decoder call for the next step."""
        return ~self.stopped & ~self.finished

    def set_logits(self, rows: torch.Tensor, logits: torch.Tensor) -> None:
        self.logits = logits
        self.rows = rows
        self.row_nfe += int(rows.sum())

    def advance(self) -> torch.Tensor:
        """Apply the rule to the rows that got logits; commit the canvas when it is done.
        Returns the draft view (n, length)."""
        rows, rule = self.rows, self.rule
        canvas, draft, processed, h = rule.step(self.logits, self.canvas[rows], self.local, rows,
                                                self.noise)
        stop = torch.zeros_like(rows)
        if rule.stability_threshold == 0:
            stable = torch.ones(len(draft), dtype=torch.bool, device=self.device)
        else:
            hist = self.history[rows]
            stable = (hist == draft[:, None]).all(-1).all(-1)
            self.history[rows] = torch.cat((hist[:, 1:], draft[:, None]), dim=1)
        stop[rows] = stable & (h < rule.confidence_threshold)
        self.canvas = self.canvas.clone()
        self.canvas[rows], self.draft = canvas, self.draft.clone()
        self.draft[rows] = draft
        sc = processed.to(self.hf.model.decoder.embed_tokens.weight.dtype)
        if self.selfcond is None:
            self.selfcond = sc.new_zeros((self.n, *sc.shape[1:]))
        self.selfcond[rows] = sc
        self.stopped |= stop
        self.local += 1
        self.i += 1
        self.logits = None
        if self.local == rule.steps or bool(self.stopped.all()):
            self._commit()
        return self.view()

    def _commit(self) -> None:
        draft = torch.where(self.finished[:, None], self.placeholder_eos(), self.draft)
        self.generated = torch.cat((self.generated, draft), dim=1)
        self.canvas_no += 1
        if self.eos_id is not None:
            self.finished |= (draft == self.eos_id).any(dim=1)
        if self.canvas_no >= self.n_canvases:
            self.finished[:] = True
        if not self.done:
            self.pending = draft  # encoded before this request's next decoder call

    def placeholder_eos(self) -> int:
        return self.eos_id if self.eos_id is not None else self.placeholder

    def current(self) -> torch.Tensor:
        """The canvas as the server's events carry it (view)."""
        return self.view()

    def committed(self) -> torch.Tensor:
        """(n,) leading positions of each row that can no longer change: the prompt and the
        committed canvases (a finished row: all of it)."""
        out = torch.full((self.n,), min(len(self.prefix) + self.generated.shape[1], self.length),
                         dtype=torch.long)
        out[self.finished.cpu()] = self.length
        return out

    def logprob_arrays(self) -> None:
        """No log-probabilities are recorded (start refuses logprobs)."""
        return None

    def view(self) -> torch.Tensor:
        """(n, length): prefix, committed canvases, the current draft, then placeholders;
        with an EOS stop, everything after a row's first EOS becomes EOS."""
        new = self.length - len(self.prefix)
        between = self.done or self.pending is not None  # no canvas on the way
        body = self.generated if between else torch.cat((self.generated, self.draft), 1)
        body = body[:, :new]
        if body.shape[1] < new:
            pad = torch.full((self.n, new - body.shape[1]), self.placeholder, dtype=torch.long,
                             device=self.device)
            body = torch.cat((body, pad), dim=1)
        if self.eos_id is not None and self.done:
            is_eos = body == self.eos_id
            after = (is_eos.long().cumsum(1) - is_eos.long()) > 0
            body = torch.where(after, self.eos_id, body)
        pre = torch.tensor(self.prefix, dtype=torch.long, device=self.device).expand(self.n, -1)
        return torch.cat((pre, body), dim=1)


def _rows_of(cache, a: int, b: int):
    """A cache holding rows a:b of `cache` (views; its counters shared by value)."""
    out = copy.copy(cache)
    out.layers = []
    for layer in cache.layers:
        part = copy.copy(layer)
        part.keys, part.values = layer.keys[a:b], layer.values[a:b]
        out.layers.append(part)
    return out


@torch.no_grad()
def encode_pending(hf, states: list[GemmaRows]) -> None:
    """Write each state's pending tokens (its prompt, or the canvas it just committed) into its
    cache: states with the same cache length and pending length share ONE encoder call (their
    caches stacked, then cut back per state), exactly the reference's call for each row. Then
    each draws its fresh canvas."""
    from transformers import DynamicCache

    groups: dict[tuple, list[GemmaRows]] = {}
    for st in states:
        if st.pending is not None:
            key = (st.cache is None, st.cache_len, st.pending.shape[1])
            groups.setdefault(key, []).append(st)
    for (fresh, cache_len, t), group in groups.items():
        x = torch.cat([st.pending for st in group])  # (R, t)
        device = x.device
        if fresh:
            cache = DynamicCache(config=hf.config.get_text_config(decoder=True))
        else:
            cache = _rows_of(group[0].cache, 0, None)
            for i, layer in enumerate(cache.layers):
                layer.keys = torch.cat([st.cache.layers[i].keys for st in group])
                layer.values = torch.cat([st.cache.layers[i].values for st in group])
        pos = torch.arange(cache_len, cache_len + t, dtype=torch.int32, device=device)[None]
        mask = torch.ones((len(x), cache_len + t), dtype=torch.bool, device=device)
        dummy = torch.empty((len(x), t, 0), dtype=hf.dtype, device=device)
        masks = hf.model.encoder.create_masks_for_generate(
            config=hf.config, inputs_embeds=dummy, attention_mask=mask, cache=cache,
            position_ids=pos, mm_token_type_ids=None)
        hf.model.encoder(input_ids=x, attention_mask=masks, cache=cache, position_ids=pos)
        start = 0
        for st in group:
            m = len(st.pending)
            st.cache = cache if len(group) == 1 else _rows_of(cache, start, start + m)
            if m == 1 and st.n > 1:  # the prompt is shared: one pass, then one copy a row
                st.cache.batch_repeat_interleave(st.n)
            start += m
            st.cache_len += t
            st.pending = None
            st._start_canvas()


def _stack_layer(parts: list[tuple[GemmaRows, torch.Tensor]], layer: int):
    """Keys and values (B, H, T, D) of one layer for all selected rows, left-padded to the
    longest; plus each row's number of pad slots (B,)."""
    ks, vs = [], []
    for rows_of, rows in parts:
        cl = rows_of.cache.layers[layer]
        ks.append(cl.keys[rows])
        vs.append(cl.values[rows])
    t = max(k.shape[2] for k in ks)
    pads = torch.cat([torch.full((len(k),), t - k.shape[2], dtype=torch.long) for k in ks])
    if all(k.shape[2] == t for k in ks):
        return torch.cat(ks), torch.cat(vs), pads
    pad = [torch.nn.functional.pad(k, (0, 0, t - k.shape[2], 0)) for k in ks]
    padv = [torch.nn.functional.pad(v, (0, 0, t - v.shape[2], 0)) for v in vs]
    return torch.cat(pad), torch.cat(padv), pads


@torch.no_grad()
def decode_step(hf, states: list[GemmaRows]) -> int:
    """Encode what is pending, then one decoder call for the stale rows of all `states`, then
    each state's rule step. Returns the number of rows in the call."""
    encode_pending(hf, [s for s in states if not s.done])
    parts = [(s, s.stale()) for s in states]
    parts = [(s, r) for s, r in parts if r.any()]
    if not parts:  # a state commits as soon as its rows stop, so only finished ones remain
        return 0
    tc = hf.config.text_config
    layers, pads_of = [], {}
    for li, kind in enumerate(tc.layer_types):
        k, v, pads = _stack_layer(parts, li)
        layers.append(SimpleNamespace(keys=k, values=v))
        pads_of.setdefault(kind, (pads, k.shape[2]))
    cache = SimpleNamespace(layers=layers, is_compileable=False)
    x = torch.cat([s.canvas[r] for s, r in parts])  # (B, C)
    b, c = x.shape
    device = x.device
    pos = torch.cat([torch.arange(s.cache_len, s.cache_len + s.C, dtype=torch.int32,
                                  device=device).expand(int(r.sum()), -1) for s, r in parts])
    masks = {}
    for kind, (pads, t) in pads_of.items():
        if not pads.any():
            masks[kind] = None  # the reference's own (mask-free) path
            continue
        cols = torch.arange(t + c, device=device)
        keep = cols[None] >= pads.to(device)[:, None]  # (B, T + C)
        masks[kind] = keep[:, None, None, :].expand(b, 1, c, t + c)
    have = [s.selfcond is not None for s, _ in parts]
    sc = scm = None
    if any(have):
        v = hf.config.text_config.vocab_size
        sc = torch.cat([s.selfcond[r] if s.selfcond is not None else
                        x.new_zeros((int(r.sum()), c, v), dtype=hf.dtype) for s, r in parts])
        if not all(have):
            scm = torch.cat([torch.full((int(r.sum()),), s.selfcond is not None,
                                        device=device) for s, r in parts])
    logits = hf(decoder_input_ids=x, cache=cache, self_conditioning_logits=sc,
                self_conditioning_mask=scm, decoder_attention_mask=masks,
                decoder_position_ids=pos).logits  # (B, C, V) float32
    start = 0
    for s, r in parts:
        m = int(r.sum())
        s.set_logits(r, logits[start:start + m])
        s.nfe += 1
        start += m
    for s, _ in parts:
        s.advance()
    return b


def run(hf, states: list[GemmaRows], on_step=None) -> tuple[int, float]:
    """Run the states to the end together: (network calls, seconds)."""
    start, calls = time.perf_counter(), 0
    with torch.no_grad():
        while not all(s.done for s in states):
            live = [s for s in states if not s.done]
            if decode_step(hf, live):
                calls += 1
            if on_step is not None:
                on_step(live[0].i - 1, torch.cat([s.view() for s in states]))
    return calls, time.perf_counter() - start
