"""Distributed benchmark: training tokens/s at 1 and 2 processes (torchrun, gloo, 1 thread each).

Weak scaling: every process trains on the same per-process batch, so 2 processes do twice
the work of 1 per step and perfect scaling doubles tokens/s. Scaling efficiency is
tokens/s(2 processes) / (2 * tokens/s(1 process)). Where a CUDA GPU is present it also
measures one process on one GPU; where none is, the output says so.

Writes the "distributed" section of BENCHMARKS.md and benchmarks/results/distributed.json.
Run on an otherwise idle machine:  python benchmarks/distributed.py [--seconds 60]
(--no-write prints the figures without touching BENCHMARKS.md or results/.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, TINYSHAKESPEARE, machine, write_json, write_section  # noqa: E402

SHAKESPEARE = TINYSHAKESPEARE
MODEL = {"n_layer": 4, "n_head": 4, "d_model": 128, "seq_len": 256}


def overrides(corpus: str, out: Path, cache: Path, seconds: float, batch: int,
              device: str) -> list[str]:
    values = {
        "data.corpus": corpus, "data.tokenizer": "char", "data.cache_dir": str(cache),
        **{f"model.{k}": v for k, v in MODEL.items()},
        "train.batch_size": batch, "train.time_budget_s": seconds, "train.max_steps": 10**9,
        "train.eval_every": 10**9, "train.eval_batches": 1, "train.threads": 1,
        "train.progress": False, "train.device": device, "train.out_dir": str(out),
    }
    return [f"{k}={v}" for k, v in values.items()]


def run(nproc: int, args, work: Path, device: str = "cpu") -> dict:
    """One training run of --seconds; the CLI's summary (rank 0's JSON on stdout)."""
    name = f"{device}-{nproc}proc"
    train_args = overrides(args.corpus, work / name, work / "cache", args.seconds,
                           args.batch_per_process * nproc, device)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "redraft", "train", *train_args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    print(f"{name}: {args.seconds:g} s of training ...", file=sys.stderr)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=args.seconds * 3 + 300)
    if proc.returncode != 0:
        sys.exit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout[proc.stdout.index("{"):])
    print(f"  {out['train_tokens_per_s']:,.0f} tokens/s in total, "
          f"{out['train_tokens_per_s_per_rank']:,.0f} per process", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0, help="training wall clock per run")
    ap.add_argument("--batch-per-process", type=int, default=16,
                    help="sequences per process and step (the global batch grows with it)")
    ap.add_argument("--corpus", default=str(SHAKESPEARE) if SHAKESPEARE.is_file() else "stdlib")
    ap.add_argument("--no-write", action="store_true",
                    help="print only; leave BENCHMARKS.md and results/ alone")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="redraft-dist-"))
    one, two = run(1, args, work), run(2, args, work)
    tps1, tps2 = one["train_tokens_per_s"], two["train_tokens_per_s"]
    efficiency = tps2 / (2 * tps1)
    if torch.cuda.is_available():
        gpu = run(1, args, work, device="cuda")["train_tokens_per_s"]
        gpu_note = f"1 GPU ({torch.cuda.get_device_name(0)}): {gpu:,.0f} tokens/s."
    else:
        gpu = None
        gpu_note = "No GPU on this machine: the 1-GPU figure was not measured."
    print(gpu_note, file=sys.stderr)

    seq = MODEL["seq_len"]
    summary = {
        "machine": machine(),
        "command": f"python benchmarks/distributed.py --seconds {args.seconds:g} "
                   f"--batch-per-process {args.batch_per_process}",
        "corpus": args.corpus,
        "model": f"{MODEL['n_layer']} layers, d_model {MODEL['d_model']}, context {seq}; "
                 f"{args.batch_per_process} sequences per process and step; masked diffusion",
        "params": one["params"],
        "launcher": "torchrun --standalone, gloo, DDP, 1 thread per process",
        "tokens_per_s_1proc": tps1,
        "tokens_per_s_2proc": tps2,
        "tokens_per_s_per_proc_2proc": two["train_tokens_per_s_per_rank"],
        "scaling_efficiency": efficiency,
        "tokens_per_s_1gpu": gpu,
        "gpu_note": gpu_note,
    }
    m = summary["machine"]
    lines = [
        "## Distributed: data-parallel training throughput (torchrun, DDP)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['date']}. "
        f"Command: `{summary['command']}`.",
        f"Model: {summary['model']}, {summary['params']:,} parameters. Each process uses 1 "
        f"thread; {args.seconds:g} s of training per run (start-up excluded).",
        "",
        "| processes | global batch | tokens/s total | tokens/s per process |",
        "|---:|---:|---:|---:|",
        f"| 1 | {args.batch_per_process} | {tps1:,.0f} | {tps1:,.0f} |",
        f"| 2 | {2 * args.batch_per_process} | {tps2:,.0f} | "
        f"{two['train_tokens_per_s_per_rank']:,.0f} |",
        "",
        f"Scaling efficiency (weak scaling, 2 processes vs 2 x 1): {efficiency:.1%}. "
        + gpu_note,
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_json("distributed", summary)
        write_section("distributed", text)


if __name__ == "__main__":
    main()
