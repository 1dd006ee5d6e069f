"""Issue 26 item 7: `redraft lm-eval` checks its arguments, the tasks and the output places and
loads the model before the harness starts; every mistake is one line and exit status 2, and a
request's work is bounded as the server's --max-work bounds one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from redraft.checkpoint import build_model, save_checkpoint
from redraft.cli import main
from redraft.config import Config
from redraft.data.tokenizers import CharTokenizer
from redraft.errors import RedraftError

pytest.importorskip("lm_eval")

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    cfg = Config()
    cfg.model.n_layer, cfg.model.n_head, cfg.model.d_model, cfg.model.seq_len = 2, 2, 32, 32
    tok = CharTokenizer(sorted(set("the cat sat on a mat.\n")))
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("lm-eval") / "mdlm"
    save_checkpoint(base, 1, cfg, build_model(cfg, tok.vocab_size).eval(), tok)
    return base


def _bad_inputs(run: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "file").write_text("x")
    p = f"pretrained={run}"
    return {
        "no arguments": ([], "no pretrained"),
        "no pretrained": (["--model_args", "mc_samples=2", "--tasks", "x"], "no pretrained"),
        "bad device": (["--model_args", f"{p},device=nonsense", "--tasks", "x"],
                       "device 'nonsense'"),
        "bad --device": (["--model_args", p, "--device", "gpu9", "--tasks", "x"], "device"),
        "device twice": (["--model_args", f"{p},device=cpu", "--device", "cuda:3", "--tasks",
                          "x"], "device given twice"),
        "bad seed": (["--model_args", f"{p},seed=abc", "--tasks", "x"], "seed='abc'"),
        "negative seed": (["--model_args", f"{p},seed=-1", "--tasks", "x"], "seed=-1"),
        "huge mc_samples": (["--model_args", f"{p},mc_samples=1000000000", "--tasks", "x"],
                            "mc_samples=1000000000"),
        "float mc_samples": (["--model_args", f"{p},mc_samples=1e9", "--tasks", "x"],
                             "mc_samples="),
        "work over max_work": (["--model_args", f"{p},mc_samples=600000", "--tasks", "x"],
                               "more than max_work"),
        "steps over max_work": (["--model_args", f"{p},steps=600000", "--tasks", "x"],
                                "lower steps"),
        "zero steps": (["--model_args", f"{p},steps=0", "--tasks", "x"], "steps=0"),
        "bad estimator": (["--model_args", f"{p},estimator=exact", "--tasks", "x"],
                          "estimator='exact'"),
        "bad sampler": (["--model_args", f"{p},sampler=nope", "--tasks", "x"],
                        "sampler='nope'"),
        "unknown arg": (["--model_args", f"{p},samples=3", "--tasks", "x"],
                        "unknown redraft model_args"),
        "missing model": (["--model_args", f"pretrained={tmp / 'nope'}", "--tasks", "x"],
                          "no checkpoint at"),
        "stderr_file in a file": (["--model_args", f"{p},stderr_file={tmp / 'file' / 'e.jsonl'}",
                                   "--tasks", "x"], "stderr_file"),
        "stderr_file a folder": (["--model_args", f"{p},stderr_file={tmp}", "--tasks", "x"],
                                 "is a folder"),
        "no tasks": (["--model_args", p], "no --tasks"),
        "bad progress": (["--model_args", f"{p},progress=maybe", "--tasks", "x"],
                         "progress='maybe'"),
        "bad JSON": (["--model_args", "{bad json", "--tasks", "x"], "Invalid JSON"),
        "empty pretrained": (["--model_args", "pretrained=", "--tasks", "x"], "no pretrained"),
        "bad block_size": (["--model_args", f"{p},block_size=0", "--tasks", "x"],
                           "block_size=0"),
        "hf: on a run folder": (["--model_args", f"pretrained=hf:{run}", "--tasks", "x"],
                                   "without the hf: prefix"),
        "bad include_path": (["--model_args", p, "--tasks", "x", "--include_path",
                              str(tmp / "none")], "--include_path"),
        "output in a file": (["--model_args", p, "--tasks", "x", "--output_path",
                              str(tmp / "file" / "out")], "--output_path"),
    }


def test_every_bad_argument_is_one_line_before_the_harness(run, tmp_path, capsys):
    cases = _bad_inputs(run, tmp_path)
    for name, (argv, want) in cases.items():
        assert main(["lm-eval", *argv]) == 2, name
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "CUDA is not available" not in line]
        assert len(lines) == 1 and lines[0].startswith("redraft lm-eval: error:"), (name, err)
        assert want in lines[0], (name, lines[0])
        assert "Traceback" not in err and "INFO" not in err, name


def test_unknown_task_is_one_line_before_any_evaluation(run, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HOME": str(tmp_path / "hf"),
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    for door in (["-m", "redraft", "lm-eval"], ["-m", "redraft.lm_eval"]):
        out = subprocess.run([sys.executable, *door, "--model_args", f"pretrained={run}",
                              "--tasks", "no_such_task"], capture_output=True, text=True,
                             env=env, timeout=300)
        assert out.returncode == 2, out.stderr[-2000:]
        assert out.stderr.count("\n") == 1 and "Tasks not found: no_such_task" in out.stderr
        assert "Traceback" not in out.stderr


def test_python_door_checks_the_same(run, tmp_path):
    from redraft.lm_eval import RedraftLM

    with pytest.raises(RedraftError, match="mc_samples=0"):
        RedraftLM(pretrained=str(run), mc_samples=0)
    with pytest.raises(RedraftError, match="seed='x'"):
        RedraftLM(pretrained=str(run), seed="x")
    with pytest.raises(RedraftError, match="is a folder"):
        RedraftLM(pretrained=str(run), stderr_file=str(tmp_path))
    with pytest.raises(RedraftError, match="more than max_work"):
        RedraftLM(pretrained=str(run), mc_samples=100, max_work=1000)
    lm = RedraftLM(pretrained=str(run), mc_samples="4", seed="7")  # text, as a CLI gives it
    assert (lm.mc_samples, lm.seed) == (4, 7)


def test_stderr_file_lost_mid_run_is_said_not_a_traceback(run, tmp_path, caplog):
    import shutil

    from lm_eval.api.instance import Instance

    from redraft.lm_eval import RedraftLM

    folder = tmp_path / "logs"
    folder.mkdir()
    lm = RedraftLM(pretrained=str(run), mc_samples=2, progress=False,
                   stderr_file=str(folder / "e.jsonl"))
    shutil.rmtree(folder)  # gone after the check, before the first request
    out = lm.loglikelihood([Instance("loglikelihood", {}, ("the cat", " sat"), 0)])
    assert len(out) == 1 and out[0][0] <= 0
    assert "cannot write stderr_file" in caplog.text
