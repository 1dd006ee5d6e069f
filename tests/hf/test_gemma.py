"""DiffusionGemma through redraft against transformers' own generate() on tiny random models.

The reference draws its randomness from torch's global generator (randint for the starting
canvas and each re-noising, multinomial for the denoiser's draws). Those draws are recorded
while generate() runs and replayed into redraft's rule through its Noise interface: then the
trajectory is the reference's, and every decoder call must see the same inputs and return the
same logits, and the final tokens must be equal. With redraft's own float64 streams the draws
differ (a different generator), so only the rule's logic is shared, not the tokens.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers")

from transformers.models.diffusion_gemma import generation_diffusion_gemma as gen  # noqa: E402

import redraft  # noqa: E402
from redraft.errors import RedraftError  # noqa: E402
from redraft.hf.testing import tiny_gemma  # noqa: E402


class Tape:
    """Replays recorded draws: canvases (randint) and denoiser draws (multinomial), in order."""

    def __init__(self, canvases, draws):
        self.canvases, self.draws = list(canvases), list(draws)

    def tokens(self, rows, length, vocab):
        return self.canvases.pop(0)[rows.cpu()]

    def draw(self, rows, probs):
        d = self.draws.pop(0)
        return d.view(-1, probs.shape[1])[rows.cpu()]


def record_calls(hf):
    """Wrap hf.forward: every decoder call's (canvas, self-conditioning, logits)."""
    calls, inner = [], hf.forward

    def forward(*a, **kw):
        out = inner(*a, **kw)
        if kw.get("decoder_input_ids") is not None:
            sc = kw.get("self_conditioning_logits")
            calls.append((kw["decoder_input_ids"].clone(), None if sc is None else sc.clone(),
                          out.logits.clone()))
        return out

    hf.forward = forward
    return calls


def reference(model, prompt_ids, new, steps, monkeypatch, **gen_kw):
    """transformers' generate() with its draws recorded; returns (tokens, calls, tape)."""
    hf = model.backbone.hf
    canvases, draws = [], []
    init, multinomial = gen.EntropyBoundSampler.initialize_canvas, torch.multinomial

    def rec_init(self, batch_size, device):
        out = init(self, batch_size, device)
        canvases.append(out.clone())
        return out

    def rec_multinomial(*a, **kw):
        out = multinomial(*a, **kw)
        draws.append(out.clone())
        return out

    monkeypatch.setattr(gen.EntropyBoundSampler, "initialize_canvas", rec_init)
    monkeypatch.setattr(torch, "multinomial", rec_multinomial)
    calls = record_calls(hf)
    torch.manual_seed(123)
    ids = torch.tensor([[model.tokenizer.bos_id, *prompt_ids]])
    out = hf.generate(ids, max_new_tokens=new, max_denoising_steps=steps, **gen_kw)
    monkeypatch.setattr(torch, "multinomial", multinomial)
    monkeypatch.setattr(gen.EntropyBoundSampler, "initialize_canvas", init)
    del hf.forward
    return out.sequences[0, 1:].tolist(), calls, Tape(canvases, draws)


@pytest.mark.parametrize("sharpen", [1.0, 30.0])
def test_gemma_equals_transformers_generate(tmp_path, monkeypatch, sharpen):
    """Same decoder inputs and logits at every step, same tokens, with the draws replayed.
    sharpen=30 gives peaked logits: many tokens pass the bound and rows stop early, so the
    stopping rule (stable and confident, with a looser confidence threshold read from the
    model's generation config by both) is exercised too."""
    config = {"confidence_threshold": 2.0} if sharpen > 1 else None
    model = redraft.load(f"hf:{tiny_gemma(tmp_path / 'g', sharpen=sharpen, generation=config)}")
    prompt = model.encode("Hello there")
    ref_tokens, ref_calls, tape = reference(model, prompt, 12, 6, monkeypatch,
                                            eos_token_id=None, pad_token_id=None)
    assert len(ref_calls) >= 3 and len(ref_tokens) == len(prompt) + 12
    calls = record_calls(model.backbone.hf)
    gen_out = model.sample([prompt], length=len(prompt) + 12, seeds=[0], steps=6, noise=tape)
    del model.backbone.hf.forward
    assert gen_out.tokens[0].tolist() == ref_tokens
    assert len(calls) == len(ref_calls)
    for (x, sc, logits), (rx, rsc, rlogits) in zip(calls, ref_calls, strict=True):
        assert torch.equal(x, rx)
        assert (sc is None) == (rsc is None) and (sc is None or torch.equal(sc, rsc))
        assert torch.equal(logits, rlogits)
    assert not tape.canvases and not tape.draws  # every recorded draw was used
    if sharpen > 1:
        assert len(calls) < 3 * 6  # some canvas stopped before its last step


