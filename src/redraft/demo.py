"""`redraft demo`: the main job, end to end, on data every Python install has.

Trains a small masked-diffusion LM and its autoregressive twin (same backbone, same data,
same wall-clock budget) on the interpreter's own standard-library source, prints their
validation figures side by side (diffusion: an upper bound on NLL; AR: exact NLL), shows a
sample being denoised step by step, and times sampling for both.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from redraft.config import config_from_dict, merge, parse_overrides
from redraft.data import load_data
from redraft.display import DraftView
from redraft.errors import RedraftError
from redraft.eval.likelihood import evaluate, report
from redraft.model import load
from redraft.train import train

# About 0.8M parameters; trained share of the budget leaves time for data, eval and sampling.
DEMO_CONFIG = {
    "data": {"corpus": "stdlib", "tokenizer": "byte"},
    "model": {"n_layer": 4, "n_head": 4, "d_model": 128, "seq_len": 256},
    "train": {"batch_size": 16, "lr": 2e-3, "warmup_steps": 50, "eval_every": 10**9,
              "eval_batches": 8, "precision": "auto", "max_steps": 10**9},
}
TRAIN_SHARE = 0.4  # of the total budget, per model


def run_demo(minutes: float = 5.0, out_dir: str = "runs/demo", overrides=(),
             stream=sys.stdout) -> dict:
    if not minutes > 0:
        raise RedraftError(f"--minutes {minutes}: expected > 0")
    say = lambda *a: print(*a, file=stream, flush=True)  # noqa: E731
    budget = minutes * 60 * TRAIN_SHARE
    results = {}
    for objective in ("mdlm", "ar"):
        values = merge(DEMO_CONFIG, {"diffusion": {"objective": objective},
                                     "train": {"time_budget_s": budget,
                                               "out_dir": str(Path(out_dir) / objective)}})
        cfg = config_from_dict(merge(values, parse_overrides(list(overrides))))
        if objective == "mdlm":
            tok, data = load_data(cfg.data, cfg.model.seq_len)
            say(f"corpus: {cfg.data.corpus!r} ({data.meta['n_documents']:,} documents) -> "
                f"{data.meta['train_tokens']:,} train / {data.meta['val_tokens']:,} validation "
                f"{tok.kind} tokens")
        label = "masked diffusion" if objective == "mdlm" else "autoregressive twin"
        say(f"\ntraining the {label} for {budget:.0f} s ...")
        results[objective] = train(cfg)

    say("\nvalidation on the same held-out tokens:")
    say(f"  {'model':22s} {'params':>8s} {'train tok/s':>12s} {'bits/byte':>10s}  kind")
    ckpts = {}
    for objective, res in results.items():
        ck = ckpts[objective] = load(res.checkpoint)
        _, data = load_data(ck.config.data, ck.config.model.seq_len, ck.tokenizer)
        nats, err, windows = evaluate(ck.backbone, data.val, ck.config, ck.tokenizer.mask_id,
                                ck.tokenizer.eos_id, max_batches=4, samples=4)
        r = report(nats, err, data.val_bytes_per_token)
        kind = ck.objective.bound
        name = "AR twin" if ck.is_ar else "masked diffusion"
        say(f"  {name:22s} {res.params:8,d} {res.train_tokens_per_s:12,.0f} "
            f"{r['bits_per_byte']:10.3f}  {kind} (± {r['bits_per_byte'] * err / nats:.3f})")
    say(f"  ({windows} windows of {cfg.model.seq_len} tokens; diffusion: 4 Monte Carlo t draws "
        "per window; ± is one standard error)")

    diff, ar = ckpts["mdlm"], ckpts["ar"]
    tok = diff.tokenizer
    prompt = "def "
    steps = 64
    say(f"\na diffusion sample being denoised ({steps} steps, prompt {prompt!r}):")
    view = DraftView(tok.decode, steps, stream=stream, delay=0.04, max_lines=14)
    diff.generate(prompt, steps=steps, length=min(192, diff.seq_len),
                  seed=int(time.time()) % 1000, on_step=view)

    n_tok = diff.config.model.seq_len
    say(f"\nsampling speed, {n_tok} tokens at batch 1 (this machine, float64 sampling):")
    for n in (16, 64, 256):
        g = diff.sample([[]], length=n_tok, seeds=[0], steps=n)
        say(f"  diffusion {n:4d} steps: {g.seconds:6.2f} s  {n_tok / g.seconds:8,.0f} tokens/s "
            f"({g.nfe} network calls)")
    g = ar.sample([[]], length=n_tok, seeds=[0])
    say(f"  AR twin + KV cache : {g.seconds:6.2f} s  {n_tok / g.seconds:8,.0f} tokens/s "
        f"({g.nfe} network calls)")
    say(f"\ncheckpoints: {results['mdlm'].checkpoint}  {results['ar'].checkpoint}")
    say(f"try: redraft sample {Path(out_dir) / 'mdlm'} --steps 64 --prompt 'import ' --show")
    return results
