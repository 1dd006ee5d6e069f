"""Train the default model pair and ship it inside the package (src/redraft/default/).

    # 1. train: the masked-diffusion model and its AR twin, same recipe, same data, same budget
    python scripts/train_default.py train --out runs/default [dotted.overrides=...]
    # 2. ship: bf16 weights + config + tokenizer into src/redraft/default/{mdlm,ar}/
    python scripts/train_default.py ship runs/default/mdlm runs/default/ar
    # 3. measure: python benchmarks/default_model.py (fills MODEL_CARD.md, BENCHMARKS.md)

`train` runs configs/stdlib-default-mdlm.yaml (Python's standard-library source, byte-level,
6 layers, d_model 320, seq_len 512) for objective mdlm and then for objective ar, with the same
overrides (the shipped pair was trained on a GPU by scripts/train_default_gpu.sh, whose AR twin
also had model.dropout=0.1, configs/stdlib-default-ar.yaml): on a GPU add train.device=cuda
(and e.g.
train.time_budget_s=3600); `--objective
block` (with diffusion.block_size=...) trains a block-diffusion model instead. `ship` takes
checkpoint folders or run folders (their newest checkpoint), e.g. copied from the GPU machine;
it replaces what the package holds, atomically per model, and prints the wheel-bound size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "stdlib-default-mdlm.yaml"


def train_pair(config: Path, out: Path, overrides: list[str],
               diffusion: str = "mdlm") -> dict[str, Path]:
    """The diffusion model (objective `diffusion`) and its AR twin, one after the other, in
    out/<objective>; returns {"diffusion": run folder, "ar": run folder}."""
    from redraft.config import load_config
    from redraft.train import train

    runs = {}
    for kind, objective in (("diffusion", diffusion), ("ar", "ar")):
        run = out / objective
        cfg = load_config(str(config), [*overrides, f"diffusion.objective={objective}",
                                        f"train.out_dir={run}"])
        result = train(cfg)
        print(f"{objective}: {result.checkpoint} (step {result.step}, val "
              f"{result.val_bits_per_byte} bits/byte)", file=sys.stderr)
        runs[kind] = run
    return runs


def ship_pair(diffusion: Path, ar: Path, dest: Path) -> None:
    from redraft.checkpoint import load_checkpoint
    from redraft.default import NAMES
    from redraft.default.shipping import ship
    from redraft.diffusion import objective

    pair = (("default", diffusion, False), ("default-ar", ar, True))
    for name, source, autoregressive in pair:  # both checked before either is written
        got = load_checkpoint(source).config.diffusion.objective
        if objective(got).autoregressive != autoregressive:
            want = "'ar'" if autoregressive else "a diffusion objective (mdlm, block, ...)"
            raise SystemExit(f"{source}: objective {got!r}, expected {want} for {name!r}")
    for name, source, _ in pair:
        folder = ship(source, dest / NAMES[name])
        size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
        print(f"{name}: {source} -> {folder} ({size:.1f} MB)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the pair (then run `ship`)")
    t.add_argument("--config", type=Path, default=RECIPE)
    t.add_argument("--out", type=Path, default=Path("runs/default"))
    t.add_argument("--objective", default="mdlm",
                   help="the diffusion model's objective (the twin's is 'ar')")
    t.add_argument("--ship", action="store_true", help="ship the pair when both are trained")
    s = sub.add_parser("ship", help="bf16 copies of two checkpoints into the package")
    s.add_argument("mdlm", type=Path, help="the diffusion model's checkpoint or run folder "
                                           "(shipped as 'default')")
    s.add_argument("ar", type=Path, help="the AR twin's checkpoint or run folder (shipped as "
                                         "'default-ar')")
    for q in (t, s):
        q.add_argument("--dest", type=Path, default=ROOT / "src" / "redraft" / "default",
                       help="the package folder the models go into")
    args, overrides = p.parse_known_args(argv)
    if args.command == "train":
        runs = train_pair(args.config, args.out, overrides, args.objective)
        if args.ship:
            ship_pair(runs["diffusion"], runs["ar"], args.dest)
    else:
        if overrides:
            p.error(f"unexpected arguments {overrides}")
        ship_pair(args.mdlm, args.ar, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
