"""Training under torchrun on CPU (gloo, 2 processes, a tiny model): the same numbers as one
process, checkpoints that move between world sizes, and no work lost to SIGKILL.

Each torchrun launch costs a few seconds of start-up, so the two reference runs (DDP and FSDP)
are made once per module and shared. Every launch has a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from redraft.config import load_config
from redraft.distributed import split_batch
from redraft.errors import RedraftError
from redraft.train import train
from tests.conftest import TEXT

SRC = Path(__file__).resolve().parents[1] / "src"
STEPS, SAVE_EVERY = 24, 4
LAUNCH_TIMEOUT = 120

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or sys.platform != "linux",
                                reason="needs torch.distributed and Linux (/proc)")


def overrides(work: Path, out: str, **extra) -> list[str]:
    values = {
        "data.corpus": str(work / "corpus.txt"), "data.tokenizer": "char",
        "data.cache_dir": str(work / "cache"),
        "model.n_layer": 1, "model.n_head": 2, "model.d_model": 32, "model.seq_len": 32,
        "train.batch_size": 8, "train.max_steps": STEPS, "train.warmup_steps": 2,
        "train.eval_every": 12, "train.eval_batches": 2, "train.log_every": 1,
        "train.save_every": SAVE_EVERY, "train.keep_checkpoints": 10, "train.threads": 1,
        "train.progress": False, "train.out_dir": str(work / out), **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


def torchrun_cmd(args: list[str], nproc: int = 2, max_restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}",
            "-m", "redraft", "train", *args]


def env() -> dict:
    # The code under test, not whatever redraft is installed; workers inherit this.
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}


def torchrun(args: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(torchrun_cmd(args, **kw), env=env(), capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def losses(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / "model.safetensors"))


def assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], rtol=0, atol=atol), name


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dist")
    (path / "corpus.txt").write_text(TEXT)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def ddp_run(work) -> Path:
    torchrun(overrides(work, "ddp"))
    return work / "ddp"


@pytest.fixture(scope="module")
def fsdp_run(work) -> Path:
    torchrun(overrides(work, "fsdp", **{"train.parallel": "fsdp"}))
    return work / "fsdp"


def final(run_dir: Path) -> Path:
    return run_dir / f"ckpt-{STEPS:08d}"


@pytest.mark.slow
def test_ddp_two_ranks_match_one_rank_with_the_whole_batch(work, ddp_run):
    # Rank r scores rows [4r, 4r + 4) of each step's batch of 8 with the noise drawn for all
    # 8, so 2 ranks x 4 rows equal 1 rank x 8 rows in 2 micro-batches exactly (the gradient
    # sums match term by term) ...
    one = train(load_config(None, overrides(work, "one", **{"train.grad_accum": 2})))
    assert losses(ddp_run) == losses(work / "one")
    assert_same_weights(final(ddp_run), one.checkpoint)
    # ... and 1 rank x 8 rows in one micro-batch up to float summation order.
    whole = train(load_config(None, overrides(work, "whole")))
    a, b = losses(ddp_run), losses(work / "whole")
    assert a.keys() == b.keys()
    assert all(abs(a[s] - b[s]) < 1e-5 for s in a), (a, b)
    assert_same_weights(final(ddp_run), whole.checkpoint, atol=1e-5)
    log = [json.loads(line) for line in (ddp_run / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["tokens_per_s"] == pytest.approx(2 * log[-1]["tokens_per_s_per_rank"])
    assert "val_nats_per_token" in log[-1]


@pytest.mark.slow
def test_fsdp_matches_ddp(ddp_run, fsdp_run):
    a, b = losses(ddp_run), losses(fsdp_run)
    assert a.keys() == b.keys()
    assert all(abs(a[s] - b[s]) < 1e-5 for s in a), (a, b)
    assert_same_weights(final(ddp_run), final(fsdp_run), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_rank_checkpoint_continues_on_one_rank(work, ddp_run, fsdp_run, mode):
    source = {"ddp": ddp_run, "fsdp": fsdp_run}[mode]
    run = work / f"from-{mode}"
    shutil.copytree(source / "ckpt-00000012", run / "ckpt-00000012")
    cfg = load_config(None, overrides(work, run.name, **{"train.grad_accum": 2}))
    result = train(cfg, resume="auto")
    assert result.step == STEPS and result.world_size == 1
    later = {s: v for s, v in losses(source).items() if s > 12}
    got = losses(run)
    assert all(abs(got[s] - later[s]) < 1e-5 for s in later), (got, later)
    assert_same_weights(final(source), result.checkpoint, atol=1e-5)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts its workers in their own sessions, so a
    process-group kill would miss them)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += children
    return out


def _launch_and_kill_after_first_checkpoint(args, run_dir: Path, max_restarts: int,
                                            whole_job: bool) -> subprocess.Popen:
    proc = subprocess.Popen(torchrun_cmd(args, max_restarts=max_restarts), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while not list(run_dir.glob("ckpt-*")):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint came"
            time.sleep(0.005)
        workers = [p for p in _descendants(proc.pid)
                   if "redraft" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="ignore")]
        assert workers, "found no worker processes"
        for pid in workers if whole_job else workers[-1:]:
            os.kill(pid, signal.SIGKILL)
        if whole_job:
            os.kill(proc.pid, signal.SIGKILL)
        assert not final(run_dir).exists(), "the run ended before it could be killed"
    except BaseException:
        _kill_tree(proc)
        raise
    return proc


def _kill_tree(proc: subprocess.Popen) -> None:
    for pid in [*_descendants(proc.pid), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _finish(proc: subprocess.Popen) -> str:
    """The launch's output once it exits; on a timeout, kill it and everything it started."""
    try:
        return proc.communicate(timeout=LAUNCH_TIMEOUT)[0]
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        proc.communicate()
        raise


