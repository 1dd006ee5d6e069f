"""Exactness harness (c): sampling with the exact network reproduces the toy distribution.

For every process x objective of tests/toy.py and every sampler that applies, 4000 samples
of the 27-sequence toy law are drawn with generate_diffusion (the real loop, float64 draws,
per-row streams) from a stand-in model returning the exact score / denoiser.
"""

import math

import pytest
import torch

from redraft.errors import RedraftError
from redraft.sampling import SAMPLERS, generate_diffusion
from tests.toy import COMBOS, IDS, ExactModel, L, make, toy_distribution

N = 4000
SEQS, P = toy_distribution()
INDEX = {tuple(s.tolist()): i for i, s in enumerate(SEQS)}
# Sampling noise alone: E[TV] <= 0.5 * sum_i sqrt(p_i / N) (Jensen), about 0.037 here. TV moves
# by at most 1/N when one sample changes, so (McDiarmid) it exceeds its mean by NOISE with
# probability <= exp(-2 N NOISE^2) ~ 2e-5: 2 * NOISE bounds pure sampling error.
NOISE = 0.5 * P.sqrt().sum().item() / math.sqrt(N)

# The samplers that apply to every process; the masked-only ones are in test_samplers.py.
GENERAL = [name for name, info in SAMPLERS.items() if info.models in ("any", "denoiser")]
CASES = [(combo, name) for combo in COMBOS for name in GENERAL
         if not (name == "ancestral" and combo[1] == "sedd")]


def tv(model, proc, objective, sampler, steps):
    out = generate_diffusion(model, proc, steps=steps, batch=N, length=L, seed=0,
                             objective=objective, sampler=sampler).tokens
    codes = torch.tensor([INDEX.get(tuple(r), len(SEQS)) for r in out.tolist()])
    freq = torch.bincount(codes, minlength=len(SEQS) + 1).double() / N
    # Mass on non-data canvases (a leftover mask) counts fully against the sampler.
    return 0.5 * (freq[:-1] - P).abs().sum().item() + 0.5 * freq[-1].item()


@pytest.mark.parametrize("case", CASES, ids=[f"{IDS[COMBOS.index(c)]}-{n}" for c, n in CASES])
def test_exact_model_sampling_reproduces_the_distribution(case):
    (process, objective, schedule), sampler = case
    proc = make(process, schedule)
    model = ExactModel(objective, proc)
    few, many = tv(model, proc, objective, sampler, 2), tv(model, proc, objective, sampler, 64)
    # Starting from pi rather than q(x1 | x0) costs at most L * eps in TV (a data token left at
    # t = 1 with probability eps per position).
    assert many < 2 * NOISE + L * schedule.eps, (few, many, NOISE)
    # Two steps update positions nearly independently: the law is visibly wrong, and more
    # steps shrink the error by more than sampling noise can explain.
    assert few > many + 2 * NOISE, (few, many)


def test_sampler_mismatches_are_named():
    proc = make("uniform", COMBOS[3][2])
    model = ExactModel("sedd", proc)
    with pytest.raises(RedraftError, match="pass objective="):
        generate_diffusion(model, proc, steps=2, length=L)
    with pytest.raises(RedraftError, match="outputs scores"):
        generate_diffusion(model, proc, steps=2, length=L, objective="sedd", sampler="ancestral")
    with pytest.raises(RedraftError, match="unknown sampler"):
        generate_diffusion(model, proc, steps=2, length=L, objective="sedd", sampler="nope")
    with pytest.raises(RedraftError, match="temperature"):
        generate_diffusion(model, proc, steps=2, length=L, objective="sedd", temperature=0.5)


@pytest.mark.parametrize("sampler", ["ancestral", "euler"])
def test_uniform_sampling_is_batch_independent_and_keeps_the_prompt(sampler):
    proc = make("uniform", COMBOS[4][2])
    model = ExactModel("udlm", proc)
    kw = dict(steps=6, length=L, objective="udlm", sampler=sampler)
    both = generate_diffusion(model, proc, batch=2, seed=[3, 4], prefix=[[2], [1]], **kw).tokens
    alone = generate_diffusion(model, proc, batch=1, seed=[4], prefix=[[1]], **kw).tokens
    assert torch.equal(both[1], alone[0]) and both[0, 0] == 2 and both[1, 0] == 1
