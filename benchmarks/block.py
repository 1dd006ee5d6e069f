"""Block diffusion benchmark (issue 14): the AR twin vs block diffusion at several block sizes,
trained from scratch and adapted from the AR twin, at equal total training wall clock.

Every run gets the same budget T. "scratch" trains a block model for T; "ar" trains an AR
model for share * T and then the block model initialised from it (train.init_from) for the
rest, so the initialiser's training counts. The masked (mdlm) model trained for T is a
reference row. Then, per run: the validation bound (bits/char, the count estimator over the
validation windows) and the in-order NLL, and sampling rows: network calls, gen-ppl by the
judge, unigram entropy, the model's in-order NLL of its own samples, batch-1 latency and
batch-16 throughput for 256 tokens, and the cached vs uncached speed of the block sampler; the
AR twin's same fields with its KV cache. Besides BD3-LM's uniform in-block order: ordered
reveals (--ordered, diffusion.block_reveal_width) and the last position revealed last (--last,
diffusion.block_reveal_last), adapted from the AR initialiser.

    python benchmarks/block.py --minutes 8 --judge shakespeare=runs/shakespeare-judge
    python benchmarks/block.py --corpus python --minutes 8 --judge python=src/redraft/default/ar

Writes the "block" section of BENCHMARKS.md and benchmarks/results/block.json (one entry per
corpus). Without --judge the run's own AR twin judges (it then scores its own samples, which
flatters the AR rows). Run on an otherwise idle machine: training throughput is measured.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, SHARED, machine, write_json, write_section  # noqa: E402

from redraft.config import config_from_dict  # noqa: E402
from redraft.data import load_data  # noqa: E402
from redraft.diffusion.block import in_order_nll  # noqa: E402
from redraft.eval.judge import load_judge  # noqa: E402
from redraft.eval.quality import unigram_entropy  # noqa: E402
from redraft.likelihood import evaluate, evaluate_in_order  # noqa: E402
from redraft.model import load  # noqa: E402
from redraft.sampling import generate_block  # noqa: E402
from redraft.train import train  # noqa: E402

CORPORA = {"shakespeare": (str(SHARED / "data" / "tinyshakespeare" / "input.txt"), "char"),
           "python": ("stdlib", "byte")}
LENGTH = 256


def config(corpus: str, objective: str, seconds: float, out: Path, threads: int | None,
           **diffusion) -> dict:
    path, tokenizer = CORPORA[corpus]
    return {
        "data": {"corpus": path, "tokenizer": tokenizer, "val_fraction": 0.1},
        "model": {"n_layer": 4, "n_head": 4, "d_model": 128, "seq_len": LENGTH},
        "diffusion": {"objective": objective, **diffusion},
        "train": {"batch_size": 16, "time_budget_s": seconds, "max_steps": 10**9,
                  "lr": 2e-3, "warmup_steps": 100, "eval_every": 10**9, "eval_batches": 8,
                  "precision": "auto", "out_dir": str(out), "threads": threads,
                  "progress": sys.stderr.isatty()},
    }


def trained(cfg: dict, reuse: bool) -> tuple[Path, float]:
    """(checkpoint, training tokens/s) of a run, trained unless --reuse finds it."""
    out = Path(cfg["train"]["out_dir"])
    record = out / "bench-run.json"
    if reuse and record.exists():
        r = json.loads(record.read_text())
        return Path(r["checkpoint"]), r["train_tokens_per_s"]
    res = train(config_from_dict(cfg))
    record.write_text(json.dumps({"checkpoint": str(res.checkpoint),
                                  "train_tokens_per_s": res.train_tokens_per_s}))
    return res.checkpoint, res.train_tokens_per_s


def bits_per_char(ck, val_batches: int | None, samples: int) -> tuple[float, float]:
    _, data = load_data(ck.config.data, LENGTH, ck.tokenizer)
    ordered = ck.config.diffusion.block_reveal_width < 1  # the count form needs uniform order
    estimator = "count" if (ck.objective.count_estimator or ck.is_ar) and not ordered else "time"
    nats, err, _ = evaluate(ck.backbone, data.val, ck.config, ck.tokenizer.mask_id,
                            ck.tokenizer.eos_id, val_batches, samples=samples,
                            estimator=estimator)
    scale = 1 / math.log(2) / data.val_bytes_per_token
    return nats * scale, err * scale


def in_order_bits_per_char(ck, val_batches: int | None) -> float:
    """The block model's exact NLL decoded left to right inside each block (one token per
    call): what its bound would be without the random in-block orders."""
    _, data = load_data(ck.config.data, LENGTH, ck.tokenizer)
    nats, _, _ = evaluate_in_order(ck.backbone, data.val, ck.config, ck.tokenizer.mask_id,
                                   ck.tokenizer.eos_id, val_batches)
    return nats / math.log(2) / data.val_bytes_per_token


def sample(ck, spec: dict, batch: int, use_cache: bool = True):
    """A batch of LENGTH-token canvases (row r: seed r) through redraft.Model; the uncached
    block loop (use_cache False, for the cached-vs-uncached timing) runs generate_block."""
    seeds = list(range(batch))
    if ck.is_ar:
        return ck.sample([[]] * batch, length=LENGTH, seeds=seeds)
    if not ck.objective.blockwise:
        return ck.sample([[]] * batch, length=LENGTH, seeds=seeds, steps=spec["steps"],
                         sampler=spec["sampler"], options=spec.get("options"))
    d = ck.config.diffusion
    # "in order": the model's own forward process with reveal width 1/b (left to right, one
    # position a step), whatever it was trained with.
    width = 1 / d.block_size if spec.get("order") == "in order" else d.block_reveal_width
    if use_cache and width == d.block_reveal_width:
        # Model.sample's steps: the canvas's budget, split evenly over its blocks
        steps = spec["steps_per_block"] * (LENGTH // ck.backbone.block_size)
        return ck.sample([[]] * batch, length=LENGTH, seeds=seeds, steps=steps,
                         sampler=spec["sampler"], options=spec.get("options"))
    return generate_block(ck.backbone, ck.process, steps_per_block=spec["steps_per_block"],
                          batch=batch, length=LENGTH, seed=seeds, sampler=spec["sampler"],
                          options=spec.get("options"), shift=d.block_shift,
                          bos_id=ck.tokenizer.eos_id, use_cache=use_cache,
                          reveal_width=width, reveal_last=d.block_reveal_last)


def sampling_row(ck, spec: dict, judge, n_samples: int) -> dict:
    """nfe, gen-ppl, entropy, batch-1 latency and batch-16 throughput of one setting."""
    tok = ck.tokenizer
    sample(ck, spec, 1)  # warm-up
    one = sample(ck, spec, 1)
    many = sample(ck, spec, n_samples)
    texts = [tok.decode(row) for row in many.tokens]
    ppl, _, _ = judge.gen_ppl(texts)
    own = {}
    if ck.objective.blockwise:  # how likely the model finds its samples, read in order
        with torch.no_grad():
            nats = in_order_nll(ck.backbone, many.tokens, ck.config.diffusion.block_shift,
                                tok.mask_id, tok.eos_id)
        own["self_bits"] = nats.double().mean().item() / math.log(2)
    return {**spec, **own, "nfe": one.nfe, "gen_ppl": ppl,
            "entropy": unigram_entropy(many.tokens),
            "latency_s_batch1": one.seconds,
            f"tokens_per_s_batch{n_samples}": many.tokens.numel() / many.seconds,
            "sample": texts[0][:300]}


def block_specs(b: int) -> list[dict]:
    steps = sorted({b, max(1, b // 4)}, reverse=True)
    return ([{"sampler": "ancestral", "steps_per_block": s} for s in steps]
            + [{"sampler": "threshold", "steps_per_block": 1, "options": {"threshold": 0.9}}]
            + ([{"sampler": "ancestral", "steps_per_block": b, "order": "in order"}]
               if b > 1 else []))


def run_corpus(corpus: str, args, work: Path) -> dict:
    seconds = args.minutes * 60
    cfg = lambda objective, name, secs, **d: config(  # noqa: E731
        corpus, objective, secs, work / corpus / name, args.threads, **d)
    ckpts, runs = {}, []
    path, tps = trained(cfg("ar", "ar", seconds), args.reuse)
    ckpts["ar"] = load(path)
    ar_bits, ar_err = bits_per_char(ckpts["ar"], args.val_batches, 1)
    ar_row = {"train_tokens_per_s": tps, "val_bits_per_char": ar_bits, "stderr": ar_err}
    if args.with_mdlm:
        path, tps = trained(cfg("mdlm", "mdlm", seconds), args.reuse)
        ckpts["mdlm"] = load(path)
        bits, err = bits_per_char(ckpts["mdlm"], args.val_batches, args.mc_samples)
        runs.append({"block_size": None, "objective": "mdlm", "init": "scratch",
                     "val_bits_per_char": bits, "stderr": err, "train_tokens_per_s": tps})
    init_path = None
    if "ar" in args.inits:
        init_path, _ = trained(cfg("ar", f"ar-init-{args.ar_share:g}", args.ar_share * seconds),
                               args.reuse)
    # (block size, init, reveal width, last revealed last): BD3-LM's uniform in-block order
    # for every size and init, then the ordered-reveal and last-revealed-last rows (adapted
    # from the AR initialiser).
    plan = [(b, init, 1.0, False) for b in args.sizes for init in args.inits]
    plan += [(int(b), "ar", float(w), False) for b, w in (o.split("=") for o in args.ordered)]
    plan += [(int(o.split("=")[0]), "ar", float(o.split("=")[1]) if "=" in o else 1.0, True)
             for o in args.last]
    for b, init, width, last in plan:
        name = (f"block{b}-{init}" + (f"-w{width:g}" if width < 1 else "")
                + ("-last" if last else ""))
        extra = {"block_size": b, "block_shift": args.shift}
        if width < 1:
            extra.update(block_reveal_width=width, elbo_estimator="time")
        if last:
            extra.update(block_reveal_last=True)
        if init == "ar":
            c = cfg("block", name, (1 - args.ar_share) * seconds, **extra)
            c["train"]["init_from"] = str(init_path)
            c["train"]["warmup_steps"] = args.adapt_warmup
        else:
            c = cfg("block", name, seconds, **extra)
        path, tps = trained(c, args.reuse)
        ckpts[name] = load(path)
        # The time estimator of ordered reveals (weights 1/(w tau)) is noisier than the
        # count form of the uniform order: four times the draws.
        draws = args.mc_samples * (4 if width < 1 else 1)
        bits, err = bits_per_char(ckpts[name], args.val_batches, draws)
        in_order = in_order_bits_per_char(ckpts[name], args.in_order_batches)
        runs.append({"block_size": b, "objective": "block", "init": init,
                     "reveal_width": width, "reveal_last": last, "shift": args.shift,
                     "val_bits_per_char": bits,
                     "stderr": err, "val_bits_per_char_in_order": in_order,
                     "train_tokens_per_s": tps, "name": name})
        print(runs[-1], file=sys.stderr)

    judge_path = dict(j.split("=", 1) for j in args.judge).get(corpus) if args.judge else None
    judge = load_judge(judge_path) if judge_path else load_judge(ckpts["ar"].path)
    n = args.num_samples
    rows = [{"run": "ar", **sampling_row(ckpts["ar"], {"sampler": "ar"}, judge, n)}]
    best = {}  # the best uniform-order run of each size, and every other-order run
    for r in runs:
        if r["objective"] == "block" and r["reveal_width"] == 1 and not r["reveal_last"]:
            b = r["block_size"]
            if b not in best or r["val_bits_per_char"] < best[b]["val_bits_per_char"]:
                best[b] = r
    sampled = [*sorted(best.values(), key=lambda r: r["block_size"]),
               *(r for r in runs if r.get("reveal_width", 1) < 1 or r.get("reveal_last"))]
    for r in sampled:
        for spec in block_specs(r["block_size"]):
            rows.append({"run": r["name"], "block_size": r["block_size"],
                         **sampling_row(ckpts[r["name"]], spec, judge, n)})
            print(rows[-1], file=sys.stderr)
    # Cached vs uncached block sampling, batch 1 (the same tokens, the same calls).
    cache_rows = []
    for b, r in sorted(best.items()):
        spec = {"sampler": "ancestral", "steps_per_block": max(1, b // 4)}
        timing = {}
        for use_cache in (True, False):
            start = time.perf_counter()
            g = sample(ckpts[r["name"]], spec, 1, use_cache)
            timing[use_cache] = (time.perf_counter() - start, g.nfe)
        cache_rows.append({"block_size": b, "steps_per_block": spec["steps_per_block"],
                           "nfe": timing[True][1], "cached_s": timing[True][0],
                           "uncached_s": timing[False][0],
                           "speedup": timing[False][0] / timing[True][0]})
    return {"machine": machine(), "command": "python benchmarks/block.py " + " ".join(
        sys.argv[1:]), "note": args.note, "minutes": args.minutes, "ar_share": args.ar_share,
            "in_order_windows": args.in_order_batches * 16,
            "ar_val_bits_per_char": ar_bits, "ar": ar_row, "runs": runs, "sampling": rows,
            "cache": cache_rows, "judge": judge.name}


GPU_SPEED = """### Training speed on a GPU

