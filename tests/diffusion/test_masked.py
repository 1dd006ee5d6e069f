"""Masked diffusion maths on distributions small enough to enumerate."""

import itertools
import math

import pytest
import torch

from redraft.diffusion import (
    LogLinearSchedule,
    MaskProcess,
    masked_elbo,
    masked_elbo_by_count,
    sample_mask_counts,
    sample_times,
    subs_log_probs,
)
from redraft.errors import RedraftError

V, L, MASK = 3, 3, 3  # symbols 0..2, mask id 3


def toy_distribution():
    """All 27 sequences of length 3 over 3 symbols, with a correlated, non-uniform law."""
    seqs = torch.tensor(list(itertools.product(range(V), repeat=L)))  # (27, L)
    score = 1.5 * (seqs[:, 0] == seqs[:, 1]) + 1.0 * (seqs[:, 2] == (seqs[:, 1] + 1) % V) \
        + 0.4 * seqs[:, 0]
    p = torch.softmax(score.double(), 0)
    return seqs, p


def exact_denoiser_logits(xt, seqs, p):
    """log p(x0_l = v | xt) by enumeration: posterior over sequences agreeing with xt."""
    agree = ((xt[:, None, :] == seqs[None]) | (xt[:, None, :] == MASK)).all(-1)  # (N, 27)
    post = p[None] * agree
    post = post / post.sum(-1, keepdim=True)
    onehot = torch.nn.functional.one_hot(seqs, V + 1).double()  # (27, L, V+1)
    marg = torch.einsum("ns,slv->nlv", post, onehot)
    return marg.clamp_min(1e-300).log()  # mask column -> very negative


def test_schedule_convention():
    s = LogLinearSchedule()
    t = torch.tensor([0.0, 0.25, 1.0])
    assert torch.allclose(s.alpha(t), torch.tensor([1.0, 0.75, 0.0]))
    assert torch.allclose(s.dalpha(t), torch.full((3,), -1.0))
    assert torch.allclose(s.elbo_weight(torch.tensor([0.5])), torch.tensor([2.0]))
    with pytest.raises(RedraftError):
        LogLinearSchedule(eps=1.0)


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_corrupt_fraction_matches_alpha(t):
    proc = MaskProcess(MASK, LogLinearSchedule())
    n = 200_000
    x0 = torch.randint(0, V, (100, n // 100))
    xt = proc.corrupt(x0, torch.full((100,), t), torch.Generator().manual_seed(0))
    frac = (xt == MASK).double().mean().item()
    sd = math.sqrt(t * (1 - t) / n)
    assert abs(frac - t) < 5 * sd  # 1 - alpha(t) = t for the log-linear schedule
    kept = xt != MASK
    assert torch.equal(xt[kept], x0[kept])  # unmasked tokens are untouched


def test_prior_is_all_mask():
    proc = MaskProcess(MASK, LogLinearSchedule())
    assert (proc.prior((2, 5)) == MASK).all()


def test_sample_times_are_stratified():
    t = sample_times(64, torch.Generator().manual_seed(3))
    assert t.min() > 0 and t.max() <= 1
    strata = torch.floor((1 - t) * 64).long().sort().values
    assert torch.equal(strata, torch.arange(64))  # exactly one t per interval of width 1/64


def test_subs_carries_unmasked_and_never_predicts_mask():
    logits = torch.randn(2, 4, V + 1)
    xt = torch.tensor([[0, MASK, 2, MASK], [MASK, 1, MASK, 0]])
    lp = subs_log_probs(logits, xt, MASK)
    assert torch.all(lp[..., MASK] == -math.inf)
    unmasked = xt != MASK
    assert torch.all(lp[unmasked].gather(-1, xt[unmasked][:, None]) == 0)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 4))


