"""Speculative sampling is exact: the law of its output is the verifier's (an enumerable toy),
at any temperature / top-k / top-p, and greedy at temperature 0."""

import itertools

import pytest
import torch

from redraft.sampling.categorical import RowRandom, probabilities, sample
from redraft.sampling.speculative import accept

V, LENGTH = 3, 3


def prefix_id(tokens: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """A unique id per prefix (length count, tokens from a V-ary alphabet): 0 for the empty one."""
    ids = torch.zeros(len(tokens), dtype=torch.long)
    for i in range(LENGTH):
        ids = torch.where(i < count, ids * V + tokens[:, i] + 1, ids)
    return ids


def toy_tables(seed: int):
    g = torch.Generator().manual_seed(seed)
    n_prefixes = sum((V + 1) ** i for i in range(LENGTH + 1))  # a loose upper bound on ids
    p_logits = torch.randn(n_prefixes, V, generator=g, dtype=torch.float64) * 1.5
    q_logits = torch.randn(n_prefixes, V, generator=g, dtype=torch.float64)  # a poor drafter
    return p_logits, q_logits


def exact_law(p_logits, temperature, top_k, top_p) -> dict:
    out = {}
    for seq in itertools.product(range(V), repeat=LENGTH):
        prob = 1.0
        for i in range(LENGTH):
            t = torch.tensor([list(seq)])
            pid = prefix_id(t, torch.tensor([i]))
            prob *= float(probabilities(p_logits[pid], temperature, top_k, top_p)[0, seq[i]])
        out[seq] = prob
    return out


def speculative_samples(p_logits, q_logits, n, m, temperature, top_k, top_p, seed=0):
    """n rows decoded by drafting m tokens a call (the drafter sees only the committed prefix,
    as a diffusion draft block does), verified by `accept`."""
    rng = RowRandom(list(range(seed, seed + n)))
    tokens = torch.zeros(n, LENGTH, dtype=torch.long)
    count = torch.zeros(n, dtype=torch.long)
    calls = 0
    while bool((count < LENGTH).any()):
        calls += 1
        k = (LENGTH - count - 1).clamp(min=0, max=m)  # drafts that fit (the bonus needs room)
        base = prefix_id(tokens, count)
        q = probabilities(q_logits[base], temperature, top_k, top_p)  # (n, V), one for all i
        q = q[:, None, :].expand(n, m, V)
        u = rng.uniform(2 * m + 1)
        drafts = torch.stack([sample(q[:, i], u[:, i]) for i in range(m)], dim=1)
        # p after the prefix and each draft: extend a scratch copy of the tokens
        p = []
        scratch, c = tokens.clone(), count.clone()
        for i in range(m + 1):
            p.append(probabilities(p_logits[prefix_id(scratch, c)], temperature, top_k, top_p))
            if i < m:
                at = c.clamp(max=LENGTH - 1)
                scratch[torch.arange(n), at] = torch.where(c < LENGTH, drafts[:, i],
                                                           scratch[torch.arange(n), at])
                c = (c + 1).clamp(max=LENGTH)
        p = torch.stack(p, dim=1)
        accepted, new = accept(p, q, drafts, k, u[:, m:2 * m], u[:, 2 * m])
        live = count < LENGTH
        for j in range(m + 1):
            put = live & (j <= accepted) & (count + j < LENGTH)
            tokens[put, (count + j)[put]] = new[put, j]
        count = torch.where(live, (count + accepted + 1).clamp(max=LENGTH), count)
    return tokens, calls


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, None), (0.7, None, None),
                                                     (1.0, 2, None), (0.7, None, 0.8)])
def test_law_equals_the_verifiers(temperature, top_k, top_p):
    p_logits, q_logits = toy_tables(0)
    n = 100_000
    tokens, _ = speculative_samples(p_logits, q_logits, n, 2, temperature, top_k, top_p)
    law = exact_law(p_logits, temperature, top_k, top_p)
    codes = tokens[:, 0] * V * V + tokens[:, 1] * V + tokens[:, 2]
    freq = torch.bincount(codes, minlength=V ** LENGTH).double() / n
    exact = torch.tensor([law[s] for s in itertools.product(range(V), repeat=LENGTH)])
    tv = 0.5 * (freq - exact).abs().sum().item()
    # Monte Carlo TV of n draws from 27 outcomes: E ~ 0.5 * sum sqrt(2 p (1-p) / (pi n)) ~ 0.006
    assert tv < 0.012, tv
    # sequences the law forbids (top-k / top-p) never appear
    assert float(freq[exact == 0].sum()) == 0.0


def test_greedy_is_the_argmax_token_for_token():
    p_logits, q_logits = toy_tables(1)
    tokens, _ = speculative_samples(p_logits, q_logits, 64, 2, 0.0, None, None)
    law = exact_law(p_logits, 0.0, None, None)
    (greedy,) = [s for s, v in law.items() if v == 1.0]
    assert all(tuple(row) == greedy for row in tokens.tolist())


def test_a_perfect_drafter_is_always_accepted():
    p_logits, _ = toy_tables(2)
    n = 2000
    tokens, calls = speculative_samples(p_logits, p_logits, n, 2, 1.0, None, None)
    # q == p at the first draft position: accepted w.p. 1; every call commits >= 2 tokens
    # until the end, so 3 tokens take at most 2 calls
    assert calls <= 2


def test_rows_do_not_depend_on_the_batch():
    p_logits, q_logits = toy_tables(3)
    big, _ = speculative_samples(p_logits, q_logits, 50, 2, 0.7, None, None, seed=10)
    small, _ = speculative_samples(p_logits, q_logits, 5, 2, 0.7, None, None, seed=10)
    assert torch.equal(big[:5], small)


def test_padding_drafts_are_never_accepted():
    p = torch.full((1, 3, 4), 0.25, dtype=torch.float64)
    q = torch.full((1, 2, 4), 0.25, dtype=torch.float64)
    accepted, tokens = accept(p, q, torch.tensor([[1, 2]]), torch.tensor([1]),
                              torch.zeros(1, 2, dtype=torch.float64),
                              torch.zeros(1, dtype=torch.float64))
    assert accepted.item() == 1 and tokens[0, 0].item() == 1
