"""The server's usage carries tokens per forward (OpenAI's fields intact), equal to the offline
figure; early_commit is a body field; `redraft sample --json` prints TPF and the ceiling."""

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from redraft.cli import main  # noqa: E402
from redraft.model import load  # noqa: E402
from redraft.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def models(serve_runs):
    return [load(serve_runs["mdlm"]), load(serve_runs["ar"])]


@pytest.fixture(scope="module")
def client(models):
    with TestClient(create_app(models, max_steps=1000)) as c:
        yield c


@pytest.mark.parametrize("model", ["mdlm", "ar"])
@pytest.mark.parametrize("early", [None, 2.0])
def test_usage_carries_the_offline_tokens_per_forward(client, models, model, early):
    if model == "ar" and early is not None:
        pytest.skip("early_commit is a diffusion knob")
    body = {"model": model, "prompt": "the ", "max_tokens": 16, "steps": 8, "seed": 5, "n": 2}
    if early is not None:
        body["early_commit"] = early
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert set(usage) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    m = models[0 if model == "mdlm" else 1]
    knobs = {} if early is None else {"early_commit": early}
    offline = m.generate("the ", max_new_tokens=16, steps=8, seed=5, num_samples=2, **knobs)
    assert usage["tokens_per_forward"] == round(offline.tpf.value, 4)
    if model == "ar":
        assert usage["tokens_per_forward"] == 1.0


def test_ar_refuses_early_commit(client):
    r = client.post("/v1/completions", json={"model": "ar", "prompt": "the ", "max_tokens": 4,
                                             "early_commit": 3.0})
    assert r.status_code == 400 and "early_commit" in r.text


def test_sample_json_prints_tpf_and_the_ceiling(serve_runs, capsys):
    capsys.readouterr()
    assert main(["sample", str(serve_runs["mdlm"]), "--json", "--prompt", "the ",
                 "--max-new-tokens", "12", "--steps", "6", "--oracle-tpf",
                 "--early-commit", "1.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens_per_forward"] >= 1.0 and out["oracle_tpf_ceiling"] >= 1.0
