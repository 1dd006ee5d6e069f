"""Does self-speculation keep the AR mode's law on long runs of a real model? A statistical
check beside benchmarks/hybrid.py, whose 16-prompt quality columns are too few to tell.

    python benchmarks/hybrid_law.py shakespeare python --minutes 4 --rows 512 --seeds 0 1000
    python benchmarks/hybrid_law.py runs/hybrid-bench/python/hybrid/ckpt-00000355 --rows 96

Each argument is a hybrid checkpoint, or a corpus name of benchmarks/hybrid.py, for which a
hybrid of that script's model size (draft share 0.25, from scratch) trains for --minutes
into --out/CORPUS first (kept and reused). Per model, corpora in parallel processes:

1. The verifier: over one speculative decode of 32 prompts at T 0.7 (layout all), every
   row-call's p (the AR head's distributions after the prefix and each draft, as the
   acceptance rule reads them) against the uncached causal pass of the same tokens: the
   largest gap in probability (float32 kernels: about 1e-6; a cache or mask bug: far more).
2. The law: --rows validation prompts of hybrid.PROMPT tokens, LENGTH - PROMPT new tokens
   each, drawn in mode "ar" and in mode "speculative" (layouts all and last) with row i's
   seed SEED + i, at T 1 and 0.7: the means of the rows' own AR-mode NLL (nats/token) and of
   their unigram entropy, and for each layout the paired difference from mode "ar" (same
   prompts, same seeds) with its z score. One law gives |z| mostly below 2 and signs that
   change from seed to seed; a law bug gives a z that grows with the rows.

Writes benchmarks/results/hybrid_law.json and the "hybrid_law" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hybrid as H  # noqa: E402
from _report import machine, write_json, write_section  # noqa: E402

from redraft.checkpoint import list_checkpoints  # noqa: E402
from redraft.eval.quality import sample_entropy  # noqa: E402
from redraft.model import load  # noqa: E402

MODES = (("ar", {"mode": "ar"}),
         ("spec all", {"mode": "speculative", "options": {"layout": "all"}}),
         ("spec last", {"mode": "speculative", "options": {"layout": "last"}}))
TEMPERATURES = (1.0, 0.7)


def trained(corpus: str, minutes: float, out: Path) -> str:
    """The checkpoint of a hybrid trained on `corpus` (reused when out/corpus has one)."""
    from redraft.config import config_from_dict
    from redraft.train import train

    run = out / corpus
    if run.is_dir() and list_checkpoints(run):
        return str(list_checkpoints(run)[-1])
    cfg = H.config(corpus, "hybrid", minutes * 60, run, block_size=4, hybrid_draft_weight=0.3,
                   hybrid_draft_noise="partial", hybrid_draft_share=0.25)
    return str(train(config_from_dict(cfg)).checkpoint)


@torch.no_grad()
def verifier_gap(model, temperature: float = 0.7, rows: int = 32) -> dict:
    """The largest |p - p_ref| over every row-call of one speculative decode, p as accept()
    got it, p_ref from the uncached causal pass over the row's committed tokens and drafts."""
    import redraft.decoders.hybrid as D
    from redraft.sampling.categorical import probabilities

    call, accept = D.speculative_call, D.accept
    seen, worst, count = {}, [0.0], [0]

    def spy_accept(p, q, drafts, n_drafts, u_accept, u_draw):
        seen["p"] = p
        return accept(p, q, drafts, n_drafts, u_accept, u_draw)

    def checked_call(model_, lane_rows, cache, cache_rows=None):
        before = [(job.state.y[r, :job.state.filled[r]].clone(),
                   job.state.drafts[r, :job.state.n_drafts[r]].clone()) for job, r in lane_rows]
        call(model_, lane_rows, cache, cache_rows)  # one group: every row has these knobs
        for k, (y, drafts) in enumerate(before):
            logits = model_.backbone(torch.cat((y, drafts))[None])[0, len(y) - 1:].double()
            logits[:, model_.tokenizer.non_text_ids] = -torch.inf
            ref = probabilities(logits, temperature, None, None)
            worst[0] = max(worst[0], float((ref - seen["p"][k, :len(drafts) + 1]).abs().max()))
            count[0] += 1

    D.speculative_call, D.accept = checked_call, spy_accept
    try:
        H.decode(model, H.prompts_of(model, rows), list(range(rows)), temperature=temperature,
                 mode="speculative", options={"layout": "all"})
    finally:
        D.speculative_call, D.accept = call, accept
    return {"temperature": temperature, "rows": rows, "row_calls": count[0],
            "max_abs_gap": worst[0]}


@torch.no_grad()
def self_nll(model, rows: list[list[int]]) -> list[float]:
    """Each row's mean AR-mode NLL (nats/token) of its continuation given its prompt."""
    x = torch.tensor(rows)
    bos = torch.full((len(rows), 1), model.tokenizer.eos_id)
    logp = torch.log_softmax(model.backbone(torch.cat((bos, x[:, :-1]), 1)).double(), -1)
    nll = -logp.gather(-1, x[..., None])[..., 0][:, H.PROMPT:]
    return nll.mean(1).tolist()


