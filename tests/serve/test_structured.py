"""response_format (structured outputs) at the server: every accepted shape gives output that
matches it, streamed or not, through raw HTTP and the official openai client; every bad one is
a 400 naming it, before the model runs a single forward."""

import json
import re

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("redraft.constraints")

from fastapi.testclient import TestClient  # noqa: E402

from redraft.model import load  # noqa: E402
from redraft.serve import create_app  # noqa: E402
from redraft.serve.limits import Limits  # noqa: E402

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "enum": ["cat", "dog"]},
    "age": {"type": "integer"}},
    "required": ["name", "age"], "additionalProperties": False}
CHAT = [{"role": "user", "content": "a pet"}]


class Counter:
    """Counts a backbone's network calls (a 400 must come before the first)."""

    def __init__(self, backbone):
        self.calls, inner = 0, backbone.forward

        def forward(*args, **kwargs):
            self.calls += 1
            return inner(*args, **kwargs)

        backbone.forward = forward


@pytest.fixture(scope="module")
def models(serve_runs, serve_block_run):
    return [load(serve_runs["mdlm"]), load(serve_runs["ar"]), load(serve_block_run)]


@pytest.fixture(scope="module")
def client(models):
    counters = {m.name: Counter(m.backbone) for m in models}
    with TestClient(create_app(models, max_steps=1000, limits=Limits(max_work=10**9))) as c:
        c.counters = counters
        yield c


def _content(reply: dict) -> str:
    choice = reply["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


def _valid(text: str, schema: dict) -> dict:
    jsonschema = pytest.importorskip("jsonschema")
    value = json.loads(text)
    jsonschema.validate(value, schema)
    return value


def _schema_format(schema=SCHEMA) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "pet", "schema": schema,
                                                   "strict": True}}


MODELS = ["mdlm", "ar", "block"]


@pytest.mark.parametrize("model", MODELS)
def test_json_schema_chat_and_completions(client, model):
    for seed in range(3):
        r = client.post("/v1/chat/completions", json={
            "model": model, "messages": CHAT, "seed": seed, "steps": 16,
            "response_format": _schema_format()})
        assert r.status_code == 200, r.text
        assert _valid(_content(r.json()), SCHEMA)["name"] in ("cat", "dog")
    r = client.post("/v1/completions", json={"model": model, "prompt": "the ", "seed": 1,
                                             "steps": 16, "n": 2,
                                             "response_format": _schema_format()})
    assert r.status_code == 200, r.text
    for choice in r.json()["choices"]:
        _valid(choice["text"], SCHEMA)


@pytest.mark.parametrize("model", MODELS)
def test_json_object_and_regex(client, model):
    r = client.post("/v1/chat/completions", json={
        "model": model, "messages": CHAT, "seed": 2, "steps": 16,
        "response_format": {"type": "json_object"}})
    assert r.status_code == 200, r.text
    assert isinstance(json.loads(_content(r.json())), dict)
    pattern = r"(cat|dog) [0-9]{2}"
    r = client.post("/v1/completions", json={
        "model": model, "prompt": "the ", "seed": 3, "steps": 16, "n": 3,
        "response_format": {"type": "regex", "regex": pattern}})
    assert r.status_code == 200, r.text
    assert all(re.fullmatch(pattern, c["text"]) for c in r.json()["choices"]), r.json()


def test_text_format_is_no_constraint(client):
    body = {"prompt": "the ", "max_tokens": 12, "steps": 6, "seed": 5}
    plain = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    text = client.post("/v1/completions", json={**body, "response_format": {"type": "text"}})
    assert text.status_code == 200 and text.json()["choices"][0]["text"] == plain


@pytest.mark.parametrize("model", MODELS)
def test_streams_add_up_to_valid_output(client, model):
    body = {"model": model, "messages": CHAT, "seed": 4, "steps": 16,
            "response_format": _schema_format()}
    whole = _content(client.post("/v1/chat/completions", json=body).json())
    for extra in ({}, {"diffusing": True}):
        with client.stream("POST", "/v1/chat/completions",
                           json={**body, "stream": True, **extra}) as s:
            assert s.status_code == 200
            events = [json.loads(line[6:]) for line in s.iter_lines()
                      if line.startswith("data: ") and line != "data: [DONE]"]
        final = [e for e in events if not e.get("draft")]
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in final
                       if e["choices"])
        assert text == whole
        _valid(text, SCHEMA)


