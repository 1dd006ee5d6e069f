import torch

from redraft.config import ModelConfig
from redraft.models import Transformer

CFG = ModelConfig(n_layer=2, n_head=2, d_model=32, seq_len=16)


def test_shapes_and_params():
    m = Transformer(CFG, 11, causal=False)
    assert m(torch.randint(0, 11, (3, 16))).shape == (3, 16, 11)
    tied = m.num_params()
    untied = Transformer(ModelConfig(**{**CFG.__dict__, "tie_weights": False}), 11, False)
    assert untied.num_params() == tied + 11 * 32


def test_causal_ignores_future_bidirectional_does_not():
    torch.manual_seed(0)
    x = torch.randint(0, 11, (1, 16))
    y = x.clone()
    y[0, 10] = (y[0, 10] + 1) % 11
    causal = Transformer(CFG, 11, causal=True).eval()
    assert torch.allclose(causal(x)[:, :10], causal(y)[:, :10], atol=1e-6)
    assert not torch.allclose(causal(x)[:, 10:], causal(y)[:, 10:], atol=1e-6)
    bidir = Transformer(CFG, 11, causal=False).eval()
    assert not torch.allclose(bidir(x)[:, :10], bidir(y)[:, :10], atol=1e-6)


def test_kv_cache_matches_full_forward():
    torch.manual_seed(0)
    m = Transformer(CFG, 11, causal=True).eval()
    x = torch.randint(0, 11, (2, 16))
    full = m(x)
    cache = m.new_cache(2)
    parts = [m(x[:, :5], cache=cache), m(x[:, 5:9], cache=cache)]  # prefill, then a chunk
    parts += [m(x[:, i:i + 1], cache=cache) for i in range(9, 16)]  # then one at a time
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)


def test_time_conditioning_uses_t():
    torch.manual_seed(0)
    m = Transformer(ModelConfig(**{**CFG.__dict__, "time_conditioning": True}), 11, False)
    x = torch.randint(0, 11, (1, 16))
    assert not torch.allclose(m(x, torch.tensor([0.1])), m(x, torch.tensor([0.9])))


def test_ragged_decode_equals_per_row_decode():
    """Rows at different positions share one call (the server's AR batch): each row's logits
    equal those of decoding it alone with the ordinary cache path."""
    torch.manual_seed(0)
    m = Transformer(CFG, 11, causal=True).eval()
    prompts = [torch.randint(0, 11, (1, n)) for n in (3, 7, 5)]
    cache = m.new_cache(3)
    alone = []
    with torch.no_grad():
        for r, p in enumerate(prompts):
            one = m.new_cache(1)
            m(p, cache=one)
            for i in range(len(cache.k)):
                cache.k[i][r, :, :p.shape[1]] = one.k[i][0, :, :p.shape[1]]
                cache.v[i][r, :, :p.shape[1]] = one.v[i][0, :, :p.shape[1]]
            nxt = torch.tensor([[r + 1]])
            alone.append(m(nxt, cache=one)[0, -1])
        positions = torch.tensor([p.shape[1] for p in prompts])
        ragged = m(torch.tensor([[1], [2], [3]]), cache=cache, positions=positions)[:, -1]
    assert torch.allclose(ragged, torch.stack(alone), atol=1e-5)


def _backward_saving(model, x):
    """(bytes of activations kept for the backward pass at its peak, gradients): every tensor
    autograd saves goes through the pack hook, and is freed when the backward pass has used it;
    parameters do not count (they are stored anyway)."""
    params = {p.data_ptr() for p in model.parameters()}
    saved = []

    def pack(t):
        if t.data_ptr() not in params:
            saved.append(t.numel() * t.element_size())
        return t

    model.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(x)
    total = sum(saved)
    logits.float().square().mean().backward()
    return total, [p.grad.clone() for p in model.parameters()]


def test_activation_checkpointing_saves_fewer_activations_same_gradients():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=4, n_head=2, d_model=32, seq_len=64)
    model = Transformer(cfg, 11, causal=False).train()
    x = torch.randint(0, 11, (2, 64))
    plain_bytes, plain_grads = _backward_saving(model, x)
    model.checkpoint_blocks = True
    ckpt_bytes, ckpt_grads = _backward_saving(model, x)
    # Recomputing keeps only each block's input (B, L, C) instead of everything inside it.
    block_inputs = cfg.n_layer * 2 * 64 * 32 * 4
    assert ckpt_bytes < plain_bytes / 4
    assert plain_bytes - ckpt_bytes > block_inputs
    for a, b in zip(plain_grads, ckpt_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
