import json
import math
from collections import Counter

import pytest
import torch

import redraft.train
from redraft.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from redraft.config import load_config
from redraft.errors import RedraftError
from redraft.train import train
from tests.conftest import TEXT, tiny_overrides


def losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}


def unigram_entropy(text):
    counts = Counter(text)
    return -sum(c / len(text) * math.log(c / len(text)) for c in counts.values())


@pytest.mark.slow
@pytest.mark.parametrize("objective, steps, share", [("ar", 80, 0.25), ("mdlm", 400, 0.8)])
def test_tiny_training_learns(tmp_path, corpus, objective, steps, share):
    """Validation loss ends below a share of the corpus's unigram entropy (2.25 nats/char):
    the model must use context to get there (uniform guessing would give log 15 = 2.7)."""
    extra = {"train.max_steps": steps, "train.lr": 1e-2, "train.eval_every": steps,
             "train.warmup_steps": 10, "diffusion.elbo_estimator": "count"}
    result = train(load_config(None, tiny_overrides(corpus, tmp_path / "run", objective,
                                                    **extra)))
    bound = share * unigram_entropy(TEXT)
    assert result.val_nats_per_token < bound, (result.val_nats_per_token, bound)
    ck = load_checkpoint(result.checkpoint)
    assert ck.config.diffusion.objective == objective
    assert ck.model.num_params() == result.params
    assert math.isfinite(result.val_bits_per_byte)


@pytest.mark.parametrize("objective", ["mdlm", "ar"])
def test_resume_after_crash_is_exact(tmp_path, corpus, objective, monkeypatch):
    extra = {"model.dropout": 0.1, "train.grad_accum": 2, "train.save_every": 5}
    full = train(load_config(None, tiny_overrides(corpus, tmp_path / "full", objective,
                                                  **extra)))

    real = redraft.train.step_generator

    def crash_at_step_7(seed, step, device):
        if step == 7:
            raise KeyboardInterrupt("simulated crash")
        return real(seed, step, device)

    cfg = load_config(None, tiny_overrides(corpus, tmp_path / "part", objective, **extra))
    monkeypatch.setattr(redraft.train, "step_generator", crash_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(redraft.train, "step_generator", real)
    assert [p.name for p in list_checkpoints(tmp_path / "part")] == ["ckpt-00000005"]

    resumed = train(cfg, resume=tmp_path / "part")
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


def test_torn_train_state_is_a_clear_error(tmp_path, corpus):
    cfg = load_config(None, tiny_overrides(corpus, tmp_path / "run"))
    result = train(cfg)
    (result.checkpoint / "train_state.pt").write_bytes(b"torn")
    with pytest.raises(RedraftError, match="train_state.pt does not match its SHA-256"):
        train(cfg, resume=result.checkpoint)


def test_resuming_a_finished_run_says_so_and_changes_nothing(tmp_path, corpus, capsys):
    from redraft.cli import main

    overrides = tiny_overrides(corpus, tmp_path / "run", **{"train.max_steps": 4,
                                                            "train.eval_every": 4})
    done = train(load_config(None, overrides))
    before = (done.checkpoint / "model.safetensors").stat().st_mtime_ns
    with pytest.warns(UserWarning, match=r"nothing to train: .*ckpt-00000004.* at step 4 .*"
                                         r"train.max_steps=4.*raise train.max_steps"):
        again = train(load_config(None, overrides), resume="auto")
    assert again.checkpoint == done.checkpoint and again.step == 4
    assert again.val_nats_per_token == done.val_nats_per_token
    assert (done.checkpoint / "model.safetensors").stat().st_mtime_ns == before  # not rewritten
    assert list_checkpoints(tmp_path / "run") == [done.checkpoint]
    # The command line says it in one plain line.
    assert main(["train", *overrides, "--resume", str(tmp_path / "run")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["step"] == 4
    settings, warning = err.strip().splitlines()  # which settings, then one plain line
    assert settings.startswith("redraft train: resuming ") and "run's own settings" in settings
    assert warning.startswith("redraft train: warning: nothing to train: ")
    # A larger budget trains on from there.
    more = train(load_config(None, [*overrides, "train.max_steps=6"]), resume="auto")
    assert more.step == 6 and len(losses(tmp_path / "run")) == 6
