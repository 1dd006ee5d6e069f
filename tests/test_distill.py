"""Step distillation (redraft.distill): the maths on an enumerable toy, then the command.

The toy: canvases of L = 3 positions over 3 data ids (0..2) and the mask (3), a tiny
bidirectional Transformer as the model. Every law an N-step ancestral sampler can produce is a
sum over the 4^3 canvases it can pass through, so it is computed exactly here.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from redraft.checkpoint import build_model
from redraft.config import Config, DiffusionConfig, ModelConfig
from redraft.diffusion import LogLinearSchedule, MaskProcess
from redraft.distill import Grid, distill_loss, teacher_targets
from tests.conftest import tiny_overrides

L, V, MASK = 3, 4, 3
PROCESS = MaskProcess(MASK, LogLinearSchedule(), V)
CANVASES = torch.tensor(list(itertools.product(range(V), repeat=L)))  # (64, L)
FINAL = [tuple(c) for c in CANVASES.tolist() if MASK not in c]  # the 27 clean sequences


def toy_model(seed: int, scale: float = 1.0) -> torch.nn.Module:
    """A tiny masked-diffusion Transformer; scale > 1 makes its predictions depend strongly on
    the revealed tokens (an imperfect teacher whose one-step and two-step laws differ)."""
    cfg = Config(model=ModelConfig(n_layer=1, n_head=2, d_model=16, seq_len=L),
                 diffusion=DiffusionConfig(objective="mdlm"))
    torch.manual_seed(seed)
    model = build_model(cfg, V)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


@torch.no_grad()
def denoisers(model) -> dict[tuple, torch.Tensor]:
    """p(x0 | canvas) (L, V) float64 for every canvas (SUBS: no mass on the mask)."""
    logits = model(CANVASES, torch.ones(len(CANVASES))).double()
    logits[..., MASK] = -torch.inf
    probs = torch.softmax(logits, -1)
    return {tuple(c): probs[i] for i, c in enumerate(CANVASES.tolist())}


def law(model, steps: int) -> dict[tuple, float]:
    """The exact law of `steps` ancestral steps from the all-mask canvas, t_i = 1 - i / steps."""
    q = denoisers(model)
    dist = {(MASK,) * L: 1.0}
    for i in range(steps):
        t, s = 1 - i / steps, 1 - (i + 1) / steps
        p = float(PROCESS.unmask_probability(torch.tensor(t, dtype=torch.float64),
                                             torch.tensor(s, dtype=torch.float64)))
        nxt: dict[tuple, float] = {}
        for canvas, mass in dist.items():
            masked = [j for j in range(L) if canvas[j] == MASK]
            for choice in itertools.product((False, True), repeat=len(masked)):
                shown = [j for j, c in zip(masked, choice, strict=True) if c]
                w = mass * p ** len(shown) * (1 - p) ** (len(masked) - len(shown))
                if w == 0:
                    continue
                for values in itertools.product(range(MASK), repeat=len(shown)):
                    new = list(canvas)
                    pv = w
                    for j, v in zip(shown, values, strict=True):
                        new[j] = v
                        pv *= float(q[canvas][j, v])
                    nxt[tuple(new)] = nxt.get(tuple(new), 0.0) + pv
        dist = nxt
    assert set(dist) <= set(FINAL) and abs(sum(dist.values()) - 1) < 1e-9
    return dist


def kl(p: dict, q: dict) -> float:
    return sum(pv * (torch.log(torch.tensor(pv)) - torch.log(torch.tensor(q[x]))).item()
               for x, pv in p.items() if pv > 0)


def distil(student, teacher, teacher_steps: int, data: torch.Tensor, n: int, kind: str,
           weighting: str = "marginal", lr: float = 3e-3) -> None:
    """n Adam steps of distill_loss on batches of `data` rows (the student learns
    teacher_steps / 2 steps)."""
    grid = Grid(PROCESS, bos_id=0, steps=teacher_steps // 2)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    for _i in range(n):
        x0 = data[torch.randint(len(data), (64,), generator=g)]
        loss = distill_loss(student, teacher, x0, grid, kind, weighting, g)
        loss.backward()
        opt.step()
        opt.zero_grad()


def test_a_round_moves_the_one_step_law_towards_the_teachers_two_step_law():
    teacher = toy_model(2, scale=6.0).eval().requires_grad_(False)
    student = toy_model(2, scale=6.0)  # the student starts as the teacher
    two = law(teacher, 2)
    before = kl(two, law(student, 1))
    assert before > 0.1  # the toy's teacher is far from consistent: there is something to gain
    data = torch.tensor(FINAL)  # (at t = 1 the canvas is all masks: x0 does not matter)
    distil(student, teacher, 2, data, 40, "kl")
    after = kl(two, law(student, 1))
    assert after < 0.25 * before, (before, after)
    # A one-step law is a product over positions: it cannot go below the product of the
    # two-step law's own marginals, and the student gets close to that floor.
    marg = [{v: sum(p for x, p in two.items() if x[j] == v) for v in range(MASK)}
            for j in range(L)]
    floor = kl(two, {x: marg[0][x[0]] * marg[1][x[1]] * marg[2][x[2]] for x in FINAL})
    assert floor <= after + 1e-9 and after - floor < 0.25 * (before - floor)


def test_divergences_by_hand():
    """KL(q || p) and TVD(q, p) against the student's SUBS denoiser (the mask gets no mass)."""
    from redraft.distill import divergence

    q = torch.tensor([[[0.5, 0.5, 0.0, 0.0]]], dtype=torch.float64)
    logits = torch.log(torch.tensor([[[0.25, 0.25, 0.5, 0.5]]]))  # mask logit ignored
    p = torch.tensor([0.25, 0.25, 0.5, 0.0])  # its softmax over ids 0..2
    kl_ = divergence(q, logits, MASK, "kl").item()
    assert abs(kl_ - 2 * 0.5 * (torch.log(torch.tensor(0.5 / 0.25))).item()) < 1e-6
    tvd = divergence(q, logits, MASK, "tvd").item()
    assert abs(tvd - 0.5 * (q[0, 0] - p).abs().sum().item()) < 1e-6 and abs(tvd - 0.5) < 1e-6
    logits.requires_grad_(True)
    divergence(q, logits, MASK, "kl").sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 0, MASK] == 0


