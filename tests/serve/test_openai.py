"""The server as the official openai client sees it, on a live socket: token-by-token AR
streams, committed-text diffusion streams, stops during generation with honest usage, exact AR
logprobs, lists of prompts, and OpenAI's fields that change nothing.

Ordering without timings: a Gate holds a model's network calls until the test releases them,
so "the first chunk arrives before the request is finished" is a fact, not a race."""

import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from redraft.model import load  # noqa: E402
from redraft.serve import create_app  # noqa: E402
from redraft.serve.limits import Limits  # noqa: E402
from tests.serve.live import running  # noqa: E402


class Gate:
    """Wraps a backbone's forward: while closed, each network call waits for a permit."""

    def __init__(self, backbone):
        self.permits, self.closed = threading.Semaphore(0), False
        inner = backbone.forward

        def forward(*args, **kwargs):
            if self.closed:
                assert self.permits.acquire(timeout=30), "the test released no permit"
            return inner(*args, **kwargs)

        backbone.forward = forward

    def open(self):
        self.closed = False
        self.permits.release(1000)


@pytest.fixture(scope="module")
def live(serve_runs):
    models = [load(serve_runs["mdlm"]), load(serve_runs["ar"])]
    gates = {m.name: Gate(m.backbone) for m in models}
    app = create_app(models, max_steps=10**6, grace_s=1.0, limits=Limits(max_work=10**9))
    with running(app, log_level="warning") as (port, _):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                               max_retries=0, timeout=30)
        yield client, app.state.engine, gates, {m.name: m for m in models}


def test_ar_stream_token_by_token(live):
    client, engine, gates, _ = live
    body = {"model": "ar", "prompt": "the ", "max_tokens": 12, "seed": 3, "temperature": 0.0}
    whole = client.completions.create(**body).choices[0].text
    gate = gates["ar"]
    gate.closed = True
    try:
        gate.permits.release(1)  # the prefill only: then one token is drawn and the engine waits
        chunks = client.completions.create(**body, stream=True,
                                           stream_options={"include_usage": True})
        texts = []
        first = next(chunks)
        texts.append(first.choices[0].text)
        assert engine.stats()["active_requests"] == 1  # the rest is not even computed yet
        for _ in range(11):  # one network call per further token, one chunk per token
            gate.permits.release(1)
            texts.append(next(chunks).choices[0].text)
        rest = list(chunks)
    finally:
        gate.open()
    assert all(len(t) == 1 for t in texts)  # greedy ASCII: one character a token
    assert "".join(texts) == whole
    assert rest[0].choices[0].finish_reason == "length" and rest[-1].usage.completion_tokens == 12
    # Sampled (T = 1) and ungated: however chunks merge, they add up to the same text.
    body = {**body, "temperature": 1.0, "max_tokens": 40}
    whole = client.completions.create(**body).choices[0].text
    streamed = [c.choices[0].text for c in client.completions.create(**body, stream=True)
                if c.choices]
    assert "".join(streamed) == whole and len(streamed) > 2


def test_chat_stream_equals_reply(live):
    client, *_ = live
    kw = {"model": "ar", "messages": [{"role": "user", "content": "the cat"}], "max_tokens": 20,
          "seed": 1}
    reply = client.chat.completions.create(**kw).choices[0].message.content
    deltas = [c.choices[0].delta.content or "" for c in
              client.chat.completions.create(**kw, stream=True) if c.choices]
    assert "".join(deltas) == reply and sum(1 for d in deltas if d) > 2


@pytest.mark.parametrize("model", ["ar", "mdlm"])
def test_stop_ends_generation_early(live, model):
    client, *_ = live
    body = {"model": model, "prompt": "the ", "max_tokens": 44, "seed": 11, "temperature": 0.0,
            "extra_body": {"steps": 48, "block_size": 8} if model == "mdlm" else None}
    full = client.completions.create(**body)
    text = full.choices[0].text
    stop = text[4:6]
    cut = text.find(stop)
    stopped = client.completions.create(**body, stop=[stop, "\x00never"])
    got = stopped.choices[0]
    assert got.text == text[:cut] and got.finish_reason == "stop"
    used = stopped.usage.completion_tokens
    assert cut + len(stop) <= used < 44  # what was generated: the stop string, not all 44
    assert stopped.model_extra["redraft"]["network_rows"] < full.model_extra["redraft"][
        "network_rows"]
    if model == "ar":
        assert used == cut + len(stop)  # byte tokens: the row stopped on the stop string
    streamed = client.completions.create(**body, stop=stop, stream=True)
    parts = [c for c in streamed if c.choices]
    assert "".join(c.choices[0].text for c in parts) == got.text
    assert parts[-1].choices[0].finish_reason == "stop"


