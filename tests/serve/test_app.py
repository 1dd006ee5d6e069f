"""The HTTP API in-process (FastAPI's TestClient): OpenAI shapes, equality with `redraft
sample`, streaming, and a JSON error with the right status for every bad input."""

import json
import time

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from redraft.cli import main  # noqa: E402
from redraft.model import load  # noqa: E402
from redraft.serve import Work, create_app  # noqa: E402
from redraft.serve.limits import Limits  # noqa: E402


@pytest.fixture(scope="module")
def models(serve_runs):
    return [load(serve_runs["mdlm"]), load(serve_runs["ar"])]


@pytest.fixture(scope="module")
def client(models):
    with TestClient(create_app(models, max_steps=1000)) as c:
        yield c


def offline(capsys, run, *argv):
    capsys.readouterr()
    assert main(["sample", str(run), "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)["samples"]


@pytest.mark.parametrize("model", ["mdlm", "ar"])
def test_completion_equals_offline_sample(client, serve_runs, capsys, model):
    body = {"model": model, "prompt": "the ", "max_tokens": 20, "steps": 10, "seed": 7, "n": 2,
            "temperature": 0.9}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "text_completion" and out["model"] == model
    assert out["usage"]["completion_tokens"] == 40
    steps = ["--steps", "10"] if model == "mdlm" else []
    want = offline(capsys, serve_runs[model], "--prompt", "the ", "--length", "24", "--seed", "7",
                   "--num-samples", "2", "--temperature", "0.9", *steps)
    assert ["the " + c["text"] for c in out["choices"]] == want
    # ... and the Python API: CLI == redraft.load(...).generate == server.
    api = load(serve_runs[model]).generate("the ", max_new_tokens=20, seed=7, num_samples=2,
                                           temperature=0.9, steps=10)
    assert api.texts == want and [c["text"] for c in out["choices"]] == api.completions


def test_infill_chat_and_stop(client, serve_runs, capsys):
    r = client.post("/v1/infill", json={"prefix": "the ", "suffix": " sat", "max_tokens": 6,
                                        "steps": 6, "seed": 3, "sampler": "analytic"})
    assert r.status_code == 200, r.text
    want = offline(capsys, serve_runs["mdlm"], "--prompt", "the ", "--suffix", " sat",
                   "--length", "14", "--steps", "6", "--seed", "3", "--sampler", "analytic")
    assert "the " + r.json()["choices"][0]["text"] + " sat" == want[0]

    r = client.post("/v1/chat/completions", json={
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "the cat"}], "max_tokens": 8, "steps": 4,
        "seed": 1})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert r.json()["object"] == "chat.completion" and choice["message"]["role"] == "assistant"
    prompt = "system: be brief\nuser: the cat\nassistant: "  # the documented template
    want = offline(capsys, serve_runs["mdlm"], "--prompt", prompt, "--length",
                   str(len(prompt) + 8), "--steps", "4", "--seed", "1")
    assert prompt + choice["message"]["content"] == want[0]

    full = client.post("/v1/completions", json={"prompt": "the ", "max_tokens": 30, "seed": 2,
                                                "steps": 8}).json()["choices"][0]["text"]
    stop = full[3:5]
    cut = client.post("/v1/completions", json={"prompt": "the ", "max_tokens": 30, "seed": 2,
                                               "steps": 8, "stop": [stop]}).json()["choices"][0]
    assert cut["text"] == full[:full.index(stop)] and cut["finish_reason"] == "stop"


def test_sampler_knobs_equal_offline_sample(client, serve_runs, capsys):
    body = {"prompt": "the ", "max_tokens": 20, "steps": 12, "seed": 4, "n": 2,
            "sampler": "threshold", "sampler_options": {"threshold": 0.6}, "block_size": 8,
            "stop_at_eos": True, "guidance": 0.5}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    want = offline(capsys, serve_runs["mdlm"], "--prompt", "the ", "--length", "24", "--seed",
                   "4", "--num-samples", "2", "--steps", "12", "--sampler", "threshold",
                   "--sampler-opt", "threshold=0.6", "--block-size", "8", "--stop-at-eos",
                   "--guidance", "0.5")
    assert ["the " + c["text"] for c in r.json()["choices"]] == want


def _events(client, body, path="/v1/completions"):
    with client.stream("POST", path, json=body) as s:
        assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in s.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


