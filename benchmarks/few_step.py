"""Few-step diffusion: distilled students against their teachers on quality frontiers, tokens
per forward and HumanEval single-line infilling (`redraft distill` + `redraft bench` do the
work; this script runs them and judges the bars).

    python benchmarks/few_step.py            # ~15 min on 2 cores; --reuse after a break

1. Models. tinyshakespeare: a char masked-diffusion teacher and its AR twin, trained here
   (4 layers x d_model 128, context 128, --minutes each). The stdlib: the shipped default
   model (teacher) and default-ar. Students: `redraft distill TEACHER --rounds 3
   --teacher-steps 64` (SDTT rounds: 32-, 16-, then 8-step students; the last is "student").
2. Frontiers (`redraft bench --tasks frontier`): teacher and student at 4/8/16/32/64 ancestral
   steps and the AR twin, each over --temperatures, gen-ppl judged by the corpus's AR twin
   (no larger judge exists here: the AR rows are the twin scoring itself, which flatters
   them), a 4-gram sampler of the training split as the naive floor; tokens per forward per
   point.
3. HumanEval (`redraft bench --tasks humaneval-infill`): single-line infilling of
   --humaneval-tasks problems (one masked line each, spread over the 164), greedy fills in
   oracle-length holes by the default model at 8/16/32/oracle steps, the student at
   8/16/oracle, and default-ar writing from the prefix; pass@1, exact, parse, batch-1 latency.

Writes the "few_step" section of BENCHMARKS.md, benchmarks/results/few_step.json and the
bench reports and plots under benchmarks/results/few_step/.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, machine, need_tinyshakespeare, write_json, write_section  # noqa: E402

from redraft.cli import main as redraft  # noqa: E402
from redraft.config import config_from_dict  # noqa: E402
from redraft.train import train  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "few_step"
REL = "benchmarks/results/few_step"
STEPS = [4, 8, 16, 32, 64]


def shakespeare_config(objective: str, minutes: float, out: Path, threads: int) -> dict:
    return {
        "data": {"corpus": str(need_tinyshakespeare()), "tokenizer": "char",
                 "val_fraction": 0.1, "cache_dir": str(out / "cache")},
        "model": {"n_layer": 4, "n_head": 4, "d_model": 128, "seq_len": 128},
        "diffusion": {"objective": objective},
        "train": {"batch_size": 32, "time_budget_s": minutes * 60, "max_steps": 10**9,
                  "lr": 2e-3, "warmup_steps": 100, "eval_every": 10**6, "eval_batches": 4,
                  "out_dir": str(out / objective), "progress": sys.stderr.isatty(),
                  "threads": threads},
    }


def run(argv: list[str]) -> None:
    print("redraft " + shlex.join(argv), file=sys.stderr)
    if redraft(argv) != 0:
        sys.exit(f"failed: redraft {shlex.join(argv)}")


def student(teacher: str, out: Path, args) -> str:
    """The last round's checkpoint of `redraft distill TEACHER` (run unless --reuse finds it)."""
    last = out / f"round-{args.rounds}"
    if not (args.reuse and last.is_dir() and any(last.glob("ckpt-*"))):
        run(["distill", teacher, "--out", str(out), "--rounds", str(args.rounds),
             "--teacher-steps", "64", "--steps-per-round", str(args.distill_steps),
             "--batch-size", str(args.distill_batch), "--length", str(args.distill_length),
             "--lr", str(args.lr), "--warmup-steps", "5", "--threads", str(args.threads),
             "--overwrite"])
    return str(last)


def bench(name: str, models: list[str], tasks: str, extra: list[str], args) -> dict:
    out = OUT / name
    if not (args.reuse and (out / "eval.json").is_file()):
        run(["bench", *models, "--tasks", tasks, "--sweep", "none", "--out",
             str(out.relative_to(ROOT)), *extra])
    return json.loads((out / "eval.json").read_text())


def frontier(name: str, teacher: str, stud: str, ar: str, args) -> dict:
    return bench(name, [teacher, stud, ar], "frontier", [
        "--judge", ar, "--samplers", "ancestral", "--steps", ",".join(map(str, STEPS)),
        "--temperatures", args.temperatures, "--num-samples", str(args.num_samples),
        "--length", str(args.length), "--ngram", "4"], args)["frontier"]


def curve(section: dict, model: str, steps) -> dict | None:
    return next((c for c in section["curves"] if c["model"] == model and c["steps"] == steps),
                None)