Machine: one NVIDIA H200 (the device tool), torch 2.11.0+cu130, bf16 autocast, 2026-11-30, alone on
the GPU. Command: the last phase of `scripts/train_default_gpu.sh` (`redraft train
configs/shakespeare-{ar,block}.yaml train.device=cuda train.time_budget_s=15 train.batch_size=B`);
figures in `benchmarks/results/default_gpu_training.json` (`block_training_speed_gpu`).

| batch | AR twin tokens/s | block 16 tokens/s | block / AR |
|---:|---:|---:|---:|
"""

GPU_NOTE = """
The block objective's one pass runs the noised and the clean sequence side by side (twice the
tokens, a masked rather than causal attention), so a clean token costs at least twice the AR
twin's work: about 0.56x its throughput once the GPU is busy (batch 256), 0.36-0.48x on the 2
CPU cores. On CPU, attention is not the main cost: a masked SDPA over the 512-long pair costs
about 1.3x the causal one over 256 tokens in a microbenchmark (both fwd+bwd, batch 16), so
splitting the attention could gain little; the doubled MLP work is what remains.
"""


def gpu_section() -> list[str]:
    """The GPU training-speed table (measured by scripts/train_default_gpu.sh), if present."""
    path = ROOT / "benchmarks" / "results" / "default_gpu_training.json"
    if not path.is_file():
        return []
    g = json.loads(path.read_text()).get("block_training_speed_gpu")
    if not g:
        return []
    rows = [f"| {b} | {g[f'ar_batch{b}_tokens_per_s']:,} | {g[f'block_batch{b}_tokens_per_s']:,}"
            f" | {g[f'block_over_ar_batch{b}']:.3f} |" for b in (16, 256)]
    return [GPU_SPEED.rstrip("\n"), *rows, GPU_NOTE]


def markdown(results: dict, args) -> str:
    lines = ["## Block diffusion (issue 14)", "", *gpu_section()]
    for corpus, r in results["corpora"].items():
        ar, m = r["ar"], r["machine"]
        lines += [f"### {corpus}", "",
                  f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} "
                  f"({m['torch_threads']} threads), {m['date']}. Command: `{r['command']}`.",
                  f"Model: 4 layers, 4 heads, d_model 128, context {LENGTH}, batch 16; every "
                  f"row has the same {r['minutes']:g} minutes of total training wall clock (an "
                  f"adapted run: {r['ar_share']:g} of it training the AR initialiser). "
                  "In-order NLL: the block model's exact NLL when each block is decoded left "
                  f"to right, one token per call (on the first {r['in_order_windows']} "
                  "validation windows); the bound averages uniformly random in-block orders. "
                  "Sampling: 'in order' decodes with reveal width 1/b (left to right, one "
                  "position a step) whatever the model was trained with; self bits: the "
                  "block model's in-order NLL of its own samples (bits/token: how likely it "
                  "finds what it wrote).",
                  "", *([f"**Note:** {r['note']}", ""] if r.get("note") else []),
                  "| model | init | train tokens/s | validation bits/char | / AR | "
                  "in-order NLL | / AR |",
                  "|---|---|---:|---:|---:|---:|---:|",
                  f"| AR twin (exact NLL) | - | {ar['train_tokens_per_s']:,.0f} | "
                  f"{ar['val_bits_per_char']:.3f} ± {ar['stderr']:.3f} | 1 | - | - |"]
        for run in r["runs"]:
            name = "masked (mdlm)" if run["objective"] == "mdlm" else \
                f"block {run['block_size']}" + (f", ordered w={run['reveal_width']:g}"
                                                if run.get("reveal_width", 1) < 1 else "") \
                + (", last revealed last" if run.get("reveal_last") else "")
            lines.append(f"| {name} | {run['init']} | {run['train_tokens_per_s']:,.0f} | "
                         f"{run['val_bits_per_char']:.3f} ± {run['stderr']:.3f} | "
                         f"{run['val_bits_per_char'] / ar['val_bits_per_char']:.3f} | "
                         + (f"{run['val_bits_per_char_in_order']:.3f} | "
                            f"{run['val_bits_per_char_in_order'] / ar['val_bits_per_char']:.3f} |"
                            if "val_bits_per_char_in_order" in run else "- | - |"))
        n = args.num_samples
        lines += ["", f"Sampling {LENGTH} tokens (judge: {r['judge']}; {n} samples for "
                  "gen-ppl and entropy):", "",
                  f"| run | sampler | steps/block | network calls | gen-ppl | entropy | "
                  f"self bits | batch-1 latency s | batch-{n} tokens/s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for s in r["sampling"]:
            opt = f" {s['options']}" if s.get("options") else ""
            opt += f", {s['order']}" if s.get("order") else ""
            own = f"{s['self_bits']:.3f}" if "self_bits" in s else "-"
            lines.append(f"| {s['run']} | {s['sampler']}{opt} | {s.get('steps_per_block', '-')} "
                         f"| {s['nfe']} | {s['gen_ppl']:.2f} | {s['entropy']:.3f} | {own} | "
                         f"{s['latency_s_batch1']:.3f} | {s[f'tokens_per_s_batch{n}']:,.0f} |")
        lines += ["", "Cached vs uncached block sampling (batch 1, same calls and tokens):", "",
                  "| block | steps/block | calls | cached s | uncached s | speed-up |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for c in r["cache"]:
            lines.append(f"| {c['block_size']} | {c['steps_per_block']} | {c['nfe']} | "
                         f"{c['cached_s']:.3f} | {c['uncached_s']:.3f} | {c['speedup']:.2f} |")
        lines += ["", *bars(r, n), ""]
    return "\n".join(lines)


def setting(s: dict) -> str:
    """A sampling row's name in the bars: run, rule, order, steps a block."""
    order = f", {s['order']}" if s.get("order") else ""
    return f"{s['run']} {s['sampler']}{order} ({s.get('steps_per_block')} steps/block)"