@pytest.mark.parametrize("model", ["mdlm", "ar"])
def test_streamed_drafts(client, model):
    body = {"model": model, "prompt": "the ", "max_tokens": 12, "steps": 6, "seed": 5}
    final = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    events = _events(client, {**body, "stream": True, "diffusing": True,
                              "stream_options": {"include_usage": True}})
    drafts = [e for e in events if e.get("draft")]
    steps = [e["step"] for e in drafts]
    # Every step but the last sends a draft; a reader that falls behind (a busy machine) gets
    # the newest one only, so drafts may be skipped, never reordered or repeated.
    last = (6 if model == "mdlm" else 12) - 1
    assert 1 <= len(drafts) <= last and steps == sorted(set(steps)) and steps[-1] <= last
    assert "░" in drafts[0]["choices"][0]["text"]
    texts = [e["choices"][0]["text"] for e in events if not e.get("draft") and e["choices"]]
    assert texts == [final, ""]
    assert events[-1]["usage"]["completion_tokens"] == 12

    plain = _events(client, {**body, "stream": True})  # no drafts: committed text, appended
    assert not any(e.get("draft") for e in plain)
    assert "".join(e["choices"][0]["text"] for e in plain if e["choices"]) == final


BAD = {
    "bad json": ('{"prompt": ', 400, "not valid JSON"),
    "not an object": ("[1, 2]", 400, "JSON object"),
    "wrong type": ({"prompt": "the ", "max_tokens": "8"}, 400, "max_tokens"),
    "bool for int": ({"n": True}, 400, "n: "),
    "unknown field": ({"stpes": 8}, 400, "stpes"),
    "steps 0": ({"steps": 0}, 400, "steps"),
    "steps over limit": ({"steps": 5000}, 400, "at most 1000"),
    "max_tokens 0": ({"max_tokens": 0}, 400, "max_tokens"),
    "too long": ({"prompt": "the cat " * 9}, 400, "context"),
    "max_tokens past context": ({"prompt": "the ", "max_tokens": 61}, 400, "at most 60"),
    "unknown sampler": ({"sampler": "nope"}, 400, "unknown sampler 'nope'"),
    "negative temperature": ({"temperature": -1.0}, 400, "temperature"),
    "top_p zero": ({"top_p": 0.0}, 400, "top_p"),
    "unknown model": ({"model": "gpt-9"}, 404, "gpt-9"),
    "ar with suffix": ({"model": "ar", "prompt": "a", "suffix": "b"}, 400, "autoregressive"),
    "ar with sampler": ({"model": "ar", "sampler": "euler"}, 400, "diffusion model"),
    "ar with guidance": ({"model": "ar", "guidance": 1.0}, 400, "diffusion model"),
    "unknown sampler option": ({"sampler": "threshold", "sampler_options": {"k": 2}}, 400,
                               "no option 'k'"),
    "bad sampler option": ({"sampler": "threshold", "sampler_options": {"threshold": 3.0}}, 400,
                           "threshold"),
    "block_size 0": ({"block_size": 0}, 400, "block_size"),
    "fewer steps than blocks": ({"max_tokens": 20, "steps": 2, "block_size": 8}, 400,
                                "every block needs a step"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_json_error(client, case):
    body, status, needle = BAD[case]
    kw = {"content": body, "headers": {"content-type": "application/json"}} \
        if isinstance(body, str) else {"json": body}
    r = client.post("/v1/completions", **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["code"] == status


def test_chat_and_route_errors(client):
    r = client.post("/v1/chat/completions", json={"messages": []})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "robot", "content": ""}]})
    assert r.status_code == 400 and "role" in r.json()["error"]["message"]
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


def test_models_health_metrics_page(client):
    data = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["mdlm", "ar"]
    assert "ancestral" in data[0]["samplers"] and data[1]["kind"] == "ar"
    assert client.get("/health").json()["status"] == "ok"
    client.post("/v1/completions", json={"max_tokens": 4, "steps": 2})
    text = client.get("/metrics").text
    for name in ("redraft_requests_total{", "redraft_queue_depth", "redraft_batch_rows_bucket",
                 "redraft_tokens_per_second", "redraft_request_latency_seconds_count"):
        assert name in text
    page = client.get("/")
    assert page.status_code == 200 and "/v1/completions" in page.text


def test_api_key_queue_full_and_timeout(models):
    app = create_app(models, api_key="s3cret", max_batch=1, max_rows=1, max_queue=1,
                     timeout_s=0.5)
    with TestClient(app) as c:
        body = {"max_tokens": 4, "steps": 2}
        assert c.post("/v1/completions", json=body).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert c.post("/v1/completions", json=body, headers=wrong).status_code == 401
        key = {"Authorization": "Bearer s3cret"}
        assert c.post("/v1/completions", json=body, headers=key).status_code == 200
        engine = app.state.engine
        tok = models[0].tokenizer
        busy = engine.submit(Work("mdlm", tok.encode("the "), 64, [1], steps=10**6))
        while engine.stats()["active_rows"] < 1:
            time.sleep(0.005)
        waiting = engine.submit(Work("mdlm", [], 8, [1], steps=10**6))
        r = c.post("/v1/completions", json=body, headers=key)
        assert r.status_code == 429 and "queue is full" in r.json()["error"]["message"]
        busy.wait(10), waiting.wait(10)  # both time out: the queue drains
        r = c.post("/v1/completions", json={**body, "steps": 10**6 // 2, "max_tokens": 60},
                   headers=key)
        assert r.status_code == 400  # over the default max_steps
        app2 = create_app(models, timeout_s=0.3, max_steps=10**6, limits=Limits(max_work=10**9))
        with TestClient(app2) as c2:
            r = c2.post("/v1/completions", json={"steps": 10**6})
            assert r.status_code == 504 and "timed out" in r.json()["error"]["message"]


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"prompt": "the "}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "the"}]}),
    ("/v1/infill", {"prefix": "the ", "suffix": " cat"})])
