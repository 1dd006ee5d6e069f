"""The generic speculative decoder (decoders/speculative.py): a masked, block or causal model
drafts, a causal model on the same tokenizer verifies; the text has the verifier's law (greedy:
token for token its greedy text), whatever the batch."""

import copy

import pytest
import torch

from redraft.data import build_tokenizer
from redraft.decoders.jobs import Work
from redraft.decoders.run import run
from redraft.decoders.speculative import speculative
from redraft.errors import RedraftError
from redraft.model import load

from .conftest import TEXT

PROMPTS = ["the ", "the cat", "t", "sat on the mat. the d", "rat", "the bat sat on"]


@pytest.fixture(scope="module")
def pair(serve_runs):
    return load(serve_runs["ar"]), load(serve_runs["mdlm"])


@pytest.fixture(scope="module")
def block(serve_block_run):
    return load(serve_block_run)


@pytest.mark.parametrize(("drafter", "k", "window"), [
    ("mdlm", 4, "canvas"), ("mdlm", 8, "drafts"), ("block", 3, "canvas")])
def test_greedy_is_the_verifiers_greedy_text(pair, block, drafter, k, window):
    ar, mdlm = pair
    m = speculative(ar, mdlm if drafter == "mdlm" else block, k, window=window)
    # a shared canvas length puts prompts of different lengths in one lane (ragged rows);
    # 64 is the whole context: the last windows start earlier (cached tokens fed again)
    want = ar.generate(PROMPTS[:4], length=64, temperature=0)
    got = m.generate(PROMPTS[:4], length=64, temperature=0)
    assert got.tokens == want.tokens
    if drafter == "mdlm" and k == 4:
        want = ar.generate(PROMPTS[:3], max_new_tokens=17, temperature=0, stop_at_eos=True)
        got = m.generate(PROMPTS[:3], max_new_tokens=17, temperature=0, stop_at_eos=True)
        assert got.completions == want.completions


def test_rows_do_not_depend_on_the_batch(pair, block):
    ar, mdlm = pair
    for drafter, window in ((mdlm, "drafts"), (block, "canvas")):
        m = speculative(ar, drafter, 4, window=window)
        big = m.generate(PROMPTS[:3], length=32, temperature=0.8, top_k=20, num_samples=2,
                         seed=7)
        alone = m.generate(PROMPTS[1], length=32, temperature=0.8, top_k=20, num_samples=2,
                           seed=9)
        assert big.tokens[2:4] == alone.tokens


def test_stats_count_both_models_and_a_drafter_equal_to_the_verifier_accepts_everything(pair):
    ar, mdlm = pair
    tok = ar.tokenizer
    # the AR model drafting for itself: q == p (up to float rounding), so every draft passes
    same = speculative(ar, ar, 4)
    work = Work(same.name, tok.encode("the c"), 45, [0, 1], request=same.request(
        temperature=1.0))
    jobs, calls, _ = run(same, [work])
    st = jobs[0].state
    assert st.drafted > 0 and st.accepted == st.drafted
    assert st.calls == 8  # 40 tokens, 4 drafts + 1 a call
    assert st.drafter_calls == 4 * st.calls and calls == st.calls + st.drafter_calls
    m = speculative(ar, mdlm, 4)
    work = Work(m.name, tok.encode("the c"), 45, [0], request=m.request(temperature=0))
    jobs, calls, _ = run(m, [work])
    st = jobs[0].state
    assert calls == st.calls + st.drafter_calls and st.drafter_calls <= st.calls
    assert st.accepted == 40 - st.calls  # every call commits its accepted drafts and one more
    assert m.generate("the c", length=45, temperature=0).nfe == calls  # Output.nfe: both


def test_the_ar_mode_is_the_verifier_alone(pair):
    ar, mdlm = pair
    m = speculative(ar, mdlm, 4)
    want = ar.generate(PROMPTS[:3], max_new_tokens=20, temperature=0.9, seed=4)
    got = m.generate(PROMPTS[:3], max_new_tokens=20, temperature=0.9, seed=4, mode="ar")
    assert got.tokens == want.tokens and got.nfe == want.nfe


def test_bad_pairs_and_knobs_are_refused(pair, block):
    ar, mdlm = pair
    other = copy.copy(mdlm)
    other.tokenizer = build_tokenizer("char", lambda: [TEXT])
    with pytest.raises(RedraftError, match="different tokenizers"):
        speculative(ar, other)
    with pytest.raises(RedraftError, match="verifier"):
        speculative(mdlm, block)
    with pytest.raises(RedraftError, match="draft_length"):
        speculative(ar, mdlm, 0)
    with pytest.raises(RedraftError, match="window"):
        speculative(ar, mdlm, window="all")
    m = speculative(ar, mdlm)
    with pytest.raises(RedraftError, match="modes"):
        m.generate("the", max_new_tokens=4, mode="block")
    with pytest.raises(RedraftError, match="draft_length"):
        m.generate("the", max_new_tokens=4, options={"draft_length": 0})
    with pytest.raises(RedraftError, match="options"):
        m.generate("the", max_new_tokens=4, options={"layout": "all"})
    with pytest.raises(RedraftError, match="logprobs"):
        m.generate("the", max_new_tokens=4, logprobs=2)
    with pytest.raises(RedraftError, match="infill"):
        m.infill("the <|mask:4|> sat")
    assert m.nll(["the cat"])[0].nats == pytest.approx(ar.nll(["the cat"])[0].nats)


def test_served_rows_equal_offline(pair, block):
    pytest.importorskip("fastapi")
    from redraft.serve import Engine

    ar, mdlm = pair
    m = speculative(ar, block, 4, name="s")
    tok = m.tokenizer
    works = [Work("s", tok.encode(PROMPTS[0]), 30, [1, 2]),
             Work("s", tok.encode(PROMPTS[1]), 40, [3], temperature=0.7, top_k=5),
             Work("s", tok.encode(PROMPTS[3]), 44, [4], temperature=0,
                  options={"draft_length": 2}),
             Work("s", tok.encode(PROMPTS[2]), 20, [5], mode="ar", top_p=0.9),
             Work("s", tok.encode(PROMPTS[4]), 36, [6, 7], stop_at_eos=True)]
    engine = Engine({"s": m}, max_batch=64)
    first = [engine.submit(w) for w in works[:2]]
    engine.start()
    first[0].wait(60)  # later requests join a lane that is already running
    rest = [engine.submit(w) for w in works[2:]]
    events = [job.wait(60) for job in first + rest]
    rows = engine.metrics.batch_rows
    engine.close()
    assert rows.max >= 2
    for w, ev in zip(works, events, strict=True):
        assert ev.kind == "done"
        offline = m.sample([w.prefix] * w.n, length=w.length, seeds=w.seeds, request=w.request)
        assert torch.equal(ev.tokens, offline.tokens), w


def test_cli_samples_with_a_drafter(serve_runs, pair, capsys):
    import json

    from redraft.cli import main

    ar, _ = pair
    argv = ["sample", str(serve_runs["ar"]), "--prompt", "the c", "--max-new-tokens", "12",
            "--temperature", "0", "--json"]
    assert main([*argv, "--drafter", str(serve_runs["mdlm"]), "--draft-length", "3"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["samples"] == ar.generate("the c", max_new_tokens=12, temperature=0).texts
    assert main([*argv, "--draft-length", "3"]) == 2
    assert "--drafter" in capsys.readouterr().err
