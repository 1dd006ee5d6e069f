"""Bad command-line, config and file inputs, table-driven: each must exit with status 2, print
one line on stderr (no traceback) and leave nothing half-written behind."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from redraft.cli import main
from tests.conftest import TEXT, tiny_overrides

BIG = "9" * 5000  # past Python's 4300-digit int conversion limit


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained tiny run plus the bad files the cases point at."""
    base = tmp_path_factory.mktemp("hardening")
    corpus = base / "corpus.txt"
    corpus.write_text(TEXT)
    run = base / "run"
    overrides = tiny_overrides(corpus, run, **{"data.tokenizer": "byte", "train.max_steps": 2,
                                               "train.eval_every": 2})
    assert main(["train", *overrides]) == 0
    (base / "afile").write_text("not a folder")
    (base / "latin1.yaml").write_bytes(b"train:\n  lr: 0.1 # caf\xe9\n")
    (base / "notyaml.yaml").write_text("train: [unclosed\n")
    (base / "list.yaml").write_text("- 1\n- 2\n")
    (base / "latin1.txt").write_bytes(b"def f(x):\n    <|mask:4|>  # caf\xe9\n")
    return {"base": base, "corpus": corpus, "run": run}


def train_args(w, **extra):
    out = w["base"] / "fresh-run"
    values = {"data.cache_dir": str(w["base"] / "cache"), **extra}
    return ["train", *tiny_overrides(w["corpus"], out, **{"data.tokenizer": "byte",
                                                           **values})]


def sample(w, *extra):
    return ["sample", str(w["run"]), "--steps", "2", *extra]


