import torch
import torch.nn.functional as F

from redraft.config import DiffusionConfig, ModelConfig
from redraft.losses import ar_inputs, token_losses
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


def test_token_weighting_is_the_mean_over_masked_tokens():
    torch.manual_seed(0)
    model = Transformer(CFG, V, causal=False)
    x0 = torch.randint(0, 10, (4, 20))
    cfg = DiffusionConfig()
    for estimator in ("time", "count"):
        a = token_losses(model, x0, cfg, MASK, EOS, torch.Generator().manual_seed(1),
                         estimator=estimator, weighting="token")
        b = token_losses(model, x0, cfg, MASK, EOS, torch.Generator().manual_seed(1),
                         estimator=estimator, weighting="elbo")
        positive = a > 0  # the masked positions (same noise: same generator seed)
        assert torch.equal(positive, b > 0)
        mean_masked = (a[positive] * positive.sum() / a.numel()).mean()
        assert torch.allclose(a.mean(), mean_masked)
        assert not torch.allclose(a.mean(), b.mean())  # a different weighting of the same CE
