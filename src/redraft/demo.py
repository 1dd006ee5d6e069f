"""`redraft demo`: the main job, end to end, on data every Python install has.

First shows the default model shipped in the package filling in short spans of code (no
training). Then trains a small masked-diffusion LM and its autoregressive twin (same backbone,
same data, same wall-clock budget) on the interpreter's own standard-library source, prints their
validation figures side by side (diffusion: an upper bound on NLL; AR: exact NLL), shows a
sample being denoised step by step, and times sampling for both (after a warm-up, the median
of several runs). The whole demo keeps within --minutes of wall time on any machine: training
gets what is left after the start less a reserve, and each later phase sizes its work to the
time left at this machine's measured speed, stops at its deadline, and says what it left out.
One seed (train.seed, default 0; printed) fixes the initialisation, the
batches, the noise and the samples; with a time budget the number of steps trained still
follows the machine's speed, so the figures vary a little from run to run.
"""

from __future__ import annotations

import os
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
from redraft.likelihood import evaluate, report
from redraft.model import load
from redraft.runs import move_aside, run_contents
from redraft.train import train

# About 0.8M parameters.
DEMO_CONFIG = {
    "data": {"corpus": "stdlib", "tokenizer": "byte"},
    "model": {"n_layer": 4, "n_head": 4, "d_model": 128, "seq_len": 256},
    "train": {"batch_size": 16, "lr": 2e-3, "warmup_steps": 50, "eval_every": 10**9,
              "eval_batches": 1, "precision": "auto", "max_steps": 10**9},
}
DEMO_RUNS = {"mdlm": "masked diffusion", "ar": "autoregressive twin"}  # objective: what it is
AFTER_TRAINING = 0.25  # of the total budget: evaluation, the denoising view, the speed table
MARGIN = 0.05  # of the total budget: writing the last lines and the interpreter's exit
SHOWCASE_SHARE = 0.1  # of the total budget at most for the default model's showcase
SPEED_RUNS = 5  # at most, timed runs per row of the speed table after one untimed warm-up
SPEED_STEPS = (16, 64, 256)  # diffusion rows of the speed table, as many as the time allows
MIN_TRAIN_S = 1.0  # a budget smaller than the fixed costs still trains a few steps


class OutOfTime(Exception):
    """A phase of the demo reached its deadline (raised from a sampling loop's on_step)."""


def process_age() -> float:
    """Seconds since this process started (Linux: /proc), else 0.0 where it cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - started / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class Clock:
    """The demo's wall clock. Every phase after training asks what is left and scales its work
    to it (eval batches, steps, speed rows and repeats), so the whole demo stays within
    --minutes on any machine, however slow or loaded, not only its training."""

    def __init__(self, seconds: float, from_process_start: bool = False):
        # `redraft demo` counts from the process's start: the interpreter and the imports
        # (seconds on a loaded machine) are part of what the user waits for.
        self.total = seconds
        self.start = time.monotonic() - (process_age() if from_process_start else 0.0)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.total * (1 - MARGIN) - self.elapsed()

    def until(self, deadline: float, view=None):
        """An on_step for a sampling loop: draws `view`, and stops the loop (OutOfTime) once
        the demo's clock passes `deadline` seconds, so no phase overruns on a slow machine."""
        def on_step(step, tokens):
            if view is not None:
                view(step, tokens)
            if self.elapsed() > deadline:
                raise OutOfTime
        return on_step


def median_seconds(generate, runs: int, warm=None):
    """(median seconds of `runs` calls, the last Generation), after one untimed call (or
    `warm`, one already made): the first call pays for memory allocation and kernel
    selection, which is not sampling speed."""
    if warm is None:
        generate()
    gens = [generate() for _ in range(runs)]
    return statistics.median(g.seconds for g in gens), gens[-1]


