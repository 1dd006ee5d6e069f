import json
import math

import pytest
import torch

from redraft.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from redraft.config import load_config
from redraft.errors import RedraftError
from redraft.train import train
from tests.conftest import tiny_overrides


def losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}


@pytest.mark.parametrize("objective, bound", [("ar", 1.0), ("mdlm", 2.0)])
def test_tiny_training_learns(tmp_path, corpus, objective, bound):
    """Both objectives get far below the uniform rate (log 15 = 2.7 nats) on a repetitive text."""
    cfg = load_config(None, tiny_overrides(corpus, tmp_path / "run", objective,
                                           **{"train.max_steps": 80, "train.lr": 1e-2,
                                              "train.eval_every": 80}))
    result = train(cfg)
    assert result.val_nats_per_token < bound, result.val_nats_per_token
    ck = load_checkpoint(result.checkpoint)
    assert ck.config.diffusion.objective == objective
    assert ck.model.num_params() == result.params
    assert math.isfinite(result.val_bits_per_byte)


@pytest.mark.parametrize("objective", ["mdlm", "ar"])
def test_resume_is_exact(tmp_path, corpus, objective):
    extra = {"model.dropout": 0.1, "train.grad_accum": 2, "train.save_every": 5}
    full = train(load_config(None, tiny_overrides(corpus, tmp_path / "full", objective,
                                                  **extra)))
    part = load_config(None, tiny_overrides(corpus, tmp_path / "part", objective,
                                            **{**extra, "train.max_steps": 5}))
    train(part)
    resumed_cfg = load_config(None, tiny_overrides(corpus, tmp_path / "part", objective,
                                                   **extra))
    resumed = train(resumed_cfg, resume=tmp_path / "part")
    assert resumed.step == full.step == 12
    assert losses(tmp_path / "part") == losses(tmp_path / "full")
    a = load_checkpoint(full.checkpoint).model.state_dict()
    b = load_checkpoint(resumed.checkpoint).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_is_atomic_and_pruned(tmp_path, corpus):
    cfg = load_config(None, tiny_overrides(corpus, tmp_path / "run", **{"train.save_every": 3}))
    train(cfg)
    names = [p.name for p in list_checkpoints(tmp_path / "run")]
    assert names == ["ckpt-00000009", "ckpt-00000012"]  # keep_checkpoints = 2
    assert not list((tmp_path / "run").glob(".tmp-*"))


def test_failed_save_leaves_nothing(tmp_path, corpus, monkeypatch):
    cfg = load_config(None, tiny_overrides(corpus, tmp_path / "run"))
    result = train(cfg)
    ck = load_checkpoint(result.checkpoint)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("redraft.checkpoint.save_file", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "run", 99, ck.config, ck.model, ck.tokenizer)
    assert not list((tmp_path / "run").glob(".tmp-*"))
    assert not (tmp_path / "run" / "ckpt-00000099").exists()


def test_bad_checkpoints(tmp_path, corpus):
    result = train(load_config(None, tiny_overrides(corpus, tmp_path / "run")))
    path = result.checkpoint
    meta = json.loads((path / "config.json").read_text())

    with pytest.raises(RedraftError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere")
    meta_v = {**meta, "version": 999}
    (path / "config.json").write_text(json.dumps(meta_v))
    with pytest.raises(RedraftError, match="format version 999"):
        load_checkpoint(path)
    meta_shape = {**meta}
    meta_shape["config"]["model"]["d_model"] = 64
    (path / "config.json").write_text(json.dumps(meta_shape))
    with pytest.raises(RedraftError, match="has shape"):
        load_checkpoint(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(RedraftError, match="unreadable"):
        load_checkpoint(path)


def test_resume_with_other_model_is_refused(tmp_path, corpus):
    train(load_config(None, tiny_overrides(corpus, tmp_path / "run")))
    other = load_config(None, tiny_overrides(corpus, tmp_path / "run", **{"model.d_model": 64}))
    with pytest.raises(RedraftError, match="differs"):
        train(other, resume=tmp_path / "run")
