import io
import math
from types import SimpleNamespace

import pytest

from redraft import demo
from redraft import model as model_module
from redraft.display import DraftView


def test_demo_runs_end_to_end_small(tmp_path, monkeypatch):
    monkeypatch.setenv("REDRAFT_CACHE", str(tmp_path / "cache"))
    calls = []  # (kind, steps, seed) of every sampling call
    # The demo samples through redraft.Model, which calls these two loops.
    real_diffusion, real_ar = model_module.generate_diffusion, model_module.generate_ar

    def seed_of(kw):
        return kw["seed"][0] if isinstance(kw["seed"], list) else kw["seed"]

    def diffusion(*a, **kw):
        calls.append(("diffusion", kw["steps"], seed_of(kw)))
        return real_diffusion(*a, **kw)

    def ar(*a, **kw):
        calls.append(("ar", None, seed_of(kw)))
        return real_ar(*a, **kw)

    monkeypatch.setattr(model_module, "generate_diffusion", diffusion)
    monkeypatch.setattr(model_module, "generate_ar", ar)
    monkeypatch.setattr(demo, "SPEED_RUNS", 2)  # the default's 5 would only cost time here
    out = io.StringIO()
    tiny = ["model.n_layer=1", "model.n_head=2", "model.d_model=32", "model.seq_len=64",
            "train.progress=false", "train.batch_size=4", "train.eval_batches=1",
            "train.seed=7"]
    results = demo.run_demo(minutes=0.05, out_dir=str(tmp_path / "demo"), overrides=tiny,
                            stream=out)
    text = out.getvalue()
    assert set(results) == {"mdlm", "ar"}
    assert "masked diffusion" in text and "AR twin" in text
    assert text.index("redraft.load('default')") < text.index("training the masked diffusion")
    assert "── step 32/32" in text and "filled in: " in text
    assert "upper bound (ELBO)" in text and "exact NLL" in text
    assert "── step 64/64" in text  # the last frame of the denoising view
    assert "AR twin + KV cache" in text
    # One fixed, printed seed for everything; the speed table is a median after a warm-up.
    assert "seed: 7 " in text and {seed for _, _, seed in calls} == {7}
    runs = 1 + demo.SPEED_RUNS
    # First the shipped default model infills (32 steps), then the pair trained here.
    assert calls == [("diffusion", 32, 7), ("diffusion", 64, 7),
                     *[("diffusion", n, 7) for n in (16, 64, 256)
                                            for _ in range(runs)], *[("ar", None, 7)] * runs]
    assert f"median of {demo.SPEED_RUNS} runs after a warm-up" in text
    assert "can and cannot give" in text and "cannot: code that parses" in text
    assert "token frequencies only" in text and "training tokens per model" in text


def test_unigram_baseline_hand_computed():
    # add-one counts of [0, 0, 1] over 3 ids: 3, 2, 1 -> p = 1/2, 1/3, 1/6
    got = demo.unigram_nats([0, 0, 1], [0, 1, 2], 3)
    assert got == pytest.approx(-(math.log(1 / 2) + math.log(1 / 3) + math.log(1 / 6)) / 3)


def test_median_seconds_skips_the_warm_up():
    seconds = iter([100.0, 3.0, 1.0, 2.0])
    gens = [SimpleNamespace(seconds=next(seconds)) for _ in range(4)]
    it = iter(gens)
    median, last = demo.median_seconds(lambda: next(it), runs=3)
    assert median == 2.0 and last is gens[-1]  # the 100 s warm-up is not counted


def test_draft_view_snapshots_when_not_a_tty():
    out = io.StringIO()
    view = DraftView(lambda ids, mask_text: "".join(mask_text if i < 0 else "x" for i in ids),
                     steps=8, stream=out, snapshots=2)
    for step in range(8):
        view(step, [[-1] * (8 - step - 1) + [1] * (step + 1)])
    text = out.getvalue()
    assert text.count("── step") == 2
    assert "step 4/8" in text and "step 8/8" in text and "xxxxxxxx" in text


def test_the_showcase_without_a_default_model_says_so(tmp_path, monkeypatch):
    from redraft import default

    monkeypatch.setattr(default, "FOLDER", tmp_path)
    lines = []
    demo.show_default(lines.append, io.StringIO())
    assert len(lines) == 1 and lines[0].startswith("(no default model to show:")
