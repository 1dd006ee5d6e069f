"""Exactness harness: every process x objective on the enumerable toy distribution.

(a) with the exact score / denoiser the bound equals the true entropy (Monte Carlo over t and
xt, within 4 standard errors) and a perturbed model's bound is strictly larger; (b) corrupt()
reproduces the analytic marginal of its process. Sampling (c) is in
tests/sampling/test_process_sampling.py.
"""

import math

import pytest
import torch

from redraft.diffusion import (
    LogLinearSchedule,
    MaskProcess,
    UniformProcess,
    sample_times,
    uniform_elbo,
)
from tests.toy import COMBOS, IDS, MASK, VOCAB, exact_logits, make, objective_fn, toy_distribution


def bound_estimate(proc, objective, seqs, p, draws, perturb=None, seed=0):
    """E_x0 E_t E_xt of the per-sequence bound (nats) and its Monte Carlo standard error."""
    g = torch.Generator().manual_seed(seed)
    fn = objective_fn(objective)
    x0 = seqs.repeat_interleave(draws, 0)  # (S * draws, L)
    # Importance sampling t = u^2 (density 1 / (2 sqrt t), weight 2u): for non-mask processes
    # the integrand has rare O(1/t) values at small t (a token resampled at rate ~t), whose
    # variance under uniform t diverges logarithmically; this density makes it finite.
    u = torch.cat([sample_times(draws, g) for _ in seqs]).double()
    t, w = u**2, 2 * u
    xt = proc.corrupt(x0, t, g)
    logits = exact_logits(objective, proc, xt, t, seqs, p)
    if perturb is not None:
        logits = logits + perturb * torch.randn(logits.shape, generator=g, dtype=torch.float64)
    per_seq = (w * fn(logits, x0, xt, t, proc).double().sum(1)).view(len(seqs), draws)
    mean = (p * per_seq.mean(1)).sum().item()
    err = math.sqrt((p**2 * per_seq.var(1) / draws).sum().item())
    return mean, err


@pytest.mark.parametrize("combo", COMBOS, ids=IDS)
def test_exact_model_bound_equals_entropy_and_perturbed_is_larger(combo):
    process, objective, schedule = combo
    proc = make(process, schedule)
    seqs, p = toy_distribution()
    entropy = -(p * p.log()).sum().item()
    exact, err = bound_estimate(proc, objective, seqs, p, draws=1500)
    # Unbiased estimator: |estimate - entropy| < 4 standard errors fails w.p. < 1e-4 (normal
    # approximation over 27 x 1500 draws); the second assert keeps the check from being vacuous.
    assert abs(exact - entropy) < 4 * err, (exact, entropy, err)
    assert err < 0.025 * entropy, err
    wrong, err_w = bound_estimate(proc, objective, seqs, p, draws=1500, perturb=1.0, seed=1)
    assert wrong - entropy > 4 * math.hypot(err, err_w), (wrong, entropy, err_w)


def test_uniform_elbo_is_udlms_closed_form():
    """UDLM's continuous-time ELBO written out independently (Schiff et al. 2024):
    w = -alpha' / (N alpha), xb = N alpha x + (1 - alpha), xbt = N alpha x^ + (1 - alpha),
    loss = w [ N / xb_i - N / xbt_i - sum_j (xb_j / xb_i) log(xbt_i xb_j / (xbt_j xb_i)) ]
    with the sign convention that makes it >= 0 (alpha' < 0)."""
    torch.manual_seed(0)
    Vn, mask = 6, 6  # 6 symbols, the mask id 6 last
    proc = UniformProcess(Vn + 1, mask, LogLinearSchedule(1e-3))
    B, Ln = 5, 4
    x0 = torch.randint(0, Vn, (B, Ln))
    t = torch.rand(B, dtype=torch.float64)
    xt = proc.corrupt(x0, t)
    logits = torch.randn(B, Ln, Vn + 1, dtype=torch.float64)
    got = uniform_elbo(logits, x0, xt, t, proc) - proc.prior_kl(x0).double()
    a = proc.schedule.alpha(t)[:, None, None]
    w = -proc.schedule.dalpha(t)[:, None] / (Vn * proc.schedule.alpha(t)[:, None])
    x_hat = torch.softmax(logits[..., :Vn], -1)
    xb = Vn * a * torch.nn.functional.one_hot(x0, Vn) + (1 - a)
    xbt = Vn * a * x_hat + (1 - a)
    xb_i, xbt_i = xb.gather(-1, xt[..., None]), xbt.gather(-1, xt[..., None])
    inner = (xb / xb_i * torch.log(xbt_i * xb / (xbt * xb_i))).sum(-1)
    want = w * (Vn / xbt_i[..., 0] - Vn / xb_i[..., 0] + inner)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("process", ["mask", "uniform", "mixture"])
@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_corrupt_reproduces_the_analytic_marginal(process, t):
    proc = make(process, LogLinearSchedule())
    n = 60_000
    x0 = torch.tensor([0, 1, 2]).repeat(n // 3)[None]  # (1, n): each symbol n/3 times
    tt = torch.full((1,), t)
    xt = proc.corrupt(x0, tt, torch.Generator().manual_seed(7))
    want = proc.marginal(x0[:, :3], tt)[0]  # (3, VOCAB): q(xt | x0 = 0, 1, 2)
    chi2, dof = 0.0, 0
    for v in range(3):
        counts = torch.bincount(xt[0, x0[0] == v], minlength=VOCAB).double()
        expected = want[v] * (n // 3)
        support = expected > 0
        assert counts[~support].sum() == 0  # nothing outside the support, ever
        chi2 += (((counts - expected) ** 2 / expected)[support]).sum().item()
        dof += int(support.sum()) - 1
    # Chi-square with dof <= 9: the p = 0.001 quantile is 27.9 (for 9 dof; smaller dof has a
    # smaller quantile, so 27.9 is a looser but still meaningful bar); n = 20,000 per symbol
    # detects a 2% error in any cell with near certainty.
    assert chi2 < 27.9, (chi2, dof)


@pytest.mark.parametrize("process", ["mask", "uniform", "mixture"])
def test_transitions_compose_and_prior_term(process):
    proc = make(process, LogLinearSchedule(1e-3) if process != "mask" else LogLinearSchedule())
    x0 = torch.tensor([[0, 1, 2]])
    s, t = torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.8], dtype=torch.float64)
    beta = proc.keep_probability(t, s)
    kernel = beta * torch.eye(VOCAB, dtype=torch.float64) + (1 - beta) * proc.noise()
    assert torch.allclose(proc.marginal(x0, s) @ kernel, proc.marginal(x0, t))
    kl = proc.prior_kl(x0)
    if process == "mask":
        assert torch.equal(kl, torch.zeros(1, 3))
    else:  # KL(q(x1 | x0) || pi) > 0 but small for eps = 1e-3
        assert (kl > 0).all() and (kl < 0.01).all()


def test_prior_draws_from_pi():
    proc = make("mixture", LogLinearSchedule())
    x = proc.prior((200, 300))
    freq = torch.bincount(x.flatten(), minlength=VOCAB).double() / x.numel()
    assert torch.allclose(freq, proc.noise(), atol=0.01)  # sd <= 0.5 / sqrt(60000) = 0.002
    assert (MaskProcess(MASK, LogLinearSchedule()).prior((2, 3)) == MASK).all()
