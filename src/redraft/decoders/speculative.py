"""Speculative decoding with a separate drafter: a diffusion (or block, or small causal) model
drafts, a causal redraft model on the same tokenizer verifies, with the lossless rule.

    m = redraft.speculative(redraft.load("default-ar"), redraft.load("default"), 4)
    m.generate("import ", max_new_tokens=128)       # the AR twin's law, fewer verifier calls

A tick of a row whose canvas holds c committed tokens (y = [bos, canvas], y[:1 + c] filled):

  1. draft: the drafter's distributions q_1..q_k at canvas positions c..c+k-1 and one draw
     from each (d_i ~ q_i), in ONE drafter call however large k is:
       canvas (masked / mean denoiser over the mask process, bidirectional): the request's
         whole canvas [committed, masks] (what its own sampler reads: the drafts see how much
         is left to write); rows are bucketed by canvas length, one call per length;
       block (block diffusion): the uncached block-causal pass over y (its own alignment:
         shift reads [bos, x_0 ..]) up to the block of the last draft; later blocks cannot
         change it, so rows of any length share one call (right-padded with masks);
       causal (an AR model, a hybrid's clean stream): k sequential uncached calls (ancestral
         drafting: for tests and small drafters, not a fast path).
  2. verify: the verifier's KV cache, fresh tokens [x_{c-1}, d_1 .. d_k] at positions c..
     in one ragged call over every running row (Transformer forward with positions and
     cache_rows, as the AR and hybrid lanes do): p_0 .. p_k;
  3. accept by speculative sampling (sampling/speculative.py): a row commits between 1 and
     k + 1 tokens, each distributed as the verifier's next-token law under the request's
     temperature / top-k / top-p (applied to p and q alike, mask and pad banned), so the text
     has the verifier's law whatever the drafter; at temperature 0 it is greedy AR decoding.

Every row consumes 2k + 1 uniforms of its own stream a tick (k drafts, k acceptances, one
draw), so its text does not depend on the batch; rows accept different numbers of tokens
and keep their own cache lengths. A new request's first tick prefills its prompt in its own
verifier call. Network calls (Output.nfe, job.row_nfe) count BOTH models' calls; the state
counts verifier calls (`calls`) and drafter calls (`drafter_calls`) apart. Mode "ar" runs the
verifier alone (its AR lane), for comparison on the same Model.
"""

from __future__ import annotations

import copy

import torch

from redraft.decoders.ar import ARDecoder, ARLane
from redraft.decoders.base import Decoder, Lane, ModeLanes, Stepped
from redraft.decoders.hybrid import SpecLane, SpecState, _cat, _probs, _row_slices
from redraft.decoders.jobs import Job, Work
from redraft.errors import RedraftError
from redraft.models.transformer import KVCache
from redraft.sampling.categorical import check_knobs, sample
from redraft.sampling.speculative import accept

MODES = ("speculative", "ar")
MAX_DRAFT = 64
WINDOWS = ("canvas", "drafts")


class DraftState(SpecState):
    """The rows of one request: SpecState's canvas, fill and cache lengths (no drafts kept
    between ticks: each tick drafts afresh), the request's draft length k, and the calls."""

    def __init__(self, bos_id: int, prefix, seeds, length: int, draft_length: int, *,
                 banned=(), pad_id: int, eos_id: int | None):
        super().__init__(bos_id, prefix, seeds, length, 1, banned=banned, pad_id=pad_id,
                         eos_id=eos_id, layout="draft", vocab=0)
        self.k = draft_length
        self.drafter_calls = 0  # the drafter's network calls for these rows
        self.drafted = 0  # drafts proposed, over all rows and ticks


def drafter_kind(drafter) -> str:
    """"causal", "block" or "canvas": how `drafter` drafts (a RedraftError if it cannot)."""
    obj = drafter.objective
    if obj.causal and drafter.decoder.name not in ("ar", "hybrid"):
        raise RedraftError(f"drafter {drafter.name!r}: a causal drafter must be a redraft model")
    if obj.causal:
        return "causal"
    process = getattr(drafter.process, "name", None)
    if not obj.denoiser or process != "mask":
        raise RedraftError(f"drafter {drafter.name!r} is a {obj.name!r} model over the "
                           f"{process!r} process: a drafter's logits at a masked position "
                           "must be a token distribution (masked or block diffusion, mask "
                           "process, or a causal model)")
    return "block" if obj.blockwise else "canvas"


