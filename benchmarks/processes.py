"""Process x objective benchmark on tinyshakespeare (char-level), the core benchmark's model.

Trains one model per combination for the same wall clock, then reports the validation
bits/char bound (each objective's full bound, prior term included), training tokens/s, and
sampling quality at 16/64/256 steps: generative perplexity under a judge (redraft's
definition, eval/judge.py) beside the samples' unigram entropy (eval/quality.py; the
validation text's own is given for reference: far lower means repetitive samples, far higher
means noise). The judge is `--judge RUN` (the larger, longer-trained AR model of
configs/shakespeare-judge.yaml); without it an AR twin is trained for the same budget first
and judges instead.

Writes the "processes" section of BENCHMARKS.md and benchmarks/results/processes.json.
Run on an otherwise idle machine:  python benchmarks/processes.py [--minutes 8] [--judge RUN]
(about combinations (+ 1 without --judge) x minutes of training, plus evaluation and sampling).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, machine, need_tinyshakespeare, write_json, write_section  # noqa: E402
from core import config  # noqa: E402

from redraft.config import config_from_dict  # noqa: E402
from redraft.data import load_data  # noqa: E402
from redraft.eval.judge import RedraftJudge, texts_of  # noqa: E402
from redraft.eval.quality import unigram_entropy  # noqa: E402
from redraft.likelihood import evaluate  # noqa: E402
from redraft.model import load  # noqa: E402
from redraft.train import train  # noqa: E402

PARTIAL = ROOT / "runs" / "processes-partial.json"
COMBOS = ["mask-mdlm", "mask-sedd", "uniform-sedd", "uniform-udlm", "mixture-sedd",
          "mixture-udlm"]


def combo_config(combo: str, minutes: float, work: Path, precision: str) -> dict:
    process, objective = combo.split("-")
    cfg = config(objective, minutes, work, work / "cache", precision)
    cfg["diffusion"].update(process=process,
                            schedule_eps=1e-3 if objective == "sedd" and process != "mask"
                            else 0.0)
    cfg["model"]["time_conditioning"] = process != "mask"
    cfg["train"]["out_dir"] = str(work / combo)
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=8.0, help="training wall clock per model")
    ap.add_argument("--combos", default=",".join(COMBOS),
                    help="comma-separated process-objective pairs")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--mc-samples", type=int, default=4, help="t draws per validation window")
    ap.add_argument("--max-batches", type=int, default=None, help="validation batches (all)")
    ap.add_argument("--samples", type=int, default=16, help="samples per step count")
    ap.add_argument("--steps", default="16,64,256")
    ap.add_argument("--judge", default=None, help="AR run or checkpoint that judges samples "
                                                  "(default: train an AR twin first)")
    ap.add_argument("--resume", action="store_true",
                    help=f"reuse the combinations already in {PARTIAL.relative_to(ROOT)} "
                         "(written after each one) from an interrupted run with the same "
                         "--minutes")
    args = ap.parse_args()
    need_tinyshakespeare()
    combos = [c for c in args.combos.split(",") if c]
    steps_list = [int(s) for s in args.steps.split(",")]
    work = Path(tempfile.mkdtemp(prefix="redraft-processes-"))

    if args.judge:
        judge_path = args.judge
    else:
        print(f"training the AR judge for {args.minutes} min ...", file=sys.stderr)
        ar_cfg = config_from_dict(config("ar", args.minutes, work, work / "cache",
                                         args.precision))
        judge_path = train(ar_cfg).checkpoint
    judge = RedraftJudge(judge_path)
    tok = judge.tokenizer
    _, data = load_data(judge.ck.config.data, 256, tok)
    to_bpc = 1 / math.log(2) / data.val_bytes_per_token
    train_counts = np.bincount(np.asarray(data.train), minlength=tok.vocab_size) + 1.0
    unigram_nats = float(-np.log(train_counts / train_counts.sum())[np.asarray(data.val)].mean())
    val = np.asarray(data.val)
    val_windows = [val[i:i + 256].tolist() for i in range(0, len(val) - 256, 256)]
    val_entropy = unigram_entropy(val_windows)

    runs, done = [], {}
    if args.resume and PARTIAL.is_file():
        saved = json.loads(PARTIAL.read_text())
        if saved.get("minutes") == args.minutes:
            done = {f"{r['process']}-{r['objective']}": r for r in saved["runs"]}
    for combo in combos:
        if combo in done:
            print(f"{combo}: reusing the result of the interrupted run", file=sys.stderr)
            runs.append(done[combo])
            continue
        cfg = config_from_dict(combo_config(combo, args.minutes, work, args.precision))
        print(f"training {combo} for {args.minutes} min ...", file=sys.stderr)
        res = train(cfg)
        ck = load(res.checkpoint)
        nats, err, windows = evaluate(ck.backbone, data.val, ck.config, tok.mask_id, tok.eos_id,
                                      args.max_batches, samples=args.mc_samples)
        diff = ck.config.diffusion
        quality = []
        for steps in steps_list:
            g = ck.sample([[]] * args.samples, length=256, seeds=list(range(args.samples)),
                          steps=steps)
            texts = texts_of(g.tokens, tok)
            quality.append({
                "steps": steps, "seconds": g.seconds, "nfe": g.nfe,
                "gen_ppl": judge.gen_ppl(texts)[0],
                "entropy": unigram_entropy(g.tokens.tolist()),
                "sample": texts[0][:200],
            })
        run = {"process": diff.process, "objective": diff.objective,
               "sampler": ck.objective.default_sampler, "steps": res.step,
               "val_bits_per_char": nats * to_bpc, "val_stderr_bits": err * to_bpc,
               "val_windows": windows, "train_tokens_per_s": res.train_tokens_per_s,
               "params": res.params, "sampling": quality}
        runs.append(run)
        print({k: v for k, v in run.items() if k != "sampling"}, file=sys.stderr)
        PARTIAL.parent.mkdir(parents=True, exist_ok=True)
        tmp = PARTIAL.with_suffix(".tmp")
        tmp.write_text(json.dumps({"minutes": args.minutes, "runs": runs}, indent=1))
        tmp.replace(PARTIAL)

    judge_nats, _, _ = evaluate(judge.model, data.val, judge.ck.config, tok.mask_id,
                                tok.eos_id, args.max_batches)
    ref_ppl = judge.gen_ppl(texts_of(val_windows[:: max(1, len(val_windows) // 64)], tok))[0]
    summary = {
        "machine": machine(),
        "command": f"python benchmarks/processes.py --minutes {args.minutes:g}"
                   + (f" --combos {args.combos}" if combos != COMBOS else "")
                   + (" --judge RUN" if args.judge else ""),
        "corpus": "tinyshakespeare/input.txt, char-level, last 10% validation",
        "model": "4 layers, 4 heads, d_model 128, context 256, batch 16 sequences",
        "unigram_bits_per_char": unigram_nats * to_bpc,
        "judge": str(judge.name), "judge_params": judge.params,
        "judge_val_bits_per_char": judge_nats * to_bpc,
        "val_gen_ppl": ref_ppl,
        "val_entropy": val_entropy,
        "quality_metric": "gen-ppl under the judge and unigram entropy (nats, per-sample "
                          "mean), redraft's definitions (eval/judge.py, eval/quality.py)",
        "runs": runs,
    }
    write_json("processes", summary)
    m = summary["machine"]
    head = " | ".join(f"{s} steps: gen-ppl / H" for s in steps_list)
    lines = [
        "## Noise processes x objectives (tinyshakespeare, char-level)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['date']}. Command: "
        f"`{summary['command']}`. Model: {summary['model']}, each trained for "
        f"{args.minutes:g} minutes. Validation: the full bound of each objective (prior term "
        f"included), {args.mc_samples} t draws per window, ± one standard error.",
        "",
        f"Baselines: unigram {summary['unigram_bits_per_char']:.3f} bits/char; the judge "
        f"({judge.params / 1e6:.2g}M parameters, exact NLL) "
        f"{summary['judge_val_bits_per_char']:.3f} bits/char. Sampling quality: "
        f"{args.samples} samples of 256 characters with the default sampler (ancestral for "
        "mdlm/udlm, analytic for sedd): gen-ppl under the judge (per character; lower is "
        "more like the data, but repetitive text also scores low) and unigram entropy H "
        f"(nats). Held-out text: gen-ppl {ref_ppl:.2f}, H {val_entropy:.2f}.",
        "",
        f"| process | objective | val bits/char (bound) | train tokens/s | {head} |",
        "|---|---|---:|---:|" + "---:|" * len(steps_list),
    ]
    for r in runs:
        cells = " | ".join(f"{q['gen_ppl']:.2f} / {q['entropy']:.2f}" for q in r["sampling"])
        lines.append(f"| {r['process']} | {r['objective']} | {r['val_bits_per_char']:.3f} ± "
                     f"{r['val_stderr_bits']:.3f} | {r['train_tokens_per_s']:,.0f} | {cells} |")
    write_section("processes", "\n".join(lines))
    PARTIAL.unlink(missing_ok=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
