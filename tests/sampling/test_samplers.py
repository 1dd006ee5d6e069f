"""Masked-model samplers (first-hitting, confidence, threshold, remask), blocks, EOS stop,
infilling templates, guidance and the sampler registry."""

import math

import pytest
import torch

from redraft.config import ModelConfig
from redraft.data.tokenizers import CharTokenizer
from redraft.diffusion import LogLinearSchedule, MaskProcess
from redraft.errors import RedraftError
from redraft.models import Transformer
from redraft.sampling import (
    SAMPLERS,
    Infill,
    Span,
    generate_diffusion,
    infill,
    make_sampler,
    parse_options,
    parse_template,
    sampler_options,
)
from tests.diffusion.test_masked import MASK
from tests.sampling.test_generate import ExactToyDenoiser

MASKED = [n for n, info in SAMPLERS.items() if info.models == "masked"]
EVERY = ["ancestral", *MASKED]
V = 13  # 10 text ids, eos 10, pad 11, mask 12
EOS, PAD, MID = 10, 11, 12
CFG = ModelConfig(n_layer=2, n_head=2, d_model=32, seq_len=24)
N = 4000


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(CFG, V, causal=False).eval()


def process(mask_id=MID):
    return MaskProcess(mask_id, LogLinearSchedule())


def toy_tv(sampler, steps, options=None):
    """Total variation between N samples and the toy law, drawn with the exact denoiser."""
    model = ExactToyDenoiser()
    index = {tuple(s.tolist()): i for i, s in enumerate(model.seqs)}
    gen = generate_diffusion(model, process(MASK), steps=steps, batch=N, seed=0,
                             sampler=sampler, options=options)
    codes = torch.tensor([index[tuple(r)] for r in gen.tokens.tolist()])
    freq = torch.bincount(codes, minlength=len(model.seqs)).double() / N
    return 0.5 * (freq - model.p).abs().sum().item(), gen


# Sampling noise alone: E[TV] <= 0.5 * sum_i sqrt(p_i / N) (Jensen), ~0.037 here; TV moves by
# at most 1/N per sample, so (McDiarmid) 2 x that mean fails by chance w.p. ~2e-5.
NOISE = 0.5 * ExactToyDenoiser().p.sqrt().sum().item() / math.sqrt(N)


def test_first_hitting_is_exact_with_the_exact_denoiser():
    err, gen = toy_tv("first_hitting", steps=1)
    assert err < 2 * NOISE, (err, NOISE)
    assert gen.nfe == 3  # one call per position, whatever `steps` says


def test_remask_matches_the_law_as_steps_grow():
    few, _ = toy_tv("remask", 2, {"eta": 0.5, "schedule": "rescale"})
    many, _ = toy_tv("remask", 64, {"eta": 0.5, "schedule": "rescale"})
    assert many < 2 * NOISE, (many, NOISE)
    assert few > many + 2 * NOISE, (few, many)


def test_remask_with_eta_zero_is_the_ancestral_step(model):
    kw = dict(steps=8, batch=3, seed=5, temperature=0.8, prefix=[1, 2])
    plain = generate_diffusion(model, process(), **kw).tokens
    zero = generate_diffusion(model, process(), sampler="remask", options={"eta": 0.0}, **kw)
    assert torch.equal(plain, zero.tokens)
    # With eta > 0 tokens are revisited: more network calls than reveals would need.
    some = generate_diffusion(model, process(), sampler="remask", options={"eta": 0.3}, **kw)
    assert (some.tokens != MID).all() and not torch.equal(some.tokens, plain)


@pytest.mark.parametrize("sampler", EVERY)
@pytest.mark.parametrize("block_size", [None, 5])
def test_every_sampler_fills_keeps_fixed_reproduces_and_is_batch_independent(model, sampler,
                                                                          block_size):
    canvas = [3, None, None, 4, None, None, None, 5, 5, None, None, None, None, 6,
              None, None, None, None, None, None, 7, None, None, 8]
    kw = dict(steps=20, length=24, sampler=sampler, block_size=block_size, canvas=canvas)
    both = generate_diffusion(model, process(), batch=2, seed=[11, 12], **kw)
    again = generate_diffusion(model, process(), batch=2, seed=[11, 12], **kw)
    alone = generate_diffusion(model, process(), batch=1, seed=[12], **kw)
    x = both.tokens
    assert (x != MID).all()
    fixed = torch.tensor([c is not None for c in canvas])
    assert torch.equal(x[:, fixed], torch.tensor([c for c in canvas if c is not None])
                       .expand(2, -1))
    assert torch.equal(x, again.tokens)
    assert torch.equal(x[1], alone.tokens[0])


