"""Core benchmark: masked diffusion vs its AR twin on tinyshakespeare (char-level), same clock.

Writes the "core" section of BENCHMARKS.md and benchmarks/results/core.json.
Run on an otherwise idle machine:  python benchmarks/core.py [--minutes 8]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import (  # noqa: E402
    TINYSHAKESPEARE,
    machine,
    need_tinyshakespeare,
    write_json,
    write_section,
)

from redraft.config import config_from_dict  # noqa: E402
from redraft.data import load_data  # noqa: E402
from redraft.likelihood import evaluate  # noqa: E402
from redraft.model import load  # noqa: E402
from redraft.train import train  # noqa: E402

CORPUS = TINYSHAKESPEARE


def config(objective: str, minutes: float, out_dir: Path, cache: Path, precision: str) -> dict:
    return {
        "data": {"corpus": str(CORPUS), "tokenizer": "char", "val_fraction": 0.1,
                 "cache_dir": str(cache)},
        "model": {"n_layer": 4, "n_head": 4, "d_model": 128, "seq_len": 256},
        "diffusion": {"objective": objective},
        "train": {"batch_size": 16, "time_budget_s": minutes * 60, "max_steps": 10**9,
                  "lr": 2e-3, "warmup_steps": 100, "eval_every": 500, "eval_batches": 8,
                  "precision": precision, "out_dir": str(out_dir / objective),
                  "progress": sys.stderr.isatty()},
    }


def timed_sampling(model, batch: int, steps: int | None) -> tuple[float, torch.Tensor]:
    """One batch of 256-token canvases from redraft.Model (AR twin: KV cache; diffusion: its
    default sampler with `steps`)."""
    knobs = {} if steps is None else {"steps": steps}
    g = model.sample([[]] * batch, length=256, seeds=list(range(batch)), **knobs)
    return g.seconds, g.tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=8.0, help="training wall clock per model")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--mc-samples", type=int, default=8, help="t draws per validation window")
    ap.add_argument("--out", default=None, help="keep the two runs here (default: a temporary "
                                                "folder), e.g. for benchmarks/eval.py")
    args = ap.parse_args()
    need_tinyshakespeare()

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="redraft-core-"))
    results, ckpts = {}, {}
    for objective in ("ar", "mdlm"):
        cfg = config_from_dict(config(objective, args.minutes, work, work / "cache",
                                      args.precision))
        print(f"training {objective} for {args.minutes} min ...", file=sys.stderr)
        res = train(cfg)
        ck = ckpts[objective] = load(res.checkpoint)
        _, data = load_data(ck.config.data, 256, ck.tokenizer)
        nats, err, windows = evaluate(ck.backbone, data.val, ck.config, ck.tokenizer.mask_id,
                                      ck.tokenizer.eos_id, None, samples=args.mc_samples)
        to_bpc = 1 / math.log(2) / data.val_bytes_per_token
        results[objective] = {
            "steps": res.step, "train_tokens_per_s": res.train_tokens_per_s,
            "val_bits_per_char": nats * to_bpc, "val_stderr_bits": err * to_bpc,
            "val_windows": windows, "params": res.params,
        }
        if objective == "mdlm":
            # The same bound by the other estimator: agreement is a consistency check.
            nats_k, err_k, _ = evaluate(ck.backbone, data.val, ck.config, ck.tokenizer.mask_id,
                                        ck.tokenizer.eos_id, None, samples=args.mc_samples,
                                        estimator="count")
            results[objective].update(val_bits_per_char_count=nats_k * to_bpc,
                                      val_stderr_bits_count=err_k * to_bpc,
                                      train_estimator=ck.config.diffusion.elbo_estimator,
                                      train_weighting=ck.config.diffusion.train_weighting)
        print(results[objective], file=sys.stderr)

    tok = ckpts["mdlm"].tokenizer
    speed, samples = [], {}
    for name, steps in (("diffusion, 16 steps", 16), ("diffusion, 64 steps", 64),
                        ("diffusion, 256 steps", 256), ("AR + KV cache", None)):
        ck = ckpts["ar" if steps is None else "mdlm"]
        row = {"sampler": name, "steps": steps}
        for batch in (1, 16):
            timed_sampling(ck, batch, steps)  # warm-up
            seconds, tokens = timed_sampling(ck, batch, steps)
            row[f"seconds_b{batch}"] = seconds
            row[f"tokens_per_s_b{batch}"] = batch * 256 / seconds
            if batch == 1:
                samples[name] = tok.decode(tokens[0])
        speed.append(row)

    ar, df = results["ar"], results["mdlm"]
    summary = {
        "machine": machine(),
        "command": f"python benchmarks/core.py --minutes {args.minutes:g}",
        "corpus": "tinyshakespeare/input.txt, char-level, last 10% validation",
        "model": "4 layers, 4 heads, d_model 128, context 256, batch 16 sequences",
        "params": ar["params"],
        "ar_val_bits_per_char": ar["val_bits_per_char"],
        "diffusion_val_bits_per_char": df["val_bits_per_char"],
        "ar_train_tokens_per_s": ar["train_tokens_per_s"],
        "diffusion_train_tokens_per_s": df["train_tokens_per_s"],
        "runs": results, "sampling": speed, "samples": samples,
    }
    write_json("core", summary)
    m = summary["machine"]
    lines = [
        "## Core: masked diffusion vs its AR twin (tinyshakespeare, char-level)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} "
        f"({m['torch_threads']} threads), {m['date']}. Command: `{summary['command']}` "
        f"(precision {args.precision}).",
        f"Model: {summary['model']}, {summary['params']:,} parameters; each model trained for "
        f"the same {args.minutes:g} minutes of training wall clock (validation excluded).",
        "",
        "| model | steps | train tokens/s | validation bits/char |",
        "|---|---:|---:|---:|",
        f"| AR twin (exact NLL) | {ar['steps']} | {ar['train_tokens_per_s']:,.0f} | "
        f"{ar['val_bits_per_char']:.3f} ± {ar['val_stderr_bits']:.3f} |",
        f"| masked diffusion (ELBO bound, {args.mc_samples} t draws/window) | {df['steps']} | "
        f"{df['train_tokens_per_s']:,.0f} | {df['val_bits_per_char']:.3f} ± "
        f"{df['val_stderr_bits']:.3f} |",
        f"| same bound, mask-count estimator ({args.mc_samples} draws/window) | | | "
        f"{df['val_bits_per_char_count']:.3f} ± {df['val_stderr_bits_count']:.3f} |",
        "",
        f"Diffusion trained with `diffusion.elbo_estimator: {df['train_estimator']}` and "
        f"`diffusion.train_weighting: {df['train_weighting']}`; the validation figure is always "
        "the ELBO bound. Bars (issue 2): AR <= 2.45, diffusion <= 2.85 and within 20% of AR, "
        "diffusion training >= 20,000 tokens/s.",
        "",
        f"Validation: all {ar['val_windows']} windows of 256 characters of the last 10% "
        "(± is one standard error over windows). Diffusion / AR bits ratio: "
        f"{df['val_bits_per_char'] / ar['val_bits_per_char']:.3f}.",
        "",
        "Sampling 256 characters (float64 categorical sampling; diffusion skips the network "
        "call when no position changed):",
        "",
        "| sampler | batch 1: s | tokens/s | batch 16: s | tokens/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in speed:
        lines.append(f"| {r['sampler']} | {r['seconds_b1']:.3f} | {r['tokens_per_s_b1']:,.0f} | "
                     f"{r['seconds_b16']:.3f} | {r['tokens_per_s_b16']:,.0f} |")
    lines += ["", "One sample of each (batch 1, seed 0, temperature 1):", ""]
    for name in ("diffusion, 256 steps", "AR + KV cache"):
        lines += [f"*{name}*:", "", "```", samples[name].strip()[:400], "```", ""]
    write_section("core", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
