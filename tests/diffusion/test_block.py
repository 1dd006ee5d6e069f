"""Block diffusion's objective: the correspondences with the AR twin and the masked model,
the one-pass loss against a loop over blocks, and the bound on an enumerable toy law."""

import itertools
import math

import pytest
import torch

from redraft.config import DiffusionConfig, ModelConfig
from redraft.diffusion import LogLinearSchedule, ar_cross_entropy, masked_elbo
from redraft.diffusion.block import (
    block_elbo,
    block_inputs,
    block_mask_pattern_count,
    block_weights,
    in_order_nll,
    reveal_times,
    sample_block_counts,
    sample_block_times,
)
from redraft.diffusion.objectives import masked_elbo_by_count
from redraft.losses import Noise, ar_inputs, block_token_losses, draw_noise, token_losses
from redraft.models import Transformer
from tests.block_toy import BOS, MASK, ExactBlockModel, toy_law

CFG = ModelConfig(n_layer=2, n_head=2, d_model=32, seq_len=16)
V, MID, EOS = 12, 11, 10  # ids 0..9 text, 10 eos (the AR twin's bos), 11 mask


def models(block_size):
    torch.manual_seed(0)
    ar = Transformer(CFG, V, causal=True).eval()
    block = Transformer(CFG, V, causal=False, block_size=block_size).eval()
    block.load_state_dict(ar.state_dict())
    return ar, block


def cfg(block_size, shift):
    return DiffusionConfig(objective="block", block_size=block_size, block_shift=shift)


def x0_batch():
    return torch.randint(0, 10, (3, 16), generator=torch.Generator().manual_seed(1))


def test_block_size_one_next_aligned_is_the_ar_twin():
    """shift, b = 1: every input is clean and the pass is the AR twin's on [bos, x0[:-1]].
    Logits equal; with the count estimator (k = 1: every block masked, weight 1) the loss is
    deterministic and equals the twin's NLL of its next-token distribution renormalised
    without the mask id (SUBS excludes the mask, which is never a data token)."""
    ar, block = models(1)
    x0 = x0_batch()
    xt = torch.full_like(x0, MID)
    yt, y0 = block_inputs(xt, x0, 1, True, EOS)
    assert torch.equal(yt, ar_inputs(x0, EOS)) and torch.equal(y0, yt)
    ar_logits = ar(ar_inputs(x0, EOS))
    assert torch.allclose(block(yt, x0=y0), ar_logits, atol=1e-5)
    noise = draw_noise(cfg(1, True), 3, 16, MID, torch.Generator().manual_seed(0),
                       estimator="count")
    assert noise.masked.all() and (noise.k == 1).all()
    got = block_token_losses(block, x0, cfg(1, True), MID, EOS, noise)
    no_mask = ar_logits.clone()
    no_mask[..., MID] = -math.inf
    assert torch.allclose(got, ar_cross_entropy(no_mask, x0), atol=1e-5)


def test_block_size_one_same_aligned_bound_is_its_exact_nll():
    """No shift, b = 1: block i sees the clean x0_<i and a mask at i. The one-token block's
    ELBO integrates to its cross-entropy, so the bound is the exact NLL of the left-to-right
    model p(x_i | x_<i) = softmax(backbone([x_<i, mask]))_i, computed here token by token."""
    _, block = models(1)
    x0 = x0_batch()
    noise = draw_noise(cfg(1, False), 3, 16, MID, torch.Generator().manual_seed(0),
                       estimator="count")
    got = block_token_losses(block, x0, cfg(1, False), MID, EOS, noise)
    for i in range(16):
        seq = torch.cat((x0[:, :i], torch.full_like(x0[:, :1], MID)), dim=1)
        lg = block(seq)[:, -1].clone()
        lg[:, MID] = -math.inf
        nll = torch.nn.functional.cross_entropy(lg, x0[:, i], reduction="none")
        assert torch.allclose(got[:, i], nll, atol=1e-5)


