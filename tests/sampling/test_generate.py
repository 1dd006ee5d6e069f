import itertools
import math

import pytest
import torch
import torch.nn as nn

from redraft.config import ModelConfig
from redraft.diffusion import LogLinearSchedule, MaskProcess
from redraft.errors import RedraftError
from redraft.models import Transformer
from redraft.sampling import generate_ar, generate_diffusion, probabilities, sample
from tests.diffusion.test_masked import MASK, exact_denoiser_logits, toy_distribution

CFG = ModelConfig(n_layer=2, n_head=2, d_model=32, seq_len=24)
V = 13  # 10 symbols, eos 10, pad 11, mask 12


@pytest.fixture(scope="module")
def bidir():
    torch.manual_seed(0)
    return Transformer(CFG, V, causal=False).eval()


@pytest.fixture(scope="module")
def causal():
    torch.manual_seed(1)
    return Transformer(CFG, V, causal=True).eval()


def process():
    return MaskProcess(12, LogLinearSchedule())


def test_diffusion_leaves_no_mask_and_keeps_prompt(bidir):
    g = generate_diffusion(bidir, process(), steps=7, batch=3, prefix=[1, 2, 3], suffix=[4, 5],
                           seed=0)
    assert g.tokens.shape == (3, 24)
    assert not (g.tokens == 12).any()
    assert (g.tokens[:, :3] == torch.tensor([1, 2, 3])).all()
    assert (g.tokens[:, -2:] == torch.tensor([4, 5])).all()
    assert 1 <= g.nfe <= 7


def test_diffusion_reproducible_and_batch_independent(bidir):
    kw = dict(steps=10, prefix=[[1], [2, 2], [3, 3, 3]])
    a = generate_diffusion(bidir, process(), batch=3, seed=[5, 6, 7], **kw).tokens
    b = generate_diffusion(bidir, process(), batch=3, seed=[5, 6, 7], **kw).tokens
    assert torch.equal(a, b)
    alone = generate_diffusion(bidir, process(), steps=10, batch=1, prefix=[[2, 2]], seed=[6])
    assert torch.equal(alone.tokens[0], a[1])
    other = generate_diffusion(bidir, process(), batch=3, seed=[8, 9, 10], **kw).tokens
    assert not torch.equal(a, other)


def test_ar_kv_cache_equals_no_cache(causal):
    kw = dict(bos_id=10, batch=3, prefix=[[1, 2], [3], [4, 5]], seed=[1, 2, 3])
    with_cache = generate_ar(causal, use_cache=True, **kw)
    without = generate_ar(causal, use_cache=False, **kw)
    assert torch.equal(with_cache.tokens, without.tokens)
    assert with_cache.tokens.shape == (3, 24)
    assert with_cache.tokens[0, :2].tolist() == [1, 2]
    alone = generate_ar(causal, bos_id=10, batch=1, prefix=[[3]], seed=[2])
    assert torch.equal(alone.tokens[0], with_cache.tokens[1])


def test_bad_sampling_inputs(bidir, causal):
    with pytest.raises(RedraftError, match="steps=0"):
        generate_diffusion(bidir, process(), steps=0)
    with pytest.raises(RedraftError, match="does not fit"):
        generate_diffusion(bidir, process(), steps=4, prefix=list(range(10)) * 3)
    with pytest.raises(RedraftError, match="leaves nothing to generate"):
        generate_ar(causal, bos_id=10, prefix=[1] * 24)
    with pytest.raises(RedraftError, match="temperature"):
        generate_diffusion(bidir, process(), steps=4, temperature=-1)
    with pytest.raises(RedraftError, match="top_p"):
        generate_ar(causal, bos_id=10, top_p=1.5)


def test_probabilities_knobs():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64))
    assert torch.allclose(probabilities(logits), logits.exp())
    assert torch.allclose(probabilities(logits, top_k=2), torch.tensor([[0.625, 0.375, 0, 0]],
                                                                       dtype=torch.float64))
    assert torch.allclose(probabilities(logits, top_p=0.75), torch.tensor([[0.625, 0.375, 0, 0]],
                                                                         dtype=torch.float64))
    assert torch.allclose(probabilities(logits, top_p=0.81)[0, 2], torch.tensor(0.15 / 0.95,
                                                                               dtype=torch.float64))
    assert torch.equal(probabilities(logits, temperature=0)[0], torch.tensor([1.0, 0, 0, 0],
                                                                             dtype=torch.float64))
    hot = probabilities(logits, temperature=2.0)[0]
    assert torch.allclose(hot, logits[0].div(2).softmax(0))


def test_inverse_cdf_sampling_is_exact_in_distribution():
    probs = torch.tensor([[0.7, 0.2, 0.0999, 0.0001]], dtype=torch.float64)
    n = 100_000
    u = torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    counts = torch.bincount(sample(probs.expand(n, 4), u), minlength=4).double()
    expected = probs[0] * n
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 16.3  # chi-square, 3 dof, p = 0.001
    assert sample(torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64),
                  torch.tensor([0.9999999999], dtype=torch.float64)).item() == 1


class ExactToyDenoiser(nn.Module):
    """Stands in for a backbone (models.Backbone): returns the exact denoiser of the toy
    distribution."""

    seq_len, time_conditioned, causal, device = 3, False, False, torch.device("cpu")

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.seqs, self.p = toy_distribution()

    def forward(self, xt, t=None):
        return exact_denoiser_logits(xt, self.seqs, self.p).float()


def test_exact_denoiser_sampling_reproduces_distribution_as_steps_grow():
    model = ExactToyDenoiser()
    seqs, p = model.seqs, model.p
    n = 4000
    index = {tuple(s.tolist()): i for i, s in enumerate(seqs)}

    def tv(steps):
        out = generate_diffusion(model, MaskProcess(MASK, LogLinearSchedule()), steps=steps,
                                 batch=n, seed=0).tokens
        freq = torch.bincount(torch.tensor([index[tuple(r)] for r in out.tolist()]),
                              minlength=len(seqs)).double() / n
        return 0.5 * (freq - p).abs().sum().item()

    # Sampling noise alone gives E[TV] <= 0.5 * sum_i sqrt(p_i / n) (Jensen); 2x that is the bar.
    noise = 0.5 * p.sqrt().sum().item() / math.sqrt(n)
    one_step, many_steps = tv(1), tv(64)
    assert many_steps < 2 * noise, (many_steps, noise)
    # One step reveals all positions independently: the product of marginals, visibly wrong.
    assert one_step > many_steps + 2 * noise, (one_step, many_steps)


def test_enumeration_helper_is_consistent():
    seqs, p = toy_distribution()
    assert len(seqs) == 27 and abs(p.sum().item() - 1) < 1e-12
    assert len(set(map(tuple, seqs.tolist()))) == 27 == len(list(itertools.product(range(3),
                                                                                    repeat=3)))


def test_ar_never_emits_banned_ids(causal):
    # Ban all but two ids: every sampled token must be one of the two, at any temperature.
    banned = list(range(2, causal.vocab_size))
    g = generate_ar(causal, bos_id=10, batch=3, length=12, banned=banned, temperature=3.0)
    assert set(g.tokens.unique().tolist()) <= {0, 1}