@pytest.mark.slow
def test_sigkill_then_resume_auto_reaches_the_same_weights(work, ddp_run):
    args = overrides(work, "killed")
    proc = _launch_and_kill_after_first_checkpoint(args, work / "killed", 0, whole_job=True)
    _finish(proc)
    assert proc.returncode == -signal.SIGKILL
    torchrun([*args, "--resume", "auto"])
    assert_same_weights(final(ddp_run), final(work / "killed"))
    assert losses(work / "killed") == losses(ddp_run)


@pytest.mark.slow
def test_elastic_restart_resumes_by_itself(work, ddp_run):
    """torchrun --max-restarts: one worker is SIGKILLed, torchrun restarts the group, and
    --resume auto carries on from the newest checkpoint with no manual step."""
    args = [*overrides(work, "elastic"), "--resume", "auto"]
    proc = _launch_and_kill_after_first_checkpoint(args, work / "elastic", 1, whole_job=False)
    out = _finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert_same_weights(final(ddp_run), final(work / "elastic"))


def test_torn_checkpoint_is_skipped_with_a_warning(work):
    cfg = load_config(None, overrides(work, "torn", **{"train.max_steps": 8}))
    train(cfg)
    run = work / "torn"
    (run / "ckpt-00000008" / "train_state.pt").write_bytes(b"torn")  # a partial copy
    (run / ".tmp-ckpt-abc").mkdir()  # a write that never finished
    with pytest.warns(UserWarning) as caught:
        result = train(cfg, resume="auto")
    messages = " ".join(str(w.message) for w in caught)
    assert "skipping torn checkpoint" in messages and "ckpt-00000008" in messages
    assert ".tmp-ckpt-abc" in messages
    assert result.step == 8  # redone from ckpt-00000004
    assert len(losses(run)) == 8


def test_resume_auto_without_checkpoint_starts_fresh(work):
    cfg = load_config(None, overrides(work, "fresh", **{"train.max_steps": 2}))
    assert train(cfg, resume="auto").step == 2


def test_global_batch_must_split_over_ranks():
    assert split_batch(16, 2, 4) == (4, 2)
    with pytest.raises(RedraftError, match="not divisible by world_size"):
        split_batch(8, 3, 2)
    with pytest.raises(RedraftError, match="train.parallel"):
        load_config(None, ["train.parallel=zero"])


def test_activation_checkpointing_reaches_the_model_and_changes_no_result(work, monkeypatch):
    """The memory saving itself is tested on the backbone (tests/models/test_transformer.py:
    fewer saved bytes, same gradients); here the config switch must turn it on in training
    (every block of every forward recomputed) and leave losses and weights unchanged."""
    from redraft.models import transformer

    calls = []

    def counting(*args, **kw):
        calls.append(1)
        return torch.utils.checkpoint.checkpoint(*args, **kw)

    monkeypatch.setattr(transformer, "checkpoint", counting)
    plain = train(load_config(None, overrides(work, "plain", **{"train.max_steps": 4})))
    assert not calls
    ckpt = train(load_config(None, overrides(work, "ac", **{
        "train.max_steps": 4, "train.activation_checkpointing": True})))
    n_layer = load_config(None, overrides(work, "ac")).model.n_layer
    assert len(calls) >= 4 * n_layer  # at least one checkpointed forward per step and block
    assert losses(work / "plain") == losses(work / "ac")
    assert_same_weights(plain.checkpoint, ckpt.checkpoint)
