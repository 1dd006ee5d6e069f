"""Checkpoints that survive crashes: kills inside the write and retention windows, checksums,
dtype, fallback to the newest good checkpoint, and what an earlier crash left behind."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from redraft.checkpoint import (
    clean_run_dir,
    list_checkpoints,
    load_checkpoint,
    load_train_state,
    sha256_file,
)
from redraft.config import load_config
from redraft.errors import RedraftError
from redraft.train import train
from tests.conftest import TEXT, tiny_overrides

STEPS = {"train.max_steps": 6, "train.save_every": 2, "train.keep_checkpoints": 1,
         "train.eval_every": 6, "model.dropout": 0.1}
EXTEND = {"train.max_steps": 8}


def config(corpus, run, **extra):
    return load_config(None, tiny_overrides(corpus, run, **{**STEPS, **extra}))


def weights(ckpt):
    state = load_train_state(ckpt)
    return {**load_file(str(ckpt / "model.safetensors")),
            **{f"raw.{k}": v for k, v in state["model"].items()}}


def assert_same(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


class Kill(BaseException):
    """A simulated SIGKILL: once raised, every later file operation of the checkpoint code
    raises too, so nothing cleans up after it (as after a real kill)."""


class Killer:
    """Wrap os.replace and shutil.rmtree; die at the n-th call that touches a checkpoint."""

    def __init__(self, monkeypatch, at: int | None):
        self.at, self.calls, self.dead = at, [], False
        self.replace, self.rmtree = os.replace, shutil.rmtree
        monkeypatch.setattr(os, "replace", self._wrap(self.replace, "replace"))
        monkeypatch.setattr(shutil, "rmtree", self._wrap(self.rmtree, "rmtree"))

    def _wrap(self, real, name):
        def call(*args, **kwargs):
            if "ckpt" not in os.path.basename(str(args[0])):  # a checkpoint folder itself
                return real(*args, **kwargs)
            if self.dead:
                raise Kill
            self.calls.append(f"{name} {os.path.basename(str(args[0]))}")
            if len(self.calls) == self.at:
                self.dead = True
                if name == "rmtree" and os.path.isdir(args[0]):  # die halfway through it
                    for f in sorted(os.listdir(args[0]))[:2]:
                        os.unlink(os.path.join(args[0], f))
                raise Kill
            return real(*args, **kwargs)
        return call


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run and the calls its checkpointing makes; the same run extended from
    its final checkpoint to more steps with --resume auto (keep_checkpoints=1: the new final
    checkpoint replaces the old one) and the calls that makes; and what re-running the
    finished run unchanged does (nothing: its checkpoint is left as it is)."""
    base = tmp_path_factory.mktemp("reference")
    (base / "corpus.txt").write_text(TEXT)
    mp = pytest.MonkeyPatch()
    try:
        killer = Killer(mp, None)
        cfg = config(base / "corpus.txt", base / "run")
        result = train(cfg)
        fresh_calls = list(killer.calls)
        killer.calls.clear()
        train(cfg, resume="auto")
        rerun_calls = list(killer.calls)
        shutil.copytree(base / "run", base / "extended")
        killer.calls.clear()
        extended = train(config(base / "corpus.txt", base / "extended", **EXTEND),
                         resume="auto")
        extend_calls = list(killer.calls)
    finally:
        mp.undo()
    return {"base": base, "ckpt": result.checkpoint, "fresh": fresh_calls, "rerun": rerun_calls,
            "extended": extended.checkpoint, "extend": extend_calls}


def test_checkpointing_makes_the_expected_calls(reference):
    """The windows the kill tests cover: write, replace aside, prune (rename then delete)."""
    fresh = reference["fresh"]
    assert fresh[0].startswith("replace .tmp-ckpt-")
    assert "replace ckpt-00000002" in fresh and "rmtree .tmp-rm-ckpt-00000002" in fresh
    assert reference["rerun"] == []  # a finished run re-run unchanged is left as it is
    extend = reference["extend"]
    assert len(extend) == 4
    # the new final checkpoint is moved into place first, then the old one renamed, deleted
    assert extend[0].startswith("replace .tmp-ckpt-") and extend[-1] == \
        "rmtree .tmp-rm-ckpt-00000006"
    assert extend.index("replace ckpt-00000006") > 0


