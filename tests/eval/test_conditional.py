"""log p(continuation | context): exact for the AR twin (the chain rule over Model.nll), and
for diffusion a Monte Carlo bound whose expectation is checked against the bound computed
exactly by enumerating every mask pattern of a short continuation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import redraft
from redraft.checkpoint import build_model
from redraft.config import Config
from redraft.data.tokenizers import CharTokenizer
from redraft.diffusion.block import block_inputs
from redraft.errors import RedraftError
from redraft.eval.conditional import rolling_windows, score, score_rolling
from redraft.losses import process_of
from redraft.model import Model


@pytest.fixture(scope="module")
def models(serve_runs):
    return {kind: redraft.load(path) for kind, path in serve_runs.items()}


def test_ar_scores_are_the_exact_nll(models):
    m = models["ar"]
    ctx, cont = "the cat sat", " on the mat."
    whole, alone = m.nll([ctx + cont, ctx])
    got = score(m, m.encode(ctx), m.encode(cont))
    assert got.stderr == 0 and got.samples == 1 and got.tokens == len(cont)
    assert got.logprob == pytest.approx(-(whole.nats - alone.nats), rel=1e-6)
    # no context: the text after BOS, exactly Model.nll's figure
    assert score(m, [], m.encode(ctx + cont)).logprob == -whole.nats
    assert score_rolling(m, m.encode(ctx + cont)).logprob == -whole.nats


def test_ar_long_text_rolls_over_windows(models):
    m = models["ar"]
    ids = m.encode("the dog sat on the mat. " * 6)  # 144 tokens, context 64
    windows = rolling_windows(len(ids), m.seq_len)
    assert windows == [(0, 64), (64, 96), (96, 128), (128, 144)]
    total = sum(score(m, ids[:a], ids[a:b]).logprob for a, b in windows)
    assert score_rolling(m, ids).logprob == pytest.approx(total, rel=1e-12)
    # each window after the first sees the 64 - its length tokens before it, after no BOS
    a, b = windows[1]
    x = torch.tensor([ids[b - 65:b - 1]])
    with torch.no_grad():
        logp = torch.log_softmax(m.backbone(x)[0, -(b - a):].double(), -1)
    want = logp.gather(1, torch.tensor(ids[a:b])[:, None]).sum().item()
    assert score(m, ids[:a], ids[a:b]).logprob == pytest.approx(want, abs=1e-4)


def test_long_continuations_follow_the_chain_rule(models):
    """A continuation longer than the context is scored in pieces of half a context."""
    for kind in ("ar", "mdlm"):
        m = models[kind]
        ctx, cont = m.encode("a cat "), m.encode("the dog sat on the mat. " * 4)  # 96 > 64
        got = score(m, ctx, cont, samples=4)
        parts = [score(m, ctx + cont[:a], cont[a:a + 32], samples=4) for a in (0, 32, 64)]
        assert got.logprob == pytest.approx(sum(p.logprob for p in parts), rel=1e-12)
        assert got.tokens == 96
        assert got.stderr == pytest.approx(math.sqrt(sum(p.stderr ** 2 for p in parts)))


def _denoiser_nll(m, canvas, masked):
    """-log p(x_i | canvas with `masked` positions masked) at those positions (SUBS)."""
    x0 = torch.tensor([canvas])
    xt = x0.clone()
    xt[0, list(masked)] = m.tokenizer.mask_id
    with torch.no_grad():
        logits = m.backbone(xt, torch.ones(1)).double()
    logits[..., m.tokenizer.mask_id] = -math.inf
    logp = torch.log_softmax(logits, -1)[0]
    return -sum(logp[i, canvas[i]].item() for i in masked)


def _exact_elbo(m, canvas, n):
    """The conditional ELBO of the last n tokens, t integrated out: k uniform on 1..n, the
    masked set uniform among the C(n, k) sets, weight n / k."""
    positions = range(len(canvas) - n, len(canvas))
    total = 0.0
    for k in range(1, n + 1):
        sets = list(itertools.combinations(positions, k))
        total += sum(n / k * _denoiser_nll(m, canvas, s) for s in sets) / len(sets) / n
    return total


def test_one_token_continuation_is_exact(models):
    m = models["mdlm"]
    ctx, cont = m.encode("the cat "), m.encode("s")
    got = score(m, ctx, cont, samples=8)
    assert got.stderr == 0
    assert got.logprob == pytest.approx(-_denoiser_nll(m, ctx + cont, [len(ctx)]), abs=1e-5)


@pytest.mark.parametrize("estimator", ["count", "time"])
def test_diffusion_bound_matches_the_enumerated_elbo(models, estimator):
    m = models["mdlm"]
    ctx, cont = m.encode("the cat sat"), m.encode(" on")
    exact = _exact_elbo(m, ctx + cont, len(cont))
    got = score(m, ctx, cont, samples=256, seed=1, estimator=estimator)
    assert got.samples == 256 and 0 < got.stderr < 1.0
    assert abs(-got.logprob - exact) < 4 * got.stderr
    few = score(m, ctx, cont, samples=16, seed=1, estimator=estimator)
    assert few.stderr > got.stderr  # more draws, smaller error
    assert score(m, ctx, cont, samples=16, seed=1, estimator=estimator) == few  # seeded


def test_block_bound_matches_the_enumerated_elbo():
    """A random block model (blocks of 4, AR-aligned inputs): a continuation across two blocks
    scores each block's part given the clean blocks before it, independently."""
    tok = CharTokenizer(sorted(set("abcdefgh ")))
    cfg = Config()
    cfg.model.n_layer, cfg.model.n_head, cfg.model.d_model, cfg.model.seq_len = 1, 2, 16, 16
    cfg.diffusion.objective, cfg.diffusion.block_size = "block", 4
    torch.manual_seed(0)
    backbone = build_model(cfg, tok.vocab_size).eval()
    m = Model(backbone, tok, "block", process_of(cfg.diffusion, tok.mask_id), config=cfg)
    ctx, cont = tok.encode("abcdef"), tok.encode("ghab")  # positions 6, 7 | 8, 9
    canvas = ctx + cont
    x0 = torch.tensor([canvas])

    def nll(masked):
        xt = x0.clone()
        xt[0, list(masked)] = tok.mask_id
        yt, y0 = block_inputs(xt, x0, 4, True, tok.eos_id)
        with torch.no_grad():
            logits = backbone(yt, torch.ones(1, len(canvas)), x0=y0).double()
        logits[..., tok.mask_id] = -math.inf
        logp = torch.log_softmax(logits, -1)[0]
        return -sum(logp[i, canvas[i]].item() for i in masked)

    exact = 0.0
    for block in ((6, 7), (8, 9)):
        n = len(block)
        for k in range(1, n + 1):
            sets = list(itertools.combinations(block, k))
            exact += sum(n / k * nll(s) for s in sets) / len(sets) / n
    got = score(m, ctx, cont, samples=512, seed=2)
    assert abs(-got.logprob - exact) < 4 * got.stderr
    with pytest.raises(RedraftError, match="estimator 'count' needs a masked"):
        score(m, ctx, cont, estimator="count")


def test_bad_requests_name_the_value(models):
    m = models["mdlm"]
    with pytest.raises(RedraftError, match="continuation is empty"):
        score(m, [1, 2], [])
    with pytest.raises(RedraftError, match="samples=0"):
        score(m, [1], [2], samples=0)
    with pytest.raises(RedraftError, match="estimator 'exact'"):
        score(m, [1], [2], estimator="exact")
