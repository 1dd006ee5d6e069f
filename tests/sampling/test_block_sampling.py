"""Block-diffusion sampling with the KV cache: the cached windows give the uncached logits
at every step, every masked step rule works inside a block, rows are batch-independent, EOS
stops a row after its block, and with the exact block denoiser the toy law comes out."""

import math

import pytest
import torch

from redraft.config import ModelConfig
from redraft.diffusion import LogLinearSchedule, MaskProcess
from redraft.errors import RedraftError
from redraft.models import Transformer
from redraft.sampling import SAMPLERS, BlockState, generate_block, generate_diffusion, make_sampler
from tests.block_toy import BOS, MASK, ExactBlockModel, toy_law

# All of them apply to the mask process but DiffusionGemma's own (tests/hf).
RULES = [name for name, info in SAMPLERS.items() if info.models != "diffusion_gemma"]
V, EOS, MID = 13, 10, 12
CFG = ModelConfig(n_layer=2, n_head=2, d_model=32, seq_len=24)
PROMPTS = [[1, 2, 3, 4, 5], [1], [2] * 9]


def process(mask_id=MID):
    return MaskProcess(mask_id, LogLinearSchedule())


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(CFG, V, causal=False, block_size=4).eval()


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("sampler", ["ancestral", "threshold"])
def test_cached_windows_give_the_uncached_logits_at_every_step(model, sampler, shift):
    rule = make_sampler(sampler, process(), "mdlm")
    state = BlockState(process(), rule, steps_per_block=3, length=22, block_size=4,
                       seeds=[0, 1, 2], prefixes=PROMPTS, shift=shift, bos_id=EOS)
    cache = model.new_cache(3)
    steps = 0
    with torch.no_grad():
        while not state.done:
            rows, y, t = state.uncached_call(False)
            reference = model(y).gather(1, state._index()[rows][..., None].expand(-1, -1, V))
            seen = torch.zeros(3, dtype=torch.bool)
            for group, yy, positions, _ in state.calls(False):
                cached = model(yy, cache=cache, positions=positions, cache_rows=group)[:, -4:]
                where = (rows[:, None] == group[None, :]).float().argmax(0)
                assert torch.allclose(cached, reference[where], atol=1e-5)
                state.set_window_logits(group, cached)
                seen[group] = True
            assert torch.equal(seen, torch.isin(torch.arange(3), rows))
            state.advance()
            steps += 1
    assert steps >= 6 and not (state.tokens == MID).any()


@pytest.mark.parametrize("sampler", RULES)
def test_every_rule_fills_keeps_the_prompt_and_is_batch_independent(model, sampler):
    kw = dict(steps_per_block=3, length=22, sampler=sampler, shift=True, bos_id=EOS)
    both = generate_block(model, process(), batch=3, seed=[5, 6, 7], prefix=PROMPTS, **kw)
    alone = generate_block(model, process(), batch=1, seed=[7], prefix=[PROMPTS[2]], **kw)
    uncached = generate_block(model, process(), batch=3, seed=[5, 6, 7], prefix=PROMPTS,
                              use_cache=False, **kw)
    x = both.tokens
    assert x.shape == (3, 22) and not (x == MID).any()
    for r, pre in enumerate(PROMPTS):
        assert x[r, :len(pre)].tolist() == pre
    assert torch.equal(x[2], alone.tokens[0])
    assert torch.equal(x, uncached.tokens)


