"""`redraft serve` with no checkpoint: the shipped default pair, and a page whose prompt fits it."""

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from redraft.cli import parser  # noqa: E402
from redraft.model import load  # noqa: E402
from redraft.serve import create_app  # noqa: E402


def test_serve_without_checkpoints_serves_the_default_pair():
    specs = parser().parse_args(["serve"]).checkpoints
    with TestClient(create_app([load(s) for s in specs])) as client:
        models = client.get("/v1/models").json()["data"]
        assert [(m["id"], m["kind"]) for m in models] == [("default", "diffusion"),
                                                          ("default-ar", "ar")]
        assert "entropy_bound" not in models[0]["samplers"] and models[1]["samplers"] == []
        for name in models[0]["samplers"]:  # issue 26 item 17: each one listed is taken
            r = client.post("/v1/completions", json={"prompt": "import os\n", "max_tokens": 4,
                                                     "steps": 2, "seed": 1, "sampler": name})
            assert r.status_code == 200, (name, r.text)
        page = client.get("/").text
        assert "def list_python_files(folder):" in page and "ROMEO" not in page
        for model in ("default", "default-ar"):
            r = client.post("/v1/completions", json={"model": model, "prompt": "import os\n",
                                                     "max_tokens": 8, "steps": 4, "seed": 1})
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["completion_tokens"] == 8
