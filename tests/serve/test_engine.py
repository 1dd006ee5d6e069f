"""The step-level batcher without HTTP: batched == one at a time == offline sampling, exactly;
cancellation shrinks the batch; the queue is bounded; timeouts and shutdown end requests."""

import time

import pytest
import torch

pytest.importorskip("fastapi")

from redraft.model import load  # noqa: E402
from redraft.sampling import generate_ar, generate_diffusion  # noqa: E402
from redraft.serve import Engine, QueueFull, Work  # noqa: E402


@pytest.fixture(scope="module")
def served(serve_runs):
    return {name: load(path) for name, path in serve_runs.items()}


def _works(served):
    tok = served["mdlm"].tokenizer
    the, cat = tok.encode("the "), tok.encode("the cat ")
    # Mixed lengths, step counts, samplers, knobs, n and prompts: all in one engine at once.
    return [
        Work("mdlm", the, 20, [1, 2], steps=8),
        Work("mdlm", cat, 20, [3], steps=5, sampler="analytic"),
        Work("mdlm", the, 20, [4], steps=13, temperature=0.7, top_k=5),
        Work("mdlm", the, 30, [5], steps=8, suffix=tok.encode(" mat."), top_p=0.9),
        Work("mdlm", [], 16, [6, 7, 8], steps=3, sampler="euler"),
        Work("ar", the, 20, [1, 2]),
        Work("ar", cat, 20, [3], temperature=0.7, top_k=5),
        Work("ar", the, 24, [4], top_p=0.9),
    ]


def _run(engine, works):
    jobs = [engine.submit(w) for w in works]
    return [job.wait(60) for job in jobs]


def test_batched_equals_one_at_a_time_equals_offline(served):
    works = _works(served)
    with_batching = Engine(served, max_batch=64)
    jobs = [with_batching.submit(w) for w in works]
    with_batching.start()  # everything queued: the first tick admits all of it
    batched = [job.wait(60) for job in jobs]
    rows_seen = with_batching.metrics.batch_rows
    with_batching.close()
    one_at_a_time = Engine(served, max_batch=3).start()  # the widest request still fits alone
    alone = [_run(one_at_a_time, [w])[0] for w in works]
    one_at_a_time.close()
    assert rows_seen.max >= 4  # network calls really were shared (the widest request has 3)
    for w, a, b in zip(works, batched, alone, strict=True):
        assert a.kind == b.kind == "done"
        assert torch.equal(a.tokens, b.tokens), w
        model = served[w.model]
        if model.is_ar:
            ref = generate_ar(model.backbone, bos_id=model.tokenizer.eos_id, batch=w.n,
                              length=w.length, prefix=w.prefix, seed=w.seeds[0],
                              temperature=w.temperature, top_k=w.top_k, top_p=w.top_p,
                              banned=model.tokenizer.non_text_ids)
        else:
            ref = generate_diffusion(model.backbone, model.process, steps=w.steps, batch=w.n,
                                     length=w.length, prefix=w.prefix, suffix=w.suffix,
                                     seed=w.seeds[0], temperature=w.temperature, top_k=w.top_k,
                                     top_p=w.top_p, sampler=w.sampler, objective=model.objective)
        assert torch.equal(a.tokens, ref.tokens), w


def _wait(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.005)


@pytest.mark.parametrize("model", ["mdlm", "ar"])
def test_cancel_shrinks_the_batch(served, model):
    engine = Engine(served, max_batch=8).start()
    tok = served[model].tokenizer
    long = dict(steps=10**6) if model == "mdlm" else {}
    # AR requests finish after `length` tokens; cancel before that (the test stops at 1.5 s).
    a = engine.submit(Work(model, tok.encode("the "), 64, [1, 2], **long))
    b = engine.submit(Work(model, tok.encode("the "), 64, [3], **long))
    try:
        _wait(lambda: engine.stats()["active_rows"] == 3)
        b.cancel()
        _wait(lambda: engine.stats()["active_rows"] == 2)
        if model == "mdlm":
            _wait(lambda: engine.last_batch_rows in (0, 2))  # a no-change tick calls nothing
            assert engine.metrics.cancelled == 1 and not b.finished.is_set()
    finally:
        a.cancel()
        engine.close(grace_s=0)


