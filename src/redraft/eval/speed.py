"""Where diffusion overtakes AR: generation speed against model size, with random weights.

A fixed-step sampler's speed does not depend on what the weights say, so this sweep needs no
training: for each model size, precision, batch and length it times

- diffusion: one full bidirectional network call over (batch, length), median of a few, and
  the sampler's own work for a whole S-step loop (run on fixed logits, no network); a
  generation of S steps costs S network calls plus that loop, so its time is
  S * t_call + t_sampler (an estimate: no test times it, since timings are not asserted);
- AR: a whole timed generate_ar with its KV cache (prefill of BOS, then one call per token).

and reports generated tokens/s, achieved GFLOP/s and arithmetic intensity (eval/flops.py),
then the crossover: the size at which diffusion's time over AR's crosses 1, interpolated
log-linearly in parameters between the two sizes around it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable

import torch

from redraft.config import ModelConfig
from redraft.diffusion import MaskProcess, make_schedule
from redraft.eval.flops import ar_cost, batched_diffusion_cost, param_count
from redraft.models import Transformer
from redraft.sampling import MaskedAncestral, RowRandom, generate_ar

VOCAB = 256  # byte-level: the backbone, not the embedding table, sets the size
# (name, n_layer, d_model, n_head): about 0.8M, 4.8M, 25M, 85M and 300M parameters.
SIZES = [("0.8M", 4, 128, 4), ("4.8M", 6, 256, 4), ("25M", 8, 512, 8),
         ("85M", 12, 768, 12), ("300M", 24, 1024, 16)]
PRESETS = {
    "full": dict(sizes=SIZES, batches=(1, 16), lengths=(64, 256), steps=(8, 16, 64),
                 dtypes=("fp32", "bf16")),
    "quick": dict(sizes=SIZES[:3], batches=(1, 16), lengths=(256,), steps=(8, 16, 64),
                  dtypes=("fp32", "bf16")),
    "tiny": dict(sizes=[("tiny", 1, 32, 2), ("small", 2, 64, 2)], batches=(1, 2),
                 lengths=(16,), steps=(4, 8), dtypes=("fp32",)),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def timed(fn: Callable[[], object], budget_s: float = 1.0, max_reps: int = 5) -> float:
    """Median wall time of fn, repeating while cheap (a slow call is timed once)."""
    times = []
    while len(times) < max_reps:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if sum(times) > budget_s:
            break
    return statistics.median(times)


def sampler_loop_seconds(batch: int, length: int, steps: int, vocab: int = VOCAB) -> float:
    """The ancestral sampler's own time for a whole `steps`-step loop on fixed logits."""
    mask_id = vocab - 1
    process = MaskProcess(mask_id, make_schedule("loglinear"))
    sampler = MaskedAncestral(process)
    logits = torch.randn(batch, length, vocab)

    def run():
        rng = RowRandom(list(range(batch)))
        x = process.prior((batch, length))
        for i in range(steps):
            x = sampler.step(logits, x, 1 - i / steps, 1 - (i + 1) / steps, rng)

    return timed(run)


def model_config(n_layer: int, d_model: int, n_head: int, seq_len: int) -> ModelConfig:
    return ModelConfig(n_layer=n_layer, n_head=n_head, d_model=d_model, seq_len=seq_len)


