"""Progress bars: on stderr, only on a terminal and never under CI; `redraft eval` and
`redraft sample` show one."""

import io
import sys

import pytest

from redraft.cli import main
from redraft.display import StepBar, show_progress
from tests.conftest import tiny_overrides


class Terminal(io.StringIO):
    def isatty(self):
        return True


def as_terminal(monkeypatch) -> Terminal:
    """stderr becomes a terminal (set inside the test: pytest's capture resets sys.stderr
    between a fixture's setup and the test)."""
    monkeypatch.delenv("CI", raising=False)
    err = Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    return err


def test_bars_only_on_a_terminal_outside_ci(monkeypatch):
    terminal = as_terminal(monkeypatch)
    assert show_progress() and show_progress(terminal)
    assert not show_progress(io.StringIO())  # a log file or a pipe
    monkeypatch.setenv("CI", "true")
    assert not show_progress()


def test_step_bar_counts_steps(monkeypatch):
    terminal = as_terminal(monkeypatch)
    bar = StepBar(4, desc="sample")
    for i in range(4):
        bar(i, None)
    assert bar.bar.n == 4 and "sample: 100%" in terminal.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("display")
    corpus = base / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 200)
    assert main(["train", *tiny_overrides(corpus, base / "mdlm")]) == 0
    return base / "mdlm"


def test_eval_and_sample_show_progress_on_a_terminal(run, monkeypatch):
    terminal = as_terminal(monkeypatch)
    assert main(["eval", str(run), "--samples", "2"]) == 0
    assert "eval: 100%" in terminal.getvalue() and "batch" in terminal.getvalue()
    assert main(["sample", str(run), "--steps", "8"]) == 0
    assert "sample: 100%" in terminal.getvalue() and "8/8" in terminal.getvalue()
    monkeypatch.setenv("CI", "1")
    terminal.seek(0)
    terminal.truncate()
    assert main(["eval", str(run), "--samples", "2"]) == 0
    assert "eval:" not in terminal.getvalue()