def test_bounded_queue_timeout_and_shutdown(served):
    tok = served["mdlm"].tokenizer
    engine = Engine(served, max_batch=1, max_rows=1, max_queue=1).start()
    running = engine.submit(Work("mdlm", tok.encode("the "), 64, [1], steps=10**6))
    _wait(lambda: engine.stats()["active_rows"] == 1)
    queued = engine.submit(Work("mdlm", tok.encode("the "), 16, [2], steps=4))
    with pytest.raises(QueueFull):
        engine.submit(Work("mdlm", [], 16, [3], steps=4))
    running.cancel()
    assert queued.wait(10).kind == "done"  # admitted once the slot was freed
    engine.close()

    # A request that outlives the timeout ends with 504 (no race: it can never finish).
    engine = Engine(served, max_batch=1, timeout_s=0.5).start()
    event = engine.submit(Work("mdlm", tok.encode("the "), 64, [1], steps=10**6)).wait(10)
    assert event.kind == "error" and event.status == 504
    engine.close()

    engine = Engine(served, max_batch=4).start()
    short = engine.submit(Work("mdlm", [], 16, [1], steps=200))
    engine.close(grace_s=60)  # in-flight work finishes within the grace period
    assert short.wait(1).kind == "done"

    engine = Engine(served, max_batch=4).start()
    job = engine.submit(Work("mdlm", [], 64, [1], steps=10**6))
    _wait(lambda: engine.stats()["active_rows"] == 1)
    engine.close(grace_s=0.1)
    assert job.wait(1).status == 503
    with pytest.raises(Exception, match="shutting down"):
        engine.submit(Work("mdlm", [], 16, [1], steps=2))


def test_ar_rows_at_different_positions_share_a_call_and_stay_exact(served):
    """Ticked by hand: a request admitted while another is mid-way joins its batch at once
    (rows at different positions, one network call per tick) and both still equal offline
    sampling."""
    ar = served["ar"]
    tok = ar.tokenizer
    engine = Engine(served, max_batch=8)  # not started: this test calls tick() itself
    first = engine.submit(Work("ar", tok.encode("the "), 40, [1, 2]))
    for _ in range(5):
        engine.tick()
    second = engine.submit(Work("ar", tok.encode("a dog sat "), 30, [3], temperature=0.5))
    engine.tick()
    cohort = engine._lanes["ar"].cohort  # the AR lane's one running cohort
    assert cohort.rows == 3
    positions = cohort.positions.tolist()
    assert positions[0] == positions[1] != positions[2]
    while not (first.finished.is_set() and second.finished.is_set()):
        engine.tick()
    for job in (first, second):
        w = job.work
        ref = generate_ar(ar.backbone, bos_id=tok.eos_id, batch=w.n, length=w.length,
                          prefix=w.prefix, seed=w.seeds[0], temperature=w.temperature,
                          banned=tok.non_text_ids)
        assert torch.equal(job.final.tokens, ref.tokens)


@pytest.mark.parametrize("max_rows", [4, 8])
def test_a_small_request_beside_a_maximal_one(served, max_rows):
    """Ticked by hand. max_rows = max_batch is first come, first served: the small request
    waits for the whole maximal one. With room to spare (max_rows 8) it is admitted at once
    and the ticks alternate, so it finishes in at most twice its own steps while the big one
    still runs; no network call ever has more than max_batch rows; and its tokens are the ones
    it gets alone."""
    tok = served["mdlm"].tokenizer
    engine = Engine(served, max_batch=4, max_rows=max_rows)  # not started
    big = engine.submit(Work("mdlm", tok.encode("the "), 32, [1, 2, 3, 4], steps=40))
    engine.tick()
    small = engine.submit(Work("mdlm", tok.encode("the "), 12, [5], steps=6))
    ticks = 0
    while not small.finished.is_set():
        engine.tick()
        ticks += 1
    if max_rows == 4:
        assert big.finished.is_set() and ticks >= 39
    else:
        assert not big.finished.is_set() and ticks <= 2 * 6
        big.cancel()
        engine.tick()
    assert engine.metrics.batch_rows.max <= 4
    alone = Engine(served, max_batch=4)
    job = alone.submit(Work("mdlm", tok.encode("the "), 12, [5], steps=6))
    while not job.finished.is_set():
        alone.tick()
    assert torch.equal(small.final.tokens, job.final.tokens)


@pytest.mark.parametrize("model", ["ar", "mdlm"])
def test_a_stop_string_stops_only_its_row(served, model):
    """Row 0 meets a stop string; row 1 does not: row 1 runs to the end with exactly the tokens
    it had without the stop, row 0 keeps what it had committed and takes no more calls."""
    m = served[model]
    the = m.tokenizer.encode("the ")
    knobs = {"steps": 40, "block_size": 4} if model == "mdlm" else {}
    engine = Engine(served).start()
    try:
        full_job = engine.submit(Work(model, the, 40, [1, 2], **knobs))
        full = full_job.wait(60)
        texts = [m.tokenizer.decode(row[len(the):]) for row in full.tokens]
        stop = next(texts[0][i:i + 3] for i in range(2, 30) if texts[0][i:i + 3] not in texts[1])
        job = engine.submit(Work(model, the, 40, [1, 2], stop=[stop], **knobs))
        got = job.wait(60)
    finally:
        engine.close()
    end = len(the) + texts[0].index(stop) + len(stop)  # byte tokens: one per character
    assert end <= got.counts[0] < 40 and got.counts[1] == 40
    assert torch.equal(got.tokens[1], full.tokens[1])
    assert torch.equal(got.tokens[0, :got.counts[0]], full.tokens[0, :got.counts[0]])
    assert job.row_nfe < full_job.row_nfe
    if model == "ar":
        assert got.counts[0] == end  # stopped on the token that completed the stop string