@torch.no_grad()
def sweep(preset: str = "quick", progress: Callable[[str], None] | None = None,
          sizes=None, batches=None, lengths=None, steps=None, dtypes=None) -> list[dict]:
    """One row per (size, dtype, batch, length, sampler): seconds, tokens/s, GFLOP/s, FLOP/byte."""
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}: expected one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    sizes, batches = sizes or p["sizes"], batches or p["batches"]
    lengths, steps, dtypes = lengths or p["lengths"], steps or p["steps"], dtypes or p["dtypes"]
    seq_len = max(lengths)
    loops = {(b, L, s): sampler_loop_seconds(b, L, s)
             for b in batches for L in lengths for s in steps}
    rows = []
    for name, n_layer, d_model, n_head in sizes:
        cfg = model_config(n_layer, d_model, n_head, seq_len)
        params = param_count(cfg, VOCAB)
        for dname in dtypes:
            dtype, nbytes = DTYPES[dname], torch.tensor([], dtype=DTYPES[dname]).element_size()
            torch.manual_seed(0)
            bidir = Transformer(cfg, VOCAB, causal=False).eval().to(dtype)
            causal = Transformer(cfg, VOCAB, causal=True).eval().to(dtype)
            base = dict(model=name, params=params, dtype=dname)
            for b in batches:
                for L in lengths:
                    if progress:
                        progress(f"{name} {dname} batch {b} length {L}")
                    x = torch.randint(0, VOCAB - 1, (b, L))
                    bidir(x[:, :8])  # first-call setup outside the timing
                    t_call = timed(lambda x=x: bidir(x))  # noqa: B023
                    for s in steps:
                        seconds = s * t_call + loops[(b, L, s)]
                        cost = batched_diffusion_cost(cfg, VOCAB, calls=s, batch=b, length=L,
                                                      weight_bytes=nbytes, act_bytes=nbytes)
                        rows.append(_row(base, f"diffusion-{s}", s, b, L, seconds, cost))
                    def decode(b=b, L=L):
                        generate_ar(causal, bos_id=VOCAB - 1, batch=b, length=L, seed=0)  # noqa: B023

                    t_ar = timed(decode, budget_s=2.0, max_reps=3)
                    cost = ar_cost(cfg, VOCAB, batch=b, prompt=1, new=L, weight_bytes=nbytes,
                                   act_bytes=nbytes)
                    rows.append(_row(base, "ar-kv", None, b, L, t_ar, cost))
    return rows


def _row(base: dict, sampler: str, steps, batch: int, length: int, seconds: float, cost) -> dict:
    return {**base, "sampler": sampler, "steps": steps, "batch": batch, "length": length,
            "seconds": seconds, "tokens_per_s": batch * length / seconds,
            "achieved_gflops": cost.flops / seconds / 1e9,
            "arithmetic_intensity": cost.intensity}


def crossovers(rows: Iterable[dict]) -> list[dict]:
    """For each (dtype, batch, length, diffusion sampler): where t_diffusion / t_ar crosses 1.

    `above` is the size above which diffusion is faster (None if it never overtakes AR within
    the sweep, the smallest size if it is faster throughout); `below` is the size below which
    diffusion is faster when it is AR that overtakes as models grow.
    """
    rows = list(rows)
    ar = {(r["dtype"], r["batch"], r["length"], r["params"]): r["seconds"]
          for r in rows if r["sampler"] == "ar-kv"}
    groups: dict[tuple, list[tuple[int, float]]] = {}
    for r in rows:
        if r["sampler"] == "ar-kv":
            continue
        key = (r["dtype"], r["batch"], r["length"], r["sampler"])
        ratio = r["seconds"] / ar[(r["dtype"], r["batch"], r["length"], r["params"])]
        groups.setdefault(key, []).append((r["params"], ratio))
    out = []
    for (dtype, batch, length, sampler), points in sorted(groups.items()):
        points.sort()
        above = below = None
        faster = [ratio < 1 for _, ratio in points]
        for i in range(1, len(points)):
            if faster[i] != faster[i - 1]:
                size = _interpolate(points[i - 1], points[i])
                if faster[i]:
                    above = size  # the last upward crossing wins
                else:
                    below = size
        if all(faster):
            above = points[0][0]
        out.append({"dtype": dtype, "batch": batch, "length": length, "sampler": sampler,
                    "diffusion_faster_above_params": above,
                    "diffusion_faster_below_params": below,
                    "ratios": [{"params": p, "diffusion_over_ar": r} for p, r in points]})
    return out


def _interpolate(a: tuple[int, float], b: tuple[int, float]) -> float:
    """Parameters where log(ratio) hits 0 on the line between two (params, ratio) points."""
    (p0, r0), (p1, r1) = a, b
    f = math.log(r0) / (math.log(r0) - math.log(r1))
    return math.exp(math.log(p0) + f * (math.log(p1) - math.log(p0)))


def headline(cross: list[dict], dtype: str, batch: int = 1, length: int = 256,
             sampler: str = "diffusion-16") -> float | None:
    """The crossover a single number reports: batch 1, 256 tokens, 16 steps by default."""
    for c in cross:
        if (c["dtype"], c["batch"], c["length"], c["sampler"]) == (dtype, batch, length, sampler):
            return c["diffusion_faster_above_params"]
    return None


__all__ = ["PRESETS", "SIZES", "crossovers", "headline", "sampler_loop_seconds", "sweep",
           "timed"]
