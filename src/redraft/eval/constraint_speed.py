"""What a structured-output constraint costs per decoding step (benchmarks/structured.py).

Both arms run in the same process, interleaved (constrained, plain, constrained, ...), so the
machine's load hits them alike; each figure is the median over `repeats` whole generations,
divided by the steps taken (a step = one network call of the rows plus the step rule, and for
the constrained arm the guard's work: the completability sweeps, the logits mask, the
repair). The constraint is compiled (and cached) before the clock starts.
"""

from __future__ import annotations

import statistics
import time


def step_overhead(model, constraint: dict, *, batch: int = 1, max_new_tokens: int = 64,
                  steps: int | None = 32, prompt: str = "", sampler: str | None = None,
                  repeats: int = 5, seed: int = 0) -> dict:
    """Per-step time of `model.generate` with and without `constraint` at `batch` rows:
    {"batch", "ms_plain", "ms_constrained", "ratio", "overhead" (ratio - 1), "steps",
    "repeats"}. steps is ignored by the AR twin (one step per token)."""
    knobs = {"max_new_tokens": max_new_tokens, "num_samples": batch, "seed": seed}
    if model.decoder.uses_steps:
        knobs["steps"] = steps
        if sampler is not None:
            knobs["sampler"] = sampler
    seen: list[int] = []

    def one(c) -> float:
        seen.clear()
        start = time.perf_counter()
        model.generate(prompt, constraint=c, on_step=lambda i, x: seen.append(i), **knobs)
        return (time.perf_counter() - start) / max(1, len(seen))

    one(constraint)  # compile, warm the memo and the allocator
    one(None)
    plain, constrained = [], []
    for _ in range(repeats):
        constrained.append(one(constraint))
        plain.append(one(None))
    a, b = statistics.median(plain), statistics.median(constrained)
    return {"batch": batch, "ms_plain": 1e3 * a, "ms_constrained": 1e3 * b, "ratio": b / a,
            "overhead": b / a - 1, "steps": len(seen), "repeats": repeats}