# (case id, argv from the fixture, a substring the one error line must hold)
CASES = [
    # output folders: checked before any work
    ("out_dir_is_a_file", lambda w: train_args(w, **{"train.out_dir": w["base"] / "afile"}),
     "is a file"),
    ("out_dir_inside_a_file", lambda w: train_args(
        w, **{"train.out_dir": w["base"] / "afile" / "run"}), "is a file"),
    ("out_dir_unwritable", lambda w: train_args(w, **{"train.out_dir": "/proc/redraft-x/run"}),
     "not writable"),
    ("cache_dir_is_a_file", lambda w: train_args(w, **{"data.cache_dir": w["base"] / "afile"}),
     "data.cache_dir"),
    ("cache_dir_unwritable", lambda w: train_args(w, **{"data.cache_dir": "/proc/redraft-x"}),
     "not writable"),
    # numbers out of range, non-finite or too long
    ("seed_negative", lambda w: train_args(w, **{"train.seed": -1}), "train.seed=-1"),
    ("seed_too_big_for_training", lambda w: train_args(w, **{"train.seed": 2**40}),
     "train.seed="),
    ("seed_past_64_bits", lambda w: train_args(w, **{"train.seed": 10**30}), "64 bits"),
    ("integer_too_long", lambda w: train_args(w, **{"train.max_steps": BIG}), "4300 digits"),
    ("lr_inf", lambda w: train_args(w, **{"train.lr": "inf"}), "train.lr=inf"),
    ("lr_nan", lambda w: train_args(w, **{"train.lr": "nan"}), "train.lr=nan"),
    ("lr_yaml_inf", lambda w: train_args(w, **{"train.lr": ".inf"}), "finite"),
    ("dropout_nan", lambda w: train_args(w, **{"model.dropout": "nan"}), "model.dropout"),
    ("time_budget_inf", lambda w: train_args(w, **{"train.time_budget_s": "inf"}),
     "train.time_budget_s"),
    ("grad_clip_negative", lambda w: train_args(w, **{"train.grad_clip": -1}), "grad_clip"),
    ("beta_out_of_range", lambda w: train_args(w, **{"train.beta2": 1.5}), "train.beta2"),
    ("max_steps_zero", lambda w: train_args(w, **{"train.max_steps": 0}), "train.max_steps"),
    ("keep_zero", lambda w: train_args(w, **{"train.keep_checkpoints": 0}), "keep_checkpoints"),
    ("val_fraction_one", lambda w: train_args(w, **{"data.val_fraction": 1}), "val_fraction"),
    ("heads_do_not_divide", lambda w: train_args(w, **{"model.n_head": 3}), "divisible"),
    ("unknown_key", lambda w: train_args(w, **{"train.colour": 1}), "colour"),
    ("wrong_type", lambda w: train_args(w, **{"train.max_steps": "many"}), "many"),
    ("vocab_size_huge", lambda w: train_args(w, **{"data.tokenizer": "bpe",
                                                   "data.vocab_size": 99999999999}),
     "data.vocab_size"),
    ("override_conflict", lambda w: [*train_args(w), "train=3", "train.lr=0.1"], "earlier"),
    # resources estimated before the first step: memory, threads
    ("model_too_big_for_memory", lambda w: train_args(w, **{"model.d_model": 2**20,
                                                            "model.n_head": 2}), "memory"),
    ("batch_too_big_for_memory", lambda w: train_args(w, **{"train.batch_size": 10**9}),
     "train.batch_size"),
    ("threads_absurd", lambda w: train_args(w, **{"train.threads": 10**8}), "train.threads"),
    # devices
    ("device_missing", lambda w: train_args(w, **{"train.device": "cuda:99"}), "cuda:99"),
    ("device_nonsense", lambda w: train_args(w, **{"train.device": "banana"}), "banana"),
    # config files
    ("config_not_utf8", lambda w: ["train", str(w["base"] / "latin1.yaml")], "not UTF-8"),
    ("config_not_yaml", lambda w: ["train", str(w["base"] / "notyaml.yaml")], "not valid YAML"),
    ("config_not_a_mapping", lambda w: ["train", str(w["base"] / "list.yaml")], "mapping"),
    ("config_missing", lambda w: ["train", str(w["base"] / "nope.yaml")], "does not exist"),
    ("config_is_a_folder", lambda w: ["train", str(w["base"])], "does not exist"),
    ("resume_missing", lambda w: [*train_args(w), "--resume", str(w["base"] / "nope")],
     "no checkpoint"),
    ("resume_is_a_file", lambda w: [*train_args(w), "--resume", str(w["base"] / "afile")],
     "no checkpoint"),
    # sample: numbers, work limits, files, prompts
    ("sample_seed_negative", lambda w: sample(w, "--seed", "-1"), "--seed"),
    ("sample_seed_past_64_bits", lambda w: sample(w, "--seed", str(2**63)), "--seed"),
    ("sample_steps_zero", lambda w: sample(w, "--steps", "0"), "0 is not >= 1"),
    ("sample_steps_too_long", lambda w: sample(w, "--steps", BIG), "is not an integer"),
    ("sample_num_samples_huge", lambda w: sample(w, "--num-samples", "1000000000"),
     "--max-work"),
    ("sample_work_over_limit", lambda w: sample(w, "--num-samples", "64", "--steps", "4096",
                                                "--max-work", "1000"), "units of work"),
    ("sample_logits_past_memory", lambda w: sample(w, "--num-samples", "2000000000", "--steps",
                                                   "1", "--max-work", str(2**62)),
     "GiB"),
    ("sample_max_work_zero", lambda w: sample(w, "--max-work", "0"), "--max-work"),
    ("sample_length_huge", lambda w: sample(w, "--length", str(2**40)), "--length"),
    ("sample_length_past_context", lambda w: sample(w, "--length", "100000"), "100000"),
    ("sample_temperature_nan", lambda w: sample(w, "--temperature", "nan"), "finite"),
    ("sample_temperature_inf", lambda w: sample(w, "--temperature", "inf"), "finite"),
    ("sample_temperature_negative", lambda w: sample(w, "--temperature", "-1"), ">= 0"),
    ("sample_top_p_zero", lambda w: sample(w, "--top-p", "0"), "--top-p"),
    ("sample_top_p_nan", lambda w: sample(w, "--top-p", "nan"), "--top-p"),
    ("sample_top_k_zero", lambda w: sample(w, "--top-k", "0"), "--top-k"),
    ("sample_guidance_nan", lambda w: sample(w, "--guidance", "nan"), "--guidance"),
    ("sampler_option_nan", lambda w: sample(w, "--sampler", "threshold", "--sampler-opt",
                                            "threshold=nan"), "finite"),
    ("sampler_option_inf", lambda w: sample(w, "--sampler", "remask", "--sampler-opt",
                                            "eta=inf"), "finite"),
    ("sampler_option_unknown", lambda w: sample(w, "--sampler", "threshold", "--sampler-opt",
                                                "colour=1"), "colour"),
    ("infill_file_not_utf8", lambda w: sample(w, "--infill-file",
                                              str(w["base"] / "latin1.txt")), "not UTF-8"),
    ("infill_file_missing", lambda w: sample(w, "--infill-file", str(w["base"] / "nope.txt")),
     "cannot be read"),
    ("infill_file_is_a_folder", lambda w: sample(w, "--infill-file", str(w["base"])),
     "cannot be read"),
    ("prompt_lone_surrogate", lambda w: sample(w, "--prompt", "ab\udcffcd"), "surrogate"),
    ("sample_checkpoint_missing", lambda w: ["sample", str(w["base"] / "nope")],
     "no checkpoint"),
    ("sample_checkpoint_is_a_file", lambda w: ["sample", str(w["base"] / "afile")],
     "no checkpoint"),
    # eval
    ("eval_checkpoint_missing", lambda w: ["eval", str(w["base"] / "nope")], "no checkpoint"),
    ("eval_samples_zero", lambda w: ["eval", str(w["run"]), "--samples", "0"], "--samples"),
    # bench: --out is checked before an hour of generation, not after
    ("bench_out_is_a_file", lambda w: ["bench", str(w["run"]), "--out",
                                       str(w["base"] / "afile")], "is a file"),
    ("bench_out_unwritable", lambda w: ["bench", str(w["run"]), "--out", "/proc/redraft-x"],
     "not writable"),
    ("bench_steps_zero", lambda w: ["bench", str(w["run"]), "--steps", "8,0"], "--steps"),
    ("bench_temperature_nan", lambda w: ["bench", str(w["run"]), "--temperatures", "1,nan"],
     "--temperatures"),
    ("bench_seed_negative", lambda w: ["bench", str(w["run"]), "--seed", "-3"], "--seed"),
    ("bench_work_over_limit", lambda w: ["bench", str(w["run"]), "--num-samples", "64",
                                         "--length", "4096", "--out", str(w["base"] / "b")],
     "units of work"),
    # serve: argument checks only (before any model is loaded)
    ("serve_port_too_big", lambda w: ["serve", str(w["run"]), "--port", "70000"], "65535"),
    ("serve_port_negative", lambda w: ["serve", str(w["run"]), "--port", "-1"], "--port"),
    ("serve_timeout_negative", lambda w: ["serve", str(w["run"]), "--timeout", "-1"],
     "--timeout"),
    ("serve_timeout_zero", lambda w: ["serve", str(w["run"]), "--timeout", "0"], "--timeout"),
    ("serve_timeout_nan", lambda w: ["serve", str(w["run"]), "--timeout", "nan"], "--timeout"),
    ("serve_grace_negative", lambda w: ["serve", str(w["run"]), "--grace", "-5"], "--grace"),
    ("serve_max_batch_zero", lambda w: ["serve", str(w["run"]), "--max-batch", "0"],
     "--max-batch"),
    # demo
    ("demo_minutes_zero", lambda w: ["demo", "--minutes", "0"], "--minutes"),
    ("demo_minutes_inf", lambda w: ["demo", "--minutes", "inf"], "--minutes"),
    ("demo_out_is_a_file", lambda w: ["demo", "--out", str(w["base"] / "afile")], "is a file"),
    # the parser itself
    ("unknown_command", lambda w: ["fly"], "invalid choice"),
    ("unexpected_argument", lambda w: ["sample", str(w["run"]), "extra=1"], "unexpected"),
]


