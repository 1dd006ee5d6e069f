"""Tokens per forward and the oracle ceiling, counted by hand on toy runs; the AR twin's TPF
is exactly 1; every kind of model reports it through Model.generate."""

import pytest
import torch

import redraft
from redraft.data.tokenizers import CharTokenizer
from redraft.diffusion import LogLinearSchedule, MaskProcess
from redraft.errors import RedraftError
from redraft.model import Model
from redraft.sampling.tpf import TPF, counted

V, EOS, PAD, MID = 13, 10, 11, 12


class Alternating(torch.nn.Module):
    """Sure (confidence falling left to right) of token 1 at every position while the canvas
    holds an even number of revealed tokens, of token 2 while odd."""

    vocab_size, causal, seq_len, time_conditioned = V, False, 16, False
    device = torch.device("cpu")

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, xt, t=None, **_):
        B, L = xt.shape
        revealed = (xt != MID).sum(dim=1)  # (B,)
        best = 1 + revealed % 2  # (B,)
        logits = torch.zeros(B, L, V)
        logits[torch.arange(B)[:, None], torch.arange(L)[None, :], best[:, None]] = (
            5.0 - 0.1 * torch.arange(L))
        return logits


def toy_model():
    tok = CharTokenizer(list("abcdefghij"))
    assert (tok.eos_id, tok.pad_id, tok.mask_id) == (EOS, PAD, MID)
    return Model(Alternating(), tok, "mdlm", MaskProcess(MID, LogLinearSchedule()), name="toy")


def test_tpf_and_the_oracle_ceiling_by_hand_on_two_blocks():
    m = toy_model()
    # 8 new tokens, blocks of 4, the confidence rule at one token a step (8 steps), greedy.
    out = m.generate([], length=8, steps=8, block_size=4, sampler="confidence",
                     temperature=0, oracle=True)
    # step i reveals position i with 1 + i % 2 (the revealed count is i)
    assert out.tokens[0] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert (out.tpf.tokens, out.tpf.forwards) == (8, 8) and out.tpf.value == 1.0
    # First-final steps: block 0 (steps 0-3) sees argmax 1 at steps 0 and 2, 2 at steps 1 and 3:
    # positions 0, 2 final at step 0, positions 1, 3 at step 1; block 1 (steps 4-7, seen only
    # there): positions 4, 6 at step 4, 5, 7 at step 5. Distinct steps {0, 1, 4, 5}: 4.
    assert out.tpf.oracle_steps == 4 and out.tpf.ceiling == 2.0
    # Without the oracle: the same TPF, no ceiling.
    plain = m.generate([], length=8, steps=8, block_size=4, sampler="confidence",
                       temperature=0)
    assert plain.tpf == TPF(8, 8, None) and plain.tpf.ceiling is None


def test_tpf_counts_rows_prompts_and_eos():
    m = toy_model()
    # two rows, a prompt of 2: 6 new tokens a row; 3 steps of 2 tokens a row
    out = m.generate([3, 4], length=8, steps=3, num_samples=2, sampler="confidence",
                     temperature=0)
    assert (out.tpf.tokens, out.tpf.forwards) == (12, 6) and out.tpf.value == 2.0
    # the new tokens of a row end at its first EOS (stop_at_eos)
    x = torch.tensor([[3, 1, 2, EOS, 2, EOS], [3, 1, MID, MID, MID, MID]])
    gen = torch.tensor([False, True, True, True, True, True])
    mask = counted(x, gen, torch.tensor([6, 2]), MID, EOS)
    assert mask.sum(dim=1).tolist() == [3, 1]
    assert counted(x, gen, torch.tensor([6, 6]), MID, None).sum(dim=1).tolist() == [5, 1]


def test_early_commit_raises_tpf_and_the_ceiling_bounds_it():
    m = toy_model()
    kw = dict(length=12, steps=12, sampler="ancestral", seed=1, oracle=True)
    base = m.generate([], **kw)
    fast = m.generate([], early_commit=3.0, **kw)  # every gap is ~5: one forward
    assert fast.tpf.forwards == 1 and fast.tpf.value == 12.0
    assert base.tpf.value < fast.tpf.value
    assert base.tpf.value <= base.tpf.ceiling


@pytest.fixture(scope="module")
def models(serve_runs, serve_block_run):
    out = {kind: redraft.load(path) for kind, path in serve_runs.items()}
    out["block"] = redraft.load(serve_block_run)
    return out


def test_the_ar_twin_is_one_token_per_forward(models):
    out = models["ar"].generate(["the ", "a"], max_new_tokens=12, num_samples=2, seed=3)
    assert out.tpf == TPF(48, 48, None) and out.tpf.value == 1.0
    eos = models["ar"].generate("the ", max_new_tokens=40, num_samples=3, stop_at_eos=True)
    assert eos.tpf.value == 1.0 and eos.tpf.tokens <= 120
    with pytest.raises(RedraftError, match="oracle"):
        models["ar"].generate("the ", max_new_tokens=4, oracle=True)


@pytest.mark.parametrize("kind", ["mdlm", "block"])
def test_diffusion_models_report_tokens_over_forwards(models, kind):
    out = models[kind].generate("the ", max_new_tokens=16, steps=8, seed=2, num_samples=2,
                                oracle=True)
    t = out.tpf
    # a row whose canvas did not change in a step is not run again
    assert t.tokens == 32 and t.forwards <= out.nfe * 2
    assert t.value == t.tokens / t.forwards and 1.0 <= t.value <= 32
    assert t.ceiling >= 1.0 and t.oracle_steps <= 16
    infill = models[kind].infill("the <|mask:6|> and <|mask:4|>", steps=4)
    assert infill.tpf.tokens == 10
