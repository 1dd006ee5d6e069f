"""Issue 26 item 12, as a new user's client sees it: the official openai client's common loop
`for chunk in stream: chunk.choices[0]` over streams of every kind (completions and chat; the
AR twin, a masked diffusion model and a block-diffusion model; plain, with drafts, with and
without stream_options.include_usage) never meets a chunk without choices unless it asked for
the usage, and the deltas add up to the non-streamed text."""

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from redraft.model import load  # noqa: E402
from redraft.serve import create_app  # noqa: E402
from redraft.serve.limits import Limits  # noqa: E402
from tests.serve.live import running  # noqa: E402


@pytest.fixture(scope="module")
def client(serve_runs, serve_block_run):
    models = [load(serve_runs["mdlm"]), load(serve_runs["ar"]), load(serve_block_run)]
    app = create_app(models, max_steps=1000, grace_s=1.0, limits=Limits(max_work=10**9))
    with running(app, log_level="warning") as (port, _):
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                            max_retries=0, timeout=60), [m.name for m in models]


def _text(chunk, chat: bool) -> str:
    choice = chunk.choices[0]  # the loop under test: IndexError on an empty-choices chunk
    return (choice.delta.content or "") if chat else choice.text


@pytest.mark.parametrize("usage", [False, True])
@pytest.mark.parametrize("chat", [False, True])
def test_choices_zero_over_every_stream(client, chat, usage):
    client, names = client
    for name in names:
        for drafts in (False, True):
            kw = {"model": name, "max_tokens": 16, "seed": 3, "temperature": 0.0,
                  "extra_body": {"steps": 16, "diffusing": drafts}}
            if chat:
                kw["messages"] = [{"role": "user", "content": "the cat"}]
                whole = client.chat.completions.create(**kw).choices[0].message.content
                stream = client.chat.completions.create(
                    **kw, stream=True, stream_options={"include_usage": True} if usage else None)
            else:
                kw["prompt"] = "the "
                whole = client.completions.create(**kw).choices[0].text
                stream = client.completions.create(
                    **kw, stream=True, stream_options={"include_usage": True} if usage else None)
            chunks = list(stream)
            body = chunks[:-1] if usage else chunks
            texts = [_text(c, chat) for c in body]
            final = [c for c in body if not c.model_extra.get("draft")]
            assert "".join(_text(c, chat) for c in final) == whole, (name, drafts)
            assert texts and final[-1].choices[0].finish_reason in ("stop", "length")
            if usage:
                assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
                assert all(c.usage is None for c in body)
            else:
                assert all(c.usage is None for c in chunks)