def test_ar_logprobs_are_the_exact_log_likelihood(live):
    client, _, _, models = live
    prompt = "the cat "
    out = client.completions.create(model="ar", prompt=prompt, max_tokens=20, seed=2,
                                    logprobs=3)
    choice = out.choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == 20  # token strings: each decoded alone
    ar = models["ar"]  # the same draw offline (row seed 2), for its token ids
    ids = ar.generate(prompt, max_new_tokens=20, seed=2).tokens[0]
    assert ar.tokenizer.decode(ids[len(prompt):]) == choice.text
    whole, alone = ar.nll([ids, ids[:len(prompt)]])
    assert sum(lp.token_logprobs) == pytest.approx(-(whole.nats - alone.nats), abs=1e-3)
    for value, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert 1 <= len(top) <= 3 and max(top.values()) >= value - 1e-9  # keys may collide
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    assert "exact" in out.model_extra["redraft"]["logprobs"]
    # echo: the prompt's tokens come first, and the whole text's figures sum to its NLL
    echoed = client.completions.create(model="ar", prompt=prompt, max_tokens=20, seed=2,
                                       logprobs=0, echo=True).choices[0]
    assert echoed.text == prompt + choice.text
    assert sum(echoed.logprobs.token_logprobs) == pytest.approx(-whole.nats, abs=1e-3)
    # chat: the same figures in the chat shape, streamed or not
    kw = {"model": "ar", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10,
          "seed": 4, "logprobs": True, "top_logprobs": 2}
    chat = client.chat.completions.create(**kw).choices[0]
    content = chat.logprobs.content
    assert len(content) == 10
    assert all(len(t.top_logprobs) == 2 for t in content)
    streamed = [t for c in client.chat.completions.create(**kw, stream=True)
                if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.logprob for t in streamed] == pytest.approx([t.logprob for t in content])


def test_diffusion_logprobs_are_the_committing_step(live):
    client, *_ = live
    out = client.completions.create(model="mdlm", prompt="the ", max_tokens=16, seed=3,
                                    temperature=0.0, logprobs=1, extra_body={"steps": 8})
    lp = out.choices[0].logprobs
    assert "".join(lp.tokens) == out.choices[0].text and len(lp.tokens) == 16
    # greedy: each committed token was the denoiser's top choice at its step
    for value, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert value <= 0 and list(top.values()) == [pytest.approx(value)]
    assert "not a likelihood" in out.model_extra["redraft"]["logprobs"]


def test_list_of_prompts_one_choice_each_in_order(live):
    client, *_ = live
    for model, extra in (("ar", None), ("mdlm", {"steps": 6})):
        prompts = ["the ", "a cat ", "on the mat"]
        out = client.completions.create(model=model, prompt=prompts, n=2, max_tokens=8, seed=5,
                                        extra_body=extra)
        assert [c.index for c in out.choices] == list(range(6))
        for c in out.choices:  # choice i * n + r: prompt i, seed 5 + i * n + r
            alone = client.completions.create(model=model, prompt=prompts[c.index // 2],
                                              max_tokens=8, seed=5 + c.index, extra_body=extra)
            assert alone.choices[0].text == c.text
        assert out.usage.prompt_tokens == sum(len(p) for p in prompts)
        assert out.usage.completion_tokens == 48
    ids = client.completions.create(model="ar", prompt=[list(b"the ")], max_tokens=8, seed=5)
    assert ids.choices[0].text == client.completions.create(
        model="ar", prompt="the ", max_tokens=8, seed=5).choices[0].text


def test_diffusion_stream_sends_only_committed_text(live):
    client, *_ = live
    for sampler, streams in (("ancestral", True), ("first_hitting", True), ("remask", False)):
        body = {"model": "mdlm", "prompt": "the ", "max_tokens": 24, "seed": 6,
                "extra_body": {"steps": 24, "sampler": sampler}}
        final = client.completions.create(**body).choices[0].text
        sent, seen = "", []
        for chunk in client.completions.create(**body, stream=True):
            if chunk.choices and chunk.choices[0].text:
                sent += chunk.choices[0].text
                seen.append(sent)
        assert sent == final
        assert all(final.startswith(s) for s in seen)
        if not streams:  # a rule that can re-mask settles nothing before its end
            assert len(seen) == 1


def test_openai_fields(live):
    client, *_ = live
    ok = client.completions.create(model="ar", prompt="the ", max_tokens=4, seed=1, user="u",
                                   frequency_penalty=0, presence_penalty=0.0, logit_bias={},
                                   best_of=1, extra_body={"metadata": {"a": "b"}})
    assert ok.choices[0].text
    chat = client.chat.completions.create(
        model="ar", messages=[{"role": "user", "content": "x"}], max_completion_tokens=5,
        seed=1, response_format={"type": "text"}, stream_options=None, store=False)
    assert chat.usage.completion_tokens == 5
    for bad, field in (({"frequency_penalty": 0.5}, "frequency_penalty"),
                       ({"logit_bias": {"65": 5}}, "logit_bias"),
                       ({"best_of": 3}, "best_of")):
        with pytest.raises(openai.BadRequestError, match=field):
            client.completions.create(model="ar", prompt="x", max_tokens=4, **bad)
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(
            model="ar", messages=[{"role": "user", "content": "x"}], max_tokens=4,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])


@pytest.mark.parametrize("model", ["ar", "mdlm"])
def test_longest_stop_strings_stream_as_the_reply(live, model):
    """Issue 26 item 1: stop strings of the most characters allowed, three of which keep
    almost matching the text's end (so a stream holds text back at every step) and one that
    does match: the stream adds up to the reply, which is cut where the real one begins."""
    from redraft.decoders.stops import MAX_STOP_CHARS

    client, *_ = live
    body = {"model": model, "prompt": "the ", "max_tokens": 44, "seed": 11, "temperature": 0.0,
            "extra_body": {"steps": 44} if model == "mdlm" else None}
    text = client.completions.create(**body).choices[0].text
    real = text[6:9]
    teasers = [(text[:k] * MAX_STOP_CHARS)[:MAX_STOP_CHARS - 1] + "\x00" for k in (1, 2, 5)]
    stop = [*teasers, real]
    got = client.completions.create(**body, stop=stop).choices[0]
    assert got.text == text[:text.find(real)] and got.finish_reason == "stop"
    parts = [c.choices[0] for c in client.completions.create(**body, stop=stop, stream=True)]
    assert "".join(p.text for p in parts) == got.text and parts[-1].finish_reason == "stop"
