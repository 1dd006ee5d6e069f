"""A statistical check beside benchmarks/hybrid.py: a hybrid's continuations drawn in mode
"ar" and in mode "speculative" (layouts all and last) should have one law, so the means of
the hybrid's own AR-mode NLL of them (nats/token) and of their unigram entropy should agree
within noise. N validation prompts of hybrid.PROMPT tokens, LENGTH - PROMPT new tokens each.

    python benchmarks/hybrid_law.py runs/hybrid-bench/shakespeare/hybrid/ckpt-00000046 96

Prints one line per temperature and mode (mean ± standard error over the rows).
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hybrid as H  # noqa: E402

from redraft.eval.quality import sample_entropy  # noqa: E402
from redraft.model import load  # noqa: E402

MODES = (("ar", {"mode": "ar"}),
         ("spec all", {"mode": "speculative", "options": {"layout": "all"}}),
         ("spec last", {"mode": "speculative", "options": {"layout": "last"}}))


def self_nll(model, rows: list[list[int]]) -> list[float]:
    """Each row's mean AR-mode NLL (nats/token) of its continuation given its prompt."""
    x = torch.tensor(rows)
    bos = torch.full((len(rows), 1), model.tokenizer.eos_id)
    with torch.no_grad():
        logp = torch.log_softmax(model.backbone(torch.cat((bos, x[:, :-1]), 1)).double(), -1)
    nll = -logp.gather(-1, x[..., None])[..., 0][:, H.PROMPT:]
    return nll.mean(1).tolist()


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    model, n = load(sys.argv[1]), int(sys.argv[2])
    prompts = H.prompts_of(model, n)
    for temperature in (1.0, 0.7):
        for name, knobs in MODES:
            rows = []
            for i in range(0, n, 32):
                jobs, _, _ = H.decode(model, prompts[i:i + 32], list(range(i, min(n, i + 32))),
                                      temperature=temperature, **knobs)
                rows += [job.state.current()[0].tolist() for job in jobs]
            nll = self_nll(model, rows)
            ent = [sample_entropy(r[H.PROMPT:]) for r in rows]
            se = lambda v: statistics.stdev(v) / math.sqrt(len(v))  # noqa: E731
            print(f"T {temperature:g} {name:9s} self-NLL {statistics.fmean(nll):.4f} ± "
                  f"{se(nll):.4f}  entropy {statistics.fmean(ent):.4f} ± {se(ent):.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