def test_gemma_eos_stop_matches_reference(tmp_path, monkeypatch):
    """With EOS stopping the reference pads after a row's first EOS; redraft writes EOS there.
    Up to that substitution the texts agree."""
    model = redraft.load(f"hf:{tiny_gemma(tmp_path / 'g', sharpen=30.0, seed=3)}")
    tok = model.tokenizer
    prompt = model.encode("ab")
    ref, _, tape = reference(model, prompt, 16, 4, monkeypatch, eos_token_id=tok.eos_id,
                             pad_token_id=tok.pad_id)
    out = model.sample([prompt], length=len(prompt) + 16, seeds=[0], steps=4, noise=tape,
                       stop_at_eos=True).tokens[0].tolist()
    ref = [tok.eos_id if t == tok.pad_id else t for t in ref]
    assert out[:len(ref)] == ref[:len(out)]


def test_batched_rows_equal_rows_alone(tmp_path):
    """Rows with prompts of different lengths share decoder calls (left-padded caches, each
    row at its own positions): each row's tokens equal its run alone."""
    model = redraft.load(f"hf:{tiny_gemma(tmp_path / 'g', sharpen=10.0)}")
    prompts = [model.encode(p) for p in ("a", "Hello there, friend", "xyz", "pqr")]
    encoder_calls, inner = [], model.backbone.hf.model.encoder.forward

    def count(*a, **kw):
        encoder_calls.append(kw["input_ids"].shape)
        return inner(*a, **kw)

    model.backbone.hf.model.encoder.forward = count
    together = model.sample(prompts, length=28, seeds=[7, 8, 9, 10], steps=5)
    shared, encoder_calls[:] = list(encoder_calls), []
    calls = []
    for i, p in enumerate(prompts):
        alone = model.sample([p], length=28, seeds=[7 + i], steps=5)
        assert torch.equal(alone.tokens[0], together.tokens[i])
        calls.append(alone.nfe)
    # every live request steps in every call: the longest run's count, not the sum
    assert together.nfe == max(calls) < sum(calls)
    # "xyz" and "pqr" (equal lengths, in step) share their encoder calls
    assert len(shared) < len(encoder_calls) and any(s[0] == 2 for s in shared)


def test_gemma_knobs_and_errors(tmp_path):
    model = redraft.load(f"hf:{tiny_gemma(tmp_path / 'g', generation=dict(t_min=0.3))}")
    assert model.decoder.rule(None).t_min == 0.3  # the model's generation config
    rule = model.decoder.rule("confidence", options={"measure": "margin"}, steps=4)
    assert rule.measure == "margin"
    out = model.generate("ab", max_new_tokens=4, steps=3, sampler="confidence")
    assert len(out.tokens[0]) == 2 + 4
    with pytest.raises(RedraftError, match="does not apply to DiffusionGemma"):
        model.generate("ab", max_new_tokens=4, sampler="ancestral")
    with pytest.raises(RedraftError, match="cannot infill"):
        model.infill("a<|mask:3|>b")
    with pytest.raises(RedraftError, match="suffix"):
        model.generate("ab", max_new_tokens=4, suffix="z")
    with pytest.raises(RedraftError, match="no likelihood bound"):
        model.nll("abc")
    with pytest.raises(RedraftError, match="entropy_bound"):
        model.generate("ab", max_new_tokens=4, options={"entropy_bound": -1.0})


def test_entropy_bound_acceptance_exact():
    """Entropies 0, ln 2, ln 4 at three positions: the bound sums the accepted entropies but
    the largest, so 0.1 accepts the first two (0 + 0 and 0 + ln 2 - ln 2), 0.7 all three
    (0 + ln 2 <= 0.7), and the confidence measure accepts ceil(3 (i+1) / N) surest."""
    from redraft.sampling.entropy_bound import EntropyBound

    big = -1e4
    logits = torch.tensor([[[100.0, 0.0, 0.0, 0.0], [0.0, 0.0, big, big], [0.0, 0.0, 0.0, 0.0]]])
    drawn = torch.tensor([[0, 1, 2]])
    rule = EntropyBound(steps=3, t_min=1.0, t_max=1.0, entropy_bound=0.1)
    accepted, h = rule.accept(logits, drawn, 0)
    assert accepted.tolist() == [[True, True, False]]
    assert h[0, 1].item() == pytest.approx(math.log(2)) and h[0, 2].item() == pytest.approx(
        math.log(4))
    rule.entropy_bound = 0.7
    assert rule.accept(logits, drawn, 0)[0].tolist() == [[True, True, True]]
    conf = EntropyBound(steps=3, t_min=1.0, t_max=1.0, measure="confidence")
    assert conf.accept(logits, drawn, 0)[0].tolist() == [[True, False, False]]
    assert conf.accept(logits, drawn, 1)[0].tolist() == [[True, True, False]]
    assert conf.accept(logits, drawn, 2)[0].all()
    # the schedule: T runs from t_max at the first step to t_min at the last
    sched = EntropyBound(steps=4, t_min=0.4, t_max=0.8)
    z = torch.ones(1, 1, 2)
    assert sched.process(z, 0)[0, 0, 0].item() == pytest.approx(1 / 0.8)
    assert sched.process(z, 3)[0, 0, 0].item() == pytest.approx(1 / (0.4 + 0.4 / 4))


def test_entropy_bound_is_refused_by_redraft_models():
    from redraft.diffusion import make_process
    from redraft.sampling import make_sampler

    with pytest.raises(RedraftError, match="needs a DiffusionGemma"):
        make_sampler("entropy_bound", make_process("mask", mask_id=3), "mdlm")
