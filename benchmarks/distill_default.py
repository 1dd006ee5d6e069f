"""Distil the shipped default model (SDTT rounds, redraft.distill) and compare its students
with the teacher on gen-ppl and entropy at few steps.

    python benchmarks/distill_default.py                  # distil (or resume) + evaluate
    python benchmarks/distill_default.py --no-distill     # evaluate an existing run folder

The distillation is `redraft distill default --resume ...` with this script's --rounds,
--steps-per-round, ... into --run (default /tmp/distill-runs/default): re-running it resumes
or, when every round is done, reuses the run. Evaluation: --num-samples unconditional samples
of --length tokens per (model, steps), ancestral sampler at temperature 1, seeds 0..n-1,
judged by the AR twin (gen-ppl; the judge favours its own kind of text) beside the samples'
mean unigram entropy (nats), as benchmarks/default_model.py reports them.
Writes benchmarks/results/distill_default.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_json  # noqa: E402

import redraft  # noqa: E402
from redraft.checkpoint import list_checkpoints  # noqa: E402
from redraft.distill import DistillSettings, distill  # noqa: E402
from redraft.eval import quality  # noqa: E402
from redraft.eval.judge import load_judge, texts_of  # noqa: E402


def quality_of(model, steps: int, n: int, length: int, judge) -> dict:
    start = time.perf_counter()
    gen = model.sample([[]] * n, length=length, seeds=list(range(n)), steps=steps)
    seconds = time.perf_counter() - start
    eos = model.tokenizer.eos_id
    rows = [[int(v) for v in r] for r in gen.tokens.tolist()]
    rows = [r[:r.index(eos)] if eos in r else r for r in rows]
    texts = texts_of(rows, model.tokenizer)
    ppl, _, tokens = judge.gen_ppl(texts)
    return {"steps": steps, "gen_ppl": ppl, "entropy": quality.sample_stats(rows)["entropy"],
            "judge_tokens": tokens, "sample_seconds": seconds, "example": texts[0][:160]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="/tmp/distill-runs/default")
    p.add_argument("--no-distill", dest="distill", action="store_false")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--teacher-steps", type=int, default=64)
    p.add_argument("--steps-per-round", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--length", type=int, default=128, help="distillation window")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--sample-length", type=int, default=256)
    p.add_argument("--eval-steps", default="8,64", help="the teacher's step counts")
    p.add_argument("--judge", default="default-ar")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = DistillSettings(rounds=args.rounds, teacher_steps=args.teacher_steps,
                               steps_per_round=args.steps_per_round, batch_size=args.batch_size,
                               length=args.length, lr=args.lr, warmup_steps=args.warmup_steps,
                               device=args.device, threads=args.threads)
    res = {"machine": machine(), "command": "python benchmarks/distill_default.py "
           + " ".join(sys.argv[1:]), "settings": settings.record(), "run": args.run}
    if args.distill:
        start = time.perf_counter()
        distill("default", args.run, settings, resume=True)
        res["distill_wall_s"] = time.perf_counter() - start
    rounds = sorted(Path(args.run).glob("round-*"), key=lambda d: int(d.name.split("-")[1]))
    logs = [json.loads(line) for d in rounds for line in
            (d / "metrics.jsonl").read_text().splitlines()]
    res["distill_train_s"] = sum(max((r["elapsed_s"] for r in logs if r["round"] == k),
                                     default=0.0) for k in range(1, len(rounds) + 1))
    judge = load_judge(args.judge)
    n, length = args.num_samples, args.sample_length
    teacher = redraft.load("default")
    rows = []
    for steps in [int(s) for s in args.eval_steps.split(",") if s]:
        rows.append({"model": "teacher", **quality_of(teacher, steps, n, length, judge)})
        print(json.dumps(rows[-1]), flush=True)
    for d in rounds:
        ckpt = list_checkpoints(d)[-1]
        meta = json.loads((ckpt / "config.json").read_text())["distill"]
        student = redraft.load(str(ckpt))
        for steps in sorted({meta["student_steps"], 8}):
            rows.append({"model": f"round-{meta['round']}", "checkpoint": str(ckpt),
                         **quality_of(student, steps, n, length, judge)})
            print(json.dumps(rows[-1]), flush=True)
    res["samples"] = {"count": n, "length": length, "sampler": "ancestral",
                      "temperature": 1.0, "judge": args.judge}
    res["rows"] = rows
    print(write_json("distill_default", res))


if __name__ == "__main__":
    main()
