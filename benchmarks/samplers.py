"""Sampler benchmark: every sampler's quality vs network calls and vs latency, against the AR
twin with its KV cache, on two pairs (`redraft bench` does the measuring):

- tinyshakespeare (char): the core benchmark's 8-minute pair, judged by the larger judge
  (configs/shakespeare-judge.yaml);
- Python (the default `stdlib` corpus, bytes): the same model shapes trained here for the same
  budget (the diffusion model with prompt conditioning and condition dropout, so guidance has
  something to contrast), judged by its own AR twin (no larger Python judge exists here: the
  AR rows' gen-ppl is then the twin scoring itself, which flatters AR) and measured by the
  parse rate of infilled held-out functions (eval/infilling.py).

    python benchmarks/core.py --out runs/core                                # once
    redraft train configs/shakespeare-judge.yaml train.out_dir=runs/shakespeare-judge
    python benchmarks/samplers.py --pair runs/core --judge runs/shakespeare-judge \\
        --python-pair runs/python        # trains runs/python/{mdlm,ar} when missing

Writes the "samplers" section of BENCHMARKS.md, benchmarks/results/samplers.json and the
plots and reports under benchmarks/results/samplers/. Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, machine, write_json, write_section  # noqa: E402

from redraft.cli import main as redraft  # noqa: E402
from redraft.config import config_from_dict  # noqa: E402
from redraft.eval import report  # noqa: E402
from redraft.train import train  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "samplers"
SPECS = [
    "ancestral",
    "first_hitting",
    "confidence:steps=16/64",
    "confidence:measure=margin+steps=64",
    "confidence:block=32+steps=64",
    "threshold:threshold=0.9",
    "threshold:threshold=0.7",
    "threshold:threshold=0.5",
    "remask:eta=0.04",
]
PYTHON_EXTRA = ["confidence:guidance=1.0+steps=64"]


def python_config(objective: str, minutes: float, out: Path) -> dict:
    cfg = {
        "data": {"corpus": "stdlib", "tokenizer": "byte", "val_fraction": 0.1},
        "model": {"n_layer": 4, "n_head": 4, "d_model": 128, "seq_len": 256},
        "diffusion": {"objective": objective},
        "train": {"batch_size": 16, "time_budget_s": minutes * 60, "max_steps": 10**9,
                  "lr": 2e-3, "warmup_steps": 100, "eval_every": 500, "eval_batches": 8,
                  "precision": "auto", "out_dir": str(out / objective),
                  "progress": sys.stderr.isatty()},
    }
    if objective == "mdlm":
        cfg["diffusion"].update(cond_prefix_max=64, cond_dropout=0.1)
    return cfg


def bench(name: str, pair: Path, judge: str, specs: list[str], args, code: bool) -> dict:
    out = OUT / name
    if args.reuse and (out / "eval.json").is_file():
        print(f"{name}: reusing {out / 'eval.json'}", file=sys.stderr)
        return json.loads((out / "eval.json").read_text())
    argv = ["bench", str(pair / "mdlm"), str(pair / "ar"), "--judge", judge,
            "--samplers", ",".join(specs), "--steps", args.steps,
            "--temperatures", args.temperatures, "--num-samples", str(args.num_samples),
            "--sweep", "none", "--eval-batches", str(args.eval_batches),
            "--code" if code else "--no-code", "--out", str(out.relative_to(ROOT))]
    if redraft(argv) != 0:
        sys.exit(f"redraft bench failed on {name}")
    return json.loads((out / "eval.json").read_text())


ENTROPY_WINDOW = 0.25  # nats: "comparable entropy" when no temperature pair brackets it


def headline(result: dict) -> dict:
    """The best diffusion setting for quality per latency, against the AR twin.

    Quality is gen-ppl at the held-out text's entropy (interpolated between the temperatures
    that bracket it), so that no setting wins by being repetitive; settings whose entropy the
    temperatures do not bracket are left out (they are in the table). When the AR twin or no
    diffusion setting is bracketed, T = 1 figures are compared instead, among the settings
    whose entropy is within ENTROPY_WINDOW nats of the AR twin's (`matched` says which).
    "Best": the lowest gen-ppl among the settings at least as fast as AR at batch 1, else the
    lowest gen-ppl x latency product."""
    runs = [r for r in result["runs"] if r["gen_ppl"]]

    def bracketed(ar: bool):
        return any(r["gen_ppl_at_ref_entropy"] for r in runs if (r["sampler"] == "ar-kv") == ar)

    matched = bracketed(True) and bracketed(False)

    def ppl(r):
        return r["gen_ppl_at_ref_entropy"] if matched else r["gen_ppl"]

    pool = [r for r in runs if ppl(r) and (matched or r["temperature"] == 1.0)]
    ar = next(r for r in pool if r["sampler"] == "ar-kv")
    diff = [r for r in pool if r["sampler"] != "ar-kv"
            and (matched or abs(r["entropy"] - ar["entropy"]) <= ENTROPY_WINDOW)]
    fast = [r for r in diff if r["latency_s_batch1"] <= ar["latency_s_batch1"]]
    best = (min(fast, key=ppl) if fast else
            min(diff, key=lambda r: ppl(r) * r["latency_s_batch1"]))
    bar = [r for r in fast if ppl(r) <= ppl(ar)]
    return {"matched_entropy": matched, "sampler": best["sampler"], "steps": best["steps"],
            "nfe": best["nfe"], "temperature": best["temperature"], "gen_ppl": ppl(best),
            "entropy": best["entropy"], "latency_s_batch1": best["latency_s_batch1"],
            "ar_gen_ppl": ppl(ar), "ar_entropy": ar["entropy"],
            "ar_latency_s_batch1": ar["latency_s_batch1"],
            "gen_ppl_ratio_vs_ar": ppl(best) / ppl(ar),
            "latency_ratio_vs_ar": best["latency_s_batch1"] / ar["latency_s_batch1"],
            "bar_met": bool(bar),
            "bar_settings": [f"{r['sampler']} {r['steps'] or ''}" for r in bar]}


def flat_runs(corpus: str, result: dict) -> list[dict]:
    return [{"corpus": corpus, "model": "ar" if r["sampler"] == "ar-kv" else "diffusion",
             "sampler": r["sampler"], "steps": r["steps"], "temperature": r["temperature"],
             "nfe": r["nfe"], "gen_ppl": r["gen_ppl"],
             "gen_ppl_at_ref_entropy": r["gen_ppl_at_ref_entropy"], "entropy": r["entropy"],
             "latency_s_batch1": r["latency_s_batch1"],
             "tokens_per_s_batch16": r["tokens_per_s_batch16"],
             "parse_rate": r.get("infill_parse_rate"),
             "sample_parse_rate": r.get("parse_rate")} for r in result["runs"]]


def section(results: dict[str, dict], heads: dict[str, dict], args) -> str:
    m = machine()
    lines = [
        "## Samplers: quality vs network calls and latency (`redraft bench`)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['date']}. Command: "
        f"`python benchmarks/samplers.py --pair runs/core --judge runs/shakespeare-judge "
        f"--python-pair runs/python --minutes {args.minutes:g}` (the Python pair: 4 layers x "
        f"d_model 128, context 256, {args.minutes:g} min of training each on `stdlib` bytes; "
        f"{args.num_samples} samples of 256 tokens per setting, "
        f"temperatures {args.temperatures}, likelihood on {args.eval_batches} validation "
        "batches). Settings are `name[:knobs]` (see `redraft samplers`); 'steps' is the step "
        "budget (none for adaptive samplers), 'calls/sample' the network calls each sample "
        "actually used. Settings whose entropy falls far below the held-out text's (here the "
        "confidence-ranked ones: confidence, threshold) score a low gen-ppl by repeating "
        "themselves (on Python, down to entropy 0: runs of one character); only gen-ppl at "
        "comparable entropy ranks samplers, which is what the headline lines use.",
        "",
    ]
    for corpus, head in heads.items():
        verdict = ("met" if head["bar_met"] else "not met")
        at = ("at the held-out text's entropy" if head["matched_entropy"] else
              f"at T=1, entropy {head['entropy']:.2f} vs the AR twin's "
              f"{head['ar_entropy']:.2f} (the temperatures do not bracket the held-out "
              f"entropy, so settings within {ENTROPY_WINDOW} nats of AR's are compared)")
        lines += [
            f"**{corpus}**: best quality per latency: `{head['sampler']}`"
            f"{' ' + str(head['steps']) + ' steps' if head['steps'] else ''} "
            f"({head['nfe']:.0f} calls/sample): gen-ppl {head['gen_ppl']:.1f} {at} in "
            f"{head['latency_s_batch1']:.3f} s at batch 1, vs the AR twin's "
            f"{head['ar_gen_ppl']:.2f} in "
            f"{head['ar_latency_s_batch1']:.3f} s: {head['gen_ppl_ratio_vs_ar']:.1f}x the "
            f"gen-ppl at {head['latency_ratio_vs_ar']:.2f}x the latency. Bar (a diffusion "
            f"setting with the AR twin's gen-ppl at lower latency): {verdict}.",
            "",
        ]
    for corpus, result in results.items():
        images = {title: name for title, name in (
            ("Quality vs network calls", "quality_vs_calls.png"),
            ("Quality vs latency", "frontier.png")) if (OUT / corpus / name).exists()}
        body = report.markdown({**result, "crossovers": []}, images,
                               image_prefix=f"benchmarks/results/samplers/{corpus}/")
        lines += [f"### {corpus}", "", body]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", required=True, help="tinyshakespeare pair folder (mdlm/, ar/)")
    ap.add_argument("--judge", required=True, help="the tinyshakespeare judge's run folder")
    ap.add_argument("--python-pair", required=True, help="Python pair folder (trained when "
                                                         "missing)")
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget per model")
    ap.add_argument("--steps", default="16,64,256")
    ap.add_argument("--temperatures", default="1.0,1.2")
    ap.add_argument("--num-samples", type=int, default=16)
    ap.add_argument("--eval-batches", type=int, default=8)
    ap.add_argument("--reuse", action="store_true", help="keep a corpus's bench results when "
                                                          "its eval.json exists (a rerun after "
                                                          "an interruption)")
    args = ap.parse_args()
    py = Path(args.python_pair)
    for objective in ("mdlm", "ar"):
        if not (py / objective).exists():
            print(f"training the Python {objective} model for {args.minutes:g} min ...",
                  file=sys.stderr)
            train(config_from_dict(python_config(objective, args.minutes, py)))
    results = {"tinyshakespeare": bench("tinyshakespeare", Path(args.pair), args.judge, SPECS,
                                        args, code=False),
               "python": bench("python", py, str(py / "ar"), SPECS + PYTHON_EXTRA, args,
                               code=True)}
    heads = {corpus: headline(r) for corpus, r in results.items()}
    runs = [row for corpus, r in results.items() for row in flat_runs(corpus, r)]
    write_json("samplers", {"machine": machine(), "headline": heads,
                            "judges": {c: r["judge"] for c, r in results.items()},
                            "reference": {c: r["reference"] for c, r in results.items()},
                            "infill_tasks": results["python"].get("infill_tasks"),
                            "runs": runs})
    write_section("samplers", section(results, heads, args))
    print(json.dumps(heads, indent=1))


if __name__ == "__main__":
    main()