def bar_a(section: dict, teacher: str, stud: str) -> dict:
    """Student at 8 steps vs teacher at 64: gen-ppl at the held-out text's entropy; when the
    temperatures do not bracket it for both, the T = 1 points (entropy stated beside)."""
    s8, t64 = curve(section, stud, 8), curve(section, teacher, 64)
    a, b = s8["gen_ppl_at_ref_entropy"], t64["gen_ppl_at_ref_entropy"]
    if a is not None and b is not None:
        return {"how": "gen-ppl at the held-out entropy", "student_8": a, "teacher_64": b,
                "teacher_8": curve(section, teacher, 8)["gen_ppl_at_ref_entropy"],
                "met": a <= b}
    p = {c: next(x for x in cv["points"] if x["temperature"] == 1.0) for c, cv in
         (("s", s8), ("t", t64))}
    return {"how": "T=1 points (the temperatures do not bracket the held-out entropy)",
            "student_8": p["s"]["gen_ppl"], "teacher_64": p["t"]["gen_ppl"],
            "student_8_entropy": p["s"]["entropy"], "teacher_64_entropy": p["t"]["entropy"],
            "met": p["s"]["gen_ppl"] <= p["t"]["gen_ppl"]
            and p["s"]["entropy"] >= p["t"]["entropy"] - 0.05}


def humaneval(args, stud: str) -> dict:
    common = ["--humaneval-tasks", str(args.humaneval_tasks)]
    teacher = bench("humaneval-teacher", ["default"], "humaneval-infill",
                    ["--steps", "8,16,32", *common], args)["humaneval-infill"]
    student_ = bench("humaneval-student", [stud], "humaneval-infill",
                     ["--steps", "8,16", *common], args)["humaneval-infill"]
    ar = bench("humaneval-ar", ["default-ar"], "humaneval-infill", common,
               args)["humaneval-infill"]
    runs = ([{"role": "teacher", **r} for r in teacher["runs"]]
            + [{"role": "student", **r} for r in student_["runs"]]
            + [{"role": "ar", **r} for r in ar["runs"]])
    return {"tasks": teacher["tasks"], "runs": runs}


def bar_b(he: dict) -> dict:
    def find(role, steps):
        return next(r for r in he["runs"] if r["role"] == role and r["steps"] == steps)

    s8, t32, ar = find("student", 8), find("teacher", 32), find("ar", None)
    return {"student_8_pass": s8["pass_at_1"], "teacher_32_pass": t32["pass_at_1"],
            "student_8_s_per_fill": s8["seconds_median"],
            "ar_s_per_fill": ar["seconds_median"],
            "pass_met": s8["pass_at_1"] >= t32["pass_at_1"],
            "speed_met": s8["seconds_median"] < ar["seconds_median"]}


def frontier_table(section: dict) -> list[str]:
    lines = ["| model | steps | gen-ppl @ held-out entropy | T=1: entropy, gen-ppl | "
             "tokens/forward |", "|---|---|---|---|---|"]
    for c in section["curves"]:
        at = c["gen_ppl_at_ref_entropy"]
        one = next((p for p in c["points"] if p["temperature"] == 1.0), c["points"][-1])
        tpf = one.get("tokens_per_forward")
        lines.append(f"| {c['model']} | {c['steps'] or '-'} | "
                     f"{'-' if at is None else format(at, '.3g')} | {one['entropy']:.3g}, "
                     f"{one['gen_ppl']:.3g} | {'-' if tpf is None else format(tpf, '.3g')} |")
    return lines


