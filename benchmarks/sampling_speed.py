"""The core benchmark's sampling rows (diffusion at 16/64/256 steps, the AR twin with its KV
cache; batch 1 and 16; 256-token canvases, or the model's context if shorter) on the shipped
models, timed by whichever redraft is first on the path: run it for two checkouts in one
command to compare them on the same machine at the same time.

    for i in 1 2 3; do
      PYTHONPATH=/tmp/before/src python benchmarks/sampling_speed.py --label before --out r.jsonl
      python benchmarks/sampling_speed.py --label after --out r.jsonl
    done
    python benchmarks/sampling_speed.py --summary r.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROWS = (("diffusion, 16 steps", "default", 16), ("diffusion, 64 steps", "default", 64),
        ("diffusion, 256 steps", "default", 256), ("AR + KV cache", "default-ar", None))


def rows(steps: list[int]):
    return [r for r in ROWS if r[2] is None or r[2] in steps]


def measure(label: str, out: Path, repeats: int, which: list[int]) -> None:
    import redraft

    models = {name: redraft.load(name) for name in ("default", "default-ar")}
    for row, name, steps in rows(which):
        model = models[name]
        length = min(256, model.seq_len)
        knobs = {} if steps is None else {"steps": steps}
        for batch in (1, 16):
            model.sample([[]] * batch, length=length, seeds=list(range(batch)), **knobs)  # warm
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model.sample([[]] * batch, length=length, seeds=list(range(batch)), **knobs)
                times.append(time.perf_counter() - start)
            rec = {"label": label, "row": row, "batch": batch, "length": length,
                   "seconds": min(times), "tokens_per_s": batch * length / min(times),
                   "torch_threads": torch.get_num_threads(), "module": redraft.__file__}
            print(json.dumps(rec), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(rec) + "\n")


def summary(path: Path) -> None:
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    labels = sorted({r["label"] for r in recs})
    print(f"{'row':24s} {'batch':>5s} " + " ".join(f"{x + ' tok/s':>16s}" for x in labels)
          + (f" {labels[0]}/{labels[1]}" if len(labels) == 2 else ""))
    for row, _, _ in ROWS:
        for batch in (1, 16):
            if not any(r["row"] == row and r["batch"] == batch for r in recs):
                continue
            best = {x: statistics.median([r["tokens_per_s"] for r in recs if r["label"] == x
                                          and r["row"] == row and r["batch"] == batch] or [0])
                    for x in labels}
            ratio = (f" {best[labels[0]] / best[labels[1]]:.3f}"
                     if len(labels) == 2 and best[labels[1]] else "")
            print(f"{row:24s} {batch:5d} " + " ".join(f"{best[x]:16,.0f}" for x in labels)
                  + ratio)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="this")
    ap.add_argument("--out", type=Path, default=Path("sampling_speed.jsonl"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", default="16,64,256", help="the diffusion rows to time")
    ap.add_argument("--summary", type=Path, default=None, help="print the medians of a file")
    args = ap.parse_args()
    if args.summary is not None:
        summary(args.summary)
    else:
        measure(args.label, args.out, args.repeats, [int(x) for x in args.steps.split(",")])


if __name__ == "__main__":
    main()