@pytest.mark.parametrize("estimator", ["time", "count"])
def test_block_size_seq_len_same_aligned_is_the_masked_model(estimator):
    """No shift, b = L: one block, no clean context, no mask: the masked (mdlm) model's very
    computation; with the same corruption the loss is masked_elbo (or its count form)."""
    torch.manual_seed(0)
    mdlm = Transformer(CFG, V, causal=False).eval()
    block = Transformer(CFG, V, causal=False, block_size=16).eval()
    block.load_state_dict(mdlm.state_dict())
    x0 = x0_batch()
    noise = draw_noise(cfg(16, False), 3, 16, MID, torch.Generator().manual_seed(2),
                       estimator=estimator)
    xt = torch.where(noise.masked, MID, x0)
    logits = mdlm(xt)
    assert torch.equal(block(xt, x0=x0), logits)
    got = block_token_losses(block, x0, cfg(16, False), MID, EOS, noise)
    if estimator == "time":
        want = masked_elbo(logits, x0, xt, noise.t[:, 0], LogLinearSchedule(), MID)
    else:
        want = masked_elbo_by_count(logits, x0, xt, noise.k[:, 0], MID)
    assert torch.equal(got, want)


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("block_size", [1, 4, 16])
def test_one_pass_loss_equals_a_loop_over_blocks(shift, block_size):
    """The vectorised [xt ; x0] pass equals scoring each block on its own: the plain
    block-causal pass over the clean earlier blocks followed by the noised block."""
    _, block = models(block_size)
    x0 = x0_batch()
    c = cfg(block_size, shift)
    noise = draw_noise(c, 3, 16, MID, torch.Generator().manual_seed(3))
    got = block_token_losses(block, x0, c, MID, EOS, noise)
    xt = torch.where(noise.masked, MID, x0)
    yt, y0 = block_inputs(xt, x0, block_size, shift, EOS)
    weight = block_weights(LogLinearSchedule(), noise.t, None, block_size)
    for k in range(16 // block_size):
        a, b = k * block_size, (k + 1) * block_size
        logits = block(torch.cat((y0[:, :a], yt[:, a:b]), dim=1))[:, a:]
        want = block_elbo(logits, x0[:, a:b], xt[:, a:b], weight[:, a:b], MID)
        assert torch.allclose(got[:, a:b], want, atol=1e-5)


def test_in_order_nll_at_block_one_is_the_ar_twins_and_equals_a_loop():
    """in_order_nll: b = 1 (shift) is the AR twin's NLL (SUBS-renormalised, as the bound);
    b = 4: each position scored over the clean earlier blocks and its block with itself and
    everything after it masked, position by position."""
    ar, one = models(1)
    x0 = x0_batch()
    no_mask = ar(ar_inputs(x0, EOS)).clone()
    no_mask[..., MID] = -math.inf
    assert torch.allclose(in_order_nll(one, x0, True, MID, EOS), ar_cross_entropy(no_mask, x0),
                          atol=1e-5)
    _, block = models(4)
    for shift in (True, False):
        got = in_order_nll(block, x0, shift, MID, EOS)
        for pos in range(16):
            a, i = pos // 4 * 4, pos % 4
            xt = x0.clone()
            xt[:, a + i:a + 4] = MID
            yt, y0 = block_inputs(xt, x0, 4, shift, EOS)
            lg = block(torch.cat((y0[:, :a], yt[:, a:a + 4]), dim=1))[:, a + i].clone()
            lg[:, MID] = -math.inf
            nll = torch.nn.functional.cross_entropy(lg, x0[:, pos], reduction="none")
            assert torch.allclose(got[:, pos], nll, atol=1e-5)


def test_noise_is_per_block_stratified_and_counts_are_exact():
    t = sample_block_times(8, 4, torch.Generator().manual_seed(0))
    strata = torch.floor((1 - t.flatten()) * 32).long().sort().values
    assert torch.equal(strata, torch.arange(32))  # one t per 1/32 stratum, over all blocks
    clipped = sample_block_times(8, 4, torch.Generator().manual_seed(0), 0.3, 0.8)
    assert clipped.min() > 0.3 and clipped.max() <= 0.8
    sizes = torch.tensor([4, 4, 2])
    k = sample_block_counts(64, sizes, torch.Generator().manual_seed(1))
    assert (k >= 1).all() and (k <= sizes).all()
    kk = k[:, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]]
    masked = block_mask_pattern_count(kk, 4, torch.Generator().manual_seed(2))
    per_block = torch.stack([masked[:, :4].sum(1), masked[:, 4:8].sum(1), masked[:, 8:].sum(1)],
                            dim=1)
    assert torch.equal(per_block, k)


