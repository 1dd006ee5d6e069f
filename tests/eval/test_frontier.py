"""Frontier evaluation: the n-gram floor's law, curve interpolation, `bench --tasks frontier`."""

import json

import numpy as np
import pytest

from redraft.cli import main
from redraft.errors import RedraftError
from redraft.eval.frontier import NGram, at_entropy, curves
from tests.conftest import tiny_overrides

STREAM = [0, 1, 0, 1, 0, 2]  # after 0: 1 twice, 2 once; 2 is never followed by anything


def test_ngram_law_on_a_toy_stream():
    g = NGram(STREAM, 2, 4)
    assert np.allclose(g.probs([0]), [0, 2 / 3, 1 / 3, 0])
    assert np.allclose(g.probs([1]), [1, 0, 0, 0])
    # T = 0.5 squares the counts: 4 : 1
    assert np.allclose(g.probs([0], 0.5), [0, 4 / 5, 1 / 5, 0])
    assert np.allclose(g.probs([0], 0), [0, 1, 0, 0])
    # an unseen context (2 is last) and the empty one back off to the unigram law 3 : 2 : 1
    assert np.allclose(g.probs([2]), [1 / 2, 1 / 3, 1 / 6, 0])
    assert np.allclose(g.probs([]), [1 / 2, 1 / 3, 1 / 6, 0])
    # order 3: the context (1, 0) is followed by 1 once and by 2 once
    g3 = NGram(STREAM, 3, 4)
    assert np.allclose(g3.probs([0, 1, 0]), [0, 1 / 2, 1 / 2, 0])
    assert np.allclose(g3.probs([0]), [0, 2 / 3, 1 / 3, 0])  # short context: the bigram


def test_ngram_samples_follow_the_law():
    g = NGram(STREAM, 2, 4)
    draws = [g.sample(2, seed, prefix=[1]) for seed in range(3000)]
    assert all(d[0] == 0 for d in draws)  # after 1 always 0
    share = sum(d[1] == 1 for d in draws) / len(draws)  # then 1 with probability 2/3
    assert abs(share - 2 / 3) < 0.04  # 4.6 standard deviations
    assert g.sample(5, 7, 1.0) == g.sample(5, 7, 1.0)


def test_ngram_refuses_bad_inputs():
    with pytest.raises(RedraftError, match="order 0"):
        NGram(STREAM, 0, 4)
    with pytest.raises(RedraftError, match="outside a vocabulary of 2"):
        NGram(STREAM, 2, 2)
    with pytest.raises(RedraftError, match="at least 9"):
        NGram(STREAM, 9, 4)


def test_curve_interpolates_log_gen_ppl_in_entropy():
    pts = [{"model": "m", "sampler": "s", "steps": 8, "temperature": t, "entropy": e,
            "gen_ppl": p} for t, e, p in ((0.5, 1.0, 10.0), (1.0, 3.0, 1000.0))]
    assert at_entropy(pts, 2.0) == pytest.approx(100.0)
    assert at_entropy(pts, 4.0) is None and at_entropy(pts, None) is None
    (c,) = curves(pts, 2.0)
    assert [p["temperature"] for p in c["points"]] == [0.5, 1.0]
    assert c["gen_ppl_at_ref_entropy"] == pytest.approx(100.0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("frontier")
    corpus = base / "corpus.txt"
    corpus.write_text("".join(f"the {w} sat on the mat. " for w in ("cat", "dog", "rat") * 150))
    for objective in ("mdlm", "ar"):
        assert main(["train", *tiny_overrides(corpus, base / objective, objective,
                                               **{"train.max_steps": 4,
                                                  "train.eval_every": 4})]) == 0
    return base


def test_bench_frontier_has_one_point_per_steps_and_temperature(pair, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["bench", str(pair / "mdlm"), str(pair / "ar"), "--judge", str(pair / "ar"),
                 "--tasks", "frontier", "--steps", "2,4", "--temperatures", "0.5,1.0,1.5",
                 "--num-samples", "3", "--length", "16", "--ngram", "3", "--sweep", "none",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    section = json.loads((out / "eval.json").read_text())["frontier"]
    keys = {(c["model"], c["steps"]): [p["temperature"] for p in c["points"]]
            for c in section["curves"]}
    assert keys == {("mdlm:mdlm", 2): [0.5, 1.0, 1.5], ("mdlm:mdlm", 4): [0.5, 1.0, 1.5],
                    ("ar:ar", None): [0.5, 1.0, 1.5], ("3-gram", None): [0.5, 1.0, 1.5]}
    for c in section["curves"]:
        for p in c["points"]:
            assert p["gen_ppl"] > 1 and p["entropy"] >= 0
            if c["model"] == "mdlm:mdlm":  # at most one call a step, so at least length/steps
                assert p["tokens_per_forward"] >= 16 / c["steps"] - 1e-9
    assert section["reference"]["entropy"] > 0
    report = (out / "report.md").read_text()
    assert "**Frontier**" in report and "3-gram" in report
    assert (out / "task_frontier.png").is_file()


def test_bench_frontier_needs_a_judge(pair, tmp_path, capsys):
    code = main(["bench", str(pair / "mdlm"), "--tasks", "frontier", "--steps", "2",
                 "--num-samples", "2", "--length", "8", "--sweep", "none",
                 "--out", str(tmp_path / "r")])
    assert code != 0 and "--judge" in capsys.readouterr().err


def test_bench_refuses_an_unknown_task(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "default", "--tasks", "frontier,nope"])
    assert exit_.value.code == 2 and "unknown task 'nope'" in capsys.readouterr().err