def test_a_round_of_two_steps_from_four_moves_the_law_on_the_teachers_samples():
    teacher = toy_model(2, scale=6.0).eval().requires_grad_(False)
    student = toy_model(2, scale=6.0)
    four = law(teacher, 4)
    before = kl(four, law(student, 2))
    g = torch.Generator().manual_seed(1)
    seqs = list(four)
    data = torch.tensor(seqs)[torch.multinomial(torch.tensor([four[x] for x in seqs]), 512,
                                                replacement=True, generator=g)]
    distil(student, teacher, 4, data, 60, "kl")
    after = kl(four, law(student, 2))
    assert after < 0.7 * before, (before, after)


def exact_two_step_marginal(teacher, t: float, s: float) -> torch.Tensor:
    """(L, V) law of the value a position gets, given that two half steps t -> m -> s from
    the all-mask canvas reveal it (the one-step student's ideal denoiser there)."""
    q = denoisers(teacher)
    m = (t + s) / 2
    f = lambda a, b: float(PROCESS.unmask_probability(torch.tensor(a, dtype=torch.float64),  # noqa: E731
                                                       torch.tensor(b, dtype=torch.float64)))
    p1, p2, pts = f(t, m), f(m, s), f(t, s)
    start = (MASK,) * L
    out = torch.zeros(L, V, dtype=torch.float64)
    for j in range(L):
        out[j] += p1 * q[start][j]
        others = [i for i in range(L) if i != j]
        for choice in itertools.product((False, True), repeat=L - 1):
            shown = [i for i, c in zip(others, choice, strict=True) if c]
            w = p1 ** len(shown) * (1 - p1) ** (L - 1 - len(shown))
            for values in itertools.product(range(MASK), repeat=len(shown)):
                z = list(start)
                pv = w
                for i, v in zip(shown, values, strict=True):
                    z[i] = v
                    pv *= float(q[start][i, v])
                out[j] += (1 - p1) * p2 * pv * q[tuple(z)][j]
    return out / pts


