"""Commit rules around every step rule: early commit (Prophet's gap test) is the base rule bit
for bit when it cannot fire and the argmax when it does; the EOS-aware stop spends fewer
network calls and changes nothing up to the EOS."""

import math

import pytest
import torch

from redraft.config import ModelConfig
from redraft.diffusion import LogLinearSchedule, MaskProcess
from redraft.errors import RedraftError
from redraft.models import Transformer
from redraft.sampling import SAMPLERS, generate_block, generate_diffusion
from redraft.sampling.commit import commit_early, top_gap

V, EOS, MID = 13, 10, 12
CFG = ModelConfig(n_layer=2, n_head=2, d_model=32, seq_len=24)
RULES = ["ancestral", *(n for n, i in SAMPLERS.items() if i.models == "masked")]
COMMITTING = ["ancestral", "first_hitting", "confidence", "threshold"]


def process():
    return MaskProcess(MID, LogLinearSchedule())


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(CFG, V, causal=False).eval()


@pytest.fixture(scope="module")
def block_model():
    torch.manual_seed(0)
    return Transformer(CFG, V, causal=False, block_size=4).eval()


class Peaked(torch.nn.Module):
    """A denoiser sure of token (position % 3) + 1 (gap 6 nats) wherever row's first token is
    1; elsewhere a mild preference (gap 0.5) for the same token. EOS at `eos` if given."""

    seq_len, time_conditioned, causal, device = 24, False, False, torch.device("cpu")

    def __init__(self, eos=None):
        super().__init__()
        self.eos = eos
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, xt, t=None):
        B, L = xt.shape
        best = torch.arange(L) % 3 + 1
        if self.eos is not None:
            best[self.eos] = EOS
        gap = torch.where(xt[:, :1] == 1, 6.0, 0.5)  # (B, 1)
        logits = torch.zeros(B, L, V)
        logits.scatter_(2, best.expand(B, L)[..., None], 1.0)
        return logits * gap[..., None]


@pytest.mark.parametrize("sampler", RULES)
@pytest.mark.parametrize("block_size", [None, 6])
def test_infinite_or_no_threshold_is_the_base_rule_bit_for_bit(model, sampler, block_size):
    kw = dict(steps=12, length=24, batch=3, seed=[3, 4, 5], prefix=[[1, 2], [4], [5, 5, 5]],
              sampler=sampler, block_size=block_size, temperature=0.9)
    base = generate_diffusion(model, process(), **kw)
    never = generate_diffusion(model, process(), early_commit=math.inf, **kw)
    high = generate_diffusion(model, process(), early_commit=1e9, **kw)
    for other in (never, high):
        assert torch.equal(base.tokens, other.tokens)
        assert (base.nfe, base.row_nfe, base.steps) == (other.nfe, other.row_nfe, other.steps)


@pytest.mark.parametrize("sampler", RULES)
def test_block_models_infinite_threshold_is_the_base_rule(block_model, sampler):
    kw = dict(steps_per_block=3, length=22, sampler=sampler, shift=True, bos_id=EOS, batch=2,
              seed=[1, 2], prefix=[[1, 2, 3], [4]])
    base = generate_block(block_model, process(), **kw)
    never = generate_block(block_model, process(), early_commit=math.inf, **kw)
    assert torch.equal(base.tokens, never.tokens) and base.row_nfe == never.row_nfe


@pytest.mark.parametrize("sampler", RULES)
@pytest.mark.parametrize("block_size", [None, 12])
def test_a_sure_block_is_committed_at_once_to_its_argmax(sampler, block_size):
    kw = dict(steps=12, length=24, prefix=[1], sampler=sampler, block_size=block_size,
              temperature=1.0, seed=7)
    gen = generate_diffusion(Peaked(), process(), early_commit=5.0, **kw)
    best = (torch.arange(24) % 3 + 1)
    assert torch.equal(gen.tokens[0, 1:], best[1:])  # the argmax, drawn at temperature 1
    assert gen.nfe == (1 if block_size is None else 2)  # one call per block
    base = generate_diffusion(Peaked(), process(), **kw)
    # (the threshold rule commits every position surer than 0.9 at once anyway)
    assert base.nfe > gen.nfe or (sampler == "threshold" and base.nfe == gen.nfe)
    # 6 nats is not above 7: the base rule
    again = generate_diffusion(Peaked(), process(), early_commit=7.0, **kw)
    assert torch.equal(again.tokens, base.tokens) and again.nfe == base.nfe


@pytest.mark.parametrize("sampler", ["ancestral", "confidence", "threshold"])
def test_a_row_that_commits_waits_and_its_batch_mate_is_unchanged(sampler):
    kw = dict(steps=8, length=24, sampler=sampler, block_size=12, temperature=1.0)
    both = generate_diffusion(Peaked(), process(), early_commit=5.0, batch=2, seed=[3, 4],
                              prefix=[[1], [2]], **kw)
    sure = generate_diffusion(Peaked(), process(), early_commit=5.0, seed=[3], prefix=[1], **kw)
    unsure = generate_diffusion(Peaked(), process(), seed=[4], prefix=[2], **kw)
    assert torch.equal(both.tokens[0], sure.tokens[0])
    assert torch.equal(both.tokens[1], unsure.tokens[0])  # gap 0.5: never fires
    # The waiting row is not run (its canvas, hence its logits, cannot change); it may even
    # save its next call: unchanged since its last input, its logits are reused.
    assert sure.row_nfe == 2
    assert unsure.row_nfe + 1 <= both.row_nfe <= unsure.row_nfe + 2


