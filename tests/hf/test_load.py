"""redraft.load('hf:...') for remote-code masked models and causal LMs; specs and errors."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

import redraft  # noqa: E402
from redraft.errors import RedraftError  # noqa: E402
from redraft.hf import parse_spec  # noqa: E402
from redraft.hf.testing import CHAT_TEMPLATE, tiny_causal, tiny_masked  # noqa: E402
from redraft.sampling import generate_ar  # noqa: E402


def test_remote_code_masked_model_loads_and_samples(tmp_path):
    folder = tiny_masked(tmp_path / "m")
    with pytest.raises(RedraftError, match="trust_remote_code=1"):
        redraft.load(f"hf:{folder}")
    model = redraft.load(f"hf:{folder}?trust_remote_code=1")
    assert isinstance(model, redraft.Model) and model.kind == "diffusion"
    assert model.objective.name == "mdlm" and model.process.name == "mask"
    assert model.tokenizer.mask_id == 3 and not model.backbone.shift
    # the backbone is the remote code's forward, logits untouched
    x = torch.tensor([[5, 3, 7, 3]])
    with torch.no_grad():  # (torch's encoder layer takes a fused path without grad)
        assert torch.equal(model.backbone(x), model.backbone.model(input_ids=x).logits)
    out = model.generate("ab", max_new_tokens=6, steps=6, num_samples=2)
    assert [len(t) for t in out.tokens] == [8, 8]
    assert all(3 not in row for row in out.tokens)  # every mask was filled
    # LLaDA's low-confidence remasking with semi-AR blocks: confidence + block_size
    semi = model.generate("ab", max_new_tokens=6, steps=6, sampler="confidence", block_size=3)
    assert 3 not in semi.tokens[0]
    assert model.nll("abc", samples=2)[0].nats > 0  # the ELBO works on it too


def test_dream_shift(tmp_path):
    """Dream's logits at p-1 predict token p: position p reads row p-1 (model_type Dream turns
    it on; ?shift=0 turns it off)."""
    folder = tiny_masked(tmp_path / "d", model_type="Dream")
    model = redraft.load(f"hf:{folder}", trust_remote_code=True)
    assert model.backbone.shift
    x = torch.tensor([[5, 3, 7, 3, 9]])
    with torch.no_grad():
        raw = model.backbone.model(input_ids=x).logits
        got = model.backbone(x)
    assert torch.equal(got[:, 1:], raw[:, :-1]) and torch.equal(got[:, 0], raw[:, 0])
    assert not redraft.load(f"hf:{folder}?trust_remote_code=1&shift=0").backbone.shift


def test_causal_lm_loads_as_ar(tmp_path):
    from transformers import AutoModelForCausalLM

    folder = tiny_causal(tmp_path / "c")
    model = redraft.load(f"hf:{folder}")
    assert model.is_ar and model.kind == "ar"
    out = model.generate("ab", max_new_tokens=5, temperature=0)
    ref = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.tensor([[model.tokenizer.eos_id, *model.encode("ab")]])
    greedy = ref.generate(ids, max_new_tokens=5, do_sample=False, eos_token_id=None,
                          pad_token_id=0)
    assert out.tokens[0] == greedy[0, 1:].tolist()  # our cached loop = transformers' greedy
    score = model.nll("abc")[0]
    assert score.kind == "exact NLL" and score.stderr == 0.0
    x = torch.tensor([[model.tokenizer.eos_id, *model.encode("abc")]])
    logp = ref(x).logits.log_softmax(-1)
    exact = -sum(logp[0, i, t].item() for i, t in enumerate(model.encode("abc")))
    assert score.nats == pytest.approx(exact, rel=1e-5)


def test_causal_lm_is_served_and_equals_offline(tmp_path):
    """The HF causal LM's own decoder (redraft.decoders.hf_causal): requests of different
    knobs, prompt lengths and admission ticks, beside a Hugging Face masked model in the same
    engine, give exactly the offline rows for the same seeds."""
    pytest.importorskip("fastapi")
    from redraft.serve import Engine, Work

    causal = redraft.load(f"hf:{tiny_causal(tmp_path / 'c')}", name="c")
    masked = redraft.load(f"hf:{tiny_masked(tmp_path / 'm')}?trust_remote_code=1", name="m")
    assert causal.decoder.name == "hf_causal" and masked.decoder.name == "canvas"
    enc = causal.encode
    first = [Work("c", enc("ab"), 9, [0, 1]),
             Work("c", enc("abcd"), 10, [2], temperature=0.7, top_k=5),
             Work("c", enc("ba"), 8, [3], top_p=0.9, stop_at_eos=True),
             Work("m", masked.encode("ab"), 8, [4, 5], steps=4, sampler="confidence")]
    later = Work("c", enc("abc"), 9, [6], temperature=0.0)
    engine = Engine({"c": causal, "m": masked}, max_batch=16)  # ticked by hand
    jobs = [engine.submit(w) for w in first]
    engine.tick()
    engine.tick()
    jobs.append(engine.submit(later))  # joins while the others are mid-way
    while not all(job.finished.is_set() for job in jobs):
        engine.tick()
    assert engine.metrics.batch_rows.max >= 3  # rows of a cohort share its calls
    for job in jobs:
        w, model = job.work, {"c": causal, "m": masked}[job.work.model]
        assert job.final.kind == "done", job.final.message
        offline = model.sample([w.prefix] * w.n, length=w.length, seeds=w.seeds,
                               request=w.request)
        assert torch.equal(job.final.tokens, offline.tokens), w
    # and the lockstep lane is the plain cached AR loop
    w = first[0]
    ref = generate_ar(causal.backbone, bos_id=causal.tokenizer.eos_id, batch=w.n,
                      length=w.length, prefix=w.prefix, seed=w.seeds,
                      banned=causal.tokenizer.non_text_ids)
    assert torch.equal(jobs[0].final.tokens, ref.tokens)


def test_chat_template(tmp_path):
    model = redraft.load(f"hf:{tiny_causal(tmp_path / 'c')}")
    assert model.tokenizer.tok.chat_template == CHAT_TEMPLATE
    text = model.chat_prompt([{"role": "user", "content": "hi"}])
    assert text == "<|user|>hi\n<|assistant|>"


def test_specs_and_errors(tmp_path):
    assert parse_spec("hf:org/name?mask_id=5&shift=1") == ("org/name",
                                                           {"mask_id": "5", "shift": "1"})
    folder = tiny_masked(tmp_path / "m")
    with pytest.raises(RedraftError, match="hf option 'bogus'"):
        redraft.load(f"hf:{folder}?bogus=1")
    with pytest.raises(RedraftError, match="mask_id='x'"):
        redraft.load(f"hf:{folder}?mask_id=x")
    with pytest.raises(RedraftError, match="kind='nope'"):
        redraft.load(f"hf:{folder}?kind=nope")
    with pytest.raises(RedraftError, match="outside the vocabulary"):
        redraft.load(f"hf:{folder}?trust_remote_code=1&mask_id=100000")
    with pytest.raises(RedraftError, match="no such folder"):
        redraft.load(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(RedraftError, match="for hf: specs"):
        redraft.load(folder, mask_id=3)
