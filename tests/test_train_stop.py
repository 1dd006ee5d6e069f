"""Training stops cleanly: a non-finite loss is an error that keeps the last good checkpoint;
SIGINT/SIGTERM save at the next step boundary; a second signal stops at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import redraft.train
from redraft.checkpoint import list_checkpoints, load_train_state
from redraft.cli import main
from redraft.config import load_config
from redraft.train import TrainingStopped, _StopSignals, train
from tests.conftest import tiny_overrides

EXTRA = {"train.max_steps": 8, "train.eval_every": 8, "train.save_every": 4}


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, corpus,
                                                                  monkeypatch, capsys):
    real = redraft.train.token_losses
    calls = {"n": 0}

    def nan_at_step_6(*args, **kwargs):
        calls["n"] += 1
        losses = real(*args, **kwargs)
        return losses * float("nan") if calls["n"] == 6 else losses

    monkeypatch.setattr(redraft.train, "token_losses", nan_at_step_6)
    run = tmp_path / "run"
    code = main(["train", *tiny_overrides(corpus, run, **EXTRA)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "training diverged at step 6" in err and "ckpt-00000004" in err
    assert [p.name for p in list_checkpoints(run)] == ["ckpt-00000004"]
    state = load_train_state(run / "ckpt-00000004")
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_sigterm_saves_at_the_step_boundary_and_resumes_exactly(tmp_path, corpus,
                                                                monkeypatch):
    full = train(load_config(None, tiny_overrides(corpus, tmp_path / "full", **EXTRA)))
    real = redraft.train.step_generator

    def signal_during_step_3(seed, step, device):
        if step == 2:  # 0-based: the third step, mid-way
            os.kill(os.getpid(), signal.SIGTERM)
        return real(seed, step, device)

    cfg = load_config(None, tiny_overrides(corpus, tmp_path / "part", **EXTRA))
    monkeypatch.setattr(redraft.train, "step_generator", signal_during_step_3)
    with pytest.raises(TrainingStopped) as stopped:
        train(cfg)
    assert stopped.value.step == 3 and stopped.value.signum == signal.SIGTERM
    assert [p.name for p in list_checkpoints(tmp_path / "part")] == ["ckpt-00000003"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.setattr(redraft.train, "step_generator", real)
    resumed = train(cfg, resume="auto")
    a = load_file(str(full.checkpoint / "model.safetensors"))
    b = load_file(str(resumed.checkpoint / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_signal_or_one_before_the_loop_stops_at_once():
    with _StopSignals() as stop:
        with pytest.raises(KeyboardInterrupt):  # not armed yet: nothing to save
            stop._handle(signal.SIGINT, None)
        stop.armed = True
        stop._handle(signal.SIGINT, None)
        assert stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            stop._handle(signal.SIGTERM, None)


def test_ctrl_c_in_a_real_process_saves_and_exits(tmp_path, corpus):
    """SIGINT to `python -m redraft train` (save_every 0: without the handler all progress
    would be lost): a checkpoint at the step it stopped on, a message, status 130."""
    run = tmp_path / "run"
    args = tiny_overrides(corpus, run, **{"train.max_steps": 100_000, "train.eval_every": 100_000,
                                          "train.threads": 1})
    proc = subprocess.Popen([sys.executable, "-m", "redraft", "train", *args],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    log = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "stopped by SIGINT at step" in err
    (ckpt,) = list_checkpoints(run)
    step = load_train_state(ckpt)["step"]
    assert f"step {step};" in err and step >= 3
    logged = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert logged[-1] == step  # saved at the step boundary it had reached
