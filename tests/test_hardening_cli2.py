"""Round 2 of the CLI hardening (issue 26): commands never destroy a user's files, signals at
start-up end in one line, resumed runs keep their own settings, the last tracebacks."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import TEXT, tiny_overrides

# --- signals during start-up (item 9) ---------------------------------------------------------

# Each wrapper stops the real `redraft` entry point at one moment of start-up (prints READY,
# then waits), so that the signal lands there every time: no sleeps, no races.
PAUSES = {
    # while the CLI (and torch) is being imported
    "import": """
        class Pause:
            def find_spec(self, name, path=None, target=None):
                if name == "torch":
                    ready()
                return None
        sys.meta_path.insert(0, Pause())
    """,
    # after the imports, reading the config
    "config": """
        import redraft.config
        redraft.config.load_config = lambda *a, **k: ready()
    """,
    # inside train(), its handlers installed, before the loop (the corpus step)
    "corpus": """
        import redraft.train
        redraft.train.load_data = lambda *a, **k: ready()
    """,
    # another command: `sample`, loading its model
    "sample": """
        import redraft.model
        redraft.model.load = lambda *a, **k: ready()
    """,
}


def _wrapper(pause: str) -> str:
    return textwrap.dedent("""
        import sys, time
        def ready():
            print("READY", flush=True)
            time.sleep(600)
    """) + textwrap.dedent(PAUSES[pause]) + textwrap.dedent("""
        from redraft.entry import main
        sys.exit(main(sys.argv[1:]))
    """)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("pause", list(PAUSES))
def test_a_signal_during_start_up_is_one_line_and_128_plus_signal(tmp_path, pause, sig):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    command = "sample" if pause == "sample" else "train"
    args = [] if pause == "sample" else tiny_overrides(corpus, tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", _wrapper(pause), command, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "READY", proc.communicate()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    assert err.strip() == f"redraft {command}: interrupted ({signal.Signals(sig).name})", err
    assert not (tmp_path / "run").exists()  # nothing half-written


# --- commands never destroy a user's files (item 3) --------------------------------------------


def _run(argv, capsys) -> tuple[int, str]:
    from redraft.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own exit
        code = e.code
    return code, capsys.readouterr().err


def _tree(folder: Path) -> dict[str, int]:
    """Every file under folder with its size and mtime: what a refused command must not touch."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (4 steps), a corpus and an earlier export of the run."""
    from redraft.cli import main

    base = tmp_path_factory.mktemp("destroy")
    corpus = base / "corpus.txt"
    corpus.write_text(TEXT)
    run = base / "run"
    assert main(["train", *tiny_overrides(corpus, run, **{
        "train.max_steps": 4, "train.eval_every": 4, "train.save_every": 2})]) == 0
    assert main(["export", str(run), str(base / "hf")]) == 0
    run2 = base / "run2"
    assert main(["train", *tiny_overrides(corpus, run2, **{"train.max_steps": 2})]) == 0
    return {"base": base, "corpus": corpus, "run": run, "run2": run2}


def _train(w, out, *extra, **values):
    return ["train", *tiny_overrides(w["corpus"], out, **{"train.max_steps": 6, **values}),
            *extra]


