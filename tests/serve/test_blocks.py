"""Block-diffusion requests in the step-level batcher (serve/blocks.py): a request's tokens equal
offline sampling for the same seed and do not depend on the other requests running beside it;
rows of different requests at different blocks and positions share one network call; each
committed block is announced; cancelled requests free their cache slots."""

import pytest
import torch

pytest.importorskip("fastapi")

from redraft.model import load  # noqa: E402
from redraft.sampling import BlockState  # noqa: E402
from redraft.serve import Engine, Work  # noqa: E402


@pytest.fixture(scope="module")
def served(serve_runs, serve_block_run):
    return {"block": load(serve_block_run, name="block"), "mdlm": load(serve_runs["mdlm"]),
            "ar": load(serve_runs["ar"])}


def _block_works(tok):
    the, cat = tok.encode("the "), tok.encode("the cat sat ")
    # Different prompts (first blocks partly or wholly prompt), lengths (a partial last block),
    # steps, samplers (time grid and adaptive), knobs, n and EOS stops.
    return [
        Work("block", the, 30, [1, 2], steps=8),
        Work("block", cat, 40, [3], steps=10, sampler="confidence", temperature=0.8),
        Work("block", [], 24, [4], steps=6, sampler="threshold",
             options={"threshold": 0.5}, top_k=5),
        Work("block", the, 37, [5, 6, 7], steps=10, top_p=0.9, stop_at_eos=True),
        Work("block", the, 20, [8], sampler="first_hitting"),
        Work("block", cat, 64, [9], steps=8),  # the whole context
    ]


def _offline(model, w):
    return model.sample([w.prefix] * w.n, length=w.length, seeds=w.seeds, steps=w.steps,
                        sampler=w.sampler, options=w.options, temperature=w.temperature,
                        top_k=w.top_k, top_p=w.top_p, stop_at_eos=w.stop_at_eos).tokens


def test_start_gives_a_block_state_that_runs_to_the_offline_result(served):
    model = served["block"]
    w = _block_works(model.tokenizer)[1]
    state = model.start(w.prefix, length=w.length, seeds=w.seeds, steps=w.steps,
                        sampler=w.sampler, temperature=w.temperature)
    assert isinstance(state, BlockState) and state.block_size == 8
    engine = Engine({"block": model}, max_batch=4)  # not started: ticked by hand
    job = engine.submit(w)
    while not job.finished.is_set():
        engine.tick()
    assert job.final.kind == "done" and torch.equal(job.final.tokens, _offline(model, w))


def test_batched_block_requests_equal_offline_and_each_alone(served):
    tok = served["block"].tokenizer
    works = [*_block_works(tok), Work("mdlm", tok.encode("the "), 20, [1], steps=8),
             Work("ar", tok.encode("the "), 20, [2])]
    engine = Engine(served, max_batch=64)
    jobs = [engine.submit(w) for w in works]
    engine.start()  # everything was queued: the first tick admits all of it
    batched = [job.wait(60) for job in jobs]
    widest = engine.metrics.batch_rows.max
    engine.close()
    assert widest >= 6  # block rows of several requests shared calls (the widest has 3)
    for w, event in zip(works, batched, strict=True):
        assert event.kind == "done"
        if w.model != "block":
            continue
        alone = Engine(served, max_batch=4).start()
        by_itself = alone.submit(w).wait(60)
        alone.close()
        assert torch.equal(event.tokens, by_itself.tokens), w
        assert torch.equal(event.tokens, _offline(served["block"], w)), w


def test_rows_at_different_blocks_share_a_call(served, monkeypatch):
    """Ticked by hand: a request admitted while another is some blocks in joins its calls at
    once (rows at different positions, one call), and both still equal offline sampling."""
    model = served["block"]
    tok = model.tokenizer
    calls = []
    forward = model.backbone.forward

    def spy(x, *args, **kwargs):
        if kwargs.get("cache_rows") is not None:  # the engine's calls (offline: None)
            calls.append((x.shape[1], kwargs["positions"].tolist(),
                          kwargs["cache_rows"].tolist()))
        return forward(x, *args, **kwargs)

    monkeypatch.setattr(model.backbone, "forward", spy)
    engine = Engine({"block": model}, max_batch=8)
    first = engine.submit(Work("block", tok.encode("the "), 40, [1, 2], steps=10))
    for _ in range(7):  # 2 steps a block: the first request is in its fourth block
        engine.tick()
    calls.clear()
    second = engine.submit(Work("block", tok.encode("a dog "), 40, [3], steps=20,
                                temperature=0.7))
    events = []
    second.listener = events.append
    while not (first.finished.is_set() and second.finished.is_set()):
        engine.tick()
    shared = [c for c in calls if len(set(c[2])) == 3]
    assert shared and any(len(set(pos)) > 1 for _, pos, _ in shared)
    assert all(n % 8 == 0 for n, _, _ in calls)  # windows, or finished blocks + window
    for job in (first, second):
        assert torch.equal(job.final.tokens, _offline(model, job.work))
    # Each committed block is announced once, in order, with the canvas it committed.
    marks = [e.committed[0] for e in events if e.kind == "draft"]
    assert marks == sorted(set(marks)) and marks[-1] == 40 - 8
    final = second.final.tokens[0]
    for e in events[:-1]:
        assert torch.equal(e.tokens[0, :e.committed[0]], final[:e.committed[0]])


def test_cancel_frees_slots_and_drafts_every_step(served):
    model = served["block"]
    tok = model.tokenizer
    engine = Engine({"block": model}, max_batch=8)
    a = engine.submit(Work("block", tok.encode("the "), 64, [1, 2], steps=10**4))
    b = engine.submit(Work("block", tok.encode("the "), 24, [3], steps=6, drafts=True))
    seen = []
    b.listener = seen.append
    engine.tick()
    assert engine.stats()["active_rows"] == 3
    batch = engine._blocks.batches["block"]
    assert sorted(s for j in batch.jobs for s in batch.slots[j].tolist()) == [0, 1, 2]
    a.cancel()
    engine.tick()
    assert engine.stats()["active_rows"] == 1 and engine.metrics.cancelled == 1
    assert sorted(batch.free) == [0, 1, 3]  # the cancelled rows' slots, and the spare one
    c = engine.submit(Work("block", tok.encode("the "), 24, [4], steps=6))
    while not (b.finished.is_set() and c.finished.is_set()):
        engine.tick()
    assert not engine._blocks.batches  # the model's cache went with its last request
    drafts = [e for e in seen if e.kind == "draft"]
    assert len(drafts) == b.final.step - 1  # a draft after every step but the last
    for w, job in ((b.work, b), (c.work, c)):
        assert torch.equal(job.final.tokens, _offline(model, w))
