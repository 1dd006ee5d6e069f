"""The generic speculative decoder on the shipped pair: `default` (masked diffusion) drafts,
`default-ar` (its AR twin) verifies. Batch 1, 128 new tokens, temperature 0 and 1: tokens per
verifier call, acceptance, drafter calls, and wall clock against the AR twin alone (its KV
cache), runs interleaved in one process (the machine is shared: the ratio is per pair of
neighbouring runs, then the median).

    python benchmarks/speculative.py [--reps 1] [--draft-lengths 4,8] [--windows canvas]

Writes benchmarks/results/speculative.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _report import machine, write_json

import redraft
from redraft.decoders.jobs import Work
from redraft.decoders.run import run
from redraft.decoders.speculative import speculative

PROMPTS = ["import os\n", "def main(", "class Parser:\n    def ", "    for i in range("]
NEW = 128


def one(model, prompt: list[int], temperature: float, seed: int) -> tuple[float, object]:
    work = Work(model.name, prompt, len(prompt) + NEW, [seed],
                request=model.request(temperature=temperature))
    start = time.perf_counter()
    jobs, calls, _ = run(model, [work])
    return time.perf_counter() - start, jobs[0].state


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=1, help="runs per prompt and setting")
    p.add_argument("--draft-lengths", default="4,8")
    p.add_argument("--windows", default="canvas")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default="speculative", help="results/NAME.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ar, mdlm = redraft.load("default-ar"), redraft.load("default")
    tok = ar.tokenizer
    rows = []
    for window in args.windows.split(","):
        for k in [int(x) for x in args.draft_lengths.split(",")]:
            spec = speculative(ar, mdlm, k, window=window)
            for temperature in (0.0, 1.0):
                ratios, calls, drafter, accepted, drafted, t_spec, t_ar = [], 0, 0, 0, 0, 0, 0
                same = True
                for rep in range(args.reps):
                    for i, text in enumerate(PROMPTS):
                        ids, seed = tok.encode(text), 100 * rep + i
                        a, st_ar = one(ar, ids, temperature, seed)  # interleaved: AR, spec
                        s, st = one(spec, ids, temperature, seed)
                        ratios.append(s / a)
                        t_spec, t_ar = t_spec + s, t_ar + a
                        calls, drafter = calls + st.calls, drafter + st.drafter_calls
                        accepted, drafted = accepted + st.accepted, drafted + st.drafted
                        if temperature == 0:
                            same &= torch.equal(st.current(), st_ar.current())
                runs = args.reps * len(PROMPTS)
                row = {"window": window, "draft_length": k, "temperature": temperature,
                       "runs": runs, "new_tokens": NEW,
                       "tokens_per_verifier_call": round(runs * NEW / calls, 3),
                       "acceptance_length": round(accepted / calls, 3),
                       "acceptance_rate": round(accepted / max(drafted, 1), 3),
                       "drafter_calls_per_verifier_call": round(drafter / calls, 3),
                       "network_calls_per_token": round((calls + drafter) / (runs * NEW), 3),
                       "latency_s_speculative": round(t_spec / runs, 3),
                       "latency_s_ar": round(t_ar / runs, 3),
                       "wall_ratio_median": round(statistics.median(ratios), 3),
                       "greedy_equals_ar": same if temperature == 0 else None}
                rows.append(row)
                print(row, flush=True)
    out = {"command": "python benchmarks/speculative.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "machine": machine(), "verifier": "default-ar", "drafter": "default",
        "prompts": PROMPTS,
        "notes": "acceptance_length: drafts accepted per verifier call (tokens per verifier "
                 "call = it + 1 up to the end); wall_ratio_median: speculative / AR twin "
                 "(KV cache), median over interleaved pairs; the drafter reads the whole "
                 "prefix every call (no drafter cache)",
        "rows": rows}
    print(write_json(args.name, out))


if __name__ == "__main__":
    main()