# (id, argv, substring of the one error line): each refused, every file of the run untouched
REFUSED = [
    ("export_force_onto_its_checkpoint", lambda w: ["export", w["run"] / "ckpt-00000004",
                                                     w["run"] / "ckpt-00000004", "--force"],
     "a checkpoint"),
    ("export_force_onto_its_run_folder", lambda w: ["export", w["run"], w["run"], "--force"],
     "a training run"),
    ("export_force_onto_a_user_folder", lambda w: ["export", w["run"], w["base"], "--force"],
     "never anything else"),
    ("export_without_force", lambda w: ["export", w["run"], w["base"] / "hf"], "--force"),
    ("train_into_an_existing_run", lambda w: _train(w, w["run"]), "--resume auto"),
    ("train_into_a_longer_run", lambda w: _train(w, w["run"], **{"train.max_steps": 2}),
     "--overwrite"),
    ("init_from_its_own_out_dir", lambda w: _train(w, w["run"], **{
        "train.init_from": w["run"]}), "train.init_from"),
    ("init_from_a_checkpoint_in_its_out_dir", lambda w: _train(w, w["run"], **{
        "train.init_from": w["run"] / "ckpt-00000004"}), "inside train.out_dir"),
    ("resume_another_run_into_this_one", lambda w: _train(
        w, w["run"], "--resume", w["run2"]), "holds another run"),
    ("overwrite_and_resume", lambda w: _train(w, w["run"], "--overwrite", "--resume", "auto"),
     "one of them"),
    ("bench_into_a_run_folder_with_a_report", lambda w: [
        "bench", w["run"], "--out", w["base"] / "notes"], "did not write"),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_a_command_that_would_replace_a_run_is_refused(trained, capsys, case):
    _, argv, needle = case
    notes = trained["base"] / "notes"
    notes.mkdir(exist_ok=True)
    (notes / "report.md").write_text("my own report\n")
    before = _tree(trained["base"])
    code, err = _run(argv(trained), capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    assert _tree(trained["base"]) == before  # nothing deleted, replaced or added


def test_export_force_replaces_an_earlier_export(trained, capsys, tmp_path):
    from redraft.cli import main
    from redraft.export import is_exported

    out = tmp_path / "hf"
    assert main(["export", str(trained["run"]), str(out)]) == 0
    (out / "model.safetensors").write_bytes(b"stale")
    assert main(["export", str(trained["run"]), str(out), "--force"]) == 0
    assert is_exported(out) and (out / "model.safetensors").stat().st_size > 100
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no folder left aside
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(trained["run"]), str(empty), "--force"]) == 0


def test_overwrite_moves_the_old_run_aside_and_never_deletes_it(trained, capsys, tmp_path):
    import shutil

    from redraft.checkpoint import list_checkpoints

    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    old = _tree(run)
    code, err = _run(_train(trained, run, "--overwrite", **{"train.max_steps": 2}), capsys)
    assert code == 0, err
    assert "moved the earlier run" in err and "run.old-1" in err
    assert _tree(tmp_path / "run.old-1") == old  # the old run, whole
    assert [p.name for p in list_checkpoints(run)] == ["ckpt-00000002"]  # not mixed
    code, err = _run(_train(trained, run, "--overwrite", **{"train.max_steps": 2}), capsys)
    assert code == 0 and (tmp_path / "run.old-2").is_dir() and (tmp_path / "run.old-1").is_dir()


