"""The bench's Markdown report: every figure in eval.json, as tables a reader can scan."""

from __future__ import annotations

import math

DEFINITIONS = (
    "gen-ppl: exp of the judge's mean NLL per judge token over all sampled text (samples cut "
    "at EOS, retokenised by the judge, scored in context windows from BOS; see "
    "redraft/eval/judge.py). Entropy: mean over samples of each sample's unigram entropy in "
    "nats (generator tokens). distinct-n: mean share of distinct n-grams per sample. "
    "Repetition: share of 8-gram occurrences that repeat within a sample. Latency: median of "
    "3 batch-1 generations. Throughput: generated tokens/s at batch 16. GFLOP/s and FLOP/byte "
    "come from the backbone's FLOP and minimal-traffic byte counts (redraft/eval/flops.py) "
    "divided by measured time; the ceilings are measured by the same tool on this machine. "
    "calls/sample: network calls per sample (batch-16 runs; adaptive samplers choose it). "
    "infill_parse_rate: share of held-out Python functions with 1-3 body lines cut out whose "
    "fill parses (diffusion sees both sides; the AR twin continues the prefix, its fill is "
    "spliced in; redraft/eval/infilling.py)."
)


def _f(value, fmt: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return format(value, fmt)
    return str(value)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _params(p) -> str:
    return "-" if p is None else f"{p / 1e6:.3g}M"


def markdown(result: dict, images: dict[str, str], image_prefix: str = "") -> str:
    out = [f"Machine: {result['machine']}."]
    if result.get("command"):
        out.append(f"Command: `{result['command']}`")
    peak, bw = result["peak_matmul_gflops"], result["mem_bandwidth_gbs"]
    out.append(
        f"\nMeasured ceilings: matmul {peak:.0f} GFLOP/s fp32, "
        f"{result.get('peak_matmul_gflops_bf16', 0):.0f} GFLOP/s bf16; memory bandwidth "
        f"{bw:.1f} GB/s; ridge point {peak / bw:.1f} FLOP/byte (fp32)."
    )
    if result.get("likelihood"):
        out.append("\n**Likelihood** (validation split; diffusion: upper bound, AR: exact)\n")
        out.append(_table(
            ["model", "kind", "windows", "MC t samples", "nats/token", "± stderr",
             "bits/token", "bits/byte", "perplexity"],
            [[e["model"], e["kind"], e["windows"], e.get("mc_samples"), e["nats_per_token"],
              e["stderr_nats"], e["bits_per_token"], e["bits_per_byte"], e["perplexity"]]
             for e in result["likelihood"]]))
    if result.get("runs"):
        judge = result.get("judge")
        jtxt = (f"judge {judge['path']} ({_params(judge['params'])} parameters)" if judge
                else "no judge given: gen-ppl not measured")
        out.append(f"\n**Samples**: {result['num_samples']} per run, {result['length']} tokens "
                   f"each; {jtxt}.\n")
        ref = result.get("reference")
        extra = [k for k in ("parse_rate", "infill_parse_rate", "mauve", "frechet")
                 if any(r.get(k) is not None for r in [ref or {}, *result["runs"]])]
        header = ["model", "sampler", "steps", "T", "calls/sample", "TPF", "gen-ppl",
                  "gen-ppl @ ref entropy",
                  "entropy", "distinct-2", "distinct-4", "repetition", *extra,
                  "latency b1 (s)", "NFE b1", "s/step", "tok/s b16", "GFLOP/s b16",
                  "FLOP/byte b16"]
        rows = []
        if ref:
            rows.append(["held-out text", "-", "-", "-", "-", "-", ref["gen_ppl"], "-",
                         ref["entropy"],
                         ref["distinct_2"], ref["distinct_4"], ref["repetition"],
                         *[ref.get(k) for k in extra], *["-"] * 6])
        for r in result["runs"]:
            rows.append([r["model"], r["sampler"], r["steps"] or "-", r["temperature"],
                         r.get("nfe"), r.get("tokens_per_forward"), r["gen_ppl"],
                         r["gen_ppl_at_ref_entropy"], r["entropy"],
                         r["distinct_2"], r["distinct_4"], r["repetition"],
                         *[r.get(k) for k in extra], r["latency_s_batch1"], r["nfe_batch1"],
                         r["seconds_per_step"], r["tokens_per_s_batch16"],
                         r["achieved_gflops"], r["arithmetic_intensity"]])
        out.append(_table(header, rows))
    if result.get("crossovers"):
        out.append("\n**Diffusion vs AR + KV cache by model size** (random weights; diffusion "
                   "time = steps x measured network call + measured sampler loop; AR timed "
                   "whole)\n")
        rows = [[c["dtype"], c["batch"], c["length"], c["sampler"],
                 _params(c["diffusion_faster_above_params"]),
                 _params(c["diffusion_faster_below_params"]),
                 " / ".join(f"{p['diffusion_over_ar']:.2f}" for p in c["ratios"])]
                for c in result["crossovers"]]
        sizes = " / ".join(_params(p["params"]) for p in result["crossovers"][0]["ratios"])
        out.append(_table(["dtype", "batch", "tokens", "sampler", "diffusion faster above",
                           "diffusion faster below", f"time ratio at {sizes}"], rows))
        smallest = result["crossovers"][0]["ratios"][0]["params"]

        def headline(key):
            p = result.get(key)
            if p is None:
                return "- (diffusion never overtakes AR as size grows within the sweep)"
            if p == smallest:
                return f"<= {_params(p)} (diffusion is faster at every size swept)"
            return _params(p)

        out.append(f"\nHeadline crossover (batch 1, 256 tokens, 16 steps): fp32 "
                   f"{headline('crossover_params_fp32')}; bf16 "
                   f"{headline('crossover_params_bf16')}.")
    for title, name in images.items():
        out.append(f"\n![{title}]({image_prefix}{name})")
    out.append(f"\n{DEFINITIONS}")
    return "\n".join(out) + "\n"
