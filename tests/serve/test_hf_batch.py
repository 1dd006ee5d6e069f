"""DiffusionGemma in the server: requests of different lengths share decoder calls, each result
equals offline sampling with its seeds, drafts stream, chat uses the tokenizer's template."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("transformers")

from fastapi.testclient import TestClient  # noqa: E402

import redraft  # noqa: E402
from redraft.hf.testing import tiny_gemma  # noqa: E402
from redraft.serve import Engine, Work, create_app  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread(_fast_torch):
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    folder = tiny_gemma(tmp_path_factory.mktemp("hf") / "gemma", sharpen=10.0)
    return redraft.load(f"hf:{folder}", name="gemma")


def test_engine_batches_gemma_requests(gemma):
    tok = gemma.tokenizer
    works = [Work("gemma", tok.encode("a"), 10, [1, 2], steps=4),
             Work("gemma", tok.encode("Hello there"), 21, [3], steps=3),
             Work("gemma", tok.encode("xy"), 9, [4], steps=5, sampler="confidence"),
             Work("gemma", tok.encode("q"), 12, [5], steps=4, stop_at_eos=True,
                  options={"entropy_bound": 0.5}, drafts=True)]
    events = []
    engine = Engine({"gemma": gemma}, max_batch=16)
    jobs = [engine.submit(w, listener=events.append if w.drafts else None) for w in works]
    engine.start()
    done = [job.wait(60) for job in jobs]
    rows = engine.metrics.batch_rows
    engine.close()
    assert rows.max >= 4  # requests of different lengths shared one decoder call
    for w, ev in zip(works, done, strict=True):
        assert ev.kind == "done"
        want = gemma.sample([w.prefix] * w.n, length=w.length, seeds=w.seeds, steps=w.steps,
                            sampler=w.sampler, options=w.options, stop_at_eos=w.stop_at_eos)
        assert torch.equal(ev.tokens, want.tokens), w
    drafts = [e for e in events if e.kind == "draft"]
    assert drafts and all(e.tokens.shape == (1, 12) for e in drafts)
    assert [e.step for e in drafts] == sorted(e.step for e in drafts)


def test_http_chat_uses_the_template_and_streams(gemma):
    with TestClient(create_app([gemma], max_steps=100)) as client:
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "steps": 3,
                "seed": 2}
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        text = r.json()["choices"][0]["message"]["content"]
        prompt = "<|user|>hi\n<|assistant|>"  # the tokenizer's chat template
        want = gemma.generate(prompt, max_new_tokens=8, steps=3, seed=2)
        assert text == want.completions[0]
        with client.stream("POST", "/v1/completions", json={
                "prompt": "ab", "max_tokens": 8, "steps": 3, "stream": True,
                "diffusing": True}) as s:
            lines = [json.loads(line[6:]) for line in s.iter_lines()
                     if line.startswith("data: ") and line != "data: [DONE]"]
        assert s.status_code == 200
        drafts = [e for e in lines if e.get("draft")]
        assert drafts and "░" in drafts[0]["choices"][0]["text"]  # later canvases wait


def test_gemma_lists_only_its_samplers(gemma):
    """Issue 26 item 17: /v1/models names the samplers DiffusionGemma takes, no masked ones."""
    assert sorted(gemma.decoder.samplers()) == ["confidence", "entropy_bound"]