def test_blocks_decode_left_to_right(model):
    seen = []
    generate_diffusion(model, process(), steps=12, length=24, block_size=8, seed=0,
                       sampler="confidence", on_step=lambda i, x: seen.append(x[0].clone()))
    assert len(seen) == 12
    for x in seen:
        revealed = (x != MID).tolist()
        first_masked = revealed.index(False) if False in revealed else 24
        # Nothing beyond the block holding the first mask is revealed yet.
        block_end = (first_masked // 8 + 1) * 8
        assert not any(revealed[block_end:]), revealed


class EosAt(torch.nn.Module):
    """A denoiser sure of token 2 everywhere except EOS at position `at`."""

    seq_len, time_conditioned, causal, device = 24, False, False, torch.device("cpu")

    def __init__(self, at):
        super().__init__()
        self.at = at
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, xt, t=None):
        logits = torch.full((*xt.shape, V), -9.0)
        logits[..., 2] = 9.0
        logits[:, self.at, 2], logits[:, self.at, EOS] = -9.0, 9.0
        return logits


def test_eos_stops_a_row_after_its_block(model):
    gen = generate_diffusion(EosAt(5), process(), steps=12, length=24, block_size=8,
                             eos_id=EOS, sampler="threshold", temperature=0)
    x = gen.tokens[0].tolist()
    assert x[:5] == [2] * 5 and x[5:] == [EOS] * 19
    assert gen.nfe == 1  # one block, one (sure) step, then the row stops
    full = generate_diffusion(EosAt(5), process(), steps=12, length=24, block_size=8,
                              sampler="threshold", temperature=0)
    assert full.nfe == 3 and full.tokens[0, 6:].eq(2).all()


def test_confidence_commits_the_scheduled_count(model):
    counts = []
    generate_diffusion(model, process(), steps=4, length=24, sampler="confidence",
                       options={"measure": "margin"},
                       on_step=lambda i, x: counts.append(int((x[0] != MID).sum())))
    assert counts == [6, 12, 18, 24]


def test_threshold_one_is_one_token_per_step_and_lower_thresholds_take_fewer_calls():
    model = ExactToyDenoiser()
    kw = dict(steps=1, batch=64, seed=1)
    one = generate_diffusion(model, process(MASK), sampler="threshold",
                             options={"threshold": 1.0}, **kw)
    assert one.nfe == 3
    # threshold 1 commits exactly the surest position per step: confidence with L steps.
    conf = generate_diffusion(model, process(MASK), sampler="confidence", **{**kw, "steps": 3})
    assert torch.equal(one.tokens, conf.tokens)
    rows = [generate_diffusion(model, process(MASK), sampler="threshold",
                               options={"threshold": th}, **kw).row_nfe
            for th in (1.0, 0.9, 0.5, 0.3, 1e-9)]
    assert rows == sorted(rows, reverse=True) and rows[0] == 3 * 64 and rows[-1] == 64


def test_infill_template_keeps_every_fixed_character(model):
    tok = CharTokenizer(list("abcdefghij"))
    assert (tok.eos_id, tok.pad_id, tok.mask_id) == (EOS, PAD, MID)
    template = "ab<|mask:2|>c<|mask:3|>dd<|mask:1|>e<|mask:<=4|>fj<|mask:2|>"
    spec = Infill.build(template, tok)
    assert len(spec.canvas) == 2 + 2 + 1 + 3 + 2 + 1 + 1 + 4 + 2 + 2
    texts, spans, gen = infill(model, process(), tok, template, steps=8, batch=3, seed=0,
                               sampler="threshold")
    for row, text, fills in zip(gen.tokens.tolist(), texts, spans, strict=True):
        lengths = [len(ids) for ids in spec.span_ids(row, tok)]
        assert lengths[:3] == [2, 3, 1] and lengths[3] <= 4 and lengths[4] == 2
        assert text == ("ab" + fills[0] + "c" + fills[1] + "dd" + fills[2] + "e" + fills[3]
                        + "fj" + fills[4])
    fixed = torch.tensor([c is not None for c in spec.canvas])
    assert torch.equal(gen.tokens[:, fixed], torch.tensor([c for c in spec.canvas
                                                          if c is not None]).expand(3, -1))
    # A flexible span ends at the first EOS / pad written in it.
    assert spec.span_ids([0] * 12 + [1, EOS, 3, 4] + [0] * 4, tok)[3] == [1]