def toy_bound(block_size, shift, reveal_last=False):
    """E over the count estimator's every (k, mask set) of every block, in closed form, of
    the real loss (block_token_losses, one pair pass) with the exact block denoiser. With
    reveal_last the last position of a block is always masked and k is among the others."""
    seqs, p = toy_law()
    model = ExactBlockModel(block_size, shift)
    c = DiffusionConfig(objective="block", block_size=block_size, block_shift=shift,
                        block_reveal_last=reveal_last)
    n_blocks = 4 // block_size
    n = block_size - reveal_last  # the positions the count is drawn among
    patterns = [m + (True,) * reveal_last for m in itertools.product([False, True], repeat=n)
                if any(m) or n == 0]
    total = torch.zeros(len(seqs), dtype=torch.float64)
    for joint in itertools.product(patterns, repeat=n_blocks):
        masked = torch.tensor(sum(joint, ())).expand(len(seqs), 4)
        k_block = [sum(m) - reveal_last for m in joint]
        k = torch.tensor([kb for kb in k_block for _ in range(block_size)]).expand(len(seqs), 4)
        # P(this pattern) = prod over blocks of P(k) P(set | k) = 1 / (n C(n, k)).
        prob = math.prod(1 / (n * math.comb(n, kb)) if n else 1.0 for kb in k_block)
        noise = Noise(masked, torch.full((len(seqs), 4), MASK), k / block_size, k, 1.0)
        total += prob * block_token_losses(model, seqs, c, MASK, BOS, noise).double().sum(1)
    return (p * total).sum().item(), -(p * p.log()).sum().item()


@pytest.mark.parametrize("block_size", [1, 2, 4])
def test_exact_block_denoiser_bound_equals_the_entropy(block_size):
    bound, entropy = toy_bound(block_size, shift=False)
    assert abs(bound - entropy) < 1e-5, (bound, entropy)


def toy_bound_ordered(block_size, width):
    """The exact E over t and the mask pattern of the real loss (elbo weighting) with the
    exact block denoiser, for the in-block reveal width `width` (no shift). Blocks add up and
    each block's term depends on its own time only, so one t for all blocks has the same
    expectation; the integrand is a polynomial in t between the window edges, so Gauss-Legendre
    nodes on each piece integrate it exactly."""
    seqs, p = toy_law()
    model = ExactBlockModel(block_size, False)
    c = DiffusionConfig(objective="block", block_size=block_size, block_shift=False,
                        block_reveal_width=width, elbo_estimator="time")
    rank = torch.arange(4) % block_size
    offsets = (1 - width) * (block_size - 1 - rank) / max(block_size - 1, 1)
    edges = sorted({0.0, 1.0, *offsets.tolist(), *(offsets + width).clamp(max=1).tolist()})
    nodes, weights = (torch.from_numpy(a) for a in __import__("numpy").polynomial.legendre
                      .leggauss(6))
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        for x, wq in zip(nodes.tolist(), weights.tolist(), strict=True):
            t = lo + (hi - lo) * (x + 1) / 2
            tau = reveal_times(torch.full((1, 4), t, dtype=torch.float64), block_size,
                               width)[0]
            for m in itertools.product([False, True], repeat=4):
                masked = torch.tensor(m)
                prob = torch.where(masked, tau, 1 - tau).prod().item()
                if prob == 0:
                    continue
                noise = Noise(masked.expand(len(seqs), 4), torch.full((len(seqs), 4), MASK),
                              tau.float().expand(len(seqs), 4), None, 1.0)
                loss = block_token_losses(model, seqs, c, MASK, BOS, noise).double().sum(1)
                total += (hi - lo) / 2 * wq * prob * (p * loss).sum().item()
    return total, -(p * p.log()).sum().item()


