"""Block-diffusion requests in the step-level batcher (serve/blocks.py): a request's tokens equal
offline sampling for the same seed and do not depend on the other requests running beside it;
rows of different requests at different blocks and positions share one network call a tick;
each committed block is announced; cancelled requests free their cache slots."""

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


def test_calls_stay_within_max_batch(served):
    """One row a call (--max-batch 1): a long prompt's blocks and each finished block reach
    the cache in calls of their own, before the window that reads them; still exact."""
    model = served["block"]
    w = Work("block", model.encode("the cat sat on the mat. the "), 48, [3], steps=12)
    engine = Engine({"block": model}, max_batch=1)
    job = engine.submit(w)
    while not job.finished.is_set():
        engine.tick()
    assert engine.metrics.batch_rows.max == 1
    assert torch.equal(job.final.tokens, _offline(model, w))


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
                                temperature=0.7, stream=True))
    events = []
    second.listener = events.append
    ticks = 0
    while not (first.finished.is_set() and second.finished.is_set()):
        engine.tick()
        ticks += 1
    shared = [c for c in calls if len(set(c[2])) == 3]
    assert shared and any(len(set(pos)) > 1 for _, pos, _ in shared)
    assert all(n == 8 for n, _, _ in calls)  # one block a row: windows and finished blocks
    assert len(calls) <= ticks  # and at most one call a tick
    for job in (first, second):
        assert torch.equal(job.final.tokens, _offline(model, job.work))
    # Each committed block is announced once, in order, with the canvas it committed.
    marks = [e.counts[0] for e in events if e.kind == "commit"]
    assert marks == [8, 16, 24, 32] and len(events) == 5 and events[-1].kind == "done"
    final = second.final.tokens[0]
    for e in events[:-1]:
        assert torch.equal(e.tokens[0, :e.counts[0]], final[:e.counts[0]])


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
    batch = engine._lanes["block"]
    assert sorted(s for j in batch.jobs for s in batch.slots[j].tolist()) == [0, 1, 2]
    a.cancel()
    engine.tick()
    assert engine.stats()["active_rows"] == 1 and engine.metrics.cancelled == 1
    assert sorted(batch.free) == [0, 1, 3]  # the cancelled rows' slots, and the spare one
    c = engine.submit(Work("block", tok.encode("the "), 24, [4], steps=6))
    while not (b.finished.is_set() and c.finished.is_set()):
        engine.tick()
    lane = engine._lanes["block"]
    assert not lane.jobs and lane.cache is None  # the cache went with its last request
    drafts = [e for e in seen if e.kind == "draft"]
    assert len(drafts) == b.final.step - 1  # a draft after every step but the last
    for w, job in ((b.work, b), (c.work, c)):
        assert torch.equal(job.final.tokens, _offline(model, w))


@pytest.fixture(scope="module")
def client(served):
    from fastapi.testclient import TestClient

    from redraft.serve import create_app

    with TestClient(create_app([served["block"], served["mdlm"]], max_steps=1000)) as c:
        yield c


