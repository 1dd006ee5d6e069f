"""Train masked diffusion with each training objective variant for the same wall clock.

Variants: the ELBO by the "time" estimator, the ELBO by the "count" estimator (the same bound,
t integrated out), and the token-weighted loss (every masked token weighs the same). All are
evaluated by the same ELBO bound. Same model and data as benchmarks/core.py (tinyshakespeare,
char-level), EMA off so the raw weights are compared. Writes the "diffusion-objectives" section
of BENCHMARKS.md and benchmarks/results/diffusion_objectives.json.
Run on an otherwise idle machine:  python benchmarks/diffusion_objectives.py [--seconds 90]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, need_tinyshakespeare, write_json, write_section  # noqa: E402
from core import config  # noqa: E402

from redraft.config import config_from_dict, merge  # noqa: E402
from redraft.data import load_data  # noqa: E402
from redraft.likelihood import evaluate  # noqa: E402
from redraft.model import load  # noqa: E402
from redraft.train import train  # noqa: E402

# (diffusion.elbo_estimator, diffusion.train_weighting)
VARIANTS = [("time", "elbo"), ("count", "elbo"), ("count", "token")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=90.0, help="training wall clock per run")
    ap.add_argument("--seeds", type=int, default=2, help="runs per estimator")
    args = ap.parse_args()
    need_tinyshakespeare()
    work = Path(tempfile.mkdtemp(prefix="redraft-est-"))
    runs = []
    for seed in range(args.seeds):
        for estimator, weighting in VARIANTS:
            values = merge(config("mdlm", args.seconds / 60,
                                  work / f"{estimator}-{weighting}-{seed}", work / "cache", "auto"),
                           {"diffusion": {"elbo_estimator": estimator,
                                          "train_weighting": weighting},
                            "train": {"ema": 0.0, "seed": seed, "eval_every": 10**9}})
            res = train(config_from_dict(values))
            ck = load(res.checkpoint)
            _, data = load_data(ck.config.data, 256, ck.tokenizer)
            nats, err, windows = evaluate(ck.backbone, data.val, ck.config, ck.tokenizer.mask_id,
                                          ck.tokenizer.eos_id, None, samples=4)
            to_bpc = 1 / math.log(2) / data.val_bytes_per_token
            runs.append({"estimator": estimator, "weighting": weighting, "seed": seed,
                         "steps": res.step,
                         "train_tokens_per_s": res.train_tokens_per_s,
                         "val_bits_per_char": nats * to_bpc, "val_stderr_bits": err * to_bpc})
            print(runs[-1], file=sys.stderr)
    summary = {"machine": machine(),
               "command": f"python benchmarks/diffusion_objectives.py --seconds "
                          f"{args.seconds:g} --seeds {args.seeds}", "runs": runs}
    write_json("diffusion_objectives", summary)
    m = summary["machine"]
    lines = [
        "## Masked-diffusion training objectives at equal wall clock",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['date']}. "
        f"Command: `{summary['command']}`. Core benchmark model and data, "
        f"{args.seconds:g} s of training each, EMA off; validation bound by the `time` "
        "estimator, 4 draws per window, all windows.",
        "",
        "| mask sampling | loss weighting | seed | steps | train tokens/s | "
        "validation bits/char (bound) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(f"| {r['estimator']} | {r['weighting']} | {r['seed']} | {r['steps']} | "
                     f"{r['train_tokens_per_s']:,.0f} | {r['val_bits_per_char']:.3f} ± "
                     f"{r['val_stderr_bits']:.3f} |")
    lines.append("")
    for est, weighting in VARIANTS:
        mean = sum(r["val_bits_per_char"] for r in runs
                   if (r["estimator"], r["weighting"]) == (est, weighting)) / args.seeds
        lines.append(f"- mean over seeds, `{est}` / `{weighting}`: {mean:.3f} bits/char")
    write_section("diffusion-objectives", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