def speculative(verifier, drafter, draft_length: int = 4, name: str | None = None, *,
                window: str = "canvas"):
    """A Model over the verifier's backbone and tokenizer whose decoder drafts `draft_length`
    tokens a tick with `drafter` and verifies them with the verifier (module docstring).
    The verifier: a causal redraft model (an AR twin, or a hybrid's AR head) with a KV cache;
    the drafter: a masked or block diffusion model (or a causal one) with the same tokenizer.
    Its likelihood (nll, eval) is the verifier's: the samples have the verifier's law.
    window (a masked drafter): "canvas" reads the request's whole canvas, "drafts" only the
    committed tokens and the k masks (a cheaper call; rows are bucketed by width)."""
    if window not in WINDOWS:
        raise RedraftError(f"window={window!r}: expected one of {list(WINDOWS)}")
    if not isinstance(draft_length, int) or isinstance(draft_length, bool) or \
            not 1 <= draft_length <= MAX_DRAFT:
        raise RedraftError(f"draft_length={draft_length!r}: expected an integer 1..{MAX_DRAFT}")
    if verifier.decoder.name not in ("ar", "hybrid"):
        raise RedraftError(f"verifier {verifier.name!r} is a {verifier.objective.name!r} model: "
                           "the verifier must be a causal redraft model with a KV cache (an AR "
                           "twin such as default-ar, or a hybrid)")
    drafter_kind(drafter)
    a, b = verifier.tokenizer, drafter.tokenizer
    same = (a.kind, a.vocab_size, a.eos_id, a.pad_id, a.mask_id) == (
        b.kind, b.vocab_size, b.eos_id, b.pad_id, b.mask_id) and a.fingerprint == b.fingerprint
    if not same:
        raise RedraftError(f"the drafter {drafter.name!r} and the verifier {verifier.name!r} "
                           f"have different tokenizers ({b!r} vs {a!r}): speculative decoding "
                           "needs one vocabulary; pair a model with its twin trained on the "
                           "same tokenizer")
    if verifier.backbone.vocab_size != drafter.backbone.vocab_size:
        raise RedraftError(f"the drafter's logits cover {drafter.backbone.vocab_size} ids, the "
                           f"verifier's {verifier.backbone.vocab_size}: expected the same")
    model = copy.copy(verifier)  # shares backbone, tokenizer, objective and scorer
    model.name = name or f"{verifier.name}+{drafter.name}"
    model.decoder = SpeculativeDecoder(model, drafter, draft_length, window)
    return model