def section_md(res: dict, args, wall: float) -> str:
    m = res["machine"]
    lines = ["## Few-step diffusion: distilled students, frontiers, HumanEval infilling", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['date']}; "
             f"`python benchmarks/few_step.py {res['argv']}` ({wall / 60:.1f} min). Students: "
             f"`redraft distill TEACHER --rounds {args.rounds} --teacher-steps 64 "
             f"--steps-per-round {args.distill_steps} --batch-size {args.distill_batch} "
             f"--length {args.distill_length} --lr {args.lr:g}` (SDTT; round 3 samples in 8 "
             "steps). Frontiers: "
             f"{args.num_samples} samples of {args.length} tokens per point, ancestral "
             f"sampler, temperatures {args.temperatures}, judged by the corpus's AR twin "
             "(which flatters the AR rows: it scores itself), naive floor a 4-gram sampler "
             "of the training split. Tokens per forward: new tokens / network evaluations per "
             "row (sampling/tpf.py). tinyshakespeare pair (" + ", ".join(
                 f"{o}: {t['steps']} optimiser steps in {args.minutes:g} min, "
                 f"{t['val_bits_per_char']:.2f} bits/char" for o, t in
                 res["shakespeare_models"].items()) + ")." + (
                 f" Note: {res['note']}" if res["note"] else ""), ""]
    for corpus, a in res["bar_a"].items():
        lines.append(f"- Bar (a) on {corpus}: student at 8 steps {a['student_8']:.3g} vs "
                     f"teacher at 64 steps {a['teacher_64']:.3g} ({a['how']}): "
                     f"**{'met' if a['met'] else 'not met'}**"
                     + (f" (the teacher itself at 8 steps: {a['teacher_8']:.3g})"
                        if a.get("teacher_8") else "") + ".")
    b = res["bar_b"]
    lines += [f"- Bar (b) HumanEval single-line pass@1: student at 8 steps "
              f"{b['student_8_pass']:.3f} vs teacher at 32 steps {b['teacher_32_pass']:.3f}: "
              f"**{'met' if b['pass_met'] else 'not met'}**"
              f"{' (both 0: it says nothing)' if b['teacher_32_pass'] == 0 else ''}; "
              f"one fill at batch 1: student at 8 "
              f"steps {b['student_8_s_per_fill']:.3f} s vs the AR twin writing the line "
              f"{b['ar_s_per_fill']:.3f} s (medians): "
              f"**{'met' if b['speed_met'] else 'not met'}**.",
              "- Bar (c): the frontier plots with the naive floor are below.", ""]
    for corpus, sec in res["frontiers"].items():
        lines += [f"### Frontier: {corpus}", "", *frontier_table(sec), "",
                  f"![{corpus} frontier]({REL}/{corpus}/task_frontier.png)", ""]
    he = res["humaneval"]
    lines += [f"### HumanEval single-line infilling ({he['tasks']} tasks, greedy)", "",
              "| model | steps | pass@1 | exact | parse | s/fill (median, batch 1) | "
              "calls/fill |", "|---|---|---|---|---|---|---|"]
    for r in he["runs"]:
        lines.append(f"| {r['role']} ({r['model']}) | {r['steps'] or '-'} | "
                     f"{r['pass_at_1']:.3f} | {r['exact']:.3f} | {r['parse_rate']:.3f} | "
                     f"{r['seconds_median']:.3f} | {r['calls_mean']:.3g} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/few_step", help="folder for the trained models")
    ap.add_argument("--minutes", type=float, default=1.5,
                    help="training budget of each tinyshakespeare model")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--distill-steps", type=int, default=30, help="optimiser steps per round")
    ap.add_argument("--lr", type=float, default=3e-4, help="distillation learning rate")
    ap.add_argument("--distill-batch", type=int, default=8)
    ap.add_argument("--distill-length", type=int, default=128)
    ap.add_argument("--temperatures", default="0.8,1.0")
    ap.add_argument("--num-samples", type=int, default=8)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--humaneval-tasks", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: a shared machine's other work does not stall "
                         "OpenMP's spinning threads)")
    ap.add_argument("--note", default="", help="a remark for the section (e.g. the load)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep models, students and bench results already written")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    runs = ROOT / args.runs
    shk = runs / "shakespeare"
    for objective in ("mdlm", "ar"):
        if not (args.reuse and (shk / objective).is_dir()):
            train(config_from_dict(shakespeare_config(objective, args.minutes, shk,
                                                      args.threads)))
    students = {"tinyshakespeare": student(str(shk / "mdlm"), runs / "student-shakespeare",
                                           args),
                "stdlib": student("default", runs / "student-stdlib", args)}
    teachers = {"tinyshakespeare": (str(shk / "mdlm"), str(shk / "ar")),
                "stdlib": ("default", "default-ar")}
    fronts, bars = {}, {}
    for corpus, (teacher, ar) in teachers.items():
        sec = frontier(corpus, teacher, students[corpus], ar, args)
        names = [c["model"] for c in sec["curves"]]
        # curve names are objective:run-folder; the teacher comes first, the student second
        t_name, s_name = names[0], next(n for n in names if n != names[0])
        fronts[corpus] = sec
        bars[corpus] = bar_a(sec, t_name, s_name)
    he = humaneval(args, students["stdlib"])
    wall = time.perf_counter() - t0
    previous = ROOT / "benchmarks" / "results" / "few_step.json"
    if args.reuse and previous.is_file():  # the time of the runs whose results were reused too
        wall += json.loads(previous.read_text()).get("seconds", 0.0)
    trained = {}
    for objective in ("mdlm", "ar"):
        rows = [json.loads(line) for line in (shk / objective / "metrics.jsonl").open()]
        last = [r for r in rows if "val_bits_per_byte" in r][-1]
        trained[objective] = {"steps": last["step"],
                              "val_bits_per_char": last["val_bits_per_byte"]}
    argv = sys.argv[1:]
    if "--note" in argv:  # the note has its own line in the section
        i = argv.index("--note")
        argv = argv[:i] + argv[i + 2:]
    res = {"machine": machine(), "argv": shlex.join(argv), "seconds": wall,
           "note": args.note, "shakespeare_models": trained, "students": students,
           "bar_a": bars, "bar_b": bar_b(he), "frontiers": fronts,
           "humaneval": he}
    write_json("few_step", res)
    write_section("few_step", section_md(res, args, wall))
    print(json.dumps({"bar_a": bars, "bar_b": res["bar_b"], "minutes": wall / 60}, indent=1))


if __name__ == "__main__":
    main()
