"""Shared fixtures: a tiny corpus and the overrides for a model small enough to train in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# A corpus with learnable structure: short repeated "words" the models can memorise fast.
TEXT = "".join(f"the {w} sat on the mat. " for w in ("cat", "dog", "bat", "rat") * 120)


@pytest.fixture(autouse=True)
def _fast_torch():
    torch.set_num_threads(2)
    yield


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


def tiny_overrides(corpus: Path, out_dir: Path, objective: str = "mdlm", **extra) -> list[str]:
    values = {
        "data.corpus": str(corpus),
        "data.tokenizer": "char",
        "data.cache_dir": str(out_dir.parent / "cache"),
        "model.n_layer": 2,
        "model.n_head": 2,
        "model.d_model": 32,
        "model.seq_len": 32,
        "diffusion.objective": objective,
        "train.batch_size": 8,
        "train.max_steps": 12,
        "train.warmup_steps": 2,
        "train.eval_every": 6,
        "train.eval_batches": 2,
        "train.log_every": 1,
        "train.progress": False,
        "train.out_dir": str(out_dir),
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny diffusion model and its AR twin for the server tests, trained once per session.
    Byte tokenizer, so any prompt (the chat template's "user: " too) encodes."""
    from redraft.cli import main

    base = tmp_path_factory.mktemp("serve")
    corpus = base / "corpus.txt"
    corpus.write_text(TEXT)
    runs = {}
    for objective in ("mdlm", "ar"):
        runs[objective] = base / objective
        overrides = tiny_overrides(corpus, runs[objective], objective, **{
            "data.tokenizer": "byte", "model.seq_len": 64})
        assert main(["train", *overrides]) == 0
    return runs


@pytest.fixture(scope="session")
def serve_block_run(tmp_path_factory) -> Path:
    """A tiny block-diffusion model (blocks of 8, the next-token alignment) for the server
    tests, trained once per session. Byte tokenizer, context 64."""
    from redraft.cli import main

    base = tmp_path_factory.mktemp("serve-block")
    corpus = base / "corpus.txt"
    corpus.write_text(TEXT)
    run = base / "block"
    overrides = tiny_overrides(corpus, run, "block", **{
        "data.tokenizer": "byte", "model.seq_len": 64, "diffusion.block_size": 8,
        "diffusion.block_shift": True})
    assert main(["train", *overrides]) == 0
    return run


@pytest.fixture(scope="session")
def hybrid_run(tmp_path_factory) -> Path:
    """A tiny hybrid (blocks of 4), trained once per session. Byte tokenizer, context 64."""
    from redraft.cli import main

    base = tmp_path_factory.mktemp("hybrid")
    corpus = base / "corpus.txt"
    corpus.write_text(TEXT)
    run = base / "hybrid"
    overrides = tiny_overrides(corpus, run, "hybrid", **{
        "data.tokenizer": "byte", "model.seq_len": 64, "diffusion.block_size": 4,
        "train.max_steps": 60, "train.eval_every": 30})
    assert main(["train", *overrides]) == 0
    return run
