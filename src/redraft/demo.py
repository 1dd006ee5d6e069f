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
import textwrap
import time
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

# About 0.8M parameters.
DEMO_CONFIG = {
    "data": {"corpus": "stdlib", "tokenizer": "byte"},
    "model": {"n_layer": 4, "n_head": 4, "d_model": 128, "seq_len": 256},
    "train": {"batch_size": 16, "lr": 2e-3, "warmup_steps": 50, "eval_every": 10**9,
              "eval_batches": 8, "precision": "auto", "max_steps": 10**9},
}
DEMO_RUNS = {"mdlm": "masked diffusion", "ar": "autoregressive twin"}  # objective: what it is
AFTER_TRAINING = 0.25  # of the total budget: evaluation, the denoising view, the speed table
MARGIN = 0.05  # of the total budget: the interpreter's start-up and imports, outside run_demo
SPEED_RUNS = 5  # at most, timed runs per row of the speed table after one untimed warm-up
SPEED_STEPS = (16, 64, 256)  # diffusion rows of the speed table, as many as the time allows
MIN_TRAIN_S = 1.0  # a budget smaller than the fixed costs still trains a few steps


class Clock:
    """The demo's wall clock. Every phase after training asks what is left and scales its work
    to it (eval batches, steps, speed rows and repeats), so the whole demo stays within
    --minutes on any machine, however slow or loaded, not only its training."""

    def __init__(self, seconds: float):
        self.total, self.start = seconds, time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.total * (1 - MARGIN) - self.elapsed()


def median_seconds(generate, runs: int, warm=None):
    """(median seconds of `runs` calls, the last Generation), after one untimed call (or
    `warm`, one already made): the first call pays for memory allocation and kernel
    selection, which is not sampling speed."""
    if warm is None:
        generate()
    gens = [generate() for _ in range(runs)]
    return statistics.median(g.seconds for g in gens), gens[-1]


