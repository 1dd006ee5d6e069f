"""The sampling loops: one for diffusion (any step rule), one for the AR twin (KV cache).

Diffusion: x_1 = prior with the prompt's fixed positions filled in, then for t_i = 1 - i/N,
i = 0..N-1: logits = backbone(x_t, t); x_s = sampler.step(logits, x_t, t, s) (a step rule
from sampling.registry), and the prompt's positions are written back; adaptive rules choose
their own times and stop when nothing is masked. The step body, with blocks, EOS stop and
guidance, lives in sampling/state.py (DiffusionState), shared with the server's batcher.

For a backbone without time conditioning the network call is skipped for a row whose tokens
did not change since its last call: the backbone would return exactly the same logits, and
everything that depends on t (scores, rates, reveal probabilities) is computed by the step rule
from those logits and t. A time-conditioned backbone is called every step. Only changed rows
are re-run, so each row's result is independent of the rest of the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from redraft.diffusion import Objective, Process
from redraft.diffusion.registry import objective as objective_entry
from redraft.errors import RedraftError
from redraft.models import Backbone
from redraft.sampling.categorical import RowRandom, check_knobs, next_tokens
from redraft.sampling.registry import make_sampler
from redraft.sampling.state import DiffusionState
from redraft.sampling.tpf import TPF


@dataclass
class Generation:
    """tokens (B, L) of the whole canvas (prompt included); nfe = network calls (batched rows
    count once per call); row_nfe = per-row forward passes; seconds = wall time; tpf: tokens
    per forward (sampling/tpf.py; Model.sample fills it)."""

    tokens: torch.Tensor
    nfe: int
    row_nfe: int
    seconds: float
    steps: int
    tpf: TPF | None = None


def _rows(ids: Sequence[int] | Sequence[Sequence[int]] | None, batch: int) -> list[list[int]]:
    """Normalise a prompt given once for all rows, or one per row, to one list per row."""
    if ids is None or len(ids) == 0:
        return [[] for _ in range(batch)]
    if isinstance(ids[0], int):
        return [list(ids) for _ in range(batch)]
    if len(ids) != batch:
        raise RedraftError(f"{len(ids)} prompts given for a batch of {batch}")
    return [list(r) for r in ids]


def _seeds(seed: int | Sequence[int], batch: int) -> list[int]:
    """Row r gets seed + r from a single seed, or its own seed from a list."""
    if isinstance(seed, int):
        return [seed + r for r in range(batch)]
    if len(seed) != batch:
        raise RedraftError(f"{len(seed)} seeds given for a batch of {batch}")
    return list(seed)


@torch.no_grad()
def generate_diffusion(
    model: Backbone,
    process: Process,
    *,
    steps: int,
    batch: int = 1,
    length: int | None = None,
    prefix: Sequence[int] | Sequence[Sequence[int]] | None = None,
    suffix: Sequence[int] | Sequence[Sequence[int]] | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | Sequence[int] = 0,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    sampler: str | None = None,
    objective: str | Objective | None = None,
    options: dict | None = None,
    canvas: Sequence[int | None] | Sequence[Sequence[int | None]] | None = None,
    block_size: int | None = None,
    eos_id: int | None = None,
    guidance: float = 0.0,
    early_commit: float | None = None,
) -> Generation:
    """Sample a (batch, length) canvas with `steps` reverse steps; prefix/suffix stay fixed.

    sampler: a name in sampling.registry.SAMPLERS (None: the objective's default, "ancestral"
    for mdlm/udlm, "analytic" for sedd), with its `options`. objective: the objective the
    model was trained with (a name or a diffusion.registry entry; it says what the logits
    mean; None: "mdlm", which only the mask process has). redraft.load(...).generate passes
    all of this for you. canvas: instead of prefix/suffix, a fixed id or None (free) per position,
    once for all rows or one per row (sampling/infill.py builds one from a template).
    block_size: decode blocks of that many positions left to right (semi-autoregressive);
    eos_id: stop a row once its text is settled: it wrote EOS and all before it is revealed
    (the rest becomes EOS; rules that may change a revealed token: after that block);
    guidance: classifier-free guidance scale towards the fixed positions (0 = none);
    early_commit: commit a block at once (argmax) when every masked position's top-1/top-2
    log-probability gap exceeds it (sampling/commit.py; None: off).
    Adaptive samplers (first_hitting, threshold) take as many steps as they need; `steps` is
    then unused.
    """
    length = length or model.seq_len
    if not isinstance(steps, int) or steps < 1:
        raise RedraftError(f"steps={steps!r}: expected an integer >= 1")
    if not 1 <= length <= model.seq_len:
        raise RedraftError(f"length={length}: expected 1..{model.seq_len} (the model's "
                           "seq_len)")
    check_knobs(temperature, top_k, top_p)
    if objective is None:
        if process.name != "mask":
            raise RedraftError(f"process {process.name!r}: pass objective= (the checkpoint's "
                               "diffusion.objective, 'sedd' or 'udlm') so the sampler knows "
                               "what the model's logits mean")
        objective = "mdlm"
    objective = objective_entry(objective)
    if process.name != "mask" and process.vocab_size != model.vocab_size:
        raise RedraftError(f"process over {process.vocab_size} ids but the model has "
                           f"{model.vocab_size}: build it with make_process(..., "
                           "vocab_size=model.vocab_size)")
    step_rule = make_sampler(sampler, process, objective, temperature, top_k, top_p, options)
    device = model.device
    if canvas is not None and len(canvas) and not isinstance(canvas[0], (list, tuple)):
        canvas = [list(canvas) for _ in range(batch)]
    state = DiffusionState(process, step_rule, steps=steps, length=length,
                           prefixes=_rows(prefix, batch), suffixes=_rows(suffix, batch),
                           canvases=canvas, seeds=_seeds(seed, batch), block_size=block_size,
                           eos_id=eos_id, guidance=guidance, device=device,
                           early_commit=early_commit)
    time_cond = model.time_conditioned
    nfe = row_nfe = 0
    start = time.perf_counter()
    while not state.done:
        rows, x, t = state.inputs(time_cond)
        if len(x):
            state.set_logits(rows, model(x, t.to(device)))
            nfe += 1
            row_nfe += len(x)
        i = state.i
        x = state.advance()
        if on_step is not None:
            on_step(i, x)
    return Generation(state.x, nfe, row_nfe, time.perf_counter() - start, state.i)


@torch.no_grad()
def generate_ar(
    model: Backbone,
    *,
    bos_id: int,
    batch: int = 1,
    length: int | None = None,
    prefix: Sequence[int] | Sequence[Sequence[int]] | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | Sequence[int] = 0,
    use_cache: bool = True,
    banned: Sequence[int] = (),
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> Generation:
    """Sample a (batch, length) canvas left to right from the causal twin after [bos, prefix].

    bos_id: the token every sequence starts from (redraft's twins are trained with the
    tokenizer's eos_id there, so a text starts as if after a document break).

    With use_cache, one prefill pass then one single-token pass per new token against the KV
    cache; without it, the whole sequence is re-run every token (same result, for testing).
    `banned` ids (the tokenizer's non_text_ids: mask, pad) get probability 0.
    Rows with prompts of different lengths are run as separate groups, so no row is padded.
    """
    if not model.causal:
        raise RedraftError("generate_ar needs a causal (objective 'ar') model")
    length = length or model.seq_len
    if not 1 <= length <= model.seq_len:
        raise RedraftError(f"length={length}: expected 1..{model.seq_len} (the model's "
                           "seq_len)")
    check_knobs(temperature, top_k, top_p)
    prefixes = _rows(prefix, batch)
    seeds = _seeds(seed, batch)
    device = model.device
    out = torch.empty((batch, length), dtype=torch.long, device=device)
    nfe = row_nfe = 0
    start = time.perf_counter()
    groups: dict[int, list[int]] = {}
    for r, pre in enumerate(prefixes):
        if len(pre) >= length:
            raise RedraftError(f"prompt of {len(pre)} tokens leaves nothing to generate in a "
                               f"canvas of {length} tokens")
        groups.setdefault(len(pre), []).append(r)
    for n_pre, rows in groups.items():
        rng = RowRandom([seeds[r] for r in rows])
        x = torch.tensor([[bos_id] + prefixes[r] for r in rows], dtype=torch.long, device=device)
        cache = model.new_cache(len(rows)) if use_cache else None
        logits = model(x, cache=cache)[:, -1]
        nfe += 1
        row_nfe += len(rows)
        for i in range(length - n_pre):
            nxt = next_tokens(logits, rng, temperature, top_k, top_p, banned)  # (G,)
            x = torch.cat((x, nxt[:, None]), dim=1)
            if on_step is not None:
                on_step(i, x[:, 1:])
            if x.shape[1] - 1 == length:
                break
            logits = (model(nxt[:, None], cache=cache) if use_cache else model(x))[:, -1]
            nfe += 1
            row_nfe += len(rows)
        out[rows] = x[:, 1:]
    return Generation(out, nfe, row_nfe, time.perf_counter() - start, length)