def test_resume_auto_into_its_own_run_and_a_fresh_empty_folder_still_work(trained, capsys,
                                                                          tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    code, err = _run(_train(trained, run, "--resume", "auto"), capsys)
    assert code == 0, err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("mine")
    (empty / ".tmp-mine").mkdir()  # a user's own .tmp-* folder: not a torn checkpoint of ours
    code, err = _run(_train(trained, empty, **{"train.max_steps": 2}), capsys)
    assert code == 0, err
    assert (empty / "notes.txt").read_text() == "mine" and (empty / ".tmp-mine").is_dir()


def test_the_demo_moves_an_earlier_demo_aside(tmp_path, monkeypatch):
    """The demo trains into <out>/mdlm and <out>/ar: a second demo keeps the first one's."""
    import io

    import redraft.demo

    run = tmp_path / "demo" / "mdlm"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    calls = []

    def fake_train(cfg, *a, **k):
        calls.append(cfg.train.out_dir)
        raise RuntimeError("stop here")

    monkeypatch.setattr(redraft.demo, "train", fake_train)
    (tmp_path / "c.txt").write_text(TEXT)
    with pytest.raises(RuntimeError, match="stop here"):
        redraft.demo.run_demo(0.1, str(tmp_path / "demo"), stream=io.StringIO(),
                              overrides=[f"data.corpus={tmp_path / 'c.txt'}",
                                         "data.cache_dir=" + str(tmp_path / "cache")],
                              show_default_model=False)
    assert (tmp_path / "demo" / "mdlm.old-1" / "metrics.jsonl").is_file() and calls


# --- the last tracebacks (item 8) ---------------------------------------------------------------

BIG = "9" * 5000  # past Python's 4300-digit int conversion limit

TRACEBACKS = [
    ("infill_span_of_5000_digits", lambda w: ["sample", w["run"], "--steps", "2", "--infill",
                                              f"the <|mask:{BIG}|> mat"], "5000 digits"),
    ("infill_flexible_span_of_5000_digits", lambda w: [
        "sample", w["run"], "--steps", "2", "--infill", f"the <|mask:<={BIG}|>"], "digits"),
    ("infill_span_past_memory", lambda w: ["sample", w["run"], "--steps", "2", "--infill",
                                           "the <|mask:999999999999|>"], "context of 32"),
    ("export_into_proc", lambda w: ["export", w["run"], "/proc/redraft-x/hf"], "not writable"),
    ("export_inside_a_file", lambda w: ["export", w["run"], w["corpus"] / "hf"], "is a file"),
    ("export_onto_a_file", lambda w: ["export", w["run"], w["corpus"], "--force"],
     "not a folder"),
]


@pytest.mark.parametrize("case", TRACEBACKS, ids=[c[0] for c in TRACEBACKS])
def test_no_traceback_left(trained, capsys, case):
    _, argv, needle = case
    before = _tree(trained["base"])
    code, err = _run(argv(trained), capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0] and len(lines[0]) < 300, lines[0]
    assert _tree(trained["base"]) == before


def test_a_span_length_with_leading_zeros_is_still_a_length():
    from redraft.sampling import Span, parse_template

    assert parse_template("a<|mask:" + "0" * 30 + "3|>") == ["a", Span(3)]


# --- a resumed run keeps its own settings (item 14) ---------------------------------------------


def test_resume_keeps_the_runs_own_overrides_unless_given_again(tmp_path, capsys):
    """Started with train.max_steps=4 over a config that says 12 (as the README's
    train.time_budget_s=60 over 480 s): --resume auto stays at 4, says so, and trains on only
    when the override is given again."""
    import yaml

    from redraft.checkpoint import list_checkpoints

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    values = dict(a.split("=", 1) for a in tiny_overrides(corpus, tmp_path / "run"))
    config = {}
    for key, value in values.items():
        section, name = key.split(".")
        config.setdefault(section, {})[name] = yaml.safe_load(value)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert config["train"]["max_steps"] == 12
    code, err = _run(["train", path, "train.max_steps=4"], capsys)
    assert code == 0, err
    code, err = _run(["train", path, "--resume", "auto"], capsys)
    assert code == 0, err
    assert "with its run's own settings" in err and "train.max_steps=12 (the run's: 4)" in err
    assert "nothing to train" in err  # not 8 more steps to the config's 12
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["ckpt-00000004"]
    code, err = _run(["train", path, "--resume", "auto", "train.max_steps=6"], capsys)
    assert code == 0, err
    assert "overridden now: train.max_steps=6 (was 4)" in err
    assert list_checkpoints(tmp_path / "run")[-1].name == "ckpt-00000006"


def test_resume_by_path_continues_in_the_runs_own_folder(tmp_path, capsys):
    """No config file at all: the run folder named by --resume is where it continues, with its
    saved settings (not the defaults' out_dir, model or corpus)."""
    from redraft.checkpoint import list_checkpoints

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    run = tmp_path / "run"
    assert _run(["train", *tiny_overrides(corpus, run, **{"train.max_steps": 2})], capsys)[0] == 0
    code, err = _run(["train", "--resume", run, "train.max_steps=4"], capsys)
    assert code == 0, err
    assert [p.name for p in list_checkpoints(run)][-1] == "ckpt-00000004"
    assert not (tmp_path / "runs").exists()