def bars(r: dict, n: int) -> list[str]:
    """The issue's bars (a)-(c), judged from the stored figures (unrounded)."""
    ar_bits = r["ar"]["val_bits_per_char"]
    ar = next(s for s in r["sampling"] if s["run"] == "ar")
    tput = f"tokens_per_s_batch{n}"
    out = ["Bars (judged on the unrounded figures):", ""]
    blocks = [x for x in r["runs"] if x["objective"] == "block"]
    plain = [x for x in blocks if not x.get("reveal_last")]
    for label, pool in (("uniform in-block order (BD3-LM)",
                         [x for x in plain if x.get("reveal_width", 1) == 1]),
                        ("ordered reveals", [x for x in plain if x.get("reveal_width", 1) < 1]),
                        ("last revealed last", [x for x in blocks if x.get("reveal_last")])):
        if pool:
            b = min(pool, key=lambda x: x["val_bits_per_char"])
            ratio = b["val_bits_per_char"] / ar_bits
            out.append(f"- (a) best bound, {label}: {b['name']} {b['val_bits_per_char']:.3f} "
                       f"bits/char = {ratio:.3f}x the AR twin's {ar_bits:.3f}: "
                       f"{'met' if ratio <= 1.10 else 'NOT met'} (bar 1.10x)")
    rows = [s for s in r["sampling"] if s["run"] != "ar"]
    ok = [s for s in rows if s["gen_ppl"] <= 1.5 * ar["gen_ppl"]
          and s["entropy"] >= 0.97 * ar["entropy"]
          and s["latency_s_batch1"] < ar["latency_s_batch1"]]
    if ok:
        s = min(ok, key=lambda s: s["gen_ppl"])
        out.append(f"- (b) met by {setting(s)}: gen-ppl {s['gen_ppl']:.2f} vs AR "
                   f"{ar['gen_ppl']:.2f}, "
                   f"entropy {s['entropy']:.3f} vs {ar['entropy']:.3f}, latency "
                   f"{s['latency_s_batch1']:.3f} s vs {ar['latency_s_batch1']:.3f} s")
    else:
        fast = [s for s in rows if s["latency_s_batch1"] < ar["latency_s_batch1"]
                and s["entropy"] >= 0.97 * ar["entropy"]]
        best = min(fast, key=lambda s: s["gen_ppl"]) if fast else None
        out.append("- (b) NOT met: no setting has gen-ppl <= 1.5x the AR twin's "
                   f"({1.5 * ar['gen_ppl']:.2f}) at entropy >= {0.97 * ar['entropy']:.3f} "
                   f"and batch-1 latency under its {ar['latency_s_batch1']:.3f} s"
                   + (f"; the best faster one at that entropy: {setting(best)}, "
                      f"gen-ppl {best['gen_ppl']:.2f}" if best else ""))
    fast = [s for s in rows if s[tput] >= ar[tput]]
    if fast:
        s = min(fast, key=lambda s: s["gen_ppl"])
        out.append(f"- (c) met: {len(fast)} setting(s) reach the AR twin's batch-{n} "
                   f"{ar[tput]:,.0f} tokens/s; the best of them by gen-ppl: {setting(s)}, "
                   f"{s[tput]:,.0f} tokens/s at gen-ppl {s['gen_ppl']:.2f}")
    else:
        s = max(rows, key=lambda s: s[tput])
        out.append(f"- (c) NOT met: the fastest block setting, {setting(s)}, "
                   f"{s[tput]:,.0f} tokens/s vs the AR twin's {ar[tput]:,.0f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", nargs="+", default=["shakespeare"], choices=list(CORPORA))
    ap.add_argument("--minutes", type=float, default=8.0, help="total training per row")
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--inits", nargs="+", default=["scratch", "ar"], choices=["scratch", "ar"])
    ap.add_argument("--ar-share", type=float, default=0.5,
                    help="share of an adapted row's budget spent training its AR initialiser")
    ap.add_argument("--adapt-warmup", type=int, default=20, help="warmup steps when adapting")
    ap.add_argument("--ordered", nargs="*", default=["4=0.5", "16=0.25", "64=0.1"], metavar="B=W",
                    help="ordered in-block reveal rows, adapted from the AR initialiser: block "
                    "size B with diffusion.block_reveal_width W")
    ap.add_argument("--last", nargs="*", default=["4", "16", "64", "4=0.5"], metavar="B[=W]",
                    help="last-revealed-last rows (diffusion.block_reveal_last), adapted from "
                    "the AR initialiser: block size B, optionally with reveal width W")
    ap.add_argument("--no-shift", dest="shift", action="store_false",
                    help="BD3-LM's same-position alignment instead of the AR twin's")
    ap.add_argument("--with-mdlm", action="store_true", help="add the masked model's row")
    ap.add_argument("--judge", nargs="+", default=None, metavar="CORPUS=PATH",
                    help="the AR checkpoint that judges each corpus's samples (a corpus "
                    "without one: the run's own AR twin)")
    ap.add_argument("--num-samples", type=int, default=16)
    ap.add_argument("--mc-samples", type=int, default=2, help="noise draws per window")
    ap.add_argument("--val-batches", type=int, default=None, help="default: all windows")
    ap.add_argument("--in-order-batches", type=int, default=8,
                    help="validation batches for the in-order NLL (b calls per batch)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "runs" / "block-bench"))
    ap.add_argument("--reuse", action="store_true", help="reuse finished runs in --out")
    ap.add_argument("--note", default=None, help="a line of context for the section")
    ap.add_argument("--merge", action="store_true", help="keep the other corpora's entries "
                    "of benchmarks/results/block.json (a corpus run as its own process)")
    ap.add_argument("--render", action="store_true", help="only rewrite the section from "
                    "benchmarks/results/block.json (pass the run's own settings)")
    args = ap.parse_args()
    stored = ROOT / "benchmarks" / "results" / "block.json"
    if args.render:
        results = json.loads(stored.read_text())
        write_section("block", markdown(results, args))
        return
    if "shakespeare" in args.corpus and not Path(CORPORA["shakespeare"][0]).is_file():
        print(f"skipped: {CORPORA['shakespeare'][0]} is missing (needs ../shared/data)")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.out)
    results = {"corpora": {}}
    for corpus in args.corpus:
        entry = run_corpus(corpus, args, work)
        # Each corpus is its own run (they may run as separate processes): keep the other
        # corpora's stored entries unless this run has them, reading the file just before
        # writing it.
        if args.merge and stored.is_file():
            results["corpora"] = json.loads(stored.read_text()).get("corpora", {})
        results["corpora"][corpus] = entry
        write_json("block", results)
    text = markdown(results, args)
    write_section("block", text)
    print(text)


if __name__ == "__main__":
    main()