@pytest.mark.parametrize("at", range(1, 10))
def test_a_kill_in_any_checkpoint_window_resumes_exactly(reference, tmp_path, monkeypatch, at):
    if at > len(reference["fresh"]):
        pytest.skip("fewer checkpoint calls")
    corpus = reference["base"] / "corpus.txt"
    cfg = config(corpus, tmp_path / "run", **{"data.cache_dir": str(reference["base"] /
                                                                        "cache")})
    killer = Killer(monkeypatch, at)
    with pytest.raises(Kill):
        train(cfg)
    monkeypatch.undo()
    warnings.simplefilter("ignore")  # clean_run_dir's report (test_debris_... checks it)
    done = [c for c in killer.calls[:-1] if c.startswith("replace .tmp-ckpt-")]
    clean_run_dir(tmp_path / "run")
    if done:  # a checkpoint had been completed before the kill: one is still there
        assert list_checkpoints(tmp_path / "run")
    result = train(cfg, resume="auto")
    assert result.step == 6
    assert_same(result.checkpoint, reference["ckpt"])
    leftovers = [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize("at", range(1, 5))  # each of the extension's 4 calls
def test_a_kill_while_extending_a_finished_run_keeps_a_checkpoint(reference, tmp_path,
                                                                  monkeypatch, at):
    """Extending a finished run (more steps, keep_checkpoints=1) replaces its final checkpoint;
    a kill at any point of that must still leave a checkpoint, and resuming must reach exactly
    the uninterrupted extension."""
    if at > len(reference["extend"]):
        pytest.fail(f"the extension made only {len(reference['extend'])} checkpoint calls")
    run = tmp_path / "run"
    shutil.copytree(reference["ckpt"].parent, run)
    cfg = config(reference["base"] / "corpus.txt", run,
                 **{"data.cache_dir": str(reference["base"] / "cache"), **EXTEND})
    Killer(monkeypatch, at)
    with pytest.raises(Kill):
        train(cfg, resume="auto")
    monkeypatch.undo()
    clean_run_dir(run)
    assert list_checkpoints(run)  # never left without one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what clean_run_dir did (test_debris_... checks it)
        result = train(cfg, resume="auto")
    assert result.step == 8
    assert_same(result.checkpoint, reference["extended"])
    assert sorted(p.name for p in run.iterdir()) == ["ckpt-00000008", "metrics.jsonl"]


def test_debris_of_a_crash_is_cleaned(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference["ckpt"].parent, run)
    final = reference["ckpt"].name
    os.replace(run / final, run / f".old-{final}")  # killed between moving aside and renaming in
    (run / ".tmp-ckpt-abc").mkdir()  # a write that never finished
    (run / ".tmp-rm-ckpt-00000004").mkdir()  # a deletion that never finished
    (run / "ckpt-00000009").mkdir()  # an empty checkpoint folder
    done = clean_run_dir(run)
    assert len(done) == 4
    assert sorted(p.name for p in run.iterdir()) == [final, "metrics.jsonl"]
    assert_same(run / final, reference["ckpt"])


def test_checksums_are_verified_and_readers_fall_back(reference, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = config(reference["base"] / "corpus.txt", run, **{
        "train.keep_checkpoints": 3, "data.cache_dir": str(reference["base"] / "cache")})
    train(cfg)
    newest, previous, oldest = list_checkpoints(run)[::-1]
    meta = json.loads((newest / "config.json").read_text())
    assert meta["files"]["model.safetensors"] == sha256_file(newest / "model.safetensors")
    data = bytearray((newest / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF  # a flipped byte inside a tensor: the file still parses
    (newest / "model.safetensors").write_bytes(bytes(data))

    with pytest.raises(RedraftError, match="model.safetensors does not match its SHA-256"):
        load_checkpoint(newest)  # named directly: no fallback
    capsys.readouterr()
    ck = load_checkpoint(run)
    assert ck.path == previous
    err = capsys.readouterr().err
    assert "using" in err and newest.name in err and "SHA-256" in err

    (previous / "redraft_tokenizer.json").write_text("{}")
    (oldest / "config.json").write_text("{torn")
    with pytest.raises(RedraftError, match="every checkpoint in .* is damaged"):
        load_checkpoint(run)
    with pytest.raises(RedraftError, match="every checkpoint in .* is damaged.*ckpt-00000006"):
        train(cfg, resume="auto")  # not a silent fresh start


def test_other_dtype_is_refused_and_old_checkpoints_still_load(reference, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(reference["ckpt"], ckpt)
    meta = json.loads((ckpt / "config.json").read_text())
    del meta["files"]  # as written before checksums existed
    (ckpt / "config.json").write_text(json.dumps(meta))
    capsys.readouterr()
    load_checkpoint(ckpt)
    assert "no checksums" in capsys.readouterr().err
    assert load_train_state(ckpt)["step"] == 6  # resumable too
    assert "no checksums" in capsys.readouterr().err

    tensors = load_file(str(ckpt / "model.safetensors"))
    save_file({k: v.half() for k, v in tensors.items()}, str(ckpt / "model.safetensors"))
    with pytest.raises(RedraftError, match="is torch.float16, expected torch.float32"):
        load_checkpoint(ckpt)
