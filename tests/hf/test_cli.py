"""The same hf: spec in every CLI command: sample (--chat), eval, bench (serve: tests/serve)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

import redraft  # noqa: E402
from redraft.cli import main  # noqa: E402
from redraft.hf.testing import tiny_causal, tiny_gemma, tiny_masked  # noqa: E402
from tests.conftest import TEXT  # noqa: E402


def run(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_sample_chat(tmp_path, capsys):
    folder = tiny_gemma(tmp_path / "g", sharpen=10.0)
    out = run(capsys, "sample", f"hf:{folder}", "--chat", "hi", "--length", "30", "--steps",
              "3", "--seed", "4", "--json")
    model = redraft.load(f"hf:{folder}")
    want = model.generate(model.chat_prompt([{"role": "user", "content": "hi"}]), length=30,
                          steps=3, seed=4)
    assert out["samples"] == want.texts and out["samples"][0].startswith("<|user|>hi\n")
    assert main(["sample", f"hf:{folder}", "--chat", "hi", "--prompt", "x"]) == 2
    assert "drop --prompt" in capsys.readouterr().err


def test_eval_hf_models(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REDRAFT_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    causal = run(capsys, "eval", f"hf:{tiny_causal(tmp_path / 'c')}", "--corpus", str(corpus),
                 "--max-batches", "1", "--json")
    assert causal["kind"] == "exact NLL" and causal["nats_per_token"] > 0
    masked = run(capsys, "eval", f"hf:{tiny_masked(tmp_path / 'm')}?trust_remote_code=1",
                 "--corpus", str(corpus), "--max-batches", "1", "--samples", "2", "--json")
    assert masked["kind"].startswith("NLL upper bound") and masked["mc_samples"] == 2
    assert main(["eval", f"hf:{tiny_causal(tmp_path / 'c2')}"]) == 2
    assert "give one (--corpus)" in capsys.readouterr().err
    assert main(["eval", f"hf:{tiny_gemma(tmp_path / 'g')}", "--corpus", str(corpus)]) == 2
    assert "no likelihood bound" in capsys.readouterr().err


def test_bench_hf_models(tmp_path, capsys, monkeypatch):
    from redraft.eval import bench

    # The roofline's ceilings are not what this checks (and take a minute on a busy CPU).
    monkeypatch.setattr(bench.hardware, "measure", lambda quick: {
        "peak_matmul_gflops": 1.0, "peak_matmul_gflops_bf16": 1.0, "mem_bandwidth_gbs": 1.0,
        "threads": 1})
    out = tmp_path / "bench"
    assert main(["bench", f"hf:{tiny_gemma(tmp_path / 'g', sharpen=10.0)}",
                 f"hf:{tiny_causal(tmp_path / 'c')}", "--length", "12", "--steps", "3",
                 "--num-samples", "2", "--temperatures", "1", "--sweep", "none",
                 "--out", str(out)]) == 0
    result = json.loads((out / "eval.json").read_text())
    runs = {r["model"]: r for r in result["runs"]}
    assert set(runs) == {"diffusion_gemma:g", "ar:c"}
    gemma = runs["diffusion_gemma:g"]
    assert gemma["sampler"] == "entropy_bound" and gemma["tokens_per_s_batch16"] > 0
    assert gemma["achieved_gflops"] is None  # no FLOP model for Hugging Face architectures