def test_windows_only_reveal_the_current_block_and_calls_count_blocks(model):
    seen = []
    gen = generate_block(model, process(), steps_per_block=2, length=24, seed=0,
                         sampler="confidence", on_step=lambda i, x: seen.append(x[0].clone()))
    assert gen.steps == len(seen) == 12 and gen.nfe == 12  # 6 blocks x 2 steps, one call each
    for i, x in enumerate(seen):
        revealed = (x != MID).tolist()
        assert all(revealed[:(i // 2 + 1) * 4]) or i % 2 == 0
        assert not any(revealed[(i // 2 + 1) * 4:])
    # A prompt of two whole blocks is committed with the first call, never denoised.
    gen = generate_block(model, process(), steps_per_block=2, length=24, prefix=list(range(8)))
    assert gen.nfe == 8 and gen.steps == 8


class EosAt(torch.nn.Module):
    """A block model sure of token 2 everywhere but EOS at position `at`."""

    def __init__(self, at):
        super().__init__()
        self.cfg, self.time, self.block_size, self.at = CFG, None, 4, at
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def new_cache(self, batch):
        return None

    def forward(self, y, t=None, cache=None, positions=None, cache_rows=None):
        logits = torch.full((*y.shape, V), -9.0)
        logits[..., 2] = 9.0
        qpos = positions[:, None] + torch.arange(y.shape[1])
        logits[qpos == self.at] = torch.where(torch.arange(V) == EOS, 9.0, -9.0)
        return logits


def test_eos_stops_a_row_after_its_block():
    gen = generate_block(EosAt(5), process(), steps_per_block=2, length=24, eos_id=EOS,
                         sampler="threshold", temperature=0)
    assert gen.tokens[0].tolist() == [2] * 5 + [EOS] * 19
    assert gen.nfe == 2  # blocks 0 and 1, one sure step each, then the row stops


def test_errors_are_named(model):
    with pytest.raises(RedraftError, match="block-diffusion model"):
        generate_block(Transformer(CFG, V, causal=False), process(), steps_per_block=2)
    with pytest.raises(RedraftError, match="blocks of 4"):
        generate_block(model, process(), steps_per_block=2, block_size=8)
    with pytest.raises(RedraftError, match="bos_id"):
        generate_block(model, process(), steps_per_block=2, shift=True)
    with pytest.raises(RedraftError, match="steps_per_block"):
        generate_block(model, process(), steps_per_block=0)
    with pytest.raises(RedraftError, match="does not fit"):
        generate_block(model, process(), steps_per_block=1, length=4, prefix=[1] * 5)
    with pytest.raises(RedraftError, match="length=25"):
        generate_block(model, process(), steps_per_block=1, length=25)


def test_a_partial_last_block_is_cut(model):
    gen = generate_block(model, process(), steps_per_block=2, length=10, seed=3)
    assert gen.tokens.shape == (1, 10) and not (gen.tokens == MID).any()


# --- the toy law: sampling with the exact block denoiser -----------------------------------

N = 4000
SEQS, P = toy_law()
INDEX = {tuple(s.tolist()): i for i, s in enumerate(SEQS)}
NOISE = 0.5 * P.sqrt().sum().item() / math.sqrt(N)  # see tests/sampling/test_samplers.py


def toy_tv(block_size, shift, sampler, steps_per_block, reveal_width=1.0, reveal_last=False):
    gen = generate_block(ExactBlockModel(block_size, shift), process(MASK),
                         steps_per_block=steps_per_block, batch=N, seed=0, sampler=sampler,
                         shift=shift, bos_id=BOS, reveal_width=reveal_width,
                         reveal_last=reveal_last)
    codes = torch.tensor([INDEX[tuple(r)] for r in gen.tokens.tolist()])
    freq = torch.bincount(codes, minlength=len(SEQS)).double() / N
    return 0.5 * (freq - P).abs().sum().item()


def test_first_hitting_with_the_exact_block_denoiser_samples_the_law():
    assert toy_tv(2, False, "first_hitting", 1) < 2 * NOISE


def test_ancestral_matches_the_law_as_steps_per_block_grow():
    few, many = toy_tv(2, False, "ancestral", 1), toy_tv(2, False, "ancestral", 64)
    assert many < 2 * NOISE, (many, NOISE)
    assert few > many + 2 * NOISE, (few, many)  # one step: a block's tokens drawn apart


def test_ordered_reveals_sample_the_law_and_go_left_to_right():
    """Ordered in-block reveals (reveal_width < 1): the ancestral rule on per-position times
    samples the law with enough steps; with w <= 1/b and b steps, one position per step, in
    order; rows stay batch-independent."""
    assert toy_tv(4, False, "ancestral", 64, reveal_width=0.5) < 2 * NOISE
    torch.manual_seed(0)
    m = Transformer(CFG, V, causal=False, block_size=4).eval()
    seen = []
    kw = dict(steps_per_block=4, length=8, sampler="ancestral", reveal_width=0.25)
    generate_block(m, process(), batch=2, seed=[5, 6],
                   on_step=lambda i, x: seen.append((x != MID).sum(dim=1).tolist()), **kw)
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5, 6, 7, 8]
    kw.update(steps_per_block=2, reveal_width=0.5, length=24)
    both = generate_block(m, process(), batch=2, seed=[5, 6], **kw).tokens
    for r, seed in enumerate([5, 6]):
        assert torch.equal(both[r], generate_block(m, process(), batch=1, seed=seed,
                                                   **kw).tokens[0])


def test_next_aligned_block_one_is_exact_left_to_right_sampling():
    assert toy_tv(1, True, "ancestral", 1) < 2 * NOISE


def test_next_aligned_blocks_sample_the_law_when_the_last_position_comes_last():
    """With the shift no position of a block reads its last token, so revealing it early
    draws the others without it: the exact denoiser misses the law. Revealed last
    (reveal_last) it is drawn given all of them, and the law comes out."""
    assert toy_tv(2, True, "ancestral", 64) > 2 * NOISE
    assert toy_tv(2, True, "ancestral", 64, reveal_last=True) < 2 * NOISE
    assert toy_tv(4, True, "first_hitting", 1, reveal_last=True) < 2 * NOISE


@pytest.mark.parametrize("sampler", RULES)
def test_every_rule_reveals_a_blocks_last_position_last(model, sampler):
    kw = dict(steps_per_block=3, length=22, sampler=sampler, shift=True, bos_id=EOS,
              prefix=[[1, 2, 3, 4, 5], [1]], reveal_last=True)
    seen = []
    out = generate_block(model, process(), batch=2, seed=[0, 1],
                         on_step=lambda i, x: seen.append(x.clone()), **kw).tokens
    assert (out != MID).all()
    for before, after in zip(seen, seen[1:], strict=False):
        came = (before == MID) & (after != MID)
        for pos in torch.nonzero(came[:, 3::4]).tolist():  # (row, block) whose last came
            r, k = pos
            assert (after[r, 4 * k:4 * k + 3] != MID).all(), (sampler, r, k)
    for r, seed in enumerate([0, 1]):  # batch independence holds
        kw1 = {**kw, "prefix": [kw["prefix"][r]]}
        assert torch.equal(out[r], generate_block(model, process(), batch=1, seed=seed,
                                                  **kw1).tokens[0])
    with pytest.raises(RedraftError, match="next-token alignment"):
        generate_block(model, process(), batch=1, steps_per_block=2, reveal_last=True)


def test_one_block_of_seq_len_is_the_masked_sampler():
    """b = L, same alignment, one block: the block sampler is generate_diffusion's, step for
    step (same rule, same canvas, same draws)."""
    torch.manual_seed(0)
    m = Transformer(CFG, V, causal=False, block_size=24).eval()
    kw = dict(batch=2, seed=[3, 4], prefix=[1, 2], sampler="remask", temperature=0.9)
    a = generate_block(m, process(), steps_per_block=6, **kw)
    b = generate_diffusion(m, process(), steps=6, **kw)
    assert torch.equal(a.tokens, b.tokens)


def test_committed_counts_finished_blocks_and_stop_rows_ends_a_row(model):
    """What a server streams and stops on: committed() grows a block at a time (the whole
    length at the end); stop_rows finishes a row at once, keeps only its committed blocks, and
    leaves the other rows exactly as they would be without it."""
    def run(stop_at=None):
        rule = make_sampler("ancestral", process(), "mdlm")
        state = BlockState(process(), rule, steps_per_block=2, length=22, block_size=4,
                           seeds=[0, 1, 2], prefixes=PROMPTS, shift=True, bos_id=EOS)
        cache, seen, calls = model.new_cache(3), [], []
        with torch.no_grad():
            while not state.done:
                for group, y, positions, t in state.calls(False):
                    calls.append(group.tolist())
                    state.set_window_logits(group, model(y, t, cache=cache, positions=positions,
                                                         cache_rows=group)[:, -4:])
                state.advance()
                seen.append(state.committed().tolist())
                if stop_at is not None and state.i == stop_at:
                    state.stop_rows(torch.tensor([True, False, False]))
                    stopped = state.committed().tolist()
                    calls.clear()
        return state, seen, calls, (stopped if stop_at is not None else None)

    plain, seen, _, _ = run()
    # Prompt [1,2,3,4,5] fills block 0 and [2]*9 blocks 0-1: they start committed there.
    assert seen[0] == [4, 0, 8] and seen[1] == [8, 4, 12] and seen[-1] == [22, 22, 22]
    for before, after in zip(seen[:-1], seen[1:], strict=True):
        assert all(a >= b and (a - b) % 4 == 0 or a == 22
                   for a, b in zip(after, before, strict=True))
    stopped, _, calls_after, counts = run(stop_at=3)
    assert counts[0] == 8 and not any(0 in c for c in calls_after)
    assert (stopped.tokens[0, 8:] == MID).all()
    assert torch.equal(stopped.tokens[0, :8], plain.tokens[0, :8])
    assert torch.equal(stopped.tokens[1:], plain.tokens[1:])


def _run(state, model, steps=None):
    """Step a state with uncached calls (the reference logits), `steps` times or to its end."""
    with torch.no_grad():
        while not state.done and (steps is None or steps > 0):
            rows, y, t = state.uncached_call(False)
            if len(rows):
                logits = model(y)
                state.set_window_logits(rows, logits.gather(
                    1, state._index()[rows][..., None].expand(-1, -1, V)))
            state.advance()
            steps = None if steps is None else steps - 1
    return state


@pytest.mark.parametrize("sampler", ["ancestral", "threshold"])
@pytest.mark.parametrize("eos", [None, EOS])
def test_merged_states_give_each_state_its_own_tokens(model, sampler, eos):
    """BlockState.merge (the server's batcher): states of other lengths (a partial last
    block, so other widths), steps per block and prompts, merged when the first is already
    some steps in (rows at different steps of different blocks), then stepped as one, give
    each row exactly the tokens it gets alone; take() splits the rows back out."""
    def make(length, steps, prompt, seeds):
        return BlockState(process(), make_sampler(sampler, process(), "mdlm"),
                          steps_per_block=steps, length=length, block_size=4, seeds=seeds,
                          prefixes=[prompt] * len(seeds), eos_id=eos)

    specs = [(22, 3, PROMPTS[0], [0, 1]), (15, 2, PROMPTS[1], [2]),
             (24, 6, PROMPTS[2], [3, 4, 5]), (20, 6, [], [6, 7, 8])]
    alone = [_run(make(*spec), model).tokens for spec in specs]
    starts = [0, 2, 3, 6, 9]

    def merged():  # the first state mid-way through its second block
        return BlockState.merge([_run(make(*specs[0]), model, steps=4),
                                 *(make(*spec) for spec in specs[1:])])

    first = merged()
    assert first.x.shape == (9, 24) and first.n_blocks == 6
    if sampler == "ancestral":  # the rows do sit at different steps of their blocks
        assert len(set(first.local.tolist())) > 1 and len(set(first.row_steps.tolist())) > 1
    whole = _run(first, model)
    part = _run(merged(), model, steps=3)
    for i, ((length, *_), want) in enumerate(zip(specs, alone, strict=True)):
        rows = torch.arange(starts[i], starts[i + 1])
        assert torch.equal(whole.tokens[rows, :length], want)
        assert torch.equal(whole.committed()[rows], torch.full((len(want),), length))
        assert torch.equal(_run(part.take(rows), model).tokens[:, :length], want)


def test_rows_at_other_steps_need_a_rule_that_takes_row_times(model):
    rule = make_sampler("confidence", process(), "mdlm")
    states = [BlockState(process(), rule, steps_per_block=s, length=12, block_size=4,
                         seeds=[i], prefixes=[[1]]) for i, s in enumerate((2, 3))]
    merged = BlockState.merge(states)
    with pytest.raises(RedraftError, match="one time for all rows"):
        _run(merged, model)