def plan_speed(call_s: dict[str, float], seconds: float) -> tuple[list[int], bool, int]:
    """(diffusion step rows, whether the AR row is in, timed runs per row) that fit `seconds`,
    given the predicted seconds of one call of each row (keys "16", "64", "256", "ar"): the
    most rows first, the AR row kept before the longer diffusion rows, then as many runs as
    fit (at most SPEED_RUNS); ([], False, 0) when not even one run of one row fits."""
    options = [([16, 64, 256], True), ([16, 64], True), ([16], True), ([16], False)]
    for rows, with_ar in options:
        per_run = sum(call_s[str(n)] for n in rows) + (call_s["ar"] if with_ar else 0.0)
        runs = min(SPEED_RUNS, int(seconds // per_run)) if per_run > 0 else SPEED_RUNS
        if runs >= 1:
            return rows, with_ar, runs
    return [], False, 0


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


def show_default(say, stream, clock: Clock | None = None) -> None:
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
        if clock is not None:  # a slow machine: stop drawing at the showcase's share
            view = clock.until(SHOWCASE_SHARE * clock.total, view)
        try:
            out = model.infill(template, steps=steps, sampler="confidence", seed=own_seed,
                               on_step=view)
        except OutOfTime:
            say("(cut short: this machine is slow right now; the rest of the demo scales its "
                "work to the time left)")
            break
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
             stream=sys.stdout, show_default_model: bool = True,
             from_process_start: bool = False) -> dict:
    """show_default_model: first show the shipped default model infilling (instant), then
    train and compare a pair of our own. The whole demo keeps within `minutes` of wall time
    (from_process_start: counted from the process's start, as `redraft demo` does):
    training gets what is left after the start, less a reserve that the later phases scale
    their work to (see Clock)."""
    if not minutes > 0:
        raise RedraftError(f"--minutes {minutes}: expected > 0")
    clock = Clock(minutes * 60, from_process_start)
    say = lambda *a: print(*a, file=stream, flush=True)  # noqa: E731
    seed = config_from_dict(merge(DEMO_CONFIG, parse_overrides(list(overrides)))).train.seed
    if show_default_model:
        show_default(say, stream, clock)
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

    after = clock.left()  # the reserve, less what training's start-ups took of it
    ckpts, figures = compare(results, clock, 0.3 * after, say)
    diff, ar = ckpts["mdlm"], ckpts["ar"]
    call_s, probes = probe(diff, ar, seed)  # what one sample costs on this machine, now
    denoise(diff, seed, clock, clock.elapsed() + 0.15 * after, call_s["16"] / 16, stream, say)
    speed_table(diff, ar, seed, clock, call_s, probes, say)
    say(limits(results, figures))
    say(f"\ncheckpoints: {results['mdlm'].checkpoint}  {results['ar'].checkpoint}")
    say(f"try: redraft sample {Path(out_dir) / 'mdlm'} --steps 64 --prompt 'import ' --show")
    say(f"(this demo: {clock.elapsed() / 60:.1f} of its {minutes:g} minutes)")
    return results


def compare(results: dict, clock: Clock, seconds: float, say) -> tuple[dict, dict]:
    """The validation table, on as many windows as fit `seconds` at the speed training
    measured (2 to 64); returns the loaded models and the figures the closing lines are
    computed from (and "speed": forward tokens per second, for the phases after it)."""
    say("\nvalidation on the same held-out tokens:")
    say(f"  {'model':22s} {'params':>8s} {'steps':>6s} {'train tokens':>13s} "
        f"{'train tok/s':>12s} {'bits/byte':>10s}  kind")
    ckpts, figures = {}, {}
    for objective, res in results.items():
        ck = ckpts[objective] = load(res.checkpoint)
        cfg = ck.config
        _, data = load_data(cfg.data, cfg.model.seq_len, ck.tokenizer)
        # A forward pass costs about a third of a training step (forward + backward); a
        # window is 4 draws of seq_len tokens. As many windows as fit this model's share.
        speed = figures["speed"] = 3 * max(res.train_tokens_per_s, 1.0)  # forward tokens/s
        fit = seconds / len(results) / (4 * cfg.model.seq_len / speed)
        windows = int(max(2, min(64, fit)))
        size = min(16, windows)
        nats, err, windows = evaluate(ck.backbone, data.val, cfg, ck.tokenizer.mask_id,
                                      ck.tokenizer.eos_id, max_batches=windows // size,
                                      samples=4, batch_size=size)
        r = report(nats, err, data.val_bytes_per_token)
        tokens = res.step * cfg.train.batch_size * cfg.model.seq_len
        figures[objective] = {"bits": r["bits_per_byte"],
                              "stderr": r["bits_per_byte"] * err / nats, "tokens": tokens,
                              "params": res.params, "budget": cfg.train.time_budget_s}
        name = "AR twin" if ck.scorer.exact else "masked diffusion"
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


def probe(diff, ar, seed: int) -> tuple[dict[str, float], tuple]:
    """(predicted seconds of one seq_len-token sample at batch 1 for each speed row: keys
    "16", "64", "256" (diffusion steps) and "ar"; the two probe Generations) from a 2-step
    diffusion sample and a 16-token AR one, which also serve as the table's warm-up."""
    n_tok = diff.config.model.seq_len
    # Each probe twice: the first call pays for allocation, which would inflate the estimate.
    probe_d = [diff.sample([[]], length=n_tok, seeds=[seed], steps=2) for _ in range(2)][-1]
    probe_a = [ar.sample([[]], length=16, seeds=[seed]) for _ in range(2)][-1]
    call_s = {str(n): n * probe_d.seconds / probe_d.nfe for n in SPEED_STEPS}
    # A KV-cache step costs more as the cache grows: a 16-token probe undercounts seq_len.
    call_s["ar"] = 1.3 * n_tok * probe_a.seconds / max(probe_a.nfe, 1)
    return call_s, (probe_d, probe_a)


def denoise(diff, seed: int, clock: Clock, deadline: float, step_s: float, stream,
            say) -> None:
    """A sample being denoised, drawn step by step: 64 steps, or fewer (down to 8) when the
    time before `deadline` at `step_s` seconds a step is short; cut off at the deadline."""
    prompt, length = "def ", min(192, diff.seq_len)
    step_s *= length / diff.seq_len  # the probe's canvas was seq_len long
    steps = next((n for n in (64, 32, 16, 8) if n * step_s + 2.0 <= deadline - clock.elapsed()),
                 8)
    say(f"\na diffusion sample being denoised ({steps} steps, prompt {prompt!r}):")
    view = DraftView(diff.tokenizer.decode, steps, stream=stream, delay=min(0.04, 2.0 / steps),
                     max_lines=14)
    try:
        diff.generate(prompt, steps=steps, length=length, seed=seed,
                      on_step=clock.until(deadline, view))
    except OutOfTime:
        say("(cut short: out of this part's time)")


def speed_table(diff, ar, seed: int, clock: Clock, call_s: dict, probes: tuple, say) -> None:
    """Sampling speed at batch 1: as many rows and timed runs as the time left allows at the
    probed cost (the probes were the warm-up); what was left out is said."""
    n_tok = diff.config.model.seq_len
    probe_d, probe_a = probes
    # 90% of the time left: the probes predict, they do not promise (and a run slower than
    # predicted is stopped at the deadline below).
    rows, with_ar, runs = plan_speed(call_s, max(0.0, 0.9 * clock.left()))
    if not runs:
        say(f"\nsampling speed: left out, it would not fit the time left (one {n_tok}-token "
            f"sample would take about {call_s['16']:.0f} s with 16 diffusion steps and "
            f"{call_s['ar']:.0f} s with the AR twin on this machine now)")
        return
    say(f"\nsampling speed, {n_tok} tokens at batch 1 (this machine, float64 sampling; median "
        f"of {runs} run{'s' if runs > 1 else ''} after a warm-up):")
    stop = clock.until(clock.total * (1 - MARGIN))  # a slower run than probed still ends here
    for n in rows:
        try:
            sec, g = median_seconds(lambda n=n: diff.sample([[]], length=n_tok, seeds=[seed],
                                                            steps=n, on_step=stop),
                                    runs, warm=probe_d)
        except OutOfTime:
            say(f"  diffusion {n:4d} steps: cut short (out of time)")
            return
        say(f"  diffusion {n:4d} steps: {sec:6.2f} s  {n_tok / sec:8,.0f} tokens/s "
            f"({g.nfe} network calls)")
    if with_ar:
        try:
            sec, g = median_seconds(lambda: ar.sample([[]], length=n_tok, seeds=[seed],
                                                      on_step=stop), runs, warm=probe_a)
            say(f"  AR twin + KV cache : {sec:6.2f} s  {n_tok / sec:8,.0f} tokens/s "
                f"({g.nfe} network calls)")
        except OutOfTime:
            say("  AR twin + KV cache : cut short (out of time)")
    skipped = [f"{n}-step" for n in SPEED_STEPS if n not in rows] + ([] if with_ar else ["AR"])
    if skipped:
        say(f"  (the {', '.join(skipped)} row{'s' if len(skipped) > 1 else ''} left out: "
            "it would not fit the time budget; redraft demo --minutes N for more)")


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
    budget_s = diff["budget"]

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
    def block(label: str, text: str) -> str:
        return textwrap.fill(text, width=92, initial_indent=f"  {label:8s}",
                             subsequent_indent=" " * 10)

    head = textwrap.fill(
        f"what {budget_s / 60:.1f} minutes of CPU training per model can and cannot give (here "
        f"{diff['tokens']:,} training tokens for masked diffusion and {ar['tokens']:,} for the AR "
        "twin: the steps depend on this machine's speed):", width=92)
    can = (f"a like-for-like comparison of masked diffusion and its AR twin: same backbone "
           f"({diff['params'] / 1e6:.1f}M parameters), same data, same wall clock, same held-out "
           f"bytes (diffusion: an upper bound; AR: exact). Against the {unigram:.2f} bits/byte "
           f"of token frequencies alone, {context('masked diffusion', diff, True)}; "
           f"{context('the AR twin', ar, False)}.")
    cannot = ("code that parses or means anything (the samples above show what this budget "
              "writes), or figures near what these models reach with hours of training. "
              f"{lead[0].upper()}{lead[1:]}; which objective leads, and by how much, changes "
              "with the budget, the model size and the corpus: this budget's gap, not a verdict.")
    more = ("redraft demo --minutes 30; configs/stdlib-mdlm.yaml is a 10.7M-parameter Python "
            "model for a GPU; BENCHMARKS.md has longer, documented runs")
    return "\n".join(["", head, block("can:", can), block("cannot:", cannot),
                      block("more:", more)])