def _events(client, body):
    import json

    with client.stream("POST", "/v1/completions", json=body) as s:
        lines = [line for line in s.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_http_completion_equals_offline_and_streams_blocks(client, served):
    body = {"model": "block", "prompt": "the ", "max_tokens": 36, "steps": 20, "seed": 7,
            "n": 2, "temperature": 0.9}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    texts = [c["text"] for c in r.json()["choices"]]
    api = served["block"].generate("the ", max_new_tokens=36, steps=20, seed=7, num_samples=2,
                                   temperature=0.9)
    assert texts == api.completions
    # A stream: chunks of text to append (each committed block, then the rest) that add up
    # to the same text; with a stop string, to the same text cut at the stop.
    stop = texts[0][12:14]  # it cuts row 0 in its second block
    for extra, want in (({}, texts), ({"stop": [stop]}, [t.split(stop)[0] for t in texts])):
        events = _events(client, {**body, **extra, "stream": True})
        assert not any(e.get("draft") for e in events)
        for i in range(2):
            chunks = [e["choices"][0]["text"] for e in events
                      if e["choices"] and e["choices"][0]["index"] == i]
            assert "".join(chunks) == want[i]
        finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"]]
        assert [f for f in finishes if f] == ["stop" if want[i] != texts[i] else "length"
                                              for i in range(2)]
    # diffusing: the whole draft at every step (masks shown), then the final text.
    events = _events(client, {**body, "n": 1, "stream": True, "diffusing": True})
    drafts = [e for e in events if e.get("draft")]
    assert drafts and "░" in drafts[0]["choices"][0]["text"]
    assert [e["choices"][0]["text"] for e in events if not e.get("draft") and e["choices"]
            ] == [texts[0], ""]


def test_http_block_errors(client):
    for body, needle in (({"block_size": 4}, "blocks of 8"), ({"guidance": 1.0}, "guidance"),
                         ({"sampler": "nope"}, "unknown sampler")):
        r = client.post("/v1/completions", json={"model": "block", "prompt": "the ",
                                                 "max_tokens": 8, **body})
        assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("stop", [None, ["e"], ["t th"]])
def test_each_committed_block_becomes_a_delta(served, stop):
    """Ticked by hand, so every commit event is rendered: one text delta per committed block
    (less what a stop string may still claim), which add up to the final text."""
    from redraft.serve.reply import Reply
    from redraft.serve.schemas import CompletionRequest

    model = served["block"]
    req = CompletionRequest(model="block", prompt="the ", max_tokens=36, steps=10, stop=stop,
                            stream=True)
    work = Work("block", model.encode("the "), 40, [11], steps=10, stream=True)
    engine = Engine({"block": model}, max_batch=4)
    events = []
    job = engine.submit(work, events.append)
    reply = Reply("completion", model, [job], req)
    while not job.finished.is_set():
        engine.tick()
    commits = [e for e in events if e.kind == "commit"]
    assert [e.counts[0] for e in commits] == [8, 16, 24, 32]
    deltas = [d["choices"][0]["text"] for e in commits
              for d in reply.deltas(0, e, final=False)]
    reply.finals[0] = job.final
    final = reply.final()["choices"][0]["text"]
    if stop is None:
        assert len(deltas) == 4 and all(deltas)
    assert final.startswith("".join(deltas))


def test_alike_requests_step_as_one_merged_state(served):
    """Requests with the same rule and knobs but other prompts, lengths, steps and start
    ticks share one merged BlockState (one step-rule call a tick for all their rows); another
    knob gets a group of its own; a cancelled request leaves the group; every request still
    gets its offline tokens, and a stop string cuts a row as it does alone."""
    model = served["block"]
    tok = model.tokenizer
    stopped = Work("block", tok.encode("a "), 40, [5], steps=12)
    stop = tok.decode(_offline(model, stopped)[0, 2:].tolist())[14:16]  # in its 2nd block
    engine = Engine({"block": model}, max_batch=16)
    a = engine.submit(Work("block", tok.encode("the "), 30, [1, 2], steps=8))
    for _ in range(3):
        engine.tick()
    works = [Work("block", tok.encode("the cat sat "), 37, [3], steps=10),
             Work("block", [], 24, [4], steps=6),
             Work("block", tok.encode("a "), 40, [5], steps=12, stop=[stop]),
             Work("block", tok.encode("the "), 30, [6], steps=8, temperature=0.7)]
    b, c, d, e = (engine.submit(w) for w in works)
    engine.tick()
    groups = engine._lanes["block"].groups
    assert sorted(len(g.jobs) for g in groups) == [1, 4]
    merged = next(g for g in groups if len(g.jobs) == 4)
    assert len(merged.state.x) == 5 and len(set(merged.state.local.tolist())) > 1
    c.cancel()
    engine.tick()
    assert [len(g.jobs) for g in engine._lanes["block"].groups if a in g.jobs] == [3]
    while not all(j.finished.is_set() for j in (a, b, d, e)):
        engine.tick()
    assert engine.metrics.cancelled == 1 and c.final is None
    for job in (a, b, e):
        assert torch.equal(job.final.tokens, _offline(model, job.work)), job.work
    alone = Engine({"block": model}, max_batch=4)
    by_itself = alone.submit(works[2])
    while not by_itself.finished.is_set():
        alone.tick()
    assert torch.equal(d.final.tokens, by_itself.final.tokens)
    assert d.final.step == by_itself.final.step and d.row_nfe == by_itself.row_nfe
    assert d.final.counts[0] < 40  # the stop string ended it early
