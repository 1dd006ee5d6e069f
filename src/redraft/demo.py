"""`redraft demo`: the main job, end to end, on data every Python install has.

First shows the default model shipped in the package filling in a function body (instant, no
training). Then trains a small masked-diffusion LM and its autoregressive twin (same backbone,
same data, same wall-clock budget) on the interpreter's own standard-library source, prints their
validation figures side by side (diffusion: an upper bound on NLL; AR: exact NLL), shows a
sample being denoised step by step, and times sampling for both (after a warm-up, the median
of several runs). One seed (train.seed, default 0; printed) fixes the initialisation, the
batches, the noise and the samples; with a time budget the number of steps trained still
follows the machine's speed, so the figures vary a little from run to run.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np

from redraft.config import config_from_dict, merge, parse_overrides
from redraft.data import load_data
from redraft.display import DraftView
from redraft.errors import RedraftError
from redraft.eval.likelihood import evaluate, report
from redraft.model import load
from redraft.runs import move_aside, run_contents
from redraft.train import train

# About 0.8M parameters; trained share of the budget leaves time for data, eval and sampling.
DEMO_CONFIG = {
    "data": {"corpus": "stdlib", "tokenizer": "byte"},
    "model": {"n_layer": 4, "n_head": 4, "d_model": 128, "seq_len": 256},
    "train": {"batch_size": 16, "lr": 2e-3, "warmup_steps": 50, "eval_every": 10**9,
              "eval_batches": 8, "precision": "auto", "max_steps": 10**9},
}
DEMO_RUNS = {"mdlm": "masked diffusion", "ar": "autoregressive twin"}  # objective: what it is
TRAIN_SHARE = 0.4  # of the total budget, per model
SPEED_RUNS = 5  # timed runs per row of the speed table, after one untimed warm-up run


def median_seconds(generate, runs: int):
    """(median seconds of `runs` calls, the last Generation), after one untimed call: the
    first call pays for memory allocation and kernel selection, which is not sampling speed."""
    generate()
    gens = [generate() for _ in range(runs)]
    return statistics.median(g.seconds for g in gens), gens[-1]


# The editor view of the default model: a function body cut out, the code on both sides kept.
SHOWCASE = ('def mean(values):\n'
            '    """Return the arithmetic mean of a non-empty sequence of numbers."""\n'
            '    if not values:\n'
            '        raise ValueError("mean() needs at least one value")\n'
            '    <|mask:32|>\n'
            '\n\n'
            'def variance(values):\n'
            '    m = mean(values)\n'
            '    return sum((x - m) ** 2 for x in values) / len(values)\n')


def show_default(say, stream, seed: int = 0) -> None:
    """The shipped default model (redraft.load("default")) filling in a function body, drawn
    step by step: the instant part of the demo, before any training."""
    try:
        model = load("default")
    except RedraftError as e:  # a source checkout without the weights: the rest still runs
        say(f"(no default model to show: {e})")
        return
    steps = 32  # the span's length (a one-line body): one token a step, most confident first
    say(f"the default model ({model.backbone.num_params() / 1e6:.1f}M parameters, shipped in "
        "the package; redraft.load('default')) filling in a function body,\nseeing the code on "
        "both sides (confidence sampler, one token a step):")
    view = DraftView(model.tokenizer.decode, steps, stream=stream, delay=0.03, max_lines=14)
    out = model.infill(SHOWCASE, steps=steps, sampler="confidence", seed=seed, on_step=view)
    say(f"filled in: {out.completions[0]!r}")
    say("(more: redraft sample --infill '...<|mask:N|>...', redraft serve, and the model card: "
        "python -c 'import redraft.default as d; print(d.card())')")


def run_demo(minutes: float = 5.0, out_dir: str = "runs/demo", overrides=(),
             stream=sys.stdout, show_default_model: bool = True) -> dict:
    """show_default_model: first show the shipped default model infilling (instant), then
    train and compare a pair of our own within the budget."""
    if not minutes > 0:
        raise RedraftError(f"--minutes {minutes}: expected > 0")
    say = lambda *a: print(*a, file=stream, flush=True)  # noqa: E731
    if show_default_model:
        seed = config_from_dict(merge(DEMO_CONFIG, parse_overrides(list(overrides)))).train.seed
        show_default(say, stream, seed)
        say("\nnow training a pair of our own, from scratch, in the time budget:")
    budget = minutes * 60 * TRAIN_SHARE
    results = {}
    for i, (objective, label) in enumerate(DEMO_RUNS.items()):
        values = merge(DEMO_CONFIG, {"diffusion": {"objective": objective},
                                     "train": {"time_budget_s": budget,
                                               "out_dir": str(Path(out_dir) / objective)}})
        cfg = config_from_dict(merge(values, parse_overrides(list(overrides))))
        if i == 0:
            seed = cfg.train.seed
            say(f"seed: {seed} (initialisation, batches, noise and samples; another: "
                f"redraft demo train.seed=N)")
            tok, data = load_data(cfg.data, cfg.model.seq_len)
            say(f"corpus: {cfg.data.corpus!r} ({data.meta['n_documents']:,} documents) -> "
                f"{data.meta['train_tokens']:,} train / {data.meta['val_tokens']:,} validation "
                f"{tok.kind} tokens")
        say(f"\ntraining the {label} for {budget:.0f} s ...")
        if run_contents(cfg.train.out_dir):  # an earlier demo's: kept, never deleted
            say(f"(the earlier run in {cfg.train.out_dir} moved to "
                f"{move_aside(cfg.train.out_dir)})")
        results[objective] = train(cfg)

    say("\nvalidation on the same held-out tokens:")
    say(f"  {'model':22s} {'params':>8s} {'steps':>6s} {'train tokens':>13s} "
        f"{'train tok/s':>12s} {'bits/byte':>10s}  kind")
    ckpts, tokens_seen = {}, {}
    for objective, res in results.items():
        ck = ckpts[objective] = load(res.checkpoint)
        _, data = load_data(ck.config.data, ck.config.model.seq_len, ck.tokenizer)
        nats, err, windows = evaluate(ck.backbone, data.val, ck.config, ck.tokenizer.mask_id,
                                      ck.tokenizer.eos_id, max_batches=4, samples=4)
        r = report(nats, err, data.val_bytes_per_token)
        kind = ck.objective.bound
        name = "AR twin" if ck.is_ar else "masked diffusion"
        tokens_seen[objective] = res.step * ck.config.train.batch_size * ck.config.model.seq_len
        say(f"  {name:22s} {res.params:8,d} {res.step:6,d} {tokens_seen[objective]:13,d} "
            f"{res.train_tokens_per_s:12,.0f} {r['bits_per_byte']:10.3f}  {kind} "
            f"(± {r['bits_per_byte'] * err / nats:.3f})")
    L = cfg.model.seq_len
    baseline = unigram_nats(data.train, data.val[:windows * L], ck.tokenizer.vocab_size)
    baseline_bits = report(baseline, 0.0, data.val_bytes_per_token)["bits_per_byte"]
    say(f"  {'token frequencies only':22s} {'-':>8s} {'-':>6s} {'-':>13s} {'-':>12s} "
        f"{baseline_bits:10.3f}  exact (a unigram: no context)")
    say(f"  ({windows} windows of {L} tokens; diffusion: 4 Monte Carlo t draws per window; ± is "
        "one standard error)")

    diff, ar = ckpts["mdlm"], ckpts["ar"]
    tok = diff.tokenizer
    prompt = "def "
    steps = 64
    say(f"\na diffusion sample being denoised ({steps} steps, prompt {prompt!r}):")
    view = DraftView(tok.decode, steps, stream=stream, delay=0.04, max_lines=14)
    diff.generate(prompt, steps=steps, length=min(192, diff.seq_len), seed=seed, on_step=view)

    n_tok = diff.config.model.seq_len
    say(f"\nsampling speed, {n_tok} tokens at batch 1 (this machine, float64 sampling; median "
        f"of {SPEED_RUNS} runs after a warm-up):")
    for n in (16, 64, 256):
        sec, g = median_seconds(lambda n=n: diff.sample([[]], length=n_tok, seeds=[seed],
                                                        steps=n), SPEED_RUNS)
        say(f"  diffusion {n:4d} steps: {sec:6.2f} s  {n_tok / sec:8,.0f} tokens/s "
            f"({g.nfe} network calls)")
    sec, g = median_seconds(lambda: ar.sample([[]], length=n_tok, seeds=[seed]), SPEED_RUNS)
    say(f"  AR twin + KV cache : {sec:6.2f} s  {n_tok / sec:8,.0f} tokens/s "
        f"({g.nfe} network calls)")
    say(limits(budget, results["mdlm"].params, min(tokens_seen.values()), baseline_bits))
    say(f"\ncheckpoints: {results['mdlm'].checkpoint}  {results['ar'].checkpoint}")
    say(f"try: redraft sample {Path(out_dir) / 'mdlm'} --steps 64 --prompt 'import ' --show")
    return results


def unigram_nats(train_tokens, val_tokens, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of val_tokens under add-one smoothed token frequencies of
    train_tokens: what a model that ignores context can reach."""
    counts = np.bincount(np.asarray(train_tokens), minlength=vocab_size) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-log_p[np.asarray(val_tokens)].mean())


def limits(budget_s: float, params: int, tokens: int, baseline_bits: float) -> str:
    """What a demo-sized run can and cannot show, said plainly."""
    return f"""
what {budget_s / 60:.1f} minutes of CPU training per model can and cannot give (here about
{tokens:,} training tokens per model: the steps depend on this machine's speed):
  can:    a like-for-like comparison of masked diffusion and its AR twin: same backbone
          ({params / 1e6:.1f}M parameters), same data, same wall clock, same held-out bytes
          (diffusion: an upper bound; AR: exact), and whether each has learned to use
          context: below the {baseline_bits:.2f} bits/byte of token frequencies alone
  cannot: code that parses or means anything (the samples above show what this budget
          writes), or figures near what these models reach with hours of training; which
          objective leads, and by how much, can change with the budget, the model size and
          the corpus: the gap above is this budget's, not a verdict
  more:   redraft demo --minutes 30; configs/stdlib-mdlm.yaml is a 10.7M-parameter
          Python model for a GPU; BENCHMARKS.md has longer, documented runs"""