def mean_se(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def law(model, n: int, seed: int, temperature: float) -> list[dict]:
    """One line per mode: the means, and the speculative layouts' paired differences."""
    prompts, lines, base = H.prompts_of(model, n), [], None
    for name, knobs in MODES:
        rows = []
        for i in range(0, n, 32):
            seeds = list(range(seed + i, seed + min(n, i + 32)))
            jobs, _, _ = H.decode(model, prompts[i:i + 32], seeds, temperature=temperature,
                                  **knobs)
            rows += [job.state.current()[0].tolist() for job in jobs]
        figures = {"nll": self_nll(model, rows),
                   "entropy": [sample_entropy(r[H.PROMPT:]) for r in rows]}
        line = {"seed": seed, "temperature": temperature, "mode": name, "rows": n}
        for what, values in figures.items():
            line[what], line[f"{what}_se"] = mean_se(values)
            if base is not None:
                d = [a - b for a, b in zip(values, base[what], strict=True)]
                diff, se = mean_se(d)
                line[f"{what}_paired"], line[f"{what}_paired_se"] = diff, se
                line[f"{what}_z"] = diff / se
        base = base or figures
        lines.append(line)
        print(f"seed {seed} T {temperature:g} {name:9s} self-NLL {line['nll']:.4f} "
              f"entropy {line['entropy']:.4f}" + (
                  f"  z(NLL) {line['nll_z']:+.2f} z(entropy) {line['entropy_z']:+.2f}"
                  if "nll_z" in line else ""), flush=True)
    return lines


def one_model(target: str, args) -> dict:
    torch.set_num_threads(1)
    if target in H.CORPORA:
        checkpoint, corpus = trained(target, args.minutes, Path(args.out)), target
    else:
        checkpoint, corpus = target, Path(target).parent.name
    model = load(checkpoint)
    start = time.perf_counter()
    out = {"corpus": corpus, "checkpoint": checkpoint, "verifier": verifier_gap(model),
           "law": [line for seed in args.seeds for t in TEMPERATURES
                   for line in law(model, args.rows, seed, t)]}
    out["seconds"] = time.perf_counter() - start
    return out


def markdown(results: dict) -> str:
    m = results["machine"]
    out = ["## Hybrid: the speculative law on long runs (issue 23): hybrid_law", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} (one thread a model, "
           f"the models in parallel processes), {m['date']}. Command: `{results['command']}`.",
           "", "Models: a corpus name trains a hybrid of benchmarks/hybrid.py's size (4 layers, "
           "d_model 128, context 256, blocks of 4, draft weight 0.3, partial noise, draft share "
           "0.25) from scratch for --minutes into --out, or reuses the one there."
           + (f" Note: {results['note']}" if results.get("note") else ""), "",
           f"{results['rows']} validation prompts of {H.PROMPT} tokens, {H.LENGTH - H.PROMPT} "
           "new tokens each, per mode, seed and temperature; row i has seed SEED + i in every "
           "mode. Self-NLL: the rows' mean AR-mode NLL under the hybrid itself (nats/token). "
           "Paired: the speculative rows minus the AR-mode rows of the same prompts and seeds, "
           "mean ± standard error, and z = mean / error (one law: |z| mostly below 2, signs "
           "changing with the seed). Verifier: the largest |p - p_ref| over every row-call of "
           "one speculative decode (32 prompts, T 0.7, layout all), p as the acceptance rule "
           "read it, p_ref from the uncached causal pass.", ""]
    for r in results["models"]:
        v = r["verifier"]
        out += [f"### {r['corpus']}", "",
                f"Checkpoint `{r['checkpoint']}`. Verifier: {v['row_calls']} row-calls, "
                f"max |p - p_ref| = {v['max_abs_gap']:.1e}.", "",
                "| seed | T | mode | self-NLL | entropy | paired NLL (z) | paired entropy (z) |",
                "|---:|---:|---|---:|---:|---:|---:|"]
        for line in r["law"]:
            paired = [f"{line[f'{w}_paired']:+.4f} ± {line[f'{w}_paired_se']:.4f} "
                      f"({line[f'{w}_z']:+.2f})" if f"{w}_z" in line else "-"
                      for w in ("nll", "entropy")]
            out.append(f"| {line['seed']} | {line['temperature']:g} | {line['mode']} | "
                       f"{line['nll']:.4f} ± {line['nll_se']:.4f} | "
                       f"{line['entropy']:.4f} ± {line['entropy_se']:.4f} | "
                       f"{paired[0]} | {paired[1]} |")
        out.append("")
    zs = [abs(line[f"{w}_z"]) for r in results["models"] for line in r["law"]
          for w in ("nll", "entropy") if f"{w}_z" in line]
    out.append(f"Over all {len(zs)} paired comparisons: largest |z| {max(zs):.2f}, "
               f"{sum(z > 2 for z in zs)} beyond 2 (about {0.046 * len(zs):.1f} expected of one "
               "law, the comparisons being close to independent normals).")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="+", help="hybrid checkpoints or corpus names")
    ap.add_argument("--minutes", type=float, default=4.0, help="training per corpus")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default=str(H.ROOT / "runs" / "hybrid-law"))
    ap.add_argument("--note", default=None, help="a line of context for the section")
    ap.add_argument("--render", action="store_true", help="only rewrite the section from "
                    "benchmarks/results/hybrid_law.json (with --note)")
    args = ap.parse_args()
    if args.render:
        path = H.ROOT / "benchmarks" / "results" / "hybrid_law.json"
        results = json.loads(path.read_text())
        results["note"] = args.note or results.get("note")
        write_json("hybrid_law", results)
        write_section("hybrid_law", markdown(results))
        return
    with ProcessPoolExecutor(len(args.targets)) as pool:
        models = list(pool.map(one_model, args.targets, [args] * len(args.targets)))
    results = {"machine": machine(), "command": "python benchmarks/hybrid_law.py " +
               " ".join(sys.argv[1:]), "rows": args.rows, "models": models,
               "note": args.note}
    write_json("hybrid_law", results)
    write_section("hybrid_law", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
