import torch
import torch.nn.functional as F

from redraft.config import DiffusionConfig, ModelConfig
from redraft.losses import ar_inputs, draw_noise, token_losses
from redraft.models import Transformer

V, MASK, EOS = 12, 11, 10
CFG = ModelConfig(n_layer=1, n_head=2, d_model=16, seq_len=20)


def test_ar_losses_score_every_token_of_the_window():
    torch.manual_seed(0)
    model = Transformer(CFG, V, causal=True)
    x0 = torch.randint(0, 10, (3, 20))
    got = token_losses(model, x0, DiffusionConfig(objective="ar"), MASK, EOS)
    inp = ar_inputs(x0, EOS)
    assert torch.equal(inp[:, 0], torch.full((3,), EOS)) and torch.equal(inp[:, 1:], x0[:, :-1])
    want = F.cross_entropy(model(inp).reshape(-1, V), x0.reshape(-1), reduction="none")
    assert got.shape == (3, 20) and torch.allclose(got.reshape(-1), want, atol=1e-6)


def _cross_entropy_by_hand(model, x0, noise):
    """-log p_theta(x0_l | xt) under SUBS at every position (B, L), written out independently
    of the library: the mask logit removed, log-softmax, the clean token's entry."""
    xt = torch.where(noise.masked, noise.values, x0)
    logits = model(xt, noise.t).float()
    logits[..., MASK] = float("-inf")
    return -torch.log_softmax(logits, dim=-1).gather(-1, x0[..., None])[..., 0]


def test_token_weighting_is_the_mean_over_masked_tokens():
    """Exact values: with the same noise, "token" scores every masked position by its
    cross-entropy times B * L / (masks in the batch), so the loss (the mean over the batch)
    is the plain mean cross-entropy over the masked tokens; "elbo" weights each row by 1/t
    (log-linear schedule) or L/k (count estimator) instead. Unmasked positions score 0."""
    torch.manual_seed(0)
    model = Transformer(CFG, V, causal=False)
    x0 = torch.randint(0, 10, (4, 20))
    cfg = DiffusionConfig()
    for estimator in ("time", "count"):
        noise = draw_noise(cfg, 4, 20, MASK, torch.Generator().manual_seed(1),
                           estimator=estimator)
        masked = noise.masked
        assert 0 < masked.sum() < masked.numel()
        ce = _cross_entropy_by_hand(model, x0, noise)
        a = token_losses(model, x0, cfg, MASK, EOS, torch.Generator().manual_seed(1),
                         estimator=estimator, weighting="token")
        b = token_losses(model, x0, cfg, MASK, EOS, torch.Generator().manual_seed(1),
                         estimator=estimator, weighting="elbo")
        scale = masked.numel() / masked.sum()
        assert torch.allclose(a, torch.where(masked, ce * scale, 0.0), atol=1e-5)
        assert torch.allclose(a.mean(), ce[masked].mean(), atol=1e-5)
        row_weight = 1 / noise.t if estimator == "time" else 20 / noise.k.float()
        assert torch.allclose(b, torch.where(masked, ce * row_weight[:, None], 0.0),
                              atol=1e-4)
        assert not torch.allclose(a.mean(), b.mean())  # a different weighting of the same CE