def test_template_errors():
    assert parse_template("x<|mask:3|>y") == ["x", Span(3), "y"]
    assert parse_template("<|mask:<=7|>") == [Span(7, flexible=True)]
    for bad in ("no spans", "a<|mask:0|>", "a<|mask:x|>", "a<|mask:3>"):
        with pytest.raises(RedraftError):
            parse_template(bad)


def test_guidance_zero_is_the_plain_sampler_and_guidance_changes_the_draw(model):
    kw = dict(steps=8, batch=2, seed=3, prefix=[1, 2, 3], sampler="confidence")
    plain = generate_diffusion(model, process(), **kw)
    zero = generate_diffusion(model, process(), guidance=0.0, **kw)
    strong = generate_diffusion(model, process(), guidance=3.0, **kw)
    assert torch.equal(plain.tokens, zero.tokens) and plain.row_nfe == zero.row_nfe
    assert strong.row_nfe == 2 * plain.row_nfe  # conditional + unconditional rows per call
    assert not torch.equal(plain.tokens, strong.tokens)
    assert torch.equal(strong.tokens[:, :3], torch.tensor([[1, 2, 3]] * 2))
    with pytest.raises(RedraftError, match="guidance"):
        generate_diffusion(model, process(), guidance=-2.0, **kw)


def test_registry_validates_names_and_knobs(model):
    p = process()
    assert sampler_options("threshold", None) == {"threshold": 0.9, "measure": "confidence"}
    assert parse_options("remask", ["eta=0.1", "schedule=rescale"]) == {"eta": 0.1,
                                                                        "schedule": "rescale"}
    bad = [("nope", {}, "unknown sampler"), ("threshold", {"threshold": 1.5}, "threshold"),
           ("threshold", {"threshold": 0}, "threshold"), ("confidence", {"measure": "x"}, "one of"),
           ("remask", {"eta": -1.0}, "eta"), ("remask", {"schedule": "rescale", "eta": 2.0},
                                              "rescale"),
           ("ancestral", {"eta": 0.1}, "no options"), ("threshold", {"k": 3}, "no option 'k'"),
           ("threshold", {"threshold": "high"}, "expected float")]
    for name, opts, msg in bad:
        with pytest.raises(RedraftError, match=msg):
            make_sampler(name, p, "mdlm", options=opts)
    with pytest.raises(RedraftError, match="expected name=value"):
        parse_options("remask", ["eta"])
    with pytest.raises(RedraftError, match="expected float"):
        parse_options("remask", ["eta=lots"])
    with pytest.raises(RedraftError, match="masked denoiser"):
        make_sampler("first_hitting", p, "sedd")
    with pytest.raises(RedraftError, match="every block needs a step"):
        generate_diffusion(model, p, steps=2, length=24, block_size=8)
    with pytest.raises(RedraftError, match="block_size"):
        generate_diffusion(model, p, steps=4, length=24, block_size=0)


def test_condition_dropout_keeps_or_masks_the_prompt_and_never_scores_it():
    from redraft.config import DiffusionConfig
    from redraft.losses import condition_noise, draw_noise

    cfg = DiffusionConfig(cond_prefix_max=6, cond_dropout=0.5)
    gen = torch.Generator().manual_seed(0)
    noise = condition_noise(draw_noise(cfg, 64, 12, MID, gen), cfg, MID, gen)
    prefix = ~noise.scored
    lengths = prefix.sum(dim=1)
    assert lengths.max() <= 6 and lengths.min() == 0 and (lengths > 0).any()
    # A row's prefix is either all clean (kept) or all masked (dropped).
    kept = [bool((~noise.masked[b, :n]).all()) for b, n in enumerate(lengths.tolist()) if n]
    dropped = [bool(noise.masked[b, :n].all()) for b, n in enumerate(lengths.tolist()) if n]
    assert all(k or d for k, d in zip(kept, dropped, strict=True)) and any(kept) and any(dropped)
    assert (noise.values[prefix & noise.masked] == MID).all()