def plan_speed(call_s: dict[str, float], seconds: float) -> tuple[list[int], int]:
    """(diffusion step rows, timed runs per row) whose time fits `seconds`, given the measured
    seconds of one call per row (keys "16", "64", "256", "ar"): as many runs as fit (at most
    SPEED_RUNS, at least 1), dropping the longest rows first when even one run does not."""
    rows = list(SPEED_STEPS)
    while rows:
        per_run = sum(call_s[str(n)] for n in rows) + call_s["ar"]
        # the warm-up of each row but the 16-step one (already run to measure) counts too
        warm = sum(call_s[str(n)] for n in rows[1:]) + call_s["ar"]
        runs = min(SPEED_RUNS, int((seconds - warm) // per_run)) if per_run > 0 else SPEED_RUNS
        if runs >= 1 or len(rows) == 1:
            return rows, max(1, runs)
        rows.pop()
    return [SPEED_STEPS[0]], 1


# The editor view of the default model: short spans, the code on both sides kept. Chosen
# (with their seeds) for what this small model does well, constrained fills of a few tokens;
# next to them the demo says plainly how it does on longer, held-out cuts.
SHOWCASE = [  # (template, steps, seed): one token a step, most confident first
    ('import os\n\n'
     'try:\n    import json\nexcept <|mask:11|>:\n    json = None\n\n\n'
     'def config_path(home):\n    return os.path.<|mask:4|>(home, ".config")\n\n\n'
     'if __name__ == "<|mask:8|>":\n    print(config_path(os.getcwd()))\n', 23, 0),
]


def card_figures() -> str:
    """The default model's infilling figures, as its model card states them (held-out
    functions with 1-3 body lines cut out), or "" when the card has none."""
    from redraft.default import card

    found = {}
    for line in card().splitlines():
        for key, label in (("| infill parse rate", "parse"), ("| infill exact match", "exact")):
            if line.startswith(key):
                cells = [c.strip() for c in line.split("|")]
                found[label] = cells[2].split()[0] if len(cells) > 2 else None
    if not found.get("parse") or not found.get("exact"):
        return ""
    return (f"on 32 held-out functions with 1-3 body lines cut out, {found['parse']} of its "
            f"fills parse as Python and {found['exact']} match the original (model card)")


def show_default(say, stream) -> None:
    """The shipped default model (redraft.load("default")) filling in short spans, drawn
    step by step: the instant part of the demo, before any training. Each example has its own
    fixed seed (the shipped model is not the demo's to reseed)."""
    try:
        model = load("default")
    except RedraftError as e:  # a source checkout without the weights: the rest still runs
        say(f"(no default model to show: {e})")
        return
    say(f"the default model ({model.backbone.num_params() / 1e6:.1f}M parameters, shipped in "
        "the package; redraft.load('default')) filling in three spans of given lengths,\n"
        "seeing the code on both sides (confidence sampler, one token a step):")
    for template, steps, own_seed in SHOWCASE:
        view = DraftView(model.tokenizer.decode, steps, stream=stream, delay=0.03, max_lines=14)
        out = model.infill(template, steps=steps, sampler="confidence", seed=own_seed,
                           on_step=view)
        say(f"filled in: {', '.join(map(repr, out.spans[0]))}")
    figures = card_figures()
    say(textwrap.fill(
        "what this shows: short fills of a known length with the code on both sides (a name, a "
        "call) are what this small model (trained for about 10 minutes on one GPU) does well."
        + (f" Longer cuts much less: {figures}." if figures else "")
        + " It writes code-shaped text, often not working code.", width=95))
    say("(more: redraft sample --infill '...<|mask:N|>...', redraft serve, and the model card: "
        "python -c 'import redraft.default as d; print(d.card())')")


def run_demo(minutes: float = 5.0, out_dir: str = "runs/demo", overrides=(),
             stream=sys.stdout, show_default_model: bool = True) -> dict:
    """show_default_model: first show the shipped default model infilling (instant), then
    train and compare a pair of our own. The whole demo keeps within `minutes` of wall time:
    training gets what is left after the start, less a reserve that the later phases scale
    their work to (see Clock)."""
    if not minutes > 0:
        raise RedraftError(f"--minutes {minutes}: expected > 0")
    clock = Clock(minutes * 60)
    say = lambda *a: print(*a, file=stream, flush=True)  # noqa: E731
    seed = config_from_dict(merge(DEMO_CONFIG, parse_overrides(list(overrides)))).train.seed
    if show_default_model:
        show_default(say, stream)
        say("\nnow training a pair of our own, from scratch, in the time budget:")
    say(f"seed: {seed} (initialisation, batches, noise and samples; another: "
        f"redraft demo train.seed=N)")
    base = config_from_dict(merge(DEMO_CONFIG, parse_overrides(list(overrides))))
    tok, data = load_data(base.data, base.model.seq_len)
    say(f"corpus: {base.data.corpus!r} ({data.meta['n_documents']:,} documents) -> "
        f"{data.meta['train_tokens']:,} train / {data.meta['val_tokens']:,} validation "
        f"{tok.kind} tokens")
    # Training gets what is left now, less the reserve for everything after it; each model's
    # start-up, final validation and save come out of that reserve as well.
    budget = max(MIN_TRAIN_S, (clock.left() - AFTER_TRAINING * clock.total) / len(DEMO_RUNS))
    results = {}
    for objective, label in DEMO_RUNS.items():
        values = merge(DEMO_CONFIG, {"diffusion": {"objective": objective},
                                     "train": {"time_budget_s": budget,
                                               "out_dir": str(Path(out_dir) / objective)}})
        cfg = config_from_dict(merge(values, parse_overrides(list(overrides))))
        say(f"\ntraining the {label} for {cfg.train.time_budget_s:.0f} s ...")
        if run_contents(cfg.train.out_dir):  # an earlier demo's: kept, never deleted
            say(f"(the earlier run in {cfg.train.out_dir} moved to "
                f"{move_aside(cfg.train.out_dir)})")
        results[objective] = train(cfg)

    ckpts, figures = compare(results, clock, say)
    diff, ar = ckpts["mdlm"], ckpts["ar"]
    tok = diff.tokenizer
    prompt = "def "
    steps = 64 if clock.left() > 0.5 * AFTER_TRAINING * clock.total else 16
    say(f"\na diffusion sample being denoised ({steps} steps, prompt {prompt!r}):")
    view = DraftView(tok.decode, steps, stream=stream, delay=min(0.04, 2.0 / steps), max_lines=14)
    diff.generate(prompt, steps=steps, length=min(192, diff.seq_len), seed=seed, on_step=view)

    speed_table(diff, ar, seed, clock, say)
    say(limits(results, figures))
    say(f"\ncheckpoints: {results['mdlm'].checkpoint}  {results['ar'].checkpoint}")
    say(f"try: redraft sample {Path(out_dir) / 'mdlm'} --steps 64 --prompt 'import ' --show")
    say(f"(this demo: {clock.elapsed() / 60:.1f} of its {minutes:g} minutes)")
    return results


def compare(results: dict, clock: Clock, say) -> tuple[dict, dict]:
    """The validation table (on as many batches as the time left allows, 1 to 4); returns
    the loaded models and the figures the closing lines are computed from."""
    say("\nvalidation on the same held-out tokens:")
    say(f"  {'model':22s} {'params':>8s} {'steps':>6s} {'train tokens':>13s} "
        f"{'train tok/s':>12s} {'bits/byte':>10s}  kind")
    ckpts, figures = {}, {}
    for objective, res in results.items():
        ck = ckpts[objective] = load(res.checkpoint)
        cfg = ck.config
        _, data = load_data(cfg.data, cfg.model.seq_len, ck.tokenizer)
        # One batch of 4 draws costs about 4 forward passes of a batch: a third of a training
        # step each. Fit the batches into a fifth of the time left (per model).
        step_s = cfg.train.batch_size * cfg.model.seq_len / max(res.train_tokens_per_s, 1e-9)
        batches = int(max(1, min(4, 0.2 * clock.left() / len(results) / (4 * step_s / 3))))
        nats, err, windows = evaluate(ck.backbone, data.val, cfg, ck.tokenizer.mask_id,
                                      ck.tokenizer.eos_id, max_batches=batches, samples=4)
        r = report(nats, err, data.val_bytes_per_token)
        tokens = res.step * cfg.train.batch_size * cfg.model.seq_len
        figures[objective] = {"bits": r["bits_per_byte"],
                              "stderr": r["bits_per_byte"] * err / nats, "tokens": tokens,
                              "params": res.params, "budget": cfg.train.time_budget_s}
        name = "AR twin" if ck.is_ar else "masked diffusion"
        say(f"  {name:22s} {res.params:8,d} {res.step:6,d} {tokens:13,d} "
            f"{res.train_tokens_per_s:12,.0f} {r['bits_per_byte']:10.3f}  {ck.objective.bound} "
            f"(± {figures[objective]['stderr']:.3f})")
    L = cfg.model.seq_len
    baseline = unigram_nats(data.train, data.val[:windows * L], ck.tokenizer.vocab_size)
    figures["unigram"] = report(baseline, 0.0, data.val_bytes_per_token)["bits_per_byte"]
    say(f"  {'token frequencies only':22s} {'-':>8s} {'-':>6s} {'-':>13s} {'-':>12s} "
        f"{figures['unigram']:10.3f}  exact (a unigram: no context)")
    say(f"  ({windows} windows of {L} tokens; diffusion: 4 Monte Carlo t draws per window; ± is "
        "one standard error)")
    return ckpts, figures


def speed_table(diff, ar, seed: int, clock: Clock, say) -> None:
    """Sampling speed at batch 1: one call of each row measured first (the warm-up), then as
    many rows and timed runs as the time left allows; what was left out is said."""
    n_tok = diff.config.model.seq_len
    calls = {str(n): (lambda n=n: diff.sample([[]], length=n_tok, seeds=[seed], steps=n))
             for n in SPEED_STEPS}
    calls["ar"] = lambda: ar.sample([[]], length=n_tok, seeds=[seed])
    warm = {"16": calls["16"](), "ar": calls["ar"]()}  # each pays its first-call costs here
    call_s = {"16": warm["16"].seconds, "ar": warm["ar"].seconds}
    for n in SPEED_STEPS[1:]:  # a network call costs about the same at any step count
        call_s[str(n)] = warm["16"].seconds * n / SPEED_STEPS[0]
    rows, runs = plan_speed(call_s, max(0.0, clock.left()))
    say(f"\nsampling speed, {n_tok} tokens at batch 1 (this machine, float64 sampling; median "
        f"of {runs} run{'s' if runs > 1 else ''} after a warm-up):")
    for n in rows:
        sec, g = median_seconds(calls[str(n)], runs, warm=warm.get(str(n)))
        say(f"  diffusion {n:4d} steps: {sec:6.2f} s  {n_tok / sec:8,.0f} tokens/s "
            f"({g.nfe} network calls)")
    sec, g = median_seconds(calls["ar"], runs, warm=warm["ar"])
    say(f"  AR twin + KV cache : {sec:6.2f} s  {n_tok / sec:8,.0f} tokens/s "
        f"({g.nfe} network calls)")
    skipped = [n for n in SPEED_STEPS if n not in rows]
    if skipped:
        say(f"  (the {', '.join(map(str, skipped))}-step row{'s' if len(skipped) > 1 else ''} "
            "left out: it would not fit the time budget; redraft demo --minutes N for more)")


def unigram_nats(train_tokens, val_tokens, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of val_tokens under add-one smoothed token frequencies of
    train_tokens: what a model that ignores context can reach."""
    counts = np.bincount(np.asarray(train_tokens), minlength=vocab_size) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-log_p[np.asarray(val_tokens)].mean())


def limits(results: dict, figures: dict) -> str:
    """What a demo-sized run can and cannot show, said plainly, each claim computed from the
    figures printed above (never a claim they contradict)."""
    diff, ar, unigram = figures["mdlm"], figures["ar"], figures["unigram"]
    budget_s, tokens = diff["budget"], min(diff["tokens"], ar["tokens"])

    def context(name: str, f: dict, bound: bool) -> str:
        if f["bits"] < unigram:
            return f"{name} ({f['bits']:.2f}) is below it: it has learned to use context"
        if bound:
            return (f"{name}'s upper bound ({f['bits']:.2f}) is not below it: this budget does "
                    "not show that it uses context")
        return (f"{name} ({f['bits']:.2f}) is not below it: this budget was too short for it "
                "to learn to use context")

    gap = ar["bits"] - diff["bits"]
    noise = 2 * (diff["stderr"] ** 2 + ar["stderr"] ** 2) ** 0.5
    if abs(gap) <= noise:
        lead = (f"the two are within noise of each other ({abs(gap):.3f} bits/byte apart, two "
                f"standard errors {noise:.3f})")
    elif gap < 0:
        lead = (f"the AR twin leads by {-gap:.3f} bits/byte here (against diffusion's upper "
                "bound: the true gap may be smaller)")
    else:
        lead = (f"masked diffusion leads by at least {gap:.3f} bits/byte here (its figure is an "
                "upper bound)")
    return f"""
what {budget_s / 60:.1f} minutes of CPU training per model can and cannot give (here about
{tokens:,} training tokens per model: the steps depend on this machine's speed):
  can:    a like-for-like comparison of masked diffusion and its AR twin: same backbone
          ({diff['params'] / 1e6:.1f}M parameters), same data, same wall clock, same held-out
          bytes (diffusion: an upper bound; AR: exact); against the {unigram:.2f} bits/byte of
          token frequencies alone, {context("masked diffusion", diff, True)};
          {context("the AR twin", ar, False)}
  cannot: code that parses or means anything (the samples above show what this budget
          writes), or figures near what these models reach with hours of training; {lead},
          and which objective leads, and by how much, changes with the budget, the model
          size and the corpus: this budget's gap, not a verdict
  more:   redraft demo --minutes 30; configs/stdlib-mdlm.yaml is a 10.7M-parameter
          Python model for a GPU; BENCHMARKS.md has longer, documented runs"""
