"""redraft.load(...) -> Model: the front door for both kinds, equal to the CLI for fixed seeds,
batch-independent, with exact AR likelihoods and clear errors."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import redraft
from redraft.cli import main
from redraft.diffusion import objective
from redraft.errors import RedraftError
from redraft.model import Model

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def models(serve_runs):
    return {kind: redraft.load(path) for kind, path in serve_runs.items()}


@pytest.mark.parametrize("kind", ["mdlm", "ar"])
def test_two_line_example_runs(serve_runs, kind):
    code = (f"import redraft; m = redraft.load({str(serve_runs[kind])!r}); "
            "print(m.generate('ROMEO:', max_new_tokens=32))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(SRC)}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ROMEO:")


@pytest.mark.parametrize("kind", ["mdlm", "ar"])
def test_generate_shapes_and_kind(models, kind):
    m = models[kind]
    assert m.kind == ("ar" if kind == "ar" else "diffusion") and m.objective.name == kind
    out = m.generate("the ", max_new_tokens=16, seed=3)
    assert len(out.tokens) == 1 and len(out.tokens[0]) == 4 + 16
    assert out.texts[0].startswith("the ") and str(out) == out.text == out.texts[0]
    assert out.texts[0] == "the " + out.completions[0] and out.nfe >= 1
    ids = m.encode("the ")
    assert m.generate(ids, max_new_tokens=16, seed=3).tokens == out.tokens  # ids == text


@pytest.mark.parametrize("kind", ["mdlm", "ar"])
def test_api_equals_cli(models, serve_runs, capsys, kind):
    steps = ["--steps", "6"] if kind == "mdlm" else []
    capsys.readouterr()
    assert main(["sample", str(serve_runs[kind]), "--json", "--prompt", "the ", "--length", "24",
                 "--seed", "7", "--num-samples", "2", "--temperature", "0.9", *steps]) == 0
    want = json.loads(capsys.readouterr().out)["samples"]
    knobs = {"steps": 6} if kind == "mdlm" else {}
    got = models[kind].generate("the ", length=24, seed=7, num_samples=2, temperature=0.9,
                                **knobs)
    assert got.texts == want


@pytest.mark.parametrize("kind", ["mdlm", "ar"])
def test_rows_do_not_depend_on_the_batch(models, kind):
    """Row r of a call draws from seed + r, whatever else is in the call: two prompts of
    different lengths (two canvas lengths, run as two batches) x two samples each."""
    m = models[kind]
    knobs = {"steps": 8} if kind == "mdlm" else {}
    both = m.generate(["the ", "a cat on "], max_new_tokens=12, num_samples=2, seed=5, **knobs)
    assert len(both.tokens) == 4 and len(both.tokens[2]) == 9 + 12
    for r, prompt in enumerate(["the ", "the ", "a cat on ", "a cat on "]):
        alone = m.generate(prompt, max_new_tokens=12, seed=5 + r, **knobs)
        assert alone.tokens[0] == both.tokens[r]
    assert both.tokens[0] != both.tokens[1]  # different seeds, different rows


def test_infill(models):
    m = models["mdlm"]
    out = m.infill("the <|mask:4|> sat on the <|mask:<=6|>.", seed=1, steps=8, num_samples=2)
    assert len(out.spans) == 2 and all(len(s) == 2 for s in out.spans)
    for text, spans in zip(out.texts, out.spans, strict=True):
        assert text.startswith("the ") and text.endswith(".")
        assert text == f"the {spans[0]} sat on the {spans[1]}."
    with pytest.raises(RedraftError, match="infill needs a diffusion model"):
        models["ar"].infill("the <|mask:4|> sat")


def test_ar_nll_is_exact(models):
    m = models["ar"]
    text = "the cat sat on the mat."
    ids = m.encode(text)
    x = torch.tensor([[m.tokenizer.eos_id, *ids]])
    with torch.no_grad():
        logp = torch.log_softmax(m.backbone(x).double(), dim=-1)[0, :-1]
    want = -logp[torch.arange(len(ids)), torch.tensor(ids)].sum().item()
    (score,) = m.nll(text)
    assert score.kind == "exact NLL" and score.tokens == len(ids) == score.bytes
    assert math.isclose(score.nats, want, rel_tol=1e-5)
    assert math.isclose(score.bits_per_byte, want / math.log(2) / len(ids), rel_tol=1e-5)


def test_diffusion_nll_is_a_seeded_bound(models):
    m = models["mdlm"]
    texts = ["the cat sat on the mat.", "the dog sat"]
    a, b = m.nll(texts, samples=8)
    assert a.kind == objective("mdlm").bound and "bound" in a.kind
    assert a.nats > 0 and a.stderr > 0 and math.isfinite(a.nats)
    assert m.nll(texts[1], samples=8, seed=1)[0].nats == b.nats  # text i uses seed + i
    assert m.nll(texts[0], samples=8, seed=2)[0].nats != a.nats


def test_bad_inputs_name_the_value(models):
    m = models["mdlm"]
    cases = [
        (dict(prompts="the ", max_new_tokens=4, length=20), "not both"),
        (dict(prompts="x" * 70, max_new_tokens=4), "does not fit"),
        (dict(prompts=[1, 2, 10**6], max_new_tokens=4), "outside the vocabulary"),
        (dict(prompts="the ", num_samples=0), "num_samples=0"),
        (dict(prompts="the ", max_new_tokens=0), "max_new_tokens=0"),
        (dict(prompts="the ", max_new_tokens=4, steps=0), "steps=0"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(RedraftError, match=needle):
            m.generate(**kwargs)
    with pytest.raises(RedraftError, match="needs a diffusion model"):
        models["ar"].generate("the ", max_new_tokens=4, sampler="euler")
    with pytest.raises(RedraftError, match="text 0 has 0 tokens"):
        m.nll("")
    with pytest.raises(RedraftError, match="hf:"):
        redraft.load("hf:nowhere")


def test_parts_must_agree(models):
    ar, mdlm = models["ar"], models["mdlm"]
    with pytest.raises(RedraftError, match="needs a noise process"):
        Model(mdlm.backbone, mdlm.tokenizer, "mdlm", None)
    with pytest.raises(RedraftError, match="needs bidirectional attention"):
        Model(ar.backbone, ar.tokenizer, "mdlm", mdlm.process)
    with pytest.raises(RedraftError, match="objective 'nope'"):
        Model(ar.backbone, ar.tokenizer, "nope")


@pytest.fixture(scope="module")
def block_run(tmp_path_factory):
    from tests.conftest import TEXT, tiny_overrides

    base = tmp_path_factory.mktemp("block")
    corpus = base / "corpus.txt"
    corpus.write_text(TEXT)
    run = base / "block"
    overrides = tiny_overrides(corpus, run, "block", **{"data.tokenizer": "byte",
                                                        "diffusion.block_size": 8,
                                                        "train.max_steps": 4})
    assert main(["train", *overrides]) == 0
    return run


def test_block_model_through_the_front_door(block_run, capsys):
    """A block-diffusion checkpoint loads, generates (blocks over its KV cache), equals the
    CLI for the same seed, scores texts with its bound; start() checks like sample()."""
    m = redraft.load(block_run)
    assert m.kind == "diffusion" and m.objective.blockwise and m.backbone.block_size == 8
    out = m.generate("the ", max_new_tokens=12, steps=8, seed=4, num_samples=2)
    assert [len(t) for t in out.tokens] == [16, 16] and out.texts[0].startswith("the ")
    capsys.readouterr()
    assert main(["sample", str(block_run), "--json", "--prompt", "the ", "--length", "16",
                 "--steps", "8", "--seed", "4", "--num-samples", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == out.texts
    (score,) = m.nll("the cat sat on the mat.", samples=4)
    assert "block" in score.kind and score.nats > 0
    with pytest.raises(RedraftError, match="blocks of 8"):
        m.generate("the ", max_new_tokens=8, block_size=4)
    with pytest.raises(RedraftError, match="leaves nothing to generate"):
        m.start(m.encode("the "), length=4, seeds=[0])
    with pytest.raises(RedraftError, match="guidance"):
        m.start(m.encode("the "), length=16, seeds=[0], guidance=1.0)
