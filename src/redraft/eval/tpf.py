"""Tokens per forward under the commit rules: what early commit and the EOS-aware stop save.

    from redraft.eval.tpf import prompts, sweep
    rows = sweep(redraft.load(), prompts("stdlib", 8), steps=(8, 16, 64),
                 thresholds=(None, 8.0, 4.0, 2.0))

For each step count and early-commit threshold (None: the base rule) one generation of every
prompt (max_new_tokens new tokens each, seeded), then per row: tokens, forwards (per-row network
evaluations), TPF, the oracle ceiling (sampling/tpf.py), the share of forwards saved against
the base rule at the same steps, and the share of new tokens equal to the base rule's (a cheap
"did the answer change" figure; quality itself belongs on a gen-ppl/entropy frontier).
"""

from __future__ import annotations

import random
import sysconfig
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from redraft.errors import RedraftError

SHAKESPEARE = Path(__file__).resolve().parents[4] / "shared" / "data" / "tinyshakespeare" / \
    "input.txt"  # ../shared/data from a checkout; pass path= elsewhere


def prompts(corpus: str, n: int, chars: int = 96, seed: int = 0,
            path: str | Path | None = None) -> list[str]:
    """n prompts of `chars` characters, starting at line starts, from "stdlib" (this
    interpreter's standard library source, one file each) or "tinyshakespeare" (path, default
    ../shared/data/tinyshakespeare/input.txt); seeded, so a sweep is repeatable. ASCII only,
    so that with a byte tokenizer they are one length and run as one batch."""
    rng = random.Random(seed)
    if corpus == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(p for p in root.glob("*.py") if p.stat().st_size > 4 * chars)
        texts = [f.read_text(encoding="utf-8", errors="replace")
                 for f in rng.sample(files, min(n, len(files)))]
    elif corpus == "tinyshakespeare":
        source = Path(path) if path is not None else SHAKESPEARE
        if not source.exists():
            raise RedraftError(f"tinyshakespeare: {source} not found (give path=)")
        text = source.read_text(encoding="utf-8")
        texts = [text] * n
    else:
        raise RedraftError(f"corpus {corpus!r}: expected 'stdlib' or 'tinyshakespeare'")
    out = []
    for text in texts:
        text = text.encode("ascii", "replace").decode("ascii")
        starts = [0] + [i + 1 for i, c in enumerate(text[:-4 * chars]) if c == "\n"]
        at = rng.choice(starts)
        out.append(text[at:at + chars])
    return out


def sweep(model, texts: Sequence[str], *, steps: Sequence[int] = (8, 16, 64),
          thresholds: Sequence[float | None] = (None, 8.0, 4.0, 2.0), max_new_tokens: int = 64,
          sampler: str | None = None, block_size: int | None = None, stop_at_eos: bool = False,
          oracle: bool = True, seed: int = 0, temperature: float = 1.0,
          progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per (steps, threshold): the figures of the module docstring. The base rule
    (threshold None) runs first at each step count (it is the reference of the others)."""
    rows = []
    for n in steps:
        base = None
        for th in [None, *[t for t in thresholds if t is not None]]:
            start = time.perf_counter()
            out = model.generate(list(texts), max_new_tokens=max_new_tokens, steps=n,
                                 sampler=sampler, block_size=block_size,
                                 stop_at_eos=stop_at_eos, early_commit=th, seed=seed,
                                 temperature=temperature, oracle=oracle)
            seconds = time.perf_counter() - start
            if th is None:
                base = out
            t = out.tpf
            same = sum(a == b for r, s in zip(out.tokens, base.tokens, strict=True)
                       for a, b in zip(r, s, strict=True)) - sum(
                len(model.encode(p)) for p in texts)
            row = {"steps": n, "early_commit": th, "sampler": sampler or
                   model.decoder.default_sampler(), "block_size": block_size,
                   "stop_at_eos": stop_at_eos, "prompts": len(texts),
                   "tokens": t.tokens, "forwards": t.forwards,
                   "tokens_per_forward": round(t.value, 4),
                   "oracle_ceiling": None if t.ceiling is None else round(t.ceiling, 4),
                   "forwards_saved": round(1 - t.forwards / base.tpf.forwards, 4),
                   "same_tokens_as_base": round(same / (len(texts) * max_new_tokens), 4),
                   "seconds": round(seconds, 3)}
            if th is not None or None in thresholds:
                rows.append(row)
            if progress:
                progress(f"steps {n} early_commit {th}: TPF {t.value:.2f}, "
                         f"saved {row['forwards_saved']:.0%}")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """python -m redraft.eval.tpf [--corpus stdlib|tinyshakespeare ...]: print the sweep's
    rows as JSON lines (the default model unless --model)."""
    import argparse
    import json

    from redraft.model import load

    p = argparse.ArgumentParser(prog="python -m redraft.eval.tpf")
    p.add_argument("--model", default="default")
    p.add_argument("--corpus", action="append", default=None)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--steps", default="8,16,64")
    p.add_argument("--thresholds", default="none,8,4,2,1")
    p.add_argument("--sampler", action="append", default=None)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument("--stop-at-eos", action="store_true")
    args = p.parse_args(argv)
    m = load(args.model)
    steps = [int(s) for s in args.steps.split(",")]
    ths = [None if t == "none" else float(t) for t in args.thresholds.split(",")]
    for corpus in args.corpus or ["stdlib", "tinyshakespeare"]:
        texts = prompts(corpus, args.prompts)
        for sampler in args.sampler or [None]:
            for n in steps:
                for row in sweep(m, texts, steps=[n], thresholds=ths, sampler=sampler,
                                 max_new_tokens=args.max_new_tokens,
                                 block_size=args.block_size, stop_at_eos=args.stop_at_eos):
                    print(json.dumps({"model": args.model, "corpus": corpus, **row}),
                          flush=True)


if __name__ == "__main__":
    main()
