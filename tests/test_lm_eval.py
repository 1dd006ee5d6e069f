"""The lm-eval model class: the harness runs local YAML tasks (JSONL written here) on an AR
and a diffusion checkpoint, through its Python API and its CLI; the AR model's loglikelihoods
are its exact NLL."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import redraft
from redraft.errors import RedraftError

lm_eval = pytest.importorskip("lm_eval")

SRC = Path(__file__).resolve().parents[1] / "src"
DOCS = [
    {"context": "the cat sat", "target": " on the mat.", "choices": [" on the mat.", " on it."],
     "label": 0},
    {"context": "", "target": "the dog sat on the mat.", "choices": ["the dog", "the bat"],
     "label": 1},
]
TASKS = {
    "toy_ll": """output_type: loglikelihood
doc_to_text: "{{context}}"
doc_to_target: "{{target}}"
metric_list: [{metric: perplexity}, {metric: acc}]""",
    "toy_mc": """output_type: multiple_choice
doc_to_text: "{{context}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
metric_list: [{metric: acc}]""",
    "toy_roll": """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{context}}{{target}}"
metric_list: [{metric: word_perplexity}, {metric: byte_perplexity}, {metric: bits_per_byte}]""",
    "toy_gen": """output_type: generate_until
doc_to_text: "{{context}}"
doc_to_target: "{{target}}"
generation_kwargs: {until: [".", "\\n"], max_gen_toks: 12}
metric_list: [{metric: exact_match}]""",
}


@pytest.fixture
def tasks(tmp_path, monkeypatch) -> Path:
    """The four task YAMLs over one local JSONL file; datasets' cache in tmp_path, offline."""
    import datasets

    folder = tmp_path / "tasks"
    folder.mkdir()
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    for name, body in TASKS.items():
        (folder / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {data}\ntest_split: test\ntarget_delimiter: \"\"\n{body}\n")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return folder


def _evaluate(path, tasks, **args):
    from lm_eval.tasks import TaskManager

    import redraft.lm_eval  # noqa: F401  (registers "redraft")

    model_args = ",".join(f"{k}={v}" for k, v in {"pretrained": path, **args}.items())
    return lm_eval.simple_evaluate(model="redraft", model_args=model_args,
                                   tasks=sorted(TASKS), log_samples=True,
                                   task_manager=TaskManager(include_path=str(tasks),
                                                            include_defaults=False))


def _responses(out, task):
    """(arguments, responses) of each request of a task, in document order."""
    samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
    return [(a, r) for s in samples for a, r in zip(s["arguments"], s["resps"], strict=True)]


def test_ar_model_through_the_harness_is_exact(serve_runs, tasks):
    out = _evaluate(serve_runs["ar"], tasks)
    m = redraft.load(serve_runs["ar"])
    for args, resp in _responses(out, "toy_ll") + _responses(out, "toy_mc"):
        ctx, cont = args
        logprob, greedy = resp[0]
        whole = m.nll(ctx + cont)[0].nats
        before = m.nll(ctx)[0].nats if ctx else 0.0
        assert logprob == pytest.approx(-(whole - before), rel=1e-6)
        assert isinstance(greedy, bool)
    for (text,), resp in _responses(out, "toy_roll"):
        assert resp[0] == -m.nll(text)[0].nats  # the same number, to the last bit
    results = out["results"]
    nats = sum(m.nll(d["context"] + d["target"])[0].nats for d in DOCS)
    nbytes = sum(len((d["context"] + d["target"]).encode()) for d in DOCS)
    assert results["toy_roll"]["bits_per_byte,none"] == pytest.approx(
        nats / nbytes / math.log(2), rel=1e-9)
    assert 0 <= results["toy_mc"]["acc,none"] <= 1
    for (ctx, _), resp in _responses(out, "toy_gen"):
        assert "." not in resp[0] and "\n" not in resp[0]
        full = m.generate(ctx, max_new_tokens=12, temperature=0.0).completions[0]
        assert full.startswith(resp[0])  # greedy: the model's own text, cut at a stop


def test_diffusion_model_through_the_harness(serve_runs, tasks, tmp_path):
    from redraft.eval.conditional import score

    log = tmp_path / "stderr.jsonl"
    out = _evaluate(serve_runs["mdlm"], tasks, mc_samples=4, stderr_file=log, steps=4)
    m = redraft.load(serve_runs["mdlm"])
    for args, resp in _responses(out, "toy_ll"):
        ctx, cont = args
        want = score(m, m.encode(ctx), m.encode(cont), samples=4, seed=0)
        assert resp[0][0] == want.logprob  # a request's draws depend on it alone
    kept = [json.loads(line) for line in log.read_text().splitlines()]
    assert {k["kind"] for k in kept} == {"loglikelihood", "loglikelihood_rolling"}
    assert all(k["samples"] == 4 and k["stderr"] > 0 for k in kept)
    assert all(r[0] <= 0 for _, r in _responses(out, "toy_roll"))
    assert out["results"]["toy_roll"]["bits_per_byte,none"] > 0
    for _, resp in _responses(out, "toy_gen"):
        assert "." not in resp[0] and "\n" not in resp[0]


def test_requests_do_not_depend_on_their_neighbours(serve_runs):
    from lm_eval.api.instance import Instance

    from redraft.lm_eval import RedraftLM

    lm = RedraftLM(pretrained=str(serve_runs["mdlm"]), mc_samples=3, progress=False)
    pairs = [("the cat", " sat"), ("", "the mat."), ("a dog ", "on the")]
    reqs = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]
    forward = lm.loglikelihood(reqs)
    backward = lm.loglikelihood(reqs[::-1])[::-1]
    assert forward == backward
    alone = lm.loglikelihood(reqs[1:2])
    assert alone == forward[1:2]
    assert lm.loglikelihood([Instance("loglikelihood", {}, ("the cat", ""), 0)]) == [(0.0, True)]
    with pytest.raises(RedraftError, match="unknown redraft model_args"):
        RedraftLM(pretrained=str(serve_runs["mdlm"]), samples=3)


def test_cli_runs_a_local_task(serve_runs, tasks, tmp_path):
    """`redraft lm-eval` (the harness's CLI, "redraft" registered, --model added)."""
    out_dir = tmp_path / "results"
    # DISABLE_MULTIPROC left for redraft.lm_eval to set: the perplexity's bootstrap then runs
    # in-process (a pool forked beside torch's threads can deadlock)
    env = {**{k: v for k, v in os.environ.items() if k != "DISABLE_MULTIPROC"},
           "PYTHONPATH": str(SRC), "HF_HOME": str(tmp_path / "hf"),
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "redraft", "lm-eval", "--model_args",
         f"pretrained={serve_runs['mdlm']},mc_samples=2", "--tasks", "toy_ll",
         "--include_path", str(tasks), "--output_path", str(out_dir)],
        capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    found = list(out_dir.rglob("results_*.json"))
    assert len(found) == 1
    results = json.loads(found[0].read_text())
    assert results["config"]["model"] == "redraft"
    assert results["results"]["toy_ll"]["perplexity,none"] > 1
    assert math.isfinite(results["results"]["toy_ll"]["perplexity_stderr,none"])