def _draft(decoder, rows: list[tuple[Job, int]], nd: list[int], u: torch.Tensor,
           m: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Drafts (R, m) and their distributions q (R, m, V) float64 (zero past each row's nd),
    row i drawn with uniforms u[i] (m,); returns them and the rows of each drafter call."""
    drafter, kind = decoder.drafter, decoder.kind
    R, V = len(rows), drafter.backbone.vocab_size
    drafts = torch.zeros((R, m), dtype=torch.long)
    q = torch.zeros((R, m, V), dtype=torch.float64)
    nd_t = torch.tensor(nd)
    sizes: list[int] = []
    want = [i for i in range(R) if nd[i]]
    if not want:
        return drafts, q, sizes
    if kind == "causal":
        for j in range(max(nd)):  # ancestral: draft j + 1 reads drafts 1..j
            idx = [i for i in want if nd[i] > j]
            logits = _causal_logits(decoder, [rows[i] for i in idx], drafts[idx, :j])
            sizes.append(len(idx))
            _draw(rows, idx, logits[:, None], [j], drafts, q, u)
        return drafts, q, sizes
    groups = _canvas_groups(decoder, rows, want) if kind == "canvas" else [want]
    for idx in groups:
        logits = (_canvas_logits if kind == "canvas" else _block_logits)(
            decoder, [rows[i] for i in idx], m)  # (n, m, V) at positions c .. c + m - 1
        sizes.append(len(idx))
        _draw(rows, idx, logits, list(range(m)), drafts, q, u)
    cut = torch.arange(m)[None, :] >= nd_t[:, None]  # past a row's nd: no draft
    drafts[cut] = 0
    q[cut] = 0
    return drafts, q, sizes


def _draw(rows, idx: list[int], logits: torch.Tensor, cols: list[int], drafts: torch.Tensor,
          q: torch.Tensor, u: torch.Tensor) -> None:
    """q and one draw at draft columns `cols` of rows idx, each job under its own knobs."""
    sub = [rows[i] for i in idx]
    for job, lane_rows, _ in _row_slices(sub):
        at = torch.tensor([idx[k] for k in lane_rows])
        probs = _probs(logits[torch.tensor(lane_rows).to(logits.device)], job.work,
                       job.state.banned)  # (n, len(cols), V)
        for c, col in enumerate(cols):
            q[at, col] = probs[:, c]
            drafts[at, col] = sample(probs[:, c], u[at, col])


def _canvas_width(decoder, job: Job, r: int) -> int:
    """The canvas a masked drafter reads for row r: the request's whole canvas, or (window
    "drafts") only the committed tokens and the k masks to draft."""
    st = job.state
    if decoder.window == "canvas":
        return st.length
    return min(st.length, st.filled[r] - 1 + st.k)


def _canvas_groups(decoder, rows, want: list[int]) -> list[list[int]]:
    out: dict[int, list[int]] = {}
    for i in want:
        out.setdefault(_canvas_width(decoder, *rows[i]), []).append(i)
    return list(out.values())


def _filled(job: Job, r: int) -> int:
    return job.state.filled[r]


def _canvas_logits(decoder, rows, m: int) -> torch.Tensor:
    """A masked drafter over each row's canvas [committed, masks] (all of one width)."""
    drafter = decoder.drafter
    width = _canvas_width(decoder, *rows[0])
    x = torch.stack([job.state.y[r, 1:1 + width] for job, r in rows])  # masks past the fill
    t = torch.ones(len(rows)) if drafter.time_conditioned else None
    logits = drafter.backbone(x.to(drafter.device), None if t is None else
                              t.to(drafter.device))
    c = torch.tensor([_filled(job, r) - 1 for job, r in rows])
    at = (c[:, None] + torch.arange(m)[None, :]).clamp(max=x.shape[1] - 1)
    return logits.gather(1, at.to(logits.device)[..., None].expand(-1, -1, logits.shape[-1]))


def _block_logits(decoder, rows, m: int) -> torch.Tensor:
    """A block drafter: the block-causal pass over y up to the block of each row's last
    draft (y = the canvas, or [bos, canvas[:-1]] with the next-token alignment); positions
    after a row's needed blocks are masks no earlier block sees."""
    drafter = decoder.drafter
    b = drafter.backbone.block_size
    c = torch.tensor([_filled(job, r) - 1 for job, r in rows])
    nd = torch.tensor([min(m, job.state.length - int(ci) - 1) for (job, _), ci in
                       zip(rows, c, strict=True)])
    end = int(((c + nd.clamp(min=1) - 1) // b + 1).max()) * b
    mask = drafter.tokenizer.mask_id
    x = torch.full((len(rows), end + 1), mask, dtype=torch.long)  # canvas, one spare slot
    for i, (job, r) in enumerate(rows):
        n = min(end + 1, job.state.length)
        x[i, :n] = job.state.y[r, 1:1 + n]
    if decoder.shift:
        y = torch.cat((torch.full((len(rows), 1), drafter.tokenizer.eos_id), x[:, :end - 1]), 1)
    else:
        y = x[:, :end]
    t = None
    if drafter.time_conditioned:  # clean blocks at t = 0, the drafts' blocks at t = 1
        t = (torch.arange(end)[None, :] >= (c // b * b)[:, None]).float()
    logits = drafter.backbone(y.to(drafter.device), None if t is None else
                              t.to(drafter.device))
    at = (c[:, None] + torch.arange(m)[None, :]).clamp(max=end - 1)
    return logits.gather(1, at.to(logits.device)[..., None].expand(-1, -1, logits.shape[-1]))


def _causal_logits(decoder, rows, before: torch.Tensor) -> torch.Tensor:
    """A causal drafter's next-token logits (n, V) after [bos, committed, before[i]]."""
    drafter = decoder.drafter
    lens = [_filled(job, r) + before.shape[1] for job, r in rows]
    x = torch.full((len(rows), max(lens)), drafter.tokenizer.mask_id, dtype=torch.long)
    for i, (job, r) in enumerate(rows):
        f = _filled(job, r)
        x[i, :f] = job.state.y[r, :f]
        x[i, f:lens[i]] = before[i]
    logits = drafter.backbone(x.to(drafter.device))
    last = torch.tensor(lens) - 1
    return logits[torch.arange(len(rows)), last.to(logits.device)]


def _verify(decoder, rows: list[tuple[Job, int]], cache: KVCache, cache_rows, drafts, q,
            nd: list[int], u: torch.Tensor) -> None:
    """One verifier call over `rows` (row i is cache row cache_rows[i], default i): fresh
    tokens [y[cached:filled], drafts] at their positions, then accept and commit."""
    backbone, tok = decoder.model.backbone, decoder.model.tokenizer
    device = backbone.device
    R, m = drafts.shape
    states = [job.state for job, _ in rows]
    need = [st.filled[r] - st.cached[r] + nd[i] for i, (st, (_, r)) in
            enumerate(zip(states, rows, strict=True))]
    W = max(need)
    # A row whose window would run past the context starts earlier: it feeds cached tokens
    # again (recomputing the same keys) rather than padding past seq_len.
    pos = [min(st.cached[r], backbone.seq_len - W) for st, (_, r) in zip(states, rows,
                                                                           strict=True)]
    x = torch.full((R, W), tok.mask_id, dtype=torch.long)
    for i, (st, (_, r)) in enumerate(zip(states, rows, strict=True)):
        clean = st.y[r, pos[i]:st.filled[r]]
        x[i, :len(clean)] = clean
        x[i, len(clean):len(clean) + nd[i]] = drafts[i, :nd[i]]
    logits = backbone(x.to(device), cache=cache, positions=torch.tensor(pos).to(device),
                      cache_rows=None if cache_rows is None else cache_rows.to(device))
    first = torch.tensor([st.filled[r] - 1 - pos[i] for i, (st, (_, r)) in
                          enumerate(zip(states, rows, strict=True))])
    at = (first[:, None] + torch.arange(m + 1)[None, :]).clamp(max=W - 1)  # p_0 .. p_m
    p_logits = logits.gather(1, at.to(device)[..., None].expand(-1, -1, logits.shape[-1]))
    for job, lane_rows, job_rows in _row_slices(rows):
        st, w = job.state, job.work
        i = torch.tensor(lane_rows)
        p = _probs(p_logits[i.to(device)], w, st.banned)  # (n, m + 1, V)
        k = st.k
        ui = u[i]
        n_d = torch.tensor([nd[j] for j in lane_rows])
        accepted, tokens = accept(p, q[i], drafts[i], n_d, _pad(ui[:, k:2 * k], m),
                                  ui[:, 2 * k])
        for j, r in enumerate(job_rows):
            a = int(accepted[j])
            st.commit(r, tokens[j, :a + 1].tolist(), a, None, None, False)
        st.drafted += int(n_d.sum())
        job.row_nfe += len(job_rows)


def _pad(u: torch.Tensor, m: int) -> torch.Tensor:
    """Acceptance uniforms (n, k) widened to m columns (past k a row has no drafts)."""
    return torch.cat((u, u.new_zeros(len(u), m - u.shape[1])), dim=1)


class DraftLane(SpecLane):
    """Every running row of the model in one drafter call (per canvas length, for a masked
    drafter) and one verifier call per tick; a new request's prompt is verified (prefilled)
    in its own call. Slots, cache and keep: SpecLane's."""

    def tick(self, jobs: list[Job], stepped: Stepped, max_rows: int) -> list[int]:
        dec = self.decoder
        running = [job for job in jobs if job not in self.fresh]
        self.keep(self.jobs)  # rows that stopped since the last tick leave the cache
        new = [job for job in self.fresh if job in jobs]
        rows = [*self.slots, *((job, r) for job in new for r in range(job.n))]
        if not rows:
            return []
        uniforms = {}
        for job, _ in rows:  # each job draws 2k + 1 for every row of it, once a tick
            if id(job) not in uniforms:
                uniforms[id(job)] = job.state.rng.uniform(2 * job.state.k + 1)
        m = max(job.state.k for job, _ in rows)
        u_rows = [uniforms[id(job)][r] for job, r in rows]
        nd = [min(job.state.k, job.state.length - (job.state.filled[r] - 1) - 1)
              for job, r in rows]
        u_draft = torch.stack([_pad(ur[None, :job.state.k], m)[0] for ur, (job, _)
                               in zip(u_rows, rows, strict=True)])
        drafts, q, sizes = _draft(dec, rows, nd, u_draft, m)
        for job in {id(j): j for j, _ in rows}.values():
            job.state.drafter_calls += len(sizes)
        for (job, _), n in zip(rows, nd, strict=True):  # row evaluations: one a draft
            job.row_nfe += n if self.decoder.kind == "causal" else int(n > 0)
        n_run = len(self.slots)
        if n_run:
            _verify(dec, rows[:n_run], self.cache, None, drafts[:n_run], q[:n_run], nd[:n_run],
                    _stack(u_rows[:n_run], m))
            sizes.append(n_run)
        at = n_run
        for job in new:
            sl = slice(at, at + job.n)
            cache = dec.model.backbone.new_cache(job.n)
            _verify(dec, rows[sl], cache, None, drafts[sl], q[sl], nd[sl],
                    _stack(u_rows[sl], m))
            sizes.append(job.n)
            self.slots = [*self.slots, *rows[sl]]
            self.cache = cache if self.cache is None else _cat(self.cache, cache)
            running.append(job)
            at += job.n
        self.fresh = [j for j in self.fresh if j not in jobs]
        for job in {id(j): j for j, _ in rows}.values():
            job.state.calls += 1
        for job in running:
            stepped(job, job.state.i)
        return sizes


def _stack(u_rows: list[torch.Tensor], m: int) -> torch.Tensor:
    """Uniform rows of different widths 2k + 1 as one (n, width) tensor: a row's own k is
    read back from its state in _verify, so only columns < 2k + 1 of row i are used."""
    width = max(len(ur) for ur in u_rows)
    return torch.stack([torch.cat((ur, ur.new_zeros(width - len(ur)))) for ur in u_rows])


class SpeculativeLane(ModeLanes):
    """Mode-ar rows in the verifier's AR lane, speculative rows in the drafting lane."""

    def __init__(self, decoder):
        self.ar, self.spec = ARLane(decoder), DraftLane(decoder)
        super().__init__(decoder, (self.ar, self.spec))

    def lane_of(self, job: Job) -> Lane:
        return self.spec if isinstance(job.state, DraftState) else self.ar


class SpeculativeDecoder(Decoder):
    """A verifier with a drafter: `mode` per request, speculative (default) or ar."""

    name = "speculative"
    lane_class = SpeculativeLane
    uses_steps = False
    infills = False
    modes = MODES

    def __init__(self, model, drafter, draft_length: int, window: str = "canvas"):
        super().__init__(model)
        self.drafter, self.draft_length, self.window = drafter, draft_length, window
        self.kind = drafter_kind(drafter)
        self.shift = False
        if self.kind == "block":
            self.shift = bool(drafter.diffusion_config().block_shift)

    def samplers(self) -> list[str]:
        return []

    def check_infill(self) -> None:
        raise RedraftError(f"infill is not supported by {self.model.name!r}: speculative "
                           "decoding continues a prefix, left to right")

    def start(self, work: Work, **extra):
        r = work.request
        mode = r.mode or MODES[0]
        if mode not in MODES:
            raise RedraftError(f"mode={mode!r}: {self.model.name!r} decodes in modes "
                               f"{list(MODES)}")
        options = dict(r.options or {})
        k = options.pop("draft_length", self.draft_length)
        plain = work.__class__(work.model, work.prefix, work.length, work.seeds, work.suffix,
                               canvas=work.canvas, request=r.replace(options=None))
        if mode == "ar":
            if options or k != self.draft_length:
                raise RedraftError("options: mode 'ar' takes none")
            return ARDecoder(self.model).start(plain)
        if options:
            raise RedraftError(f"speculative decoding takes options draft_length; got "
                               f"{sorted(options)[0]!r}")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_DRAFT:
            raise RedraftError(f"draft_length={k!r}: expected an integer 1..{MAX_DRAFT}")
        check_knobs(r.temperature, r.top_k, r.top_p)
        self.check_fit(work)
        ARDecoder(self.model).left_to_right(plain)
        if r.logprobs is not None:
            raise RedraftError("logprobs: speculative decoding does not record them; use mode "
                               "'ar' (the same law, one token a call)")
        if len(work.prefix) >= work.length:
            raise RedraftError("the prompt leaves nothing to generate")
        d = self.drafter
        room = d.seq_len
        if self.kind == "block":
            b = d.backbone.block_size
            room = room // b * b
        if work.length > room:
            raise RedraftError(f"a canvas of {work.length} tokens does not fit the drafter "
                               f"{d.name!r}'s context of {room}: ask for fewer tokens")
        tok = self.model.tokenizer
        return DraftState(tok.eos_id, work.prefix, work.seeds, work.length, k,
                          banned=tok.non_text_ids, pad_id=tok.mask_id,
                          eos_id=tok.eos_id if r.stop_at_eos else None)
