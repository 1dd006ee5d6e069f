"""The default models shipped in the package (redraft.load("default") and "default-ar"): size,
start-up, likelihood, infilling, sample quality and latency; the figures of the model card.

    python benchmarks/default_model.py                # ~10-20 min on 2 CPU cores
    python benchmarks/default_model.py --quick        # a smoke run (few tasks and batches)
    python benchmarks/default_model.py --no-write     # print the JSON, touch no file

Measures, on this machine (`--cores 2` pins the timed subprocesses to 2 cores with taskset and
this process to 2 torch threads, so that a bigger machine reports the 2-core figures;
`--threads 1` runs torch single-threaded everywhere, which on a busy shared machine avoids
threads waiting for each other):
- wheel_mb: the wheel built from a copy of this checkout (pip wheel, no build isolation);
- first_sample_s: a fresh `python -m redraft sample` process (the default model, prompt "def ",
  128 tokens, 32 steps: --first-length, --first-steps) from its start to its exit, median of 3
  (bar: <= 5 s);
- load_s: redraft.load("default") in a warm process, median of 3;
- val_bits_per_byte: the validation split of the training corpus (the Python standard library
  of this interpreter), diffusion: the NLL upper bound, AR twin: exact;
- infill_parse_rate: held-out stdlib functions (functions in the validation split's documents)
  with 1-3 body lines cut out (redraft/eval/infilling.py): the diffusion model fills the gap
  seeing both sides (one token per step, each sampler), the AR twin continues the prefix alone
  and its fill is spliced in (bar: >= 0.6); beside it the share that parses with a fill that
  is code (blank lines parse: a model writing only spaces scores on parsing alone; the CPU
  placeholder's 0.41 was all spaces) and the exact-match share;
- gen_ppl and entropy: unconditional samples scored by a judge (default: the AR twin itself,
  which flatters its own samples; --judge another AR checkpoint), next to held-out text;
- latency_s_batch1: one sample of SAMPLE_LENGTH tokens at batch 1, median of 3 after a warm-up.
Writes benchmarks/results/default_model.json, the default-model section of BENCHMARKS.md and
then runs scripts/figures.py, which writes the figures of the model card
(src/redraft/default/MODEL_CARD.md) and docs/ from that JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, machine, write_json, write_section  # noqa: E402

import redraft  # noqa: E402
from redraft.data import load_data  # noqa: E402
from redraft.default import FOLDER  # noqa: E402
from redraft.eval import quality  # noqa: E402
from redraft.eval.infilling import parses, python_infill_tasks  # noqa: E402
from redraft.eval.judge import load_judge, texts_of  # noqa: E402

FIRST_SAMPLE = {"length": 128, "steps": 32}
SAMPLE_LENGTH, SAMPLE_STEPS = 256, 64
INFILL_SAMPLERS = ("confidence", "ancestral")
CARD = FOLDER / "MODEL_CARD.md"


def median_time(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def pinned(cmd: list[str], cores: int | None) -> list[str]:
    if cores and shutil.which("taskset"):
        return ["taskset", "-c", f"0-{cores - 1}", *cmd]
    return cmd


def wheel_mb() -> float:
    """Size of the wheel of a copy of this checkout (nothing is written into the checkout)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "checkout"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            shutil.copy(ROOT / name, src / name)
        shutil.copytree(ROOT / "src", src / "src",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--no-index", "-q", str(src), "-w", tmp], check=True, cwd=tmp)
        (wheel,) = Path(tmp).glob("redraft-*.whl")
        return wheel.stat().st_size / 1e6


def first_sample(cores: int | None, threads: int | None, length: int, steps: int,
                 runs: int = 3) -> tuple[float, str]:
    """Seconds from a fresh process's start to its exit, having sampled from the default model
    (median of `runs`), and the command."""
    cmd = [sys.executable, "-m", "redraft", "sample", "--prompt", "def ",
           "--length", str(length), "--steps", str(steps)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's thread count in the fresh process
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(pinned(cmd, cores), check=True, env=env, capture_output=True)
        times.append(time.perf_counter() - t0)
    shown = [*([f"OMP_NUM_THREADS={threads}"] if threads else []), "python", *cmd[1:]]
    return statistics.median(times), " ".join(f"'{a}'" if " " in a else a for a in shown)


def substantive(fill: str) -> bool:
    """Whether a fill holds code: some line that is neither blank nor a comment. (Blank lines
    inside a body parse, so a model that writes only spaces would score on parsing alone.)"""
    return any(line.strip() and not line.strip().startswith("#") for line in fill.splitlines())


def infill_rates(m, ar, tasks, seed: int, progress) -> tuple[dict, dict]:
    """Share of tasks whose filled-in function parses: diffusion per sampler (both sides seen,
    one step per span token), the AR twin (the prefix only). Also, per setting: the share that
    parses with a substantive fill (code, not only blanks or comments), the share equal to the
    cut lines (whitespace aside) and a few fills."""
    tok = m.tokenizer
    ids = [(t, tok.encode(t.before), tok.encode(t.span), tok.encode(t.after)) for t in tasks]

    def fills(setting: str):
        for i, (task, pre, span, suf) in enumerate(ids):
            if setting == "ar_prefix_only":
                gen = ar.sample([pre], length=len(pre) + len(span), seeds=[seed + i])
            else:
                gen = m.sample([pre], length=len(pre) + len(span) + len(suf), seeds=[seed + i],
                               suffixes=[suf], steps=len(span),
                               sampler=setting.removeprefix("diffusion_"))
            yield task, tok.decode(gen.tokens[0, len(pre):len(pre) + len(span)].tolist())

    rates, detail = {}, {}
    for setting in [*(f"diffusion_{s}" for s in INFILL_SAMPLERS), "ar_prefix_only"]:
        done = list(fills(setting))
        ok = [parses(task, fill) for task, fill in done]
        n = len(done)
        rates[setting] = sum(ok) / n
        detail[setting] = {
            "parse_rate": rates[setting],
            "substantive_parse_rate": sum(o and substantive(f) for o, (_, f) in
                                          zip(ok, done, strict=True)) / n,
            "exact_match": sum(f.split() == t.span.split() for t, f in done) / n,
            "examples": [{"cut": t.span, "fill": f} for t, f in done[:3]],
        }
        progress(f"infill {setting}: {rates[setting]:.3f} (substantive "
                 f"{detail[setting]['substantive_parse_rate']:.3f})")
    return rates, detail


def held_out_functions(m, n: int, seed: int):
    """Infilling tasks from functions in the validation split's documents."""
    _, data = load_data(m.config.data, m.seq_len, m.tokenizer)
    val = np.asarray(data.val)
    cuts = np.flatnonzero(val == m.tokenizer.eos_id)
    docs = [m.tokenizer.decode(d.tolist()) for d in np.split(val, cuts) if len(d) > 1]
    tasks = python_infill_tasks(docs, lambda text: len(m.tokenizer.encode(text)), m.seq_len, n,
                                seed=seed)
    return tasks, data.meta.get("corpus_id")


def quality_of(rows, tokenizer, judge) -> dict:
    rows = [[int(v) for v in r] for r in rows]
    texts = texts_of(rows, tokenizer)
    ppl, nats, n = judge.gen_ppl(texts)
    stats = quality.sample_stats([r[:r.index(tokenizer.eos_id)] if tokenizer.eos_id in r else r
                                  for r in rows])
    return {"gen_ppl": ppl, "entropy": stats["entropy"], "judge_tokens": n,
            "parse_rate": quality.parse_rate(texts), "example": texts[0][:200]}


def run(args, progress) -> dict:
    if args.threads or args.cores:
        torch.set_num_threads(args.threads or args.cores)
    res = {"machine": machine(), "command": "python benchmarks/default_model.py "
           + " ".join(sys.argv[1:]), "cores": args.cores}
    res["wheel_mb"] = round(wheel_mb(), 2)
    progress(f"wheel: {res['wheel_mb']} MB")
    res["first_sample_s"], res["first_sample_command"] = first_sample(
        args.cores, args.threads, args.first_length, args.first_steps)
    progress(f"first sample: {res['first_sample_s']:.2f} s")
    res["load_s"] = median_time(lambda: redraft.load("default"))
    m, ar = redraft.load("default"), redraft.load("default-ar")
    res["models"] = {name: {"params": x.backbone.num_params(), "config": asdict(x.config.model),
                            "shipped": x.meta.get("shipped"),
                            "weights_mb": round((x.path / "model.safetensors").stat().st_size
                                                / 1e6, 2)}
                     for name, x in (("default", m), ("default-ar", ar))}

    ev = {name: x.evaluate(samples=args.mc_samples, max_batches=args.eval_batches,
                           progress=False) for name, x in (("diffusion", m), ("ar", ar))}
    res["val_bits_per_byte"] = {"diffusion_bound": ev["diffusion"]["bits_per_byte"],
                                "ar_exact": ev["ar"]["bits_per_byte"]}
    res["val_eval"] = ev
    progress(f"bits/byte: {res['val_bits_per_byte']}")

    tasks, res["corpus_id"] = held_out_functions(m, args.infill_tasks, args.seed)
    res["infill_tasks"] = len(tasks)
    res["infill_parse_rate"], res["infill_detail"] = infill_rates(m, ar, tasks, args.seed,
                                                                  progress)

    judge = load_judge(args.judge)
    res["judge"] = {"path": args.judge, "params": judge.params}
    n, L = args.num_samples, SAMPLE_LENGTH
    seeds = list(range(args.seed, args.seed + n))
    gens = {"diffusion": m.sample([[]] * n, length=L, seeds=seeds, steps=SAMPLE_STEPS),
            "ar": ar.sample([[]] * n, length=L, seeds=seeds)}
    _, data = load_data(m.config.data, m.seq_len, m.tokenizer)
    val = np.asarray(data.val)
    ref = [val[s:s + L].tolist() for s in np.linspace(0, len(val) - L, n).astype(int)]
    res["samples"] = {"count": n, "length": L, "diffusion_steps": SAMPLE_STEPS,
                      "diffusion_sampler": m.objective.default_sampler, "temperature": 1.0}
    res["quality"] = {k: quality_of(g.tokens.tolist(), m.tokenizer, judge)
                      for k, g in gens.items()}
    res["quality"]["held_out_text"] = quality_of(ref, m.tokenizer, judge)
    res["gen_ppl"] = {k: v["gen_ppl"] for k, v in res["quality"].items()}
    res["entropy"] = {k: v["entropy"] for k, v in res["quality"].items()}
    progress(f"gen-ppl: {res['gen_ppl']}")

    def once(x, **kw):
        return lambda: x.sample([[]], length=L, seeds=[args.seed], **kw)

    for fn in (once(m, steps=SAMPLE_STEPS), once(ar)):
        fn()  # warm-up: allocation and kernel choice are not sampling speed
    res["latency_s_batch1"] = {"diffusion": median_time(once(m, steps=SAMPLE_STEPS)),
                               "ar": median_time(once(ar))}
    res["bars"] = {"infill_parse_rate_at_least_0.6": max(
        v for k, v in res["infill_parse_rate"].items() if k.startswith("diffusion")) >= 0.6,
        "first_sample_within_5_s": res["first_sample_s"] <= 5.0,
        "substantive_infill_parse_rate_at_least_0.6": max(
            v["substantive_parse_rate"] for k, v in res["infill_detail"].items()
            if k.startswith("diffusion")) >= 0.6}
    return res


def f(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if isinstance(x, float) else f"{x:,}" if isinstance(x, int) else str(x)


def figures(res: dict) -> str:
    """The model card's figures: a markdown block."""
    md, mm = res["models"]["default"], res["machine"]
    sh = md.get("shipped") or {}
    cfg = md["config"]
    ip, q = res["infill_parse_rate"], res["quality"]

    def sub(setting):
        return res["infill_detail"][setting]["substantive_parse_rate"]

    def ex(setting):
        return res["infill_detail"][setting]["exact_match"]

    train_s = sh.get("train_seconds")
    lines = [
        f"Measured by `{res['command']}` on {mm['cpu']} ({mm['cores']} cores, "
        f"{mm['torch_threads']} torch threads; timed subprocesses pinned to "
        f"{res['cores'] or 'all'} cores), torch {mm['torch']}, Python {mm['python']}, "
        f"{mm['date']}.",
        "",
        "| | default (masked diffusion) | default-ar (AR twin) |",
        "|---|---|---|",
        f"| parameters | {md['params']:,} | {res['models']['default-ar']['params']:,} |",
        f"| shape | {cfg['n_layer']} layers, d_model {cfg['d_model']}, {cfg['n_head']} heads, "
        f"seq_len {cfg['seq_len']} | same |",
        f"| trained | {sh.get('step')} steps, {f(sh.get('tokens_seen'))} tokens, "
        f"{f(train_s / 60 if train_s else None)} min on {sh.get('train_device')} | "
        f"{(res['models']['default-ar'].get('shipped') or {}).get('step')} steps |",
        f"| validation bits/byte | {res['val_bits_per_byte']['diffusion_bound']:.3f} (upper "
        f"bound) | {res['val_bits_per_byte']['ar_exact']:.3f} (exact) |",
        f"| infill parse rate, {res['infill_tasks']} held-out functions | "
        + ", ".join(f"{ip[f'diffusion_{s}']:.2f} ({s})" for s in INFILL_SAMPLERS)
        + f" (both sides) | {ip['ar_prefix_only']:.2f} (prefix only) |",
        "| ... of which the fill is code (not only blanks or comments) | "
        + ", ".join(f"{sub(f'diffusion_{s}'):.2f} ({s})" for s in INFILL_SAMPLERS)
        + f" | {sub('ar_prefix_only'):.2f} |",
        "| infill exact match (the cut lines, whitespace aside) | "
        + ", ".join(f"{ex(f'diffusion_{s}'):.2f} ({s})" for s in INFILL_SAMPLERS)
        + f" | {ex('ar_prefix_only'):.2f} |",
        f"| gen-ppl / entropy, {res['samples']['count']} samples of {res['samples']['length']} "
        f"tokens (held-out text: {q['held_out_text']['gen_ppl']:.2f} / "
        f"{q['held_out_text']['entropy']:.2f}) | {q['diffusion']['gen_ppl']:.2f} / "
        f"{q['diffusion']['entropy']:.2f} ({res['samples']['diffusion_steps']} steps, "
        f"{res['samples']['diffusion_sampler']}) | {q['ar']['gen_ppl']:.2f} / "
        f"{q['ar']['entropy']:.2f} (KV cache) |",
        f"| latency, batch 1, {res['samples']['length']} tokens | "
        f"{res['latency_s_batch1']['diffusion']:.2f} s | {res['latency_s_batch1']['ar']:.2f} s |",
        f"| weights (bf16) | {md['weights_mb']} MB | {res['models']['default-ar']['weights_mb']} "
        "MB |",
        "",
        f"Wheel: {res['wheel_mb']} MB. Load: {res['load_s']:.2f} s. First sample from a fresh "
        f"process (`{res['first_sample_command']}`): {res['first_sample_s']:.2f} s (bar 5 s: "
        f"{'met' if res['bars']['first_sample_within_5_s'] else 'NOT met'}). Infill bar "
        f"(0.6): {'met' if res['bars']['infill_parse_rate_at_least_0.6'] else 'NOT met'}.",
        f"gen-ppl: judge `{res['judge']['path']}` ({res['judge']['params']:,} parameters)"
        + (", the AR twin itself, which favours its own samples" if res["judge"]["path"]
           == "default-ar" else "") + "; entropy: mean unigram entropy per sample (nats). "
        "Held-out: the validation split of this interpreter's standard library "
        f"(`{res['corpus_id']}`); the models were trained on the training split of the "
        "standard library of the Python that trained them.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", type=int, default=2, help="0: do not pin")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads, here and in the timed subprocesses (default: one per "
                         "core; on a machine shared with other jobs 1 can be much faster)")
    ap.add_argument("--first-length", type=int, default=FIRST_SAMPLE["length"],
                    help="first_sample_s: tokens of the sample (prompt included)")
    ap.add_argument("--first-steps", type=int, default=FIRST_SAMPLE["steps"],
                    help="first_sample_s: diffusion steps")
    ap.add_argument("--eval-batches", type=int, default=8)
    ap.add_argument("--mc-samples", type=int, default=4)
    ap.add_argument("--infill-tasks", type=int, default=32)
    ap.add_argument("--num-samples", type=int, default=16)
    ap.add_argument("--judge", default="default-ar")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="4 eval batches, 8 infill tasks, 4 "
                                                         "samples: a smoke run")
    ap.add_argument("--no-write", action="store_true", help="print the JSON only")
    args = ap.parse_args()
    if args.quick:
        args.eval_batches, args.infill_tasks, args.num_samples = 2, 8, 4
    res = run(args, lambda line: print(line, file=sys.stderr, flush=True))
    if args.no_write:
        print(json.dumps(res, indent=2))
        return
    write_json("default_model", res)
    block = figures(res)
    write_section("default-model", "## The default model (`redraft.load(\"default\")`)\n\n"
                  + block + "\n\nModel card: src/redraft/default/MODEL_CARD.md.")
    # The card's and the docs' figures are generated from the JSON just written.
    subprocess.run([sys.executable, str(ROOT / "scripts" / "figures.py")], check=True)


if __name__ == "__main__":
    main()
