"""What a structured-output constraint costs per decoding step (benchmarks/structured.py).

Both arms run in the same process, interleaved (constrained, plain, constrained, ...), so the
machine's load hits them alike; each figure is the median over `repeats` whole generations,
divided by the steps taken (a step = one network call of the rows plus the step rule, and for
the constrained arm the guard's work: the completability sweeps, the logits mask, the
repair). The constraint is compiled (and cached) before the clock starts.

On a shared, loaded machine the two arms' medians still wander; `guard_share` is steadier:
within the constrained runs themselves, the time spent inside the guards' methods over the
time of everything else (the same steps under the same load), i.e. the overhead with the
machine's noise cancelled.
"""

from __future__ import annotations

import contextlib
import statistics
import time


@contextlib.contextmanager
def _timed_guards(box: list[float]):
    """Add the seconds spent inside every guard method to box[0] while active."""
    from redraft.constraints import ARGuard, CanvasGuard

    saved = []
    for cls, names in ((CanvasGuard, ("allow", "repair")), (ARGuard, ("mask", "advance"))):
        for name in names:
            fn = getattr(cls, name)
            saved.append((cls, name, fn))

            def timed(*a, _fn=fn, **k):
                start = time.perf_counter()
                try:
                    return _fn(*a, **k)
                finally:
                    box[0] += time.perf_counter() - start
            setattr(cls, name, timed)
    try:
        yield
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)


def step_overhead(model, constraint: dict, *, batch: int = 1, max_new_tokens: int = 64,
                  steps: int | None = 32, prompt: str = "", sampler: str | None = None,
                  repeats: int = 5, seed: int = 0) -> dict:
    """Per-step time of `model.generate` with and without `constraint` at `batch` rows:
    {"batch", "ms_plain", "ms_constrained", "ratio", "overhead" (ratio - 1), "ms_guard"
    (per step, inside the guards), "guard_share" (guard time / the rest of the constrained
    step), "steps", "repeats"}. steps is ignored by the AR twin (one step per token)."""
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
    plain, constrained, shares, guard_ms = [], [], [], []
    for _ in range(repeats):
        box = [0.0]
        with _timed_guards(box):
            per_step = one(constraint)
        constrained.append(per_step)
        g = box[0] / max(1, len(seen))
        guard_ms.append(1e3 * g)
        shares.append(g / max(per_step - g, 1e-12))
        plain.append(one(None))
    a, b = statistics.median(plain), statistics.median(constrained)
    return {"batch": batch, "ms_plain": 1e3 * a, "ms_constrained": 1e3 * b, "ratio": b / a,
            "overhead": b / a - 1, "ms_guard": statistics.median(guard_ms),
            "guard_share": statistics.median(shares), "steps": len(seen),
            "repeats": repeats}