def test_prompt_conditioned_training_runs(tmp_path, corpus):
    from redraft.cli import main
    from tests.conftest import tiny_overrides

    over = tiny_overrides(corpus, tmp_path / "run", "mdlm", **{"diffusion.cond_prefix_max": 8,
                                                               "diffusion.cond_dropout": 0.2})
    assert main(["train", *over]) == 0
    with pytest.raises(RedraftError, match="cond_prefix_max"):
        from redraft.config import load_config

        load_config(None, ["diffusion.objective=sedd", "diffusion.process=uniform",
                           "diffusion.schedule_eps=0.001", "diffusion.cond_prefix_max=4"])


def test_cli_infill_samplers_and_errors(serve_runs, capsys):
    import json

    from redraft.cli import main

    run = str(serve_runs["mdlm"])
    assert main(["sample", run, "--json", "--steps", "6", "--num-samples", "2", "--infill",
                 "the <|mask:3|> sat<|mask:<=4|>.", "--sampler", "remask", "--sampler-opt",
                 "eta=0.1"]) == 0
    samples = json.loads(capsys.readouterr().out)["samples"]
    for text in samples:
        assert text.startswith("the ") and " sat" in text and text.endswith(".")
        assert len(text) <= len("the ") + 3 + len(" sat") + 4 + 1
    assert main(["samplers"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in SAMPLERS) and "threshold=0.9" in listing
    for argv, msg in (
        (["sample", str(serve_runs["ar"]), "--guidance", "1"], "needs a diffusion model"),
        (["sample", run, "--sampler", "threshold", "--sampler-opt", "threshold=x"], "float"),
        (["sample", run, "--infill", "no spans here"], "no span"),
        (["sample", run, "--infill", "a<|mask:2|>", "--prompt", "x"], "drop --prompt"),
    ):
        assert main(argv) == 2, argv
        assert msg in capsys.readouterr().err, argv


@pytest.mark.parametrize("sampler", ["analytic", "euler"])
def test_score_samplers_leave_no_mask_with_an_imperfect_score(model, sampler):
    """A learned score need not sum to what alpha(t) implies; the last step must still turn
    every mask into data (found by benchmarks/processes.py on a trained mask-sedd model)."""
    from redraft.diffusion import CosineSchedule

    class Shifted(torch.nn.Module):
        def __init__(self, shift):
            super().__init__()
            self.vocab_size, self.shift = V, shift
            self.seq_len, self.time_conditioned, self.causal = CFG.seq_len, False, False
            self.device = torch.device("cpu")
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, xt, t=None):
            return model(xt) + self.shift

    proc = MaskProcess(MID, CosineSchedule(), V)
    for shift in (1.0, -30.0):  # random scores, and scores that all but vanish
        out = generate_diffusion(Shifted(shift), proc, steps=4, batch=3, objective="sedd",
                                 sampler=sampler, prefix=[1, 2]).tokens
        assert (out != MID).all()


def test_time_at_inverts_every_schedule():
    from redraft.diffusion import SCHEDULES

    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    for name, cls in SCHEDULES.items():
        sched = cls(None)
        assert torch.allclose(sched.time_at(sched.alpha(t)), t, atol=1e-9), name


def test_every_sampler_follows_the_step_rule_protocol():
    from redraft.diffusion import make_process
    from redraft.sampling import SAMPLERS, AdaptiveStepRule, StepRule, make_sampler

    for name, info in SAMPLERS.items():
        if info.models == "diffusion_gemma":  # its own loop (hf/gemma.py), tests/hf
            continue
        trained_with, process = ("sedd", make_process("uniform", mask_id=MID, vocab_size=V,
                                                      schedule_eps=1e-3)) \
            if info.models == "any" else ("mdlm", make_process("mask", mask_id=MID))
        rule = make_sampler(name, process, trained_with)
        adaptive = getattr(rule, "adaptive", False)
        assert adaptive == info.adaptive
        assert isinstance(rule, AdaptiveStepRule if adaptive else StepRule)
        assert rule.name == name