def test_block_models_commit_sure_blocks_at_once():
    class SureBlocks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cfg, self.time, self.block_size = CFG, None, 4
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def new_cache(self, batch):
            return None

        def forward(self, y, t=None, cache=None, positions=None, cache_rows=None):
            logits = torch.zeros(*y.shape, V)
            logits[..., 3] = 8.0
            return logits

    gen = generate_block(SureBlocks(), process(), steps_per_block=4, length=24, seed=0,
                         sampler="ancestral", early_commit=5.0)
    assert gen.tokens[0].tolist() == [3] * 24 and gen.nfe == 6  # 6 blocks, one call each
    base = generate_block(SureBlocks(), process(), steps_per_block=4, length=24, seed=0,
                          sampler="ancestral")
    assert base.nfe > 6


def test_the_gap_is_in_log_probability_and_ignores_the_mask():
    logits = torch.tensor([[[2.0, 0.5, -1.0, 9.0]]])  # the mask id 3 is the largest
    gap, best = top_gap(logits, mask_id=3)
    assert math.isclose(float(gap), 1.5) and int(best) == 0
    x = torch.tensor([[3]])
    xs = torch.tensor([[1]])
    out, fired = commit_early(x, xs, logits, torch.ones(1, 1, dtype=torch.bool), 3, 1.4)
    assert out.tolist() == [[0]] and fired.tolist() == [True]
    out, fired = commit_early(x, xs, logits, torch.ones(1, 1, dtype=torch.bool), 3, 1.5)
    assert out.tolist() == [[1]] and fired.tolist() == [False]  # strictly above


def test_bad_thresholds_are_named(model):
    for bad in (-1.0, math.nan, "x"):
        with pytest.raises(RedraftError, match="early_commit"):
            generate_diffusion(model, process(), steps=2, early_commit=bad)


# --- EOS-aware stop ----------------------------------------------------------------------


class EosLeftToRight(torch.nn.Module):
    """Sure of token 2 with confidence falling left to right (so confidence rules reveal in
    order), EOS at position `at`."""

    seq_len, time_conditioned, causal, device = 24, False, False, torch.device("cpu")

    def __init__(self, at):
        super().__init__()
        self.at = at
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, xt, t=None):
        L = xt.shape[1]
        logits = torch.zeros(*xt.shape, V)
        sure = 9.0 - 0.1 * torch.arange(L)
        logits[..., 2] = sure
        logits[:, self.at, 2], logits[:, self.at, EOS] = 0.0, sure[self.at]
        return logits


@pytest.mark.parametrize("block_size", [None, 12])
def test_a_settled_row_stops_before_its_block_ends(block_size):
    kw = dict(steps=24, length=24, sampler="confidence", block_size=block_size,
              temperature=0)
    gen = generate_diffusion(EosLeftToRight(5), process(), eos_id=EOS, **kw)
    assert gen.tokens[0].tolist() == [2] * 5 + [EOS] * 19
    # one position a step: positions 0..5 take 6 calls, then the text is settled
    assert gen.nfe == 6
    assert generate_diffusion(EosLeftToRight(5), process(), **kw).nfe == 24


@pytest.mark.parametrize("sampler", COMMITTING)
@pytest.mark.parametrize("block_size", [None, 8])
def test_eos_stop_changes_nothing_up_to_the_eos_and_saves_calls(model, sampler, block_size):
    seeds = list(range(12))
    kw = dict(steps=24, length=24, batch=len(seeds), seed=seeds, prefix=[1, 2],
              sampler=sampler, block_size=block_size, temperature=1.2)
    base = generate_diffusion(model, process(), **kw)
    stop = generate_diffusion(model, process(), eos_id=EOS, **kw)
    ended = 0
    for r in range(len(seeds)):
        row, ref = stop.tokens[r].tolist(), base.tokens[r].tolist()
        if EOS in ref[2:]:
            at = ref.index(EOS, 2)
            assert row[:at + 1] == ref[:at + 1] and row[at:] == [EOS] * (24 - at)
            ended += 1
        else:
            assert row == ref
    assert ended >= 3  # the test sees rows that stop
    assert stop.row_nfe < base.row_nfe


@pytest.mark.parametrize("sampler", COMMITTING)
def test_block_models_eos_stop_changes_nothing_up_to_the_eos(block_model, sampler):
    seeds = list(range(8))
    kw = dict(steps_per_block=4, length=24, batch=len(seeds), seed=seeds, prefix=[1, 2],
              sampler=sampler, temperature=1.2, shift=True, bos_id=EOS)
    base = generate_block(block_model, process(), **kw)
    stop = generate_block(block_model, process(), eos_id=EOS, **kw)
    for r in range(len(seeds)):
        row, ref = stop.tokens[r].tolist(), base.tokens[r].tolist()
        if EOS in ref[2:]:
            at = ref.index(EOS, 2)
            assert row[:at + 1] == ref[:at + 1] and row[at:] == [EOS] * (24 - at)
        else:
            assert row == ref
    assert stop.row_nfe < base.row_nfe
