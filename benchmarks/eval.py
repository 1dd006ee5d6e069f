"""Evaluation benchmark: `redraft bench` on the core benchmark's tinyshakespeare pair.

Needs the pair and the judge (train them first, on an otherwise idle machine):

    python benchmarks/core.py --out runs/core                 # runs/core/{mdlm,ar}
    redraft train configs/shakespeare-judge.yaml train.out_dir=runs/shakespeare-judge
    python benchmarks/eval.py --pair runs/core --judge runs/shakespeare-judge

Runs `redraft bench` with the plots written to benchmarks/results/eval/, then writes the
"eval" section of BENCHMARKS.md and benchmarks/results/eval.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, write_json, write_section  # noqa: E402

from redraft.cli import main as redraft  # noqa: E402
from redraft.eval import report  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "eval"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", required=True, help="folder with the mdlm/ and ar/ runs")
    ap.add_argument("--judge", required=True, help="the judge's run folder")
    ap.add_argument("--samplers", default="ancestral,euler")
    ap.add_argument("--steps", default="8,16,64,256")
    ap.add_argument("--temperatures", default="0.9,1.0,1.1")
    ap.add_argument("--num-samples", default="32")
    ap.add_argument("--sweep", default="full")
    args = ap.parse_args()
    pair = Path(args.pair)
    argv = ["bench", str(pair / "mdlm"), str(pair / "ar"), "--judge", args.judge,
            "--samplers", args.samplers, "--steps", args.steps, "--temperatures", args.temperatures,
            "--num-samples", args.num_samples, "--sweep", args.sweep, "--mauve",
            "--out", str(OUT.relative_to(ROOT))]
    if redraft(argv) != 0:
        sys.exit("redraft bench failed")
    result = json.loads((OUT / "eval.json").read_text())
    images = {title: name for title, name in (
        ("Quality vs network calls", "quality_vs_calls.png"),
        ("Quality vs latency", "frontier.png"),
        ("Roofline", "roofline.png"), ("Diffusion vs AR by model size", "crossover.png"))
        if (OUT / name).exists()}
    body = report.markdown(result, images, image_prefix="benchmarks/results/eval/")
    write_section("eval", "## Evaluation: quality, speed and roofline (`redraft bench`)\n\n"
                  "Run from the repo root after the steps in benchmarks/eval.py (`python "
                  "benchmarks/eval.py --pair runs/core --judge runs/shakespeare-judge`).\n\n"
                  + body)
    write_json("eval", result)
    print((OUT / "report.md").read_text())


if __name__ == "__main__":
    main()