@pytest.mark.parametrize("weighting", ["marginal", "sdtt"])
def test_weighted_targets_average_to_the_two_step_marginal(weighting):
    """At an intermediate step (t = 1 -> s = 1/2 of a 2-step student), the "marginal"
    weighting's targets average (weights included) to the exact two-step marginal; the
    paper's unweighted targets do not (they agree only at the last step)."""
    teacher = toy_model(2, scale=6.0).eval().requires_grad_(False)
    grid = Grid(PROCESS, bos_id=0, steps=2)
    n = 20000
    xt = torch.full((n, L), MASK)
    t, s = torch.ones(n, L, dtype=torch.float64), torch.full((n, L), 0.5, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    targets, w = teacher_targets(teacher, xt, xt, t, (t + s) / 2, s, grid, weighting, g)
    mean = (targets * w[..., None]).sum(0) / w.sum(0)[:, None]  # (L, V)
    exact = exact_two_step_marginal(teacher, 1.0, 0.5)
    gap = (mean - exact).abs().max().item()
    if weighting == "marginal":
        assert abs(w.mean().item() - 1) < 0.05
        assert gap < 0.01, gap
    else:
        assert gap > 0.02, gap


# --- the command ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny models of four objectives, trained for a few steps."""
    from redraft.config import load_config
    from redraft.train import train
    from tests.conftest import TEXT

    base = tmp_path_factory.mktemp("distill")
    corpus = base / "corpus.txt"
    corpus.write_text(TEXT)
    out = {}
    for objective in ("mdlm", "block", "ar", "udlm"):
        cfg = load_config(None, tiny_overrides(corpus, base / objective, objective,
                                               **{"train.eval_every": 100}))
        out[objective] = train(cfg).checkpoint
    return out


def cli(*args: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from redraft.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(["distill", *args])
        except SystemExit as e:  # argparse's own errors
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("objective", ["mdlm", "block"])
def test_the_command_distils_rounds_whose_students_load_and_sample(runs, tmp_path, objective):
    import redraft

    out = tmp_path / "students"
    code, stdout, err = cli(str(runs[objective]), "--rounds", "2", "--steps-per-round", "3",
                            "--teacher-steps", "8", "--batch-size", "4", "--out", str(out),
                            "--no-progress")
    assert code == 0, err
    report = json.loads(stdout)
    assert [r["student_steps"] for r in report["rounds"]] == [4, 2]
    last = Path(report["rounds"][-1]["checkpoint"])
    meta = json.loads((last / "config.json").read_text())
    assert meta["distill"]["round"] == 2 and meta["distill"]["divergence"] == "kl"
    assert meta["distill"]["teacher"] == str(Path(report["rounds"][0]["checkpoint"]))
    assert not (last / "train_state.pt").exists()  # a finished round is a plain checkpoint
    model = redraft.load(str(last))
    text = model.generate("the ", max_new_tokens=8, steps=2, seed=0).text
    assert text.startswith("the ") and len(model.encode(text)) <= 4 + 8
    # Running it again with --resume finds every round done and changes nothing.
    code, stdout2, err = cli(str(runs[objective]), "--rounds", "2", "--steps-per-round", "3",
                             "--teacher-steps", "8", "--batch-size", "4", "--out", str(out),
                             "--no-progress", "--resume")
    assert code == 0, err
    assert json.loads(stdout2)["rounds"] == report["rounds"]
    # Without --resume the folder is not replaced.
    code, _, err = cli(str(runs[objective]), "--rounds", "2", "--steps-per-round", "3",
                       "--teacher-steps", "8", "--out", str(out), "--no-progress")
    assert code == 2 and "--resume" in err


def test_an_interrupted_round_resumes_exactly(runs, tmp_path, monkeypatch):
    """SIGTERM in the middle of a round saves a resumable checkpoint; --resume finishes the
    round with the weights an uninterrupted run gets."""
    import os
    import signal

    from safetensors.torch import load_file

    import redraft.distill as d
    from redraft.errors import TrainingStopped

    knobs = dict(rounds=1, steps_per_round=4, teacher_steps=4, batch_size=4, progress=False,
                 lr=1e-3, warmup_steps=0)
    whole = d.distill(runs["mdlm"], tmp_path / "whole", **knobs)
    real, calls = d.distill_loss, []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) == 2:  # a SIGTERM arrives during step 2
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kw)

    monkeypatch.setattr(d, "distill_loss", interrupted)
    with pytest.raises(TrainingStopped) as stopped:
        d.distill(runs["mdlm"], tmp_path / "part", **knobs)
    assert stopped.value.step == 2 and (stopped.value.checkpoint / "train_state.pt").is_file()
    monkeypatch.setattr(d, "distill_loss", real)
    got = d.distill(runs["mdlm"], tmp_path / "part", resume=True, **knobs)
    assert got.checkpoints[0].name == "ckpt-00000004"
    wa = load_file(str(whole.checkpoints[0] / "model.safetensors"))
    wb = load_file(str(got.checkpoints[0] / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    steps = [json.loads(line)["step"] for line in
             (tmp_path / "part" / "round-1" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_bad_inputs_exit_2_with_a_clear_line(runs, tmp_path):
    out = str(tmp_path / "x")
    code, _, err = cli(str(runs["ar"]), "--out", out)
    assert code == 2 and "autoregressive" in err and "mdlm" in err and str(runs["ar"]) in err
    code, _, err = cli(str(runs["udlm"]), "--out", out)
    assert code == 2 and "'udlm'" in err and "not implemented" in err
    code, _, err = cli(str(runs["mdlm"]), "--rounds", "0", "--out", out)
    assert code == 2 and "--rounds" in err
    code, _, err = cli(str(runs["mdlm"]), "--rounds", "7", "--teacher-steps", "64", "--out",
                       out)
    assert code == 2 and "rounds <= 6" in err
    code, _, err = cli(str(tmp_path / "nothing"), "--out", out)
    assert code == 2 and "no checkpoint" in err
    assert not (tmp_path / "x").exists()  # nothing written for a refused run