@pytest.mark.parametrize("block_size,width", [(2, 0.5), (4, 0.5), (4, 0.2), (4, 0.1)])
def test_exact_block_denoiser_bound_with_ordered_reveals_equals_the_entropy(block_size, width):
    """Per-position schedules keep the bound a bound, tight for the exact denoiser: any
    reveal order of a block factorises its law exactly."""
    bound, entropy = toy_bound_ordered(block_size, width)
    assert abs(bound - entropy) < 1e-6, (bound, entropy)


def test_ordered_reveals_windows_and_the_left_to_right_limit():
    """reveal_times: w = 1 is the identity; w <= 1/b gives disjoint windows, later positions
    first; then position j's loss at the middle of its window, with the positions after it
    masked, is twice its in-order NLL over w (weight 1/(w tau), tau = 1/2), so the bound's
    expectation is exactly the in-order NLL (in_order_nll), for any network."""
    t = torch.rand(2, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(reveal_times(t, 4, 1.0), t)
    grid = torch.linspace(0, 1, 401)[:, None].expand(401, 8)
    tau = reveal_times(grid, 4, 0.25)
    assert (((tau > 0) & (tau < 1)).view(401, 2, 4).sum(-1) <= 1).all()  # one at a time
    assert (tau[:, 3] >= tau[:, 2]).all() and (tau[:, 2] >= tau[:, 0]).all()
    _, block = models(4)
    x0 = x0_batch()
    width = 0.25
    c = DiffusionConfig(objective="block", block_size=4, block_shift=True,
                        block_reveal_width=width, elbo_estimator="time")
    want = in_order_nll(block, x0, True, MID, EOS)
    for j in range(4):
        mid = (1 - width) * (3 - j) / 3 + width / 2
        tau = reveal_times(torch.full((3, 16), mid), 4, width)
        masked = (torch.arange(16) % 4 >= j).expand(3, 16)
        assert torch.allclose(tau[:, torch.arange(16) % 4 == j], torch.tensor(0.5))
        noise = Noise(masked, torch.full((3, 16), MID), tau, None, 1.0)
        got = block_token_losses(block, x0, c, MID, EOS, noise)
        cols = torch.arange(16) % 4 == j
        assert torch.allclose(got[:, cols] * width * 0.5, want[:, cols], atol=1e-5)
        assert (got[:, torch.arange(16) % 4 > j] == 0).all()  # past their windows: no score


def test_next_aligned_bound_is_exact_at_block_one_and_loose_above():
    """With the shift a block's last token is no input inside its own block (it enters as
    the next block's first input), so even the exact denoiser's bound exceeds the entropy
    for b > 1; b = 1 (the AR factorisation) is exact."""
    one, entropy = toy_bound(1, shift=True)
    two, _ = toy_bound(2, shift=True)
    assert abs(one - entropy) < 1e-5
    assert two > entropy + 0.01, (two, entropy)


@pytest.mark.parametrize("block_size", [1, 2, 4])
def test_revealing_the_last_position_last_makes_the_next_aligned_bound_exact(block_size):
    """block_reveal_last: the last token, which no position of its block reads, is revealed
    after the others and scored by the clean pass given all of them, so the exact
    denoiser's bound is the entropy again for every block size (b = 1: the AR factorisation,
    every position a last one)."""
    bound, entropy = toy_bound(block_size, shift=True, reveal_last=True)
    assert abs(bound - entropy) < 1e-5, (bound, entropy)


def test_reveal_last_scores_the_last_positions_by_the_clean_pass():
    """On a real backbone the last positions' terms are -log p(x_last | every other token of
    the block clean): the in-order NLL's last step; the count draws stay among the others."""
    _, block = models(4)
    x0 = x0_batch()
    c = DiffusionConfig(objective="block", block_size=4, block_shift=True,
                        block_reveal_last=True)
    noise = draw_noise(c, 3, 16, MID, torch.Generator().manual_seed(0), estimator="count")
    last = torch.arange(16) % 4 == 3
    assert noise.masked[:, last].all()
    assert (noise.masked[:, ~last].view(3, 4, 3).sum(-1) == noise.k[:, ::4]).all()
    assert (noise.k >= 1).all() and (noise.k <= 3).all()
    got = block_token_losses(block, x0, c, MID, EOS, noise)
    want = in_order_nll(block, x0, True, MID, EOS)
    assert torch.allclose(got[:, last], want[:, last], atol=1e-5)
    timed = DiffusionConfig(objective="block", block_size=4, block_shift=True,
                            block_reveal_last=True, elbo_estimator="time")
    noise = draw_noise(timed, 3, 16, MID, torch.Generator().manual_seed(0))
    assert noise.masked[:, last].all()
    got = block_token_losses(block, x0, timed, MID, EOS, noise)
    assert torch.allclose(got[:, last], want[:, last], atol=1e-5)


def test_time_estimator_through_token_losses_matches_the_entropy():
    """The Monte Carlo path training and evaluation use (draw_noise + token_losses)."""
    seqs, p = toy_law()
    model = ExactBlockModel(2, False)
    c = cfg(2, False)
    g = torch.Generator().manual_seed(0)
    draws = 400
    x0 = seqs.repeat_interleave(draws, 0)
    per_seq = token_losses(model, x0, c, MASK, BOS, g).double().sum(1).view(len(seqs), draws)
    est = (p * per_seq.mean(1)).sum().item()
    err = math.sqrt((p**2 * per_seq.var(1) / draws).sum().item())
    entropy = -(p * p.log()).sum().item()
    assert abs(est - entropy) < 4 * err, (est, entropy, err)
    assert err < 0.03 * entropy


# --- training: redraft train / eval with objective "block", and train.init_from -------------


def test_block_training_learns_and_reports_its_bound(tmp_path, corpus):
    from redraft.config import load_config
    from redraft.model import load
    from redraft.train import train
    from tests.conftest import tiny_overrides
    from tests.test_train import TEXT, unigram_entropy

    extra = {"train.max_steps": 150, "train.lr": 1e-2, "train.eval_every": 150,
             "train.warmup_steps": 10, "diffusion.block_size": 4}
    result = train(load_config(None, tiny_overrides(corpus, tmp_path / "b", "block", **extra)))
    assert result.val_nats_per_token < 0.7 * unigram_entropy(TEXT), result.val_nats_per_token
    out = load(result.checkpoint).evaluate(samples=2, max_batches=2, estimator="count")
    assert out["objective"] == "block" and out["kind"] == "NLL upper bound (block ELBO)"
    assert out["nats_per_token"] < 0.7 * unigram_entropy(TEXT)


def test_init_from_the_ar_twin_starts_at_its_likelihood(tmp_path, corpus):
    """Block size 1, next-aligned, initialised from the AR twin: before any real update its
    (deterministic, count-estimator) bound is the twin's NLL, less the mass the twin gives
    the mask id (which SUBS removes)."""
    from redraft.checkpoint import load_checkpoint
    from redraft.config import load_config
    from redraft.errors import RedraftError
    from redraft.model import load
    from redraft.train import train
    from tests.conftest import tiny_overrides

    ar = train(load_config(None, tiny_overrides(corpus, tmp_path / "ar", "ar", **{
        "train.max_steps": 40, "train.lr": 1e-2})))
    extra = {"diffusion.block_size": 1, "diffusion.block_shift": True,
             "train.init_from": str(ar.run_dir), "train.max_steps": 1, "train.lr": 1e-12,
             "train.warmup_steps": 1}
    blk = train(load_config(None, tiny_overrides(corpus, tmp_path / "blk", "block", **extra)))
    a = load_checkpoint(ar.checkpoint).model.state_dict()
    b = load_checkpoint(blk.checkpoint).model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    kw = dict(samples=1, max_batches=2, estimator="count")
    nll = load(ar.checkpoint).evaluate(**kw)["nats_per_token"]
    bound = load(blk.checkpoint).evaluate(**kw)["nats_per_token"]
    assert bound <= nll + 1e-5 and nll - bound < 0.02, (bound, nll)

    wide = {**extra, "model.d_model": 64, "train.out_dir": str(tmp_path / "wide")}
    with pytest.raises(RedraftError, match="init_from.*does not fit.*shape"):
        train(load_config(None, tiny_overrides(corpus, tmp_path / "wide", "block", **wide)))


def test_config_checks_the_reveal_width():
    from redraft.config import config_from_dict
    from redraft.errors import RedraftError

    base = {"data": {"corpus": "x.txt"}, "model": {"seq_len": 16}}
    for d, match in [({"objective": "block", "block_reveal_width": 0}, "0 < width <= 1"),
                     ({"objective": "mdlm", "block_reveal_width": 0.5,
                       "elbo_estimator": "time"}, "for objective 'block'"),
                     ({"objective": "block", "block_size": 4, "block_reveal_width": 0.5},
                      "elbo_estimator 'time'")]:
        with pytest.raises(RedraftError, match=match):
            config_from_dict({**base, "diffusion": d})
    config_from_dict({**base, "diffusion": {"objective": "block", "block_size": 4,
                                            "block_reveal_width": 0.5,
                                            "elbo_estimator": "time"}})
    for d, match in [({"objective": "mdlm", "block_reveal_last": True}, "block_shift true"),
                     ({"objective": "block", "block_size": 4, "block_shift": False,
                       "block_reveal_last": True}, "block_shift=False")]:
        with pytest.raises(RedraftError, match=match):
            config_from_dict({**base, "diffusion": d})
    with pytest.raises(RedraftError, match="time-conditioned"):
        config_from_dict({**base, "model": {"seq_len": 16, "time_conditioning": True},
                          "diffusion": {"objective": "block", "block_size": 4,
                                        "block_reveal_last": True}})


def test_config_checks_block_size_and_clipping():
    from redraft.config import load_config
    from redraft.errors import RedraftError

    ok = load_config(None, ["diffusion.objective=block", "diffusion.block_size=16",
                            "diffusion.elbo_estimator=time", "diffusion.train_t_min=0.3",
                            "diffusion.train_t_max=0.8"])
    assert ok.diffusion.block_shift
    with pytest.raises(RedraftError, match="block_size=24: expected a divisor"):
        load_config(None, ["diffusion.objective=block", "diffusion.block_size=24"])
    with pytest.raises(RedraftError, match="train_t_max=0.8 clips.*'time'"):
        load_config(None, ["diffusion.objective=block", "diffusion.train_t_max=0.8"])
    with pytest.raises(RedraftError, match="train_t_max=0.2"):
        load_config(None, ["diffusion.train_t_min=0.3", "diffusion.train_t_max=0.2",
                           "diffusion.elbo_estimator=time"])
    with pytest.raises(RedraftError, match="process='uniform'"):
        load_config(None, ["diffusion.objective=block", "diffusion.process=uniform"])
    # The clip reaches training's draws; evaluation's draw_noise keeps (0, 1].
    c = DiffusionConfig(objective="block", block_size=4, elbo_estimator="time")
    noise = draw_noise(c, 8, 16, MID, torch.Generator().manual_seed(0), 0.3, "time", t_max=0.8)
    assert noise.t.min() > 0.3 and noise.t.max() <= 0.8