def snapshot(base: Path) -> set[str]:
    return {str(p.relative_to(base)) for p in base.rglob("*")}


def run_main(argv, capsys) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own exit
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(world, capsys, case):
    _, argv, needle = case
    argv = argv(world)
    before = snapshot(world["base"])
    code, err = run_main(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("redraft")
    assert needle in lines[0], lines[0]
    assert len(lines[0]) < 600  # a 5000-digit argument is shown cut, not echoed
    assert snapshot(world["base"]) == before  # nothing written, not even a folder


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("argv", [["train", "train.lr=inf"], ["sample", "x", "--seed", BIG],
                                  ["serve", "x", "--timeout", "-1"]])
def test_the_installed_entry_point_prints_no_traceback(argv, tmp_path):
    """Through `python -m redraft` itself (the in-process table covers the rest)."""
    env = {**os.environ, "REDRAFT_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "redraft", *argv], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_full_disk_is_one_line_and_leaves_no_partial_checkpoint(world, capsys, monkeypatch):
    import redraft.checkpoint

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "model.safetensors")

    monkeypatch.setattr(redraft.checkpoint, "save_file", full)
    out = world["base"] / "full-disk"
    code, err = run_main(train_args(world, **{"train.out_dir": out}), capsys)
    assert code == 2 and "no space left" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not list(out.glob("ckpt-*")) and not list(out.glob(".tmp-*"))
