"""Block diffusion: what the in-block reveal order does to the samples of one model (issue 14).

benchmarks/block.py finds block samples far behind the AR twin's (gen-ppl) although the same
weights decoded in order have nearly its likelihood. This isolates the order: one block model
per size (adapted from an AR initialiser, block.py's recipe), sampled with its KV cache in
three orders of the same forward process,

    uniform   reveal width 1: every position at a uniformly random time (BD3-LM's order)
    ordered   reveal width 0.5: later positions revealed later, windows overlapping
    in order  reveal width 1/b: left to right, one position per step (b steps a block)

at b and b/4 steps per block, and the threshold rule. Per setting: network calls, gen-ppl by
the judge, unigram entropy, batch-1 latency, and the model's own exact in-order NLL of its
samples ("self bits"): how likely the model finds what it wrote when it reads it left to
right (samples that ignore what they condition on score high).

    python benchmarks/block_orders.py --corpus shakespeare python --minutes 4 \
        --judge python=src/redraft/default/ar

Without --judge a corpus's samples are judged by the AR initialiser, which also gives the AR
row (it then scores its own samples). Writes the "block-orders" section of BENCHMARKS.md and
benchmarks/results/block_orders.json.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, machine, write_json, write_section  # noqa: E402
from block import CORPORA, LENGTH, config, trained  # noqa: E402

from redraft.diffusion.block import in_order_nll  # noqa: E402
from redraft.eval.judge import load_judge  # noqa: E402
from redraft.eval.quality import unigram_entropy  # noqa: E402
from redraft.model import load  # noqa: E402
from redraft.sampling import generate_block  # noqa: E402


def self_bits(ck, tokens: torch.Tensor) -> float:
    """The block model's exact in-order NLL of tokens (B, L), bits per token."""
    tok = ck.tokenizer
    with torch.no_grad():
        nats = in_order_nll(ck.backbone, tokens, ck.config.diffusion.block_shift, tok.mask_id,
                            tok.eos_id)
    return nats.double().mean().item() / math.log(2)


def block_sample(ck, width: float, steps: int, batch: int, *, sampler: str, options=None):
    return generate_block(ck.backbone, ck.process, steps_per_block=steps, batch=batch,
                          length=LENGTH, seed=list(range(batch)), sampler=sampler,
                          options=options, shift=ck.config.diffusion.block_shift,
                          bos_id=ck.tokenizer.eos_id, reveal_width=width)


def row(ck, judge, n: int, draw) -> dict:
    """nfe, gen-ppl, entropy, batch-1 latency and self bits of draw(batch) samples."""
    draw(1)  # warm-up
    start = time.perf_counter()
    one = draw(1)
    latency = time.perf_counter() - start
    many = draw(n)
    texts = [ck.tokenizer.decode(r) for r in many.tokens]
    return {"nfe": one.nfe, "gen_ppl": judge.gen_ppl(texts)[0],
            "entropy": unigram_entropy(many.tokens), "latency_s_batch1": latency,
            "sample": texts[0][:200]}


def run_corpus(corpus: str, args) -> dict:
    seconds = args.minutes * 60
    work = Path(args.out) / corpus
    init, _ = trained(config(corpus, "ar", args.ar_share * seconds, work / "ar-init",
                             args.threads), args.reuse)
    ar = load(init)
    judge_path = dict(j.split("=", 1) for j in args.judge).get(corpus) if args.judge else None
    judge = load_judge(judge_path or init)
    n = args.num_samples
    rows = [{"block_size": None, "order": "ar", "sampler": "ar", "steps_per_block": None,
             **row(ar, judge, n, lambda k: ar.sample([[]] * k, length=LENGTH,
                                                     seeds=list(range(k))))}]
    rows[0]["self_bits"] = None
    for b in args.sizes:
        c = config(corpus, "block", (1 - args.ar_share) * seconds, work / f"block{b}",
                   args.threads, block_size=b, block_shift=True)
        c["train"]["init_from"], c["train"]["warmup_steps"] = str(init), 20
        ck = load(trained(c, args.reuse)[0])
        orders = [("uniform", 1.0), ("ordered", 0.5), ("in order", 1.0 / b)]
        # One step a block reveals everything at once whatever the order: only uniform's.
        specs = [(name, w, s, "ancestral") for name, w in orders
                 for s in sorted({b, max(1, b // 4)}, reverse=True)
                 if s > 1 or name == "uniform"]
        specs.append(("uniform", 1.0, 1, "threshold"))
        for name, width, steps, sampler in specs:
            options = {"threshold": 0.9} if sampler == "threshold" else None
            draw = partial(block_sample, ck, width, steps, sampler=sampler, options=options)
            r = {"block_size": b, "order": name, "reveal_width": width, "sampler": sampler,
                 "steps_per_block": steps, **row(ck, judge, n, draw)}
            r["self_bits"] = self_bits(ck, draw(n).tokens)
            rows.append(r)
            print(r, file=sys.stderr)
    return {"machine": machine(), "command": "python benchmarks/block_orders.py " + " ".join(
        sys.argv[1:]), "note": args.note, "minutes": args.minutes, "judge": judge.name,
        "num_samples": n,
        "rows": rows}


def markdown(results: dict) -> str:
    lines = ["## Block diffusion: samples by in-block reveal order (issue 14)", ""]
    for corpus, r in results["corpora"].items():
        m = r["machine"]
        lines += [f"### {corpus}", "",
                  f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} "
                  f"({m['torch_threads']} threads), {m['date']}. Command: `{r['command']}`. "
                  f"Each block model: adapted from an AR initialiser, {r['minutes']:g} minutes "
                  "of training in all (benchmarks/block.py's recipe and model); the AR row is "
                  f"that initialiser. Judge: {r['judge']}. {r['num_samples']} samples of {LENGTH} "
                  "tokens a "
                  "setting; self bits: the block model's exact in-order NLL of its own "
                  "samples (bits/token).", ""]
        if r.get("note"):
            lines += [f"**Note:** {r['note']}", ""]
        lines += ["| block | order | sampler | steps/block | calls | gen-ppl | entropy | "
                  "self bits | batch-1 latency s |", "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
        for x in r["rows"]:
            self_b = "-" if x["self_bits"] is None else f"{x['self_bits']:.3f}"
            lines.append(f"| {x['block_size'] or '-'} | {x['order']} | {x['sampler']} | "
                         f"{x['steps_per_block'] or '-'} | {x['nfe']} | {x['gen_ppl']:.2f} | "
                         f"{x['entropy']:.3f} | {self_b} | {x['latency_s_batch1']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", nargs="+", default=["shakespeare"], choices=list(CORPORA))
    ap.add_argument("--minutes", type=float, default=4.0, help="training per block model, "
                    "the AR initialiser's share included")
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--ar-share", type=float, default=0.5)
    ap.add_argument("--judge", nargs="+", default=None, metavar="CORPUS=PATH")
    ap.add_argument("--num-samples", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "runs" / "block-orders"))
    ap.add_argument("--reuse", action="store_true", help="reuse finished runs in --out")
    ap.add_argument("--note", default=None)
    args = ap.parse_args()
    if "shakespeare" in args.corpus and not Path(CORPORA["shakespeare"][0]).is_file():
        print(f"skipped: {CORPORA['shakespeare'][0]} is missing (needs ../shared/data)")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"corpora": {c: run_corpus(c, args) for c in args.corpus}}
    write_json("block_orders", results)
    text = markdown(results)
    write_section("block-orders", text)
    print(text)


if __name__ == "__main__":
    main()