BAD = {
    "unknown type": ({"type": "xml"}, "response_format"),
    "schema without name": ({"type": "json_schema", "json_schema": {"schema": SCHEMA}},
                            "name"),
    "unknown field": ({"type": "json_object", "schema": SCHEMA}, "schema"),
    "empty regex": ({"type": "regex", "regex": ""}, "regex"),
    "bad regex": ({"type": "regex", "regex": "(ab"}, "response_format"),
    "unsupported feature": (_schema_format({"type": "object", "properties": {
        "a": {"not": {"type": "string"}}}}), "not"),
    "not a schema": (_schema_format({"type": "banana"}), "banana"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_bad_formats_are_400s_before_any_work(client, case, path):
    fmt, needle = BAD[case]
    body = {"messages": CHAT} if "chat" in path else {"prompt": "the "}
    before = sum(c.calls for c in client.counters.values())
    for stream in (False, True):
        r = client.post(path, json={**body, "response_format": fmt, "stream": stream})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["code"] == 400
        assert "response_format" in err["message"] and needle in err["message"], err
    assert sum(c.calls for c in client.counters.values()) == before
    assert client.get("/health").json()["queue_depth"] == 0


def test_grammar_is_honoured_or_refused_by_name(client):
    r = client.post("/v1/completions", json={
        "prompt": "the ", "steps": 8, "response_format": {"type": "grammar",
                                                          "grammar": 'start: "cat" | "dog"'}})
    if r.status_code == 400:
        assert "grammar" in r.json()["error"]["message"]
    else:
        assert r.status_code == 200 and r.json()["choices"][0]["text"] in ("cat", "dog")


@pytest.fixture(scope="module")
def uniform_run(tmp_path_factory):
    from redraft.cli import main
    from tests.conftest import TEXT, tiny_overrides

    base = tmp_path_factory.mktemp("udlm")
    corpus = base / "corpus.txt"
    corpus.write_text(TEXT)
    overrides = tiny_overrides(corpus, base / "udlm", "udlm", **{
        "data.tokenizer": "byte", "model.seq_len": 64, "diffusion.process": "uniform",
        "train.max_steps": 2})
    assert main(["train", *overrides]) == 0
    return base / "udlm"


def test_uniform_noise_model_is_a_400(uniform_run):
    model = load(uniform_run)
    counter = Counter(model.backbone)
    with TestClient(create_app([model], max_steps=1000)) as c:
        r = c.post("/v1/chat/completions", json={"messages": CHAT,
                                                 "response_format": _schema_format()})
        assert r.status_code == 400, r.text
        assert "uniform'-noise model" in r.json()["error"]["message"]
        assert counter.calls == 0 and c.get("/health").json()["queue_depth"] == 0
        assert c.post("/v1/chat/completions", json={
            "messages": CHAT, "max_tokens": 4, "steps": 2,
            "response_format": {"type": "text"}}).status_code == 200
    assert counter.calls > 0  # only the unconstrained request ran


# --- the official openai client on a live socket ---------------------------------------------


@pytest.fixture(scope="module")
def openai_client(models):
    openai = pytest.importorskip("openai")
    pytest.importorskip("uvicorn")
    from tests.serve.live import running

    app = create_app(models, max_steps=1000, grace_s=1.0, limits=Limits(max_work=10**9))
    with running(app, log_level="warning") as (port, _):
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                            max_retries=0, timeout=60)


@pytest.mark.parametrize("model", ["mdlm", "ar"])
def test_openai_client_json_schema_and_json_object(openai_client, model):
    fmt = _schema_format()
    out = openai_client.chat.completions.create(model=model, messages=CHAT, seed=1,
                                                response_format=fmt, extra_body={"steps": 16})
    whole = out.choices[0].message.content
    _valid(whole, SCHEMA)
    chunks = openai_client.chat.completions.create(model=model, messages=CHAT, seed=1,
                                                   response_format=fmt, stream=True,
                                                   extra_body={"steps": 16})
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole
    out = openai_client.chat.completions.create(model=model, messages=CHAT, seed=2,
                                                response_format={"type": "json_object"},
                                                extra_body={"steps": 16})
    assert isinstance(json.loads(out.choices[0].message.content), dict)

    import openai

    with pytest.raises(openai.BadRequestError) as e:
        openai_client.chat.completions.create(model=model, messages=CHAT, response_format=(
            _schema_format({"type": "object", "patternProperties": {"^a": {}}})))
    assert "patternProperties" in str(e.value)


@pytest.mark.parametrize("model", ["mdlm", "ar"])
def test_openai_client_parse_pydantic(openai_client, model):
    from typing import Literal

    from pydantic import BaseModel

    if not hasattr(openai_client.chat.completions, "parse"):
        pytest.skip("this openai version has no chat.completions.parse")

    class Pet(BaseModel):
        name: Literal["cat", "dog", "rat"]
        legs: int
        tame: bool

    for seed in range(2):
        out = openai_client.chat.completions.parse(model=model, messages=CHAT, seed=seed,
                                                   response_format=Pet,
                                                   extra_body={"steps": 16})
        pet = out.choices[0].message.parsed
        assert isinstance(pet, Pet) and pet.name in ("cat", "dog", "rat")


def test_openapi_documents_response_format(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("ChatRequest", "CompletionRequest"):
        assert "response_format" in schemas[name]["properties"]
    assert {"name", "schema", "strict"} <= set(schemas["JsonSchema"]["properties"])
    assert schemas["RegexFormat"]["properties"]["type"]["const"] == "regex"


def test_response_format_maps_to_one_constraint():
    from redraft.serve.formats import constraint_of
    from redraft.serve.schemas import ChatRequest

    def of(fmt):
        return constraint_of(ChatRequest.model_validate(
            {"messages": CHAT, "response_format": fmt}).response_format)

    assert of({"type": "text"}) is None
    assert of({"type": "json_object"}) == {"type": "json_object"}
    assert of(_schema_format()) == {"type": "json_schema", "schema": SCHEMA}
    assert of({"type": "json_schema", "json_schema": {"name": "any"}}) == {"type": "json_object"}
    assert of({"type": "regex", "regex": "a+"}) == {"type": "regex", "pattern": "a+"}
    assert of({"type": "grammar", "grammar": "g"}) == {"type": "grammar", "grammar": "g"}