def elbo_estimate(logits_fn, seqs, p, draws=4000, seed=0):
    """E_x0 E_t E_xt of the per-sequence ELBO (nats) with its Monte Carlo standard error."""
    proc = MaskProcess(MASK, LogLinearSchedule())
    g = torch.Generator().manual_seed(seed)
    means, variances = [], []
    for x in seqs:
        x0 = x.repeat(draws, 1)
        t = sample_times(draws, g).double()
        xt = proc.corrupt(x0, t, g)
        per_seq = masked_elbo(logits_fn(xt), x0, xt, t, proc.schedule, MASK).double().sum(1)
        means.append(per_seq.mean())
        variances.append(per_seq.var() / draws)
    means, variances = torch.stack(means), torch.stack(variances)
    return (p * means).sum().item(), math.sqrt((p**2 * variances).sum().item())


def test_exact_denoiser_elbo_equals_entropy_and_wrong_one_is_larger():
    seqs, p = toy_distribution()
    entropy = -(p * p.log()).sum().item()
    exact, err = elbo_estimate(lambda xt: exact_denoiser_logits(xt, seqs, p), seqs, p)
    assert abs(exact - entropy) < 4 * err, (exact, entropy, err)
    assert err < 0.02 * entropy  # the check above is not vacuous

    # A denoiser that ignores correlations (independent marginals) must do strictly worse.
    marg = torch.stack([(p[:, None] * (seqs[:, l, None] == torch.arange(V))).sum(0)
                        for l in range(L)])  # (L, V)
    marg_logits = torch.cat([marg.log(), torch.full((L, 1), -1e9, dtype=torch.double)], 1)
    wrong, err_w = elbo_estimate(lambda xt: marg_logits.expand(xt.shape[0], L, V + 1), seqs, p)
    assert wrong - entropy > 4 * math.hypot(err, err_w), (wrong, entropy)


def test_exact_elbo_by_beta_integral_equals_entropy():
    """The ELBO integral done in closed form: no Monte Carlo at all."""
    seqs, p = toy_distribution()
    entropy = -(p * p.log()).sum().item()
    total = 0.0
    for pattern in itertools.product([False, True], repeat=L):
        k = sum(pattern)
        if k == 0:
            continue
        # int_0^1 (1/t) t^k (1-t)^(L-k) dt = B(k, L-k+1): pattern probability times the weight.
        beta = math.gamma(k) * math.gamma(L - k + 1) / math.gamma(L + 1)
        xt = seqs.clone()
        xt[:, torch.tensor(pattern)] = MASK
        ce = masked_elbo(exact_denoiser_logits(xt, seqs, p), seqs, xt, torch.ones(len(seqs)),
                         LogLinearSchedule(), MASK).double().sum(1)
        total += beta * (p * ce).sum().item()
    assert abs(total - entropy) < 1e-5  # float32 cross-entropy inside masked_elbo


def test_count_estimator_is_the_same_bound_with_less_variance():
    seqs, p = toy_distribution()
    entropy = -(p * p.log()).sum().item()
    proc = MaskProcess(MASK, LogLinearSchedule())
    g = torch.Generator().manual_seed(1)
    draws = 4000
    means, variances, time_vars = [], [], []
    for x in seqs:
        x0 = x.repeat(draws, 1)
        k = sample_mask_counts(draws, L, g)
        xt = proc.corrupt_count(x0, k, g)
        assert torch.equal((xt == MASK).sum(1), k)  # exactly k masks per row
        logits = exact_denoiser_logits(xt, seqs, p)
        per_seq = masked_elbo_by_count(logits, x0, xt, k, MASK).double().sum(1)
        means.append(per_seq.mean())
        variances.append(per_seq.var() / draws)
        t = sample_times(draws, g)
        xt_t = proc.corrupt(x0, t, g)
        per_seq_t = masked_elbo(exact_denoiser_logits(xt_t, seqs, p), x0, xt_t, t,
                                proc.schedule, MASK).double().sum(1)
        time_vars.append(per_seq_t.var() / draws)
    estimate = (p * torch.stack(means)).sum().item()
    err = math.sqrt((p**2 * torch.stack(variances)).sum().item())
    assert abs(estimate - entropy) < 4 * err, (estimate, entropy, err)
    assert (p * torch.stack(variances)).sum() < (p * torch.stack(time_vars)).sum()


def test_mask_counts_are_stratified_over_1_to_L():
    k = sample_mask_counts(256, 256, torch.Generator().manual_seed(0))
    assert torch.equal(k.sort().values, torch.arange(1, 257))