@pytest.mark.parametrize("model", ["mdlm", "ar"])
def test_usage_chunk_only_when_asked(client, path, body, model):
    """Issue 26 item 12: `for chunk in stream: chunk.choices[0]` must not raise, so a stream
    ends with the empty-choices usage chunk only under stream_options.include_usage."""
    if path == "/v1/infill" and model == "ar":
        pytest.skip("the AR twin does not infill")
    body = {**body, "model": model, "max_tokens": 6, "steps": 6, "seed": 2, "stream": True}
    plain = _events(client, body, path)
    assert plain and all(e["choices"] for e in plain)  # choices[0] exists in every chunk
    assert not any("usage" in e for e in plain)
    asked = _events(client, {**body, "stream_options": {"include_usage": True}}, path)
    assert asked[-1]["choices"] == [] and asked[-1]["usage"]["completion_tokens"] == 6
    assert all(e["choices"] and e["usage"] is None for e in asked[:-1])
    assert all(e["choices"] for e in _events(
        client, {**body, "stream_options": {"include_usage": False}}, path))
    for bad, word in (({"stream_options": {"include_usage": True}, "stream": False}, "stream"),
                      ({"stream_options": {"include_usages": True}}, "include_usages")):
        r = client.post(path, json={**body, **bad})
        assert r.status_code == 400 and word in r.json()["error"]["message"]


def test_models_list_only_the_samplers_each_model_takes(client):
    """Issue 26 item 17: /v1/models (and so the page's sampler menu) lists exactly the
    samplers a request to that model is answered with, not the registry."""
    from redraft.sampling.registry import SAMPLERS

    data = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert "entropy_bound" not in data["mdlm"]["samplers"] and data["ar"]["samplers"] == []
    for name in SAMPLERS:
        r = client.post("/v1/completions", json={"model": "mdlm", "prompt": "the ",
                                                 "max_tokens": 4, "steps": 2, "seed": 1,
                                                 "sampler": name})
        assert (r.status_code == 200) == (name in data["mdlm"]["samplers"]), (name, r.text)


def test_page_wraps_a_run_of_masks():
    """Issue 26 item 17: a masked line (░ with no space to break at) wraps in its panel."""
    from importlib import resources

    page = (resources.files("redraft.serve") / "static" / "index.html").read_text()
    rule = page[page.index("#draft {"):].split("}")[0]
    assert "pre-wrap" in rule and "overflow-wrap: anywhere" in rule


@pytest.mark.parametrize("path,extra", [
    ("/v1/completions", {"prompt": "the "}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "the"}]}),
    ("/v1/infill", {"prefix": "the ", "suffix": " cat"})])
def test_any_steps_spread_over_blocks(client, models, path, extra):
    """Issue 26 item 15: steps=32 with block_size 16 (a canvas of 3 blocks here) is answered
    (at most 32 network calls a row: an unchanged canvas is not run again), and the served
    text is the offline Model.generate text for the same knobs (one state,
    sampling/state.py)."""
    body = {**extra, "max_tokens": 40, "steps": 32, "block_size": 16, "seed": 4,
            "temperature": 0.0 if path == "/v1/chat/completions" else 1.0}
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    assert 0 < r.json()["redraft"]["network_rows"] <= 32
    if path == "/v1/completions":
        api = models[0].generate("the ", max_new_tokens=40, seed=4, steps=32, block_size=16)
        assert r.json()["choices"][0]["text"] == api.completions[0]


def test_spread_steps(models):
    from redraft.errors import RedraftError
    from redraft.sampling.state import spread_steps

    assert spread_steps(32, 3, 16) == [11, 11, 10] and spread_steps(8, 4, 2) == [2] * 4
    assert sum(spread_steps(1000, 7, 9)) == 1000 and spread_steps(3, 3, 5) == [1, 1, 1]
    with pytest.raises(RedraftError, match="at least 3 steps"):
        spread_steps(2, 3, 16)
    # driven by hand: 32 steps over blocks of 16, 16, 8 positions take 11, 11, 10 steps
    state = models[0].start([], length=40, seeds=[1], steps=32, block_size=16)
    blocks = []
    while not state.done:
        _, x, t = state.inputs(True)
        state.set_logits(torch.ones(1, dtype=torch.bool), models[0].backbone(x, t))
        blocks.append(int(state.block[0]))
        state.advance()
    assert len(blocks) == 32 and [blocks.count(b) for b in range(3)] == [11, 11, 10]
